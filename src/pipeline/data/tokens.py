"""Text as token ids and back: the addition lesson's 12 characters. Training and its figures import this module
alone, not the data stages' sources."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.errors import DataFormatError

VOCABULARY = "0123456789+ "  # the 12 characters of questions and answers; a space pads


def encode_text(texts: Sequence[str], length: int, reverse: bool = False) -> np.ndarray:
    """int64 ids ``(n, length)`` of texts padded with spaces on the right (then reversed, when asked)."""
    ids = {char: i for i, char in enumerate(VOCABULARY)}
    out = np.empty((len(texts), length), dtype=np.int64)
    for row, text in enumerate(texts):
        padded = text.ljust(length)
        if len(padded) > length or any(char not in ids for char in padded):
            raise DataFormatError(f"{text!r}: longer than {length} characters or not made of {VOCABULARY!r}")
        out[row] = [ids[char] for char in (padded[::-1] if reverse else padded)]
    return out


def decode_ids(ids: np.ndarray, reverse: bool = False) -> list[str]:
    """Texts of id rows, as written (a reversed question is turned back), without the padding."""
    texts = ["".join(VOCABULARY[i] for i in row) for row in np.asarray(ids)]
    return [(text[::-1] if reverse else text).strip() for text in texts]
