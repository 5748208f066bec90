"""Append-only record of every finished call, and of every finished sample. Resume is replay.

One line per event through `files.AppendLog`: a SIGKILL leaves whole lines plus at most one torn last line, which
`load` cuts off. A call's line is written the moment it returns, so a killed process loses only the calls in flight.

Group commit, for a lost machine: a unit's done marker must never be on disk without its output lines, or the unit
would be counted finished with its records lost. Markers wait in memory; `commit` (about once a second, and at the
end) first makes the output files durable (`durable_first`: fsync), then writes the waiting markers and fsyncs the
journal. A power loss so loses at most the last second's calls and markers: their units are redone from what the
journal kept, their partial output lines removed first (`sink`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson

from airgen.method.calls import Completion, Refusal
from airgen.store.files import AppendLog, repair_tail


class JournalError(RuntimeError):
    pass


@dataclass
class Replay:
    """What a journal holds for a resumed run."""

    # unit -> call key -> its answer and the digest of what was asked (`calls.digest`; None in journals older than
    # digests), for units not finished yet: the latest line of a key wins (a call asked again after its request
    # changed).
    answers: dict[str, dict[str, tuple[Completion | Refusal, str | None]]]
    finished: set[str]  # unit ids (samples, input rejections) whose output lines are complete


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
    return Completion(e["t"], e["f"], e["p"], e["o"], e["c"], e.get("m", ""), e.get("th", ""), e.get("to", 0))


def load(path: Path) -> Replay:
    """The journal read in one pass, keeping the answers of unfinished units only (a unit's done marker comes
    after all its calls)."""
    finished: set[str] = set()
    open_units: dict[str, dict[str, tuple[Completion | Refusal, str | None]]] = {}
    for event in _events(path):
        if "done" in event:
            finished.add(event["done"])
            open_units.pop(event["done"], None)
        else:
            open_units.setdefault(event["s"], {})[event["k"]] = (completion(event), event.get("d"))
    return Replay(open_units, finished)


def load_all(path: Path) -> dict[str, Completion]:
    """Every journaled completion, finished samples included (benchmarks replay a whole run's engine work)."""
    return {e["k"]: completion(e) for e in _events(path) if "k" in e and "r" not in e}


class Journal:
    def __init__(self, path: Path, durable_first: Callable[[], None] = lambda: None):
        self._log = AppendLog(path)
        self._durable_first = durable_first
        self._done: list[dict[str, str]] = []  # markers waiting for their output lines to be durable

    def call(self, unit: str, key: str, c: Completion, ms: int = 0, asked: str | None = None) -> None:
        """`key`'s completion, for unit `unit` (the caller holds it: the key is not split again), how long the call
        took in milliseconds (`airgen trace` shows it) and the digest of what was asked (`calls.digest`)."""
        event = {"s": unit, "k": key, "t": c.text, "f": c.finish_reason, "p": c.prompt_tokens, "o": c.output_tokens,
                 "c": c.cached_tokens, "m": c.model, "ms": ms, "d": asked}
        if c.reasoning:  # a reasoning model's thinking, and its tokens (of "o")
            event.update(th=c.reasoning, to=c.reasoning_tokens)
        self._log.write(event)

    def refused(self, unit: str, key: str, reason: str, ms: int = 0, asked: str | None = None) -> None:
        self._log.write({"s": unit, "k": key, "r": reason, "ms": ms, "d": asked})

    def done(self, unit_id: str) -> None:
        """The unit's output lines are written: its marker goes out with the next `commit`, and a unit with a
        marker is never redone."""
        self._done.append({"done": unit_id})

    def commit(self) -> None:
        """The output lines made durable, then the markers that refer to them, then the journal."""
        if self._done:
            self._durable_first()
            done, self._done = self._done, []
            self._log.write(*done)
        self._log.sync()

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self._log.close()
