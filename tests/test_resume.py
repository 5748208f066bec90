"""Kill -9 a real `airgen run` process mid-way, rerun it: no record lost or duplicated, no finished call redone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from airgen.store import journal

ROOT = Path(__file__).resolve().parent.parent
N = 300


def airgen(out: Path, data: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests" / "scripted_cli.py"), "run", str(data), "--out", str(out),
           "--guidance-url", "http://127.0.0.1:9", "--student-url", "http://127.0.0.1:9", "--rounds", "3",
           "--no-progress", "--max-in-flight", "64", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


@pytest.fixture()
def data(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    with open(path, "wb") as f:
        for i in range(N):
            f.write(orjson.dumps({"id": f"d{i}", "text": f"document {i} about a topic " * 12}) + b"\n")
        f.write(b'{"text": broken json\n')
    return path


def test_kill_9_then_resume(tmp_path, data):
    out = tmp_path / "out"
    for _ in range(2):  # kill twice, at different points
        proc = airgen(out, data)
        deadline = time.monotonic() + 60
        target = 40 if not (out / "journal.jsonl").exists() else len(lines(out / "journal.jsonl")) + 400
        while time.monotonic() < deadline:
            path = out / "journal.jsonl"
            if path.exists() and path.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Tear the last line as a kill mid-write would.
    with open(out / "journal.jsonl", "ab") as f:
        f.write(b'{"s": "d1", "k": "d1/ans')
    proc = airgen(out, data)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    records = lines(out / "records.jsonl")
    assert Counter(r["meta"]["doc_id"] for r in records) == {f"d{i}": 3 for i in range(N)}
    assert len({(r["meta"]["doc_id"], r["meta"]["level"]) for r in records}) == 3 * N
    rejected = lines(out / "rejected.jsonl")
    assert [r["reason"] for r in rejected] == ["bad_json"]
    events = lines(out / "journal.jsonl")
    call_keys = [e["k"] for e in events if "k" in e]
    assert len(call_keys) == len(set(call_keys)), "a journaled call was asked again"
    assert sorted(e["done"] for e in events if "done" in e) == sorted([f"d{i}" for i in range(N)] +
                                                                      [r["unit"] for r in rejected])
    assert b"replayed" in err


def test_resume_refuses_changed_settings(tmp_path, data):
    out = tmp_path / "out"
    proc = airgen(out, data, "--limit", "3")
    assert proc.wait(timeout=60) == 0
    proc = airgen(out, data, "--limit", "3", "--set", "flow.judge=model")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert b"flow.judge: 'document' -> 'model'" in err


def test_torn_journal_line_is_cut(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"s":"a","k":"a/x/0","t":"hi","f":"stop","p":1,"o":1,"c":0}\n{"done":"b"}\n{"s":"a","k":"a/y')
    replay = journal.load(path)
    assert list(replay.answers) == ["a"] and list(replay.answers["a"]) == ["a/x/0"] and replay.finished == {"b"}
    assert path.read_bytes().endswith(b'{"done":"b"}\n')


def test_damaged_middle_of_journal_is_an_error(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b'{"done":"a"}\nnot json\n{"done":"b"}\n')
    with pytest.raises(journal.JournalError, match=":2"):
        journal.load(path)
