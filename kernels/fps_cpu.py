"""Farthest-point sampling on the CPU: exact, and fast because most steps need no pass over the matrix.

A mat-vec per step is bandwidth-bound: at m=50k, d=384 it streams 77 MB of float32 for 38 MFLOP, about 9-13 ms
on 2 cores. But the next pick is almost always one of the rows that are currently farthest from the set (a new
pick is far from nearly everything, so it rarely lowers another far row's distance). So one pass computes the
similarities of the pending pick and the K-1 currently farthest rows at once (a (K, d) x (d, m) GEMM, compute-bound,
about the cost of 10 mat-vecs for K=128), and the following picks are served from those rows for as long as the
exact argmin lands on one of them. Every score is still folded in exactly as the one-mat-vec-per-step loop would,
so the picks are the same; only passes are saved (about 90 steps a pass on random data at m=50k).
"""
from __future__ import annotations

import numpy as np
import torch

from .selection import Selection, check_arguments

BLOCK = 128  # rows scored per pass; bigger blocks cost more GEMM per pass than they save in passes
_CHUNK_ROWS = 65536  # convert fp16 storage to float32 in slices, so no second full-size temporary exists


def fps_cpu(embeddings, n: int, start: int, method: str = "maxmin", block: int = BLOCK) -> Selection:
    """Rows must be unit-norm. `embeddings`: numpy array or memmap (any float dtype) or a CPU torch tensor."""
    e = as_float32(embeddings)
    m = e.shape[0]
    check_arguments(m, n, start, method)
    if method == "last":
        return _last(e, n, start)
    return _maxmin(e, n, start, max(1, min(block, m)))


def as_float32(embeddings) -> torch.Tensor:
    """float32 compute on compact storage: converted once, slice by slice."""
    if isinstance(embeddings, torch.Tensor):
        return embeddings.to(device="cpu", dtype=torch.float32).contiguous()
    array = np.asarray(embeddings)  # a memmap stays a view of the file: no read yet
    if array.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D matrix (rows = documents), got shape {array.shape}")
    if array.dtype == np.float32 and array.flags.c_contiguous:
        return torch.from_numpy(np.asarray(array))
    out = torch.empty(array.shape, dtype=torch.float32)
    for lo in range(0, array.shape[0], _CHUNK_ROWS):
        out[lo : lo + _CHUNK_ROWS] = torch.from_numpy(np.asarray(array[lo : lo + _CHUNK_ROWS], dtype=np.float32))
    return out


def _maxmin(e: torch.Tensor, n: int, start: int, block: int) -> Selection:
    m = e.shape[0]
    # Highest similarity of each row to the picked set; picked rows hold +inf so argmin never returns them.
    # Small per-step work runs in numpy: torch's thread pool costs more than a 50k-element maximum does.
    score = np.full(m, -np.inf, dtype=np.float32)
    indices = np.empty(n, dtype=np.int64)
    distances = np.full(n, np.nan)
    indices[0] = start
    score[start] = np.inf
    pending, t = start, 1  # `pending` is picked but its similarities are not folded into `score` yet
    while t < n:
        nearest_free = np.argpartition(score, block - 1)[: block - 1] if block > 1 else np.empty(0, np.int64)
        rows = np.concatenate(([pending], nearest_free[nearest_free != pending]))
        sims = (e[torch.from_numpy(rows)] @ e.T).numpy()  # one pass over the matrix, one row per candidate
        row_of = {int(r): j for j, r in enumerate(rows)}
        np.maximum(score, sims[0], out=score)
        while t < n:
            s = int(np.argmin(score))  # first minimum = lowest index among ties, like every other path
            indices[t], distances[t] = s, 1.0 - float(score[s])
            score[s] = np.inf
            t += 1
            j = row_of.get(s)
            if j is None:
                pending = s  # not among this pass's rows: its similarities come with the next pass
                break
            np.maximum(score, sims[j], out=score)
    return Selection(indices, distances)


def _last(e: torch.Tensor, n: int, start: int) -> Selection:
    # The paper's Algorithm 1 as written: each pick is the row least similar to the previous pick alone, so the
    # next pick cannot be foreseen and every step is one pass (a (1, d) x (d, m) product, faster here than mv).
    picked = np.zeros(e.shape[0], dtype=bool)
    indices = np.empty(n, dtype=np.int64)
    distances = np.full(n, np.nan)
    indices[0] = s = start
    for t in range(1, n):
        picked[s] = True
        sim = (e[s : s + 1] @ e.T).numpy()[0]
        sim[picked] = np.inf
        s = int(np.argmin(sim))
        indices[t], distances[t] = s, 1.0 - float(sim[s])
    return Selection(indices, distances)
