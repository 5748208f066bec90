"""`airgen run --ray` on a local Ray with scripted engines: the same records as one process for 1, 2 and 3 workers,
a worker that dies is restarted and resumes its shard, a killed driver's rerun finishes the run, and a resume with
another number of workers is refused."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a real local Ray cluster per test

ROOT = Path(__file__).resolve().parent.parent
DOCS = 40


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


@pytest.fixture()
def docs(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(DOCS)) + b"{not json\n")
    return path


def airgen(docs: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests" / "scripted_cli.py"), "run", str(docs), "--out", str(out),
           "--guidance-url", "http://127.0.0.1:9", "--student-url", "http://127.0.0.1:9", "--rounds", "2",
           "--no-progress", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", **(env or {})})


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    return err.decode()


def outputs(out: Path) -> tuple[list, list, list]:
    records = sorted(((r["meta"]["doc_id"], r["meta"]["level"], r["instruction"], r["output"])
                      for r in lines(out / "records.jsonl")))
    rejected = sorted((r["unit"], r["stage"], r["reason"]) for r in lines(out / "rejected.jsonl"))
    dropped = sorted(orjson.dumps(d) for d in lines(out / "dropped_levels.jsonl"))
    return records, rejected, dropped


def test_any_number_of_workers_makes_the_records_of_one_process(tmp_path, docs):
    finish(airgen(docs, tmp_path / "one"))
    single = outputs(tmp_path / "one")
    assert len(single[0]) == 2 * DOCS and len(single[1]) == 1
    for workers in (1, 2, 3):
        out = tmp_path / f"ray{workers}"
        err = finish(airgen(docs, out, "--ray", "--workers", str(workers)))
        assert f"{workers} Ray workers" in err and "Traceback" not in err
        assert outputs(out) == single
        shards = [lines(out / "shards" / str(k) / "records.jsonl") for k in range(workers)]
        assert sum(len(s) for s in shards) == 2 * DOCS
        status = orjson.loads((out / "status.json").read_bytes())  # the shards' summed
        assert status["state"] == "finished" and status["records"] == 2 * DOCS
        assert status["samples"]["finished"] == DOCS + 1 and len(status["summary"]["shards"]) == workers
        # A document's calls all live in one shard's journal.
        owners = {}
        for k in range(workers):
            for e in lines(out / "shards" / str(k) / "journal.jsonl"):
                assert owners.setdefault(e.get("s") or e.get("done"), k) == k


def test_a_dead_worker_is_restarted_and_resumes_its_shard(tmp_path, docs):
    finish(airgen(docs, tmp_path / "one"))
    out = tmp_path / "out"
    mark = tmp_path / "died"
    err = finish(airgen(docs, out, "--ray", "--workers", "2",
                        env={"SCRIPTED_DIE_AFTER": "60", "SCRIPTED_DIE_MARK": str(mark)}))
    assert mark.exists(), "a worker died mid-run"
    restarted = [line for line in err.splitlines() if "starting it again, 1 of 3" in line]
    assert len(restarted) == 1 and "died (" in restarted[0], err  # the driver says it, and why
    assert outputs(out) == outputs(tmp_path / "one")
    for k in range(2):
        keys = [e["k"] for e in lines(out / "shards" / str(k) / "journal.jsonl") if "k" in e]
        assert len(keys) == len(set(keys)), "a journaled call was asked again"


def test_a_worker_that_dies_at_every_start_stops_the_run_after_its_restarts(tmp_path, docs):
    proc = airgen(docs, tmp_path / "out", "--ray", "--workers", "2", "--set", "run.ray_restarts=2",
                  env={"SCRIPTED_DIE_AT_START": "1"})
    _, err = proc.communicate(timeout=300)
    err = err.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    restarts = [line for line in err.splitlines() if "starting it again" in line]
    assert 2 <= len(restarts) <= 4, err  # each worker's until one of them is past the bound
    stopped = [line for line in err.splitlines() if line.startswith("airgen: the run stopped")]
    assert len(stopped) == 1 and "died 3 times (run.ray_restarts = 2)" in stopped[0], err
    assert all("the engine ran out of memory while loading" in line for line in restarts + stopped)  # its words


def test_a_killed_driver_reruns_to_the_same_records_and_keeps_its_split(tmp_path, docs):
    finish(airgen(docs, tmp_path / "one"))
    out = tmp_path / "out"
    proc = airgen(docs, out, "--ray", "--workers", "2", env={"SCRIPTED_LATENCY_S": "0.05"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        journals = list((out / "shards").glob("*/journal.jsonl")) if (out / "shards").exists() else []
        if sum(p.read_bytes().count(b"\n") for p in journals) >= 40:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    refused = airgen(docs, out, "--ray", "--workers", "3")
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2 and b"resume it with --workers 2" in err
    err = finish(airgen(docs, out, "--ray", "--workers", "2"))
    assert outputs(out) == outputs(tmp_path / "one")
    assert len(lines(out / "records.jsonl")) == 2 * DOCS  # merged once, however often the driver ran


def test_select_on_ray_embeds_the_same_matrix_and_picks_the_same_documents(tmp_path):
    pytest.importorskip("sentence_transformers")
    import random

    import numpy as np

    words = "river forest harbor market school engine garden winter summer music".split()
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": " ".join(random.Random(i).choices(words, k=60))
                                            + f" item {i}"}) + b"\n" for i in range(200)))

    def select(out: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "airgen", "select", str(docs), "--out", str(out), "--n", "50", "--device", "cpu",
               "--no-dedup", "--batch-size", "8", *extra]  # 8 x 16 = 128 documents a chunk: both workers get some
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"})
        assert done.returncode == 0, done.stderr[-2000:]

    select(tmp_path / "one")
    select(tmp_path / "ray", "--ray", "--workers", "2")
    assert (tmp_path / "ray" / "manifest.jsonl").read_bytes() == (tmp_path / "one" / "manifest.jsonl").read_bytes()
    assert np.array_equal(np.load(tmp_path / "ray" / "embeddings.npy"), np.load(tmp_path / "one" / "embeddings.npy"))
