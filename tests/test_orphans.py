"""`airgen run` on the in-process engine, SIGKILLed at moments of its start-up and of its run: no process of the run
outlives it by more than a few seconds (an EngineCore left behind holds the memory the resumed run needs)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
MARK = "AIRGEN_TEST_RUN"


def of_the_run(mark: str) -> list[psutil.Process]:
    """Every living process that carries the run's mark in its environment (a process started by it inherits it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARK) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def engine_core(mark: str) -> bool:
    return any("EngineCore" in p.name() for p in of_the_run(mark))


def until(condition, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"airgen ended before the moment came: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "the moment did not come"
        time.sleep(0.05)


@pytest.mark.vllm
@pytest.mark.parametrize("moment", ["the engine process appears", "the model loads", "calls are answered"])
def test_a_run_killed_at_any_moment_leaves_no_process_behind(tmp_path, moment):
    pytest.importorskip("vllm")
    mark = uuid.uuid4().hex
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "airgen", "run", "--out", str(out), "--limit", "2",
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), MARK: mark})
    try:
        if moment == "calls are answered":
            journal = out / "journal.jsonl"
            until(lambda: journal.exists() and journal.stat().st_size > 0, 600, proc)
        else:
            until(lambda: engine_core(mark), 600, proc)
            if moment == "the model loads":
                time.sleep(3)
        assert len(of_the_run(mark)) >= 2  # airgen and what it started
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while of_the_run(mark) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [p.name() for p in of_the_run(mark)] == []
    finally:
        for p in of_the_run(mark):
            p.kill()
        proc.kill()
