"""Every kind of bad input a user hands `airgen run`: each ends in a clear one-line error or in rejection lines with
their reasons, never a traceback and never a hang; documents read = documents with records + rejected, always."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parent.parent
TEXT = "a document about rivers and the towns along them " * 6


def make(tmp: Path, case: str) -> tuple[list[str], int | None]:
    """The command-line arguments for `case`, and how many entries it holds (None: the run must refuse it)."""
    def jsonl(name: str, rows: list) -> str:
        (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(tmp / name)

    if case == "empty file":
        (tmp / "e.jsonl").write_bytes(b"")
        return [str(tmp / "e.jsonl")], None
    if case == "binary file":
        (tmp / "b.jsonl").write_bytes(bytes(range(256)) * 8)
        return [str(tmp / "b.jsonl")], (bytes(range(256)) * 8).count(b"\n") + 1
    if case == "invalid UTF-8":
        (tmp / "u.jsonl").write_bytes(b'{"text": "caf\xe9"}\n' + orjson.dumps({"text": TEXT}) + b"\n")
        return [str(tmp / "u.jsonl")], 2
    if case == "a line that is not JSON":
        (tmp / "j.jsonl").write_text("not json\n" + json.dumps({"text": TEXT}) + "\n")
        return [str(tmp / "j.jsonl")], 2
    if case == "text of the wrong type":
        return [jsonl("t.jsonl", [{"text": 5}, {"text": ["a", "list"]}, {"text": None}, {"text": TEXT}])], 4
    if case == "a line without text":
        return [jsonl("m.jsonl", [{"id": "x", "body": TEXT}, {"text": TEXT}])], 2
    if case == "duplicate ids with different text":
        return [jsonl("d.jsonl", [{"id": "a", "text": TEXT}, {"id": "a", "text": TEXT + " and more"}])], 2
    if case == "a 50 MB document":
        return [jsonl("big.jsonl", [{"id": "big", "text": "word " * 10_000_000}])], 1
    if case == "20,000 tiny documents":
        return [jsonl("tiny.jsonl", [{"id": f"t{i}", "text": f"tiny {i}"} for i in range(20_000)]), "--rounds",
                "1"], 20_000
    if case == "a folder with a dangling link and a folder named x.txt":
        folder = tmp / "folder"
        (folder / "x.txt").mkdir(parents=True)
        (folder / "a.txt").write_text(TEXT)
        (folder / "gone.txt").symlink_to(tmp / "nowhere.txt")
        return [str(folder)], 3
    if case == "a path that does not exist":
        return [str(tmp / "missing.jsonl")], None
    ok = jsonl("ok.jsonl", [{"text": TEXT}])
    return {"a typo'd setting": [ok, "--set", "flow.roundz=3"], "--rounds -1": [ok, "--rounds", "-1"],
            "--rounds abc": [ok, "--rounds", "abc"], "--set run.limit=abc": [ok, "--set", "run.limit=abc"]}[case], None


CASES = ["empty file", "binary file", "invalid UTF-8", "a line that is not JSON", "text of the wrong type",
         "a line without text", "duplicate ids with different text", "a 50 MB document", "20,000 tiny documents",
         "a folder with a dangling link and a folder named x.txt", "a path that does not exist", "a typo'd setting",
         "--rounds -1", "--rounds abc", "--set run.limit=abc"]


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c == "20,000 tiny documents" else c
                                  for c in CASES])
def test_bad_input_ends_clearly(tmp_path, case):
    args, entries = make(tmp_path, case)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "tests" / "scripted_cli.py"), "run", *args, "--out", str(out),
           "--guidance-url", "http://127.0.0.1:9", "--student-url", "http://127.0.0.1:9", "--no-progress"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "Traceback" not in done.stderr + done.stdout
    if entries is None:
        assert done.returncode == 2
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("airgen"), done.stderr
        assert not (out / "records.jsonl").exists()
        return
    assert done.returncode == 0, done.stderr[-2000:]
    records = [orjson.loads(x) for x in (out / "records.jsonl").read_bytes().splitlines()]
    rejected = [orjson.loads(x) for x in (out / "rejected.jsonl").read_bytes().splitlines()]
    assert len({r["meta"]["doc_id"] for r in records}) + len(rejected) == entries
    assert all(r["stage"] and r["reason"] and r["source"] for r in rejected)
