"""Farthest-point sampling on the GPU: one fused Triton kernel per step, the steps replayed from a CUDA graph.

Count the bytes first. A step must read every embedding once: m x d x 2 bytes in fp16, 230 MB at m=300k, d=384,
about 60 us at 4 TB/s. Everything else must stay far below that: the running per-point max-similarity costs
8 bytes a point (read + write), the argmin nothing extra (it is fused), and the host never waits between steps.

One kernel launch = one step, fused:
  1. read the previous pick's index from device memory (no host round-trip),
  2. sim = E @ E[pick] for this program's rows (fp16/bf16 loads, fp32 accumulation),
  3. score = max(score, sim) (maxmin) or sim (last); picked rows hold +inf,
  4. argmin over the grid: each program reduces its rows to one packed (score, index) int64 key and does a single
     atomic_min; ties go to the lowest index because the index is the key's low half,
  5. the last program to finish advances the device-side step counter, so the same launch, captured once in a
     CUDA graph, performs step after step.
Run with TRITON_INTERPRET=1 and CPU tensors, the same kernel executes on the CPU (slowly), which is how the test
suite checks it on machines without a GPU.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from .fps_reference import fps_reference, random_unit_rows
from .selection import Selection, check_arguments

BLOCK_M = 64  # rows per tile: 64 x 128 fp16 = 16 KB in flight per iteration, enough loads to cover latency
BLOCK_D = 128  # columns per tile; d=384 (MiniLM) is three full tiles, no masked lanes
PROGRAMS_PER_SM = 4  # a few resident programs per SM hide memory latency; few programs keep atomics cheap
GRAPH_STEPS = 128  # launches per CUDA graph; replays beyond the last step are no-ops (the kernel checks n)
NO_KEY = tl.constexpr(2**63 - 1)  # larger than any real (score, index) key


@triton.jit
def _ordered_bits(x):
    # float32 -> int32 with the same order, so (score, index) fits one int64 that a single atomic_min compares.
    x = tl.where(x == 0.0, 0.0, x)  # -0.0 and +0.0 are equal scores: give them the same bits
    bits = x.to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: larger magnitude sorts lower


@triton.jit
def _tile_offsets(rows, cols, stride):
    # int64: at m x d >= 2**31 (5.6M rows of d=384) an int32 row offset wraps and reads another row.
    return rows.to(tl.int64)[:, None] * stride + cols[None, :]


@triton.jit
def fps_step_kernel(
    emb_ptr,  # (m, d) fp16/bf16, row stride `stride`
    score_ptr,  # (m,) fp32: max similarity to the picked set (maxmin) or to the last pick (last); picked = +inf
    keys_ptr,  # (n,) int64: keys[t] = packed (score, index) of pick t; keys[0] = start
    state_ptr,  # (2,) int32: [next step, programs finished in this step]
    m,
    d,
    n,
    stride,
    rows_per_program,
    LAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    step = tl.load(state_ptr)
    if step < n:
        prev = tl.load(keys_ptr + step - 1)
        s = prev & 0x7FFFFFFF  # the previous pick (indices are < 2**31)
        row_start = tl.program_id(0) * rows_per_program
        row_end = tl.minimum(row_start + rows_per_program, m)
        best = tl.full((), NO_KEY, tl.int64)
        for r0 in range(row_start, row_end, BLOCK_M):
            rows = r0 + tl.arange(0, BLOCK_M)
            live = rows < row_end
            acc = tl.zeros([BLOCK_M], dtype=tl.float32)
            for k0 in range(0, d, BLOCK_D):
                cols = k0 + tl.arange(0, BLOCK_D)
                # The pick's row is re-read per tile: 256 bytes from L1/L2, never from HBM after the first time.
                q = tl.load(emb_ptr + s * stride + cols, mask=cols < d, other=0.0).to(tl.float32)
                x = tl.load(
                    emb_ptr + _tile_offsets(rows, cols, stride),
                    mask=live[:, None] & (cols[None, :] < d),
                    other=0.0,
                )
                acc += tl.sum(x.to(tl.float32) * q[None, :], axis=1)
            old = tl.load(score_ptr + rows, mask=live, other=float("inf"))
            if LAST:
                new = tl.where(old == float("inf"), old, acc)
            else:
                new = tl.maximum(old, acc)
            new = tl.where(rows == s, float("inf"), new)
            tl.store(score_ptr + rows, new, mask=live)
            key = (_ordered_bits(new).to(tl.int64) << 32) | rows.to(tl.int64)
            best = tl.minimum(best, tl.min(tl.where(live, key, NO_KEY), axis=0))
        tl.atomic_min(keys_ptr + step, best)
        # acq_rel atomics: when the count reaches the grid size, every program has read `step` and added its key.
        if tl.atomic_add(state_ptr + 1, 1) == tl.num_programs(0) - 1:
            tl.store(state_ptr + 1, 0)
            tl.store(state_ptr, step + 1)


def fps_triton(embeddings: torch.Tensor, n: int, start: int, method: str = "maxmin") -> Selection:
    """Rows must be unit-norm; `embeddings` is an (m, d) fp16/bf16 tensor on the GPU (or on the CPU under
    TRITON_INTERPRET=1)."""
    if embeddings.dtype not in (torch.float16, torch.bfloat16) or embeddings.ndim != 2:
        raise ValueError(f"expected an (m, d) fp16 or bf16 tensor, got {tuple(embeddings.shape)} {embeddings.dtype}")
    emb = embeddings.contiguous()
    m, d = emb.shape
    check_arguments(m, n, start, method)
    if m >= 2**31:
        raise ValueError("more than 2**31 rows do not fit the packed (score, index) key")
    device = emb.device
    score = torch.full((m,), float("-inf"), dtype=torch.float32, device=device)
    keys = torch.full((n,), 2**63 - 1, dtype=torch.int64, device=device)
    keys[0] = start
    state = torch.tensor([1, 0], dtype=torch.int32, device=device)
    programs = _programs(m, device)
    rows_per_program = triton.cdiv(triton.cdiv(m, programs), BLOCK_M) * BLOCK_M
    grid = (triton.cdiv(m, rows_per_program),)

    def launch() -> None:
        fps_step_kernel[grid](
            emb, score, keys, state, m, d, n, emb.stride(0), rows_per_program,
            LAST=method == "last", BLOCK_M=BLOCK_M, BLOCK_D=BLOCK_D,
        )

    steps = n - 1
    if device.type == "cuda" and steps > 1:
        launch()  # compiles, and is step 1
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(min(GRAPH_STEPS, steps - 1)):
                launch()
        for _ in range(triton.cdiv(steps - 1, GRAPH_STEPS)):
            graph.replay()
    else:
        for _ in range(steps):
            launch()
    return _decode(keys.cpu().numpy())


def _programs(m: int, device: torch.device) -> int:
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        return max(1, min(triton.cdiv(m, BLOCK_M), sms * PROGRAMS_PER_SM))
    # Interpreter: several programs, so the cross-program argmin and the step counter are exercised too.
    return max(1, min(triton.cdiv(m, BLOCK_M), 4))


def _decode(keys: np.ndarray) -> Selection:
    high = (keys >> 32).astype(np.int32)
    bits = np.where(high < 0, high ^ np.int32(0x7FFFFFFF), high).astype(np.int32)
    distances = 1.0 - bits.view(np.float32).astype(np.float64)
    distances[0] = np.nan
    return Selection((keys & 0x7FFFFFFF).astype(np.int64), distances)


@triton.jit
def _offsets_probe(out_ptr, row0, stride, BLOCK: tl.constexpr):
    rows = row0 + tl.arange(0, BLOCK)
    cols = tl.arange(0, BLOCK)
    tl.store(out_ptr + tl.arange(0, BLOCK)[:, None] * BLOCK + cols[None, :], _tile_offsets(rows, cols, stride))


def check_offsets(row0: int = 6_000_000, stride: int = 384) -> None:
    """The kernel's element offsets are exact past 2**31 (row0 x stride = 2.3e9 by default); raises if not."""
    block = 16
    out = torch.empty((block, block), dtype=torch.int64, device="cuda" if torch.cuda.is_available() else "cpu")
    _offsets_probe[(1,)](out, row0, stride, BLOCK=block)
    rows, cols = np.arange(row0, row0 + block, dtype=np.int64), np.arange(block, dtype=np.int64)
    np.testing.assert_array_equal(out.cpu().numpy(), rows[:, None] * stride + cols[None, :])


def check(m: int = 300, d: int = 200, n: int = 40, method: str = "maxmin", seed: int = 0) -> None:
    """The kernel picks exactly the reference's rows and distances; raises AssertionError if not."""
    x = random_unit_rows(m, d, seed)
    want = fps_reference(x, n, start=seed % m, method=method)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    got = fps_triton(torch.from_numpy(x).to(device), n, start=seed % m, method=method)
    assert np.array_equal(got.indices, want.indices), f"{method}: picks differ\n{got.indices}\n{want.indices}"
    np.testing.assert_array_equal(got.distances, want.distances)


if __name__ == "__main__":
    for method in ("maxmin", "last"):
        check(method=method)
    check_offsets()
    print("fps_triton matches the reference")
