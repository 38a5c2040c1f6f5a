"""Seeded, stratified splits: the same config always selects the same rows."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from pipeline.errors import DataConfigError


def holdout_count(size: float, n: int, field: str) -> int:
    """A split size from the config as a row count: an int is a count, a float in (0, 1) a fraction of ``n``."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise DataConfigError(f"{field} must be a row count or a fraction in (0, 1), got {size!r}")
    count = round(size * n) if isinstance(size, float) and 0 < size < 1 else size
    if not isinstance(count, int) or not 0 < count < n:
        raise DataConfigError(f"{field}={size!r} must select between 1 and {n - 1} of the {n} rows available")
    return count


def holdout(n: int, count: int, seed: int, stratify: np.ndarray | None, field: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (kept, held-out) index arrays, each in ascending order.

    With ``stratify`` (class labels) each class keeps its proportion in both parts.
    Sorting keeps rows in file order, so a split is a plain subset of the source.
    """
    try:
        kept, held = train_test_split(np.arange(n), test_size=count, random_state=seed, stratify=stratify)
    except ValueError as exc:  # e.g. a class with a single member cannot be stratified
        raise DataConfigError(f"cannot split {n} rows with {field}={count}: {exc}") from exc
    return np.sort(kept), np.sort(held)
