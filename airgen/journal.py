"""Append-only record of every finished call, and of every finished sample. Resume is replay.

One orjson line per event, written with a single os.write on an O_APPEND descriptor: a SIGKILL leaves whole lines
plus at most one torn last line, which `load` cuts off. Completed calls are on disk the moment they return, so a
killed run loses only the calls that were in flight.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from airgen.calls import Completion


class JournalError(RuntimeError):
    pass


@dataclass
class Replay:
    """What a journal holds for a resumed run."""

    completions: dict[str, Completion]  # call key -> completion, for samples not finished yet
    finished: set[str]  # unit ids (samples, input rejections) whose output lines are complete
    calls: int  # calls on record, finished samples included


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def repair_tail(path: Path) -> None:
    """Cut a torn last line (a write interrupted by a kill) so that appends start on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline; lines are short relative to the file, so read in blocks.
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                f.truncate(start + i + 1)
                return
            pos = start
        f.truncate(0)


def _events(path: Path):
    repair_tail(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                raise JournalError(f"{path}:{n} is not a journal line; the journal is damaged beyond its last line") from None


def _completion(e: dict) -> Completion:
    return Completion(e["t"], e["f"], e["p"], e["o"], e["c"], e.get("m", ""))


def load(path: Path) -> Replay:
    finished: set[str] = set()
    calls: list[dict] = []
    for event in _events(path):
        if "done" in event:
            finished.add(event["done"])
        else:
            calls.append(event)
    completions = {e["k"]: _completion(e) for e in calls if e["s"] not in finished}
    return Replay(completions, finished, len(calls))


def load_all(path: Path) -> dict[str, Completion]:
    """Every journaled completion, finished samples included (benchmarks replay a whole run)."""
    return {e["k"]: _completion(e) for e in _events(path) if "k" in e}


class Journal:
    def __init__(self, path: Path):
        repair_tail(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def call(self, sample_id: str, key: str, c: Completion) -> None:
        self._write({"s": sample_id, "k": key, "t": c.text, "f": c.finish_reason, "p": c.prompt_tokens,
                     "o": c.output_tokens, "c": c.cached_tokens, "m": c.model})

    def done(self, unit_id: str) -> None:
        """Written after the unit's output lines: a unit with this marker is never redone."""
        self._write({"done": unit_id})

    def _write(self, event: dict) -> None:
        write_all(self._fd, orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))

    def close(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
