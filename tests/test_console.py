"""The terminal shows airgen's own lines; engine output goes to OUT/engine.log; an engine failure is one clear line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHATTER = ("engine chatter on stdout", "engine chatter on stderr", "chatter from an engine process")


def run_cli(tmp_path: Path, engine: str, *extra: str) -> subprocess.CompletedProcess:
    data = tmp_path / "docs.jsonl"
    if not data.exists():
        data.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": f"document {i} " * 12}) + b"\n"
                                  for i in range(20)))
    cmd = [sys.executable, str(ROOT / "tests" / "scripted_cli.py"), "run", str(data), "--out", str(tmp_path / "out"),
           "--guidance-url", "http://127.0.0.1:9", "--student-url", "http://127.0.0.1:9", "--no-progress", *extra]
    return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "SCRIPTED_ENGINE": engine})


def test_engine_output_goes_to_the_log(tmp_path):
    done = run_cli(tmp_path, "chatty")
    assert done.returncode == 0, done.stderr
    terminal = done.stdout + done.stderr
    assert not any(c in terminal for c in CHATTER)
    assert "funnel:" in done.stderr and "engine.log" in done.stderr and "airgen report" in done.stderr
    log = (tmp_path / "out" / "engine.log").read_text()
    assert all(c in log for c in CHATTER)


def test_verbose_shows_the_engine_output(tmp_path):
    done = run_cli(tmp_path, "chatty", "-v")
    assert done.returncode == 0, done.stderr
    assert all(c in done.stdout + done.stderr for c in CHATTER)
    assert not (tmp_path / "out" / "engine.log").exists()


@pytest.mark.parametrize("verbose", [False, True])
def test_an_engine_failure_is_one_clear_line_and_the_run_resumes(tmp_path, verbose):
    done = run_cli(tmp_path, "failing", *(["-v"] if verbose else []))
    assert done.returncode == 1
    said = [line for line in done.stderr.splitlines() if line.startswith("airgen: the run stopped")]
    assert len(said) == 1 and "the engine core died" in said[0]
    assert "run the same command again to resume" in done.stderr
    if not verbose:
        assert "Traceback" not in done.stderr and "engine.log" in said[0]
        assert "Traceback" in (tmp_path / "out" / "engine.log").read_text()
    again = run_cli(tmp_path, "chatty")
    assert again.returncode == 0, again.stderr
    records = (tmp_path / "out" / "records.jsonl").read_bytes().splitlines()
    docs = {orjson.loads(r)["meta"]["doc_id"] for r in records}
    assert len(docs) == 20 and len(records) == len({(orjson.loads(r)["meta"]["doc_id"], orjson.loads(r)["meta"]["level"])
                                                    for r in records})
