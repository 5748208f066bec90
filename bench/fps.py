"""Farthest-point sampling: the authors' algorithm against our CPU path and (with a GPU) our Triton kernel.

    python bench/fps.py [--m 50000] [--n 5000] [--d 384] [--authors-steps 40]

The authors' loop is slow (tenths of a second a step at m=50k), so by default it runs `--authors-steps` steps and
its full time is extrapolated; the output says so. Inputs are random unit rows stored as float16, as `airgen select`
stores embeddings. Targets: CPU path >= 20x the authors'; GPU within 1.5x of the memory-bandwidth bound
n * m * d * 2 bytes / (measured device copy bandwidth).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from airgen_kernels import farthest_point_sampling
from airgen_kernels.fps_reference import fps_reference, random_unit_rows

GPU_M, GPU_N = 300_000, 60_000


def authors_maxmin(x: np.ndarray, steps: int) -> list[int]:
    """The authors' selection as their code does it: Euclidean distances on the raw float64 embeddings, start at
    row 0, and every step deletes the picked row from the remaining arrays (an O(m) copy per step)."""
    rest = x
    ids = np.arange(len(rest))
    picked = [0]
    last = rest[0]
    rest, ids = np.delete(rest, 0, axis=0), np.delete(ids, 0)
    nearest = np.linalg.norm(rest - last, axis=1)
    for _ in range(steps):
        j = int(np.argmax(nearest))
        picked.append(int(ids[j]))
        last = rest[j]
        rest, ids, nearest = np.delete(rest, j, axis=0), np.delete(ids, j), np.delete(nearest, j)
        nearest = np.minimum(nearest, np.linalg.norm(rest - last, axis=1))
    return picked


def time_authors(x: np.ndarray, n: int, steps: int) -> tuple[float, bool, list[int]]:
    """Seconds for n picks (extrapolated from `steps` steps when fewer than n - 1), whether extrapolated, picks."""
    steps = min(steps, n - 1)
    x = unit_float64(x)  # they hold unit-norm float64 rows already (parsed from JSON lists): not timed
    clock = time.perf_counter()
    picks = authors_maxmin(x, steps)
    seconds = time.perf_counter() - clock
    if steps < n - 1:
        # A step costs in proportion to the rows left: scale by the mean rows left over the full run.
        m = len(x)
        seconds *= (n - 1) / steps * (m - n / 2) / (m - steps / 2)
    return seconds, steps < n - 1, picks


def unit_float64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def time_ours(x, n: int, device: str) -> tuple[float, np.ndarray]:
    farthest_point_sampling(x, min(n, 64), start=0, device=device)  # thread pools, kernel compile: not timed
    if device == "cuda":
        torch.cuda.synchronize()
    clock = time.perf_counter()
    picks = farthest_point_sampling(x, n, start=0, device=device).indices
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - clock, picks


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second: the practical ceiling of a streaming kernel."""
    src = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    repeats = 20
    clock = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * src.numel() * repeats / (time.perf_counter() - clock)


def gpu_at_scale(d: int) -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(GPU_M, d, device="cuda", generator=g)
    x = (x / x.norm(dim=1, keepdim=True)).half()
    bandwidth = copy_bandwidth()
    seconds, _ = time_ours(x, GPU_N, "cuda")
    moved = GPU_N * GPU_M * d * 2
    bound = moved / bandwidth
    print(f"\nGPU at m={GPU_M:,} n={GPU_N:,} d={d}: {seconds:.2f} s, {moved / seconds / 1e12:.2f} TB/s achieved; "
          f"copy bandwidth {bandwidth / 1e12:.2f} TB/s -> bound {bound:.2f} s; {seconds / bound:.2f}x the bound "
          f"(target <= 1.5x: {'met' if seconds / bound <= 1.5 else 'MISSED'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=50_000)
    parser.add_argument("--n", type=int, default=5_000)
    parser.add_argument("--d", type=int, default=384)
    parser.add_argument("--authors-steps", type=int, default=40, help="steps of the authors' loop actually run")
    args = parser.parse_args()
    x = random_unit_rows(args.m, args.d, seed=0)
    print(f"farthest-point sampling, m={args.m:,} n={args.n:,} d={args.d}, random unit rows (fp16 storage), "
          f"torch threads={torch.get_num_threads()}")

    authors, extrapolated, authors_picks = time_authors(x, args.n, args.authors_steps)
    rows = [("authors (numpy float64, delete per step)", authors, extrapolated)]
    cpu, cpu_picks = time_ours(x, args.n, "cpu")
    rows.append(("ours, CPU (float32, blocked)", cpu, False))
    gpu_picks = None
    if torch.cuda.is_available():
        gpu, gpu_picks = time_ours(x, args.n, "cuda")
        rows.append((f"ours, GPU Triton ({torch.cuda.get_device_name()})", gpu, False))

    print(f"{'path':<48}{'seconds':>12}{'vs authors':>12}")
    for name, seconds, estimated in rows:
        mark = "*" if estimated else ""
        print(f"{name:<48}{seconds:>11.2f}{mark:1}{authors / seconds:>11.1f}x")
    if extrapolated:
        print(f"* extrapolated from {len(authors_picks) - 1} steps (scaled by the rows left per step)")
    # Same algorithm: on the same unit float64 rows, our reference (cosine) picks what their loop (Euclidean) picks.
    same = fps_reference(unit_float64(x), len(authors_picks), 0).indices.tolist() == authors_picks
    print(f"CPU vs authors: {authors / cpu:.1f}x (target >= 20x: {'met' if authors / cpu >= 20 else 'MISSED'}); "
          f"their first {len(authors_picks)} picks equal our reference's on the same rows: {'yes' if same else 'NO'}")
    if gpu_picks is not None:
        print(f"GPU and CPU pick the same {args.n} rows: {'yes' if np.array_equal(gpu_picks, cpu_picks) else 'NO'}")
        gpu_at_scale(args.d)


if __name__ == "__main__":
    main()
