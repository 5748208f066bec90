"""The embedded default for real: `airgen run` with the bundled corpus and bundled model through vLLM on the CPU."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from airgen.runtime.runner import plural

pytest.importorskip("vllm")
pytestmark = pytest.mark.vllm

ROOT = Path(__file__).resolve().parent.parent


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


DOCS = 6  # the bundled model rejects about a quarter at back-translation; six make a record-less run ~1e-3 likely


def test_default_run_end_to_end(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "airgen", "run", "--out", str(out), "--limit", str(DOCS), "--no-progress"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preset 'tiny'" in done.stderr and "funnel:" in done.stderr
    records = lines(out / "records.jsonl")
    rejected = lines(out / "rejected.jsonl")
    with_records = {r["meta"]["doc_id"] for r in records}
    assert len(with_records) + len(rejected) == DOCS, "every document read is accounted for"
    assert all(r["stage"] and r["reason"] for r in rejected)
    assert records, "the README's demo makes records"
    assert f"{plural(len(records), 'record')} from {plural(len(with_records), 'document')}" in done.stderr
    for record in records:
        assert record["instruction"].strip() and record["output"].strip() and record["input"] == ""
        assert record["meta"]["models"]["guidance"] and record["meta"]["constraints"]
        assert record["messages"][1]["content"] == record["output"]
    events = lines(out / "journal.jsonl")
    stages = {e["k"].split("/")[-2] for e in events if "k" in e}
    # Every stage a record passes through, the check step included.
    assert {"back_translate", "score", "refine", "answer", "propose", "answer_with", "check", "merge",
            "respond"} <= stages
    assert {e["done"] for e in events if "done" in e} == with_records | {r["unit"] for r in rejected}
    assert sum(e["p"] for e in events if "k" in e) > 0 and sum(e["o"] for e in events if "k" in e) > 0


def test_crab_on_the_embedded_model(tmp_path):
    """CRAB on the bundled pairs with the bundled model: every step runs, every pair is accounted for."""
    out = tmp_path / "crab"
    cmd = [sys.executable, "-m", "airgen", "run", "--recipe", "crab", "--out", str(out), "--limit", "2",
           "--no-progress"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "preset 'tiny'" in done.stderr and "pairs" in done.stderr
    records, rejected = lines(out / "records.jsonl"), lines(out / "rejected.jsonl")
    assert len({r["meta"]["doc_id"] for r in records}) + len(rejected) == 2
    for record in records:
        assert record["meta"]["kind"] in ("forward", "reverse") and record["meta"]["constraints"]
        assert record["meta"]["models"]["guidance"] and record["messages"][1]["content"] == record["output"]
    stages = {e["k"].split("/")[-2] for e in lines(out / "journal.jsonl") if "k" in e}
    assert {"refine_instruction", "propose_global", "propose_local", "check_constraint"} <= stages


def test_two_ray_workers_on_the_embedded_model(tmp_path):
    """`airgen run --ray --workers 2` on the bundled model: each worker starts its own in-process engine."""
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "airgen", "run", "--out", str(out), "--limit", "2", "--ray", "--workers", "2",
           "--no-progress", "--set", "guidance.kv_cache_gib=1", "--set", "student.kv_cache_gib=1"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 Ray workers" in done.stderr
    records, rejected = lines(out / "records.jsonl"), lines(out / "rejected.jsonl")
    assert len({r["meta"]["doc_id"] for r in records}) + len(rejected) == 2
    shards = [lines(out / "shards" / str(k) / "journal.jsonl") for k in (0, 1)]
    assert sum(len(s) for s in shards) == len(lines(out / "journal.jsonl")) > 0
