"""Helpers for tests that run `airgen` as a user does, in a process of its own, on scripted engines
(`tests/scripted_cli.py`): documents to read, the command, and a run folder's records to compare."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
SCRIPTED = ROOT / "tests" / "scripted_cli.py"


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def documents(path: Path, n: int) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(n)))
    return path


def pairs_jsonl(path: Path, n: int) -> Path:
    """`n` instruction-response pairs for CRAB, responses of 1 to 4 sentences and a list."""
    path.write_bytes(b"".join(
        orjson.dumps({"id": f"p{i}", "instruction": f"Question {i}?",
                      "output": f"Answer {i}. " + "It explains the steps, the reasons and the common mistakes. "
                      * (1 + i % 4) + "\n- First step.\n- Second step."}) + b"\n" for i in range(n)))
    return path


def airgen(*args: str) -> list[str]:
    """An `airgen` command whose runs answer with scripted engines."""
    return [sys.executable, str(SCRIPTED), *args]


def command(docs: Path, out: Path, *extra: str) -> list[str]:
    """`airgen run` on scripted engines (the URLs are never asked), 2 rounds."""
    return airgen("run", str(docs), "--out", str(out), "--guidance-url", "http://127.0.0.1:9", "--student-url",
                  "http://127.0.0.1:9", "--rounds", "2", "--no-progress", *extra)


def env(**values: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), **values}


def run(args: list[str], timeout: float = 300, **values: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env(**values))


def start(args: list[str], **values: str) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env(**values))


def records(out: Path) -> list[tuple]:
    """A run's records as (unit, level or split, instruction, output), sorted: equal for equal runs."""
    return sorted((r["meta"]["doc_id"], r["meta"].get("level", r["meta"]["split"]), r["instruction"], r["output"])
                  for r in lines(out / "records.jsonl"))
