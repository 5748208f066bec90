"""Append-only record of every finished call, and of every finished sample. Resume is replay.

One line per event through `files.AppendLog`: a SIGKILL leaves whole lines plus at most one torn last line, which
`load` cuts off. Completed calls are on disk the moment they return, so a killed run loses only the calls that were
in flight.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

from airgen.calls import Completion, Refusal
from airgen.files import AppendLog, repair_tail


class JournalError(RuntimeError):
    pass


@dataclass
class Replay:
    """What a journal holds for a resumed run."""

    completions: dict[str, Completion | Refusal]  # call key -> its answer, for samples not finished yet
    finished: set[str]  # unit ids (samples, input rejections) whose output lines are complete
    calls: int  # calls on record, finished samples included


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


def completion(e: dict) -> Completion | Refusal:
    if "r" in e:
        return Refusal(e["r"])
    return Completion(e["t"], e["f"], e["p"], e["o"], e["c"], e.get("m", ""))


def load(path: Path) -> Replay:
    finished: set[str] = set()
    calls: list[dict] = []
    for event in _events(path):
        if "done" in event:
            finished.add(event["done"])
        else:
            calls.append(event)
    completions = {e["k"]: completion(e) for e in calls if e["s"] not in finished}
    return Replay(completions, finished, len(calls))


def load_all(path: Path) -> dict[str, Completion]:
    """Every journaled completion, finished samples included (benchmarks replay a whole run's engine work)."""
    return {e["k"]: completion(e) for e in _events(path) if "k" in e and "r" not in e}


class Journal:
    def __init__(self, path: Path):
        self._log = AppendLog(path)

    def call(self, unit: str, key: str, c: Completion, ms: int = 0) -> None:
        """`key`'s completion, for unit `unit` (the caller holds it: the key is not split again), and how long the
        call took in milliseconds (`airgen trace` shows it)."""
        self._log.write({"s": unit, "k": key, "t": c.text, "f": c.finish_reason, "p": c.prompt_tokens,
                         "o": c.output_tokens, "c": c.cached_tokens, "m": c.model, "ms": ms})

    def refused(self, unit: str, key: str, reason: str, ms: int = 0) -> None:
        self._log.write({"s": unit, "k": key, "r": reason, "ms": ms})

    def done(self, unit_id: str) -> None:
        """Written after the unit's output lines: a unit with this marker is never redone."""
        self._log.write({"done": unit_id})

    def close(self) -> None:
        self._log.close()
