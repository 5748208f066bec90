"""`airgen run` on the in-process engine, SIGKILLed at moments of its start-up and of its run: no process of the run
outlives it by more than a few seconds (an EngineCore left behind holds the memory the resumed run needs)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


class Tree:
    """Every process `root` starts, noted while it lives (vLLM's processes retitle themselves, so they are known by
    descent, not by name)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[int, psutil.Process] = {}

    def look(self) -> None:
        try:
            for proc in psutil.Process(self.root).children(recursive=True):
                self.seen.setdefault(proc.pid, proc)
        except psutil.Error:
            pass

    def titles(self) -> list[str]:
        return [" ".join(p.cmdline()) for p in self.alive()]

    def alive(self) -> list[psutil.Process]:
        found = {}
        for proc in self.seen.values():
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
                    found.update((c.pid, c) for c in proc.children(recursive=True))
            except psutil.Error:
                pass
        return list(found.values())


def until(condition, tree: Tree, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        tree.look()
        assert proc.poll() is None, f"airgen ended before the moment came: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "the moment did not come"
        time.sleep(0.05)
    tree.look()


@pytest.mark.vllm
@pytest.mark.parametrize("moment", ["the engine process starts", "the model loads", "calls are answered"])
def test_a_run_killed_at_any_moment_leaves_no_process_behind(tmp_path, moment):
    pytest.importorskip("vllm")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "airgen", "run", "--out", str(out), "--limit", "2",
                             "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    tree = Tree(proc.pid)
    try:
        if moment == "calls are answered":
            journal = out / "journal.jsonl"
            until(lambda: journal.exists() and journal.stat().st_size > 0, tree, proc)
        elif moment == "the engine process starts":  # spawned, not yet its own title
            until(lambda: any("spawn_main" in t for t in tree.titles()), tree, proc)
        else:
            until(lambda: any("EngineCore" in t for t in tree.titles()), tree, proc)
            time.sleep(3)
            tree.look()
        assert len(tree.alive()) >= 2  # the engine's processes and the guard
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while tree.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tree.titles() == []
    finally:
        for p in tree.alive():
            p.kill()
        proc.kill()
