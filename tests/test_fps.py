"""Farthest-point sampling: every path picks the float64 reference's rows, ties go to the lowest index."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from airgen_kernels import farthest_point_sampling
from airgen_kernels.fps_cpu import fps_cpu
from airgen_kernels.fps_reference import fps_reference, random_unit_rows

# (m, d, n, seed): several shapes, d both below and above one 128-column tile, n up to m.
SHAPES = [(400, 384, 60, 0), (1000, 64, 200, 1), (257, 130, 257, 2), (50, 8, 12, 3)]


@pytest.mark.parametrize("method", ["maxmin", "last"])
@pytest.mark.parametrize("m,d,n,seed", SHAPES)
def test_cpu_path_picks_the_reference_rows(m, d, n, seed, method):
    x = random_unit_rows(m, d, seed)
    want = fps_reference(x, n, seed, method)
    got = farthest_point_sampling(x, n, start=seed, method=method, device="cpu")
    # Exact: on these inputs every float32 dot product is exact (see random_unit_rows).
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.distances, want.distances)
    assert np.isnan(got.distances[0])


@pytest.mark.parametrize("block", [1, 2, 7, 1000])
def test_cpu_block_size_changes_speed_not_picks(block):
    x = random_unit_rows(600, 48, seed=4)
    want = fps_reference(x, 300, 5, "maxmin")
    np.testing.assert_array_equal(fps_cpu(x, 300, 5, "maxmin", block=block).indices, want.indices)


def test_cpu_path_reads_a_float16_memmap(tmp_path):
    x = random_unit_rows(300, 32, seed=5)
    np.save(tmp_path / "e.npy", x)
    mapped = np.load(tmp_path / "e.npy", mmap_mode="r")
    want = fps_reference(x, 40, 0, "maxmin")
    np.testing.assert_array_equal(farthest_point_sampling(mapped, 40, start=0, device="cpu").indices, want.indices)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["maxmin", "last"])
@pytest.mark.parametrize("m,d,n,seed", SHAPES + [(20000, 384, 500, 6)])
def test_gpu_path_picks_the_reference_rows(m, d, n, seed, method):
    x = random_unit_rows(m, d, seed)
    want = fps_reference(x, n, seed, method)
    got = farthest_point_sampling(x, n, start=seed, method=method, device="cuda")
    np.testing.assert_array_equal(got.indices, want.indices)
    np.testing.assert_array_equal(got.distances, want.distances)


def test_triton_kernel_under_the_interpreter_picks_the_reference_rows():
    # TRITON_INTERPRET must be set before triton is imported, so the kernel runs in its own interpreter.
    # Shapes cover: masked columns (d=40), two column tiles (d=200), several row tiles per program (m=600); then
    # the element offsets past 2**31, which a full-size matrix (9 GB at 6M rows) could not show here.
    cases = [
        {"m": 150, "d": 40, "n": 25, "seed": 1, "method": "maxmin"},
        {"m": 150, "d": 40, "n": 25, "seed": 1, "method": "last"},
        {"m": 200, "d": 200, "n": 20, "seed": 2, "method": "maxmin"},
        {"m": 600, "d": 40, "n": 12, "seed": 3, "method": "maxmin"},
    ]
    script = (
        "import json, sys\n"
        "from airgen_kernels.fps_triton import check, check_offsets\n"
        "for case in json.loads(sys.argv[1]):\n"
        "    check(**case)\n"
        "check_offsets()\n"
        "print('checked', len(json.loads(sys.argv[1])))\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"checked {len(cases)}" in done.stdout


def _circle_case() -> np.ndarray:
    # A and a near-copy A', its opposite B, and C at right angles to both A and B.
    deg = np.deg2rad(10)
    return np.array([[1, 0], [-1, 0], [np.cos(deg), np.sin(deg)], [0, 1]], dtype=np.float32)


@pytest.mark.parametrize("path", ["reference", "cpu"])
def test_last_compares_only_to_the_previous_pick(path):
    x = _circle_case()

    def pick(method):
        if path == "reference":
            return fps_reference(x, 3, 0, method).indices.tolist()
        return farthest_point_sampling(x, 3, start=0, method=method, device="cpu").indices.tolist()

    # Both take B (opposite A) second. Then maxmin wants C, far from A and B; `last` only looks at B, so it takes
    # A', the point nearest the first pick: exactly the redundancy max-min is there to avoid.
    assert pick("maxmin") == [0, 1, 3]
    assert pick("last") == [0, 1, 2]


@pytest.mark.parametrize("method", ["maxmin", "last"])
def test_ties_go_to_the_lowest_index_and_picks_never_repeat(method):
    e = np.eye(4, dtype=np.float32)
    x = np.stack([e[0], e[1], e[1], e[2]])  # rows 1 and 2 are the same point
    for path in ("reference", "cpu"):
        got = (fps_reference(x, 4, 0, method) if path == "reference"
               else farthest_point_sampling(x, 4, start=0, method=method, device="cpu"))
        picks = got.indices.tolist()
        assert picks[1] == 1, f"{path}: rows 1..3 tie at similarity 0 to row 0; the lowest index goes first"
        assert sorted(picks) == [0, 1, 2, 3], f"{path}: a picked row came back: {picks}"
    assert fps_reference(x, 4, 0, "maxmin").indices.tolist() == [0, 1, 3, 2]


def test_maxmin_distances_never_grow():
    # The distance of each new pick to the set is the largest remaining one, and the set only grows.
    got = farthest_point_sampling(random_unit_rows(2000, 64, seed=7), 300, start=0, device="cpu")
    assert np.all(np.diff(got.distances[1:]) <= 1e-6)


def test_start_is_drawn_from_the_seed():
    x = random_unit_rows(500, 16, seed=8)
    first = [farthest_point_sampling(x, 2, seed=s, device="cpu").indices[0] for s in range(5)]
    assert first == [farthest_point_sampling(x, 2, seed=s, device="cpu").indices[0] for s in range(5)]
    assert len(set(first)) > 1


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"n": 11}, "cannot pick 11 of 10"),
        ({"n": 0}, "cannot pick 0"),
        ({"n": 3, "start": 10}, "start row 10"),
        ({"n": 3, "method": "mean"}, "unknown method"),
        ({"n": 3, "device": "tpu"}, "unknown device"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        farthest_point_sampling(random_unit_rows(10, 4), **kwargs)


def test_rows_must_be_unit_norm():
    x = random_unit_rows(10, 4).astype(np.float32)
    x[3] *= 2
    with pytest.raises(ValueError, match="row 3 has norm 2"):
        farthest_point_sampling(x, 3, device="cpu")
    x[3] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        farthest_point_sampling(x, 3, device="cpu")
