"""The run's output files. Each finished unit's lines go out in one write, before the journal marks it done.

- records.jsonl: one line per record (AIR: per sample and level), alpaca fields + chat `messages` + `meta`; each
  record's `meta.split` names the part of the dataset it belongs to (AIR: "level_K", a name `datasets` takes as a
  split; CRAB: "forward", "reverse").
- pairs.jsonl: preference pairs, where the recipe makes them (AIR with `flow.preference_pairs`): `prompt`, `chosen`,
  `rejected` and `meta`.
- rejected.jsonl: one line per document that produced no record (input problems included): `REJECTION_FIELDS`.
- dropped_levels.jsonl: levels of successful samples that produced no record, with stage and reason.
So documents read = samples with records + lines of rejected.jsonl, always.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Container

import orjson

from airgen.store.files import AppendLog, atomic_binary, repair_tail

RECORDS = "records.jsonl"
REJECTED = "rejected.jsonl"
DROPPED_LEVELS = "dropped_levels.jsonl"
PAIRS = "pairs.jsonl"
# Every rejected.jsonl, `airgen run`'s and `airgen select`'s alike: the document's id (null where none could be
# read), where it was read, the stage that rejected it, why, and the measured value where a rule measured one.
# `airgen run` adds "unit", the journal's name for the line (the id, or "@source" for an unreadable entry).
REJECTION_FIELDS = ("id", "source", "stage", "reason", "value")


def split_order(name: str) -> tuple[str, int]:
    """Sort key of split names: "level_2" before "level_10"."""
    m = re.fullmatch(r"(.*?)[-_]?(\d+)", name)
    return (m.group(1), int(m.group(2))) if m else (name, 0)


def rejection(doc_id: str | None, source: str, stage: str, reason: str, value: Any = None) -> dict[str, Any]:
    return dict(zip(REJECTION_FIELDS, (doc_id, source, stage, reason, value)))


def _unit(line: dict[str, Any]) -> str:
    return line["meta"]["doc_id"] if "meta" in line else line["unit"]


def _keep_finished(path: Path, finished: Container[str]) -> int:
    """Remove lines of units that the journal does not mark done: they are written again when the unit finishes.
    Streamed: the file is read once to see whether any line must go, and copied once only then. Returns the lines
    kept."""
    repair_tail(path)
    if not path.exists():
        return 0
    lines = keep = 0
    with open(path, "rb") as f:
        for raw in f:
            lines += 1
            keep += _unit(orjson.loads(raw)) in finished
    if keep == lines:
        return keep
    with open(path, "rb") as f, atomic_binary(path) as kept:
        for raw in f:
            if _unit(orjson.loads(raw)) in finished:
                kept.write(raw)
    return keep


class Sink:
    def __init__(self, out: Path, finished: Container[str], extra_meta: dict[str, Any]):
        self._logs = {}
        self.records_written = 0  # records.jsonl's lines, earlier runs' included
        for name in (RECORDS, PAIRS, REJECTED, DROPPED_LEVELS):
            kept = _keep_finished(out / name, finished)
            if name == RECORDS:
                self.records_written = kept
            if name != PAIRS:  # made on its first pair: a run without pairs has no pairs file
                self._logs[name] = AppendLog(out / name)
        self._out = out
        self._extra_meta = extra_meta

    def records(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            record["meta"].update(self._extra_meta)
        self._logs[RECORDS].write(*records)
        self.records_written += len(records)

    def pairs(self, pairs: list[dict[str, Any]]) -> None:
        if not pairs:
            return
        for pair in pairs:
            pair["meta"].update(self._extra_meta)
        if PAIRS not in self._logs:
            self._logs[PAIRS] = AppendLog(self._out / PAIRS)
        self._logs[PAIRS].write(*pairs)

    def rejected(self, unit: str, doc_id: str | None, source: str, stage: str, reason: str,
                 value: Any = None) -> None:
        self._logs[REJECTED].write({"unit": unit, **rejection(doc_id, source, stage, reason, value)})

    def dropped_levels(self, unit: str, drops: list[dict[str, Any]]) -> None:
        self._logs[DROPPED_LEVELS].write(*({"unit": unit, **d} for d in drops))

    def sync(self) -> None:
        """Every line written so far, on disk (before the journal marks their units done)."""
        for log in self._logs.values():
            log.sync()

    def close(self) -> None:
        for log in self._logs.values():
            log.close()
        self._logs.clear()
