"""The slow, obviously-right farthest-point sampling that the fast paths are tested against.

float64 throughout and one plain loop: every step scores all rows against the last pick, excludes the picked
rows, and takes the lowest score; np.argmin returns the first minimum, which is the lowest-index tie-break.
`random_unit_rows` makes inputs on which float32 paths must agree with it exactly.
"""
from __future__ import annotations

import numpy as np

from .selection import Selection, check_arguments


def fps_reference(embeddings: np.ndarray, n: int, start: int, method: str = "maxmin") -> Selection:
    """Rows must be unit-norm (cosine similarity = dot product)."""
    x = np.asarray(embeddings, dtype=np.float64)
    m = x.shape[0]
    check_arguments(m, n, start, method)
    # maxmin: highest similarity to any picked row; last: similarity to the previous pick.
    score = np.full(m, -np.inf)
    picked = np.zeros(m, dtype=bool)
    indices, distances = [start], [np.nan]
    s = start
    for _ in range(n - 1):
        picked[s] = True
        sim = x @ x[s]
        score = np.maximum(score, sim) if method == "maxmin" else sim
        score[picked] = np.inf
        s = int(np.argmin(score))
        indices.append(s)
        distances.append(1.0 - score[s])
    return Selection(np.array(indices, dtype=np.int64), np.array(distances))


def random_unit_rows(m: int, d: int, seed: int = 0) -> np.ndarray:
    """Random (near-)unit rows in float16 on which every path must pick exactly what the reference picks.

    Entries are multiples of 2**-10 (exact in float16), so every product is a multiple of 2**-20 and every partial
    sum of a dot product stays below 2**20 such units (Cauchy-Schwarz on near-unit rows): exact in float32 in any
    summation order. All paths then see bit-identical scores, and only the tie-break could make them differ.
    """
    x = np.random.default_rng(seed).standard_normal((m, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (np.round(x * 1024) / 1024).astype(np.float16)
