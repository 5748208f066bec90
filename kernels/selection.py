"""What every farthest-point sampling path returns, and the argument checks they share."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHODS = ("maxmin", "last")


@dataclass(frozen=True)
class Selection:
    """Picked rows in pick order, and each pick's cosine distance when picked.

    maxmin: distance to the nearest already-picked row; last: distance to the previous pick.
    The first pick has no set to be far from: its distance is NaN.
    """

    indices: np.ndarray  # int64, shape (n,)
    distances: np.ndarray  # float64, shape (n,)


def check_arguments(m: int, n: int, start: int, method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    if m < 1:
        raise ValueError("no rows to sample from")
    if not 1 <= n <= m:
        raise ValueError(f"cannot pick {n} of {m} rows: n must be in 1..{m}")
    if not 0 <= start < m:
        raise ValueError(f"start row {start} is outside 0..{m - 1}")
