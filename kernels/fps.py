"""Cosine farthest-point sampling (the AIR paper's Algorithm 1): the one entry point, choosing GPU or CPU.

Each step adds the row whose highest cosine similarity to the picked set is lowest ("maxmin"; on unit rows the
same as max-min Euclidean distance), or, with method="last", the row least similar to the previous pick only
(Algorithm 1 as literally written). Ties go to the lowest index on every path, so the paths pick the same rows.
"""
from __future__ import annotations

import numpy as np
import torch

from .fps_cpu import fps_cpu
from .selection import Selection, check_arguments

DEVICES = ("auto", "cpu", "cuda")
_NORM_TOLERANCE = 1e-2  # fp16 storage rounds norms by ~1e-3; anything further off was never normalised
_CHUNK_ROWS = 65536


def farthest_point_sampling(
    embeddings,
    n: int,
    *,
    start: int | None = None,
    seed: int = 0,
    method: str = "maxmin",
    device: str = "auto",
) -> Selection:
    """Pick `n` rows of `embeddings` (unit-norm rows; numpy array, memmap or torch tensor).

    `start` is the first pick; None draws it from `seed` (the paper starts from a random document).
    `device`: "auto" uses the Triton kernel when a CUDA GPU is present, else the CPU path.
    """
    device = resolve_device(device)
    if len(embeddings.shape) != 2:
        raise ValueError(f"embeddings must be a 2-D matrix (rows = documents), got shape {tuple(embeddings.shape)}")
    m = embeddings.shape[0]
    if start is None and m > 0:
        start = int(np.random.default_rng(seed).integers(m))
    check_arguments(m, n, start if start is not None else 0, method)
    check_unit_rows(embeddings)
    if device == "cpu":
        return fps_cpu(embeddings, n, start, method)
    from .fps_triton import fps_triton  # deferred: importing triton is slow and only the GPU path needs it

    return fps_triton(to_device_half(embeddings, "cuda"), n, start, method)


def resolve_device(device: str) -> str:
    """"cpu" or "cuda" for a device setting: "auto" is the GPU when torch sees one; "cuda" without one is an error."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no CUDA GPU")
    return device


def check_unit_rows(embeddings) -> None:
    """Cosine similarity is computed as a dot product, so every row must be unit-norm (and finite)."""
    for lo in range(0, embeddings.shape[0], _CHUNK_ROWS):
        chunk = embeddings[lo : lo + _CHUNK_ROWS]
        chunk = chunk.float().cpu().numpy() if isinstance(chunk, torch.Tensor) else np.asarray(chunk, np.float32)
        norms = np.linalg.norm(chunk, axis=1)
        bad = np.flatnonzero(~(np.abs(norms - 1.0) <= _NORM_TOLERANCE))  # the negation also catches NaN
        if bad.size:
            row = lo + int(bad[0])
            raise ValueError(f"row {row} has norm {norms[bad[0]]:.4g}; rows must be unit-norm (normalise them first)")


def to_device_half(embeddings, device: str) -> torch.Tensor:
    """fp16 (bf16 stays bf16) on `device`, copied slice by slice so the host never holds a second full copy."""
    if isinstance(embeddings, torch.Tensor) and embeddings.dtype in (torch.float16, torch.bfloat16):
        return embeddings.to(device).contiguous()
    out = torch.empty(tuple(embeddings.shape), dtype=torch.float16, device=device)
    for lo in range(0, embeddings.shape[0], _CHUNK_ROWS):
        chunk = embeddings[lo : lo + _CHUNK_ROWS]
        chunk = chunk if isinstance(chunk, torch.Tensor) else torch.from_numpy(np.asarray(chunk))
        out[lo : lo + _CHUNK_ROWS] = chunk.to(device=device, dtype=torch.float16)
    return out
