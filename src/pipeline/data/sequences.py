"""The addition lesson's data (Keras' ``addition_rnn`` example): sums of numbers written as text.

The fetch stage draws ``count`` distinct sums of numbers of up to ``digits`` digits from a seed
and writes them as text, ``question,answer`` (``12+345,357``); ``a+b`` and ``b+a`` count as one
sum, so no sum can land in two splits. The preprocess stage pads every question to
``2·digits + 1`` characters and every answer to ``digits + 1`` with spaces, optionally reverses
the question (the example's trick: the last digits, which the answer starts from, are then
read last, closest to the decoder), and turns characters into ids (``pipeline.data.tokens``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.atomic import save_csv
from pipeline.data.sources import Source
from pipeline.errors import DataConfigError, DataFormatError

SUMS_FILE = "sums.csv"


@dataclass
class SumsData:
    """The raw questions (``a+b``) and answers (``a+b``'s value) as text, and the largest number of digits."""

    questions: list[str]
    answers: list[str]
    digits: int


def draw_sums(rng: np.random.Generator, digits: int, count: int) -> tuple[list[str], list[str]]:
    """``count`` distinct sums ``a+b`` of numbers of 1 to ``digits`` digits (each length equally likely, as in
    the Keras example), with their answers."""
    numbers = 10**digits
    if count > numbers * (numbers + 1) // 2:  # unordered pairs of 0 .. 10**digits - 1
        raise DataConfigError(f"source.count={count}: numbers of {digits} digits make fewer distinct sums")
    seen: set[tuple[int, int]] = set()
    questions: list[str] = []
    answers: list[str] = []
    while len(questions) < count:
        a, b = (int(rng.integers(10 ** (n - 1) if n > 1 else 0, 10**n)) for n in rng.integers(1, digits + 1, 2))
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        questions.append(f"{a}+{b}")
        answers.append(str(a + b))
    return questions, answers


class AdditionSums(Source):
    """Sums drawn from a seed (see the module docstring): no download, the same bytes on every machine."""

    def __init__(self, digits: int = 3, count: int = 50_000, seed: int = 0) -> None:
        if digits < 1 or count < 1:
            raise DataConfigError(f"source.digits={digits} and source.count={count} must both be at least 1")
        self.digits, self.count, self.seed = int(digits), int(count), int(seed)

    def fetch(self, raw_dir: Path, mirror: str | None = None, timeout: float = 30.0) -> None:
        questions, answers = draw_sums(np.random.default_rng(self.seed), self.digits, self.count)
        save_csv(raw_dir / SUMS_FILE, ["question", "answer"], zip(questions, answers, strict=True))

    def load(self, raw_dir: Path) -> SumsData:  # type: ignore[override]
        import pandas as pd

        path = raw_dir / SUMS_FILE
        if not path.is_file():
            raise DataFormatError(f"{path}: raw file missing; run the fetch stage first")
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
        if list(table.columns) != ["question", "answer"]:
            raise DataFormatError(f"{path}: columns {list(table.columns)}; expected question, answer")
        return SumsData(table["question"].tolist(), table["answer"].tolist(), self.digits)
