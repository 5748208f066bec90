"""The run's output files. Each finished unit's lines go out in one write, before the journal marks it done.

- records.jsonl: one line per (sample, level), alpaca fields + chat `messages` + `meta`.
- rejected.jsonl: one line per document that produced no record (input problems included), with stage and reason.
- dropped_levels.jsonl: levels of successful samples that produced no record, with stage and reason.
So documents read = samples with records + lines of rejected.jsonl, always.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import orjson

from airgen.journal import repair_tail, write_all

RECORDS = "records.jsonl"
REJECTED = "rejected.jsonl"
DROPPED_LEVELS = "dropped_levels.jsonl"


def _unit(line: dict[str, Any]) -> str:
    return line["meta"]["doc_id"] if "meta" in line else line["unit"]


def _keep_finished(path: Path, finished: set[str]) -> None:
    """Remove lines of units that the journal does not mark done: they are written again when the unit finishes."""
    repair_tail(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        lines = f.readlines()
    kept = [line for line in lines if _unit(orjson.loads(line)) in finished]
    if len(kept) != len(lines):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, path)


class Sink:
    def __init__(self, out: Path, finished: set[str], extra_meta: dict[str, Any]):
        self._fds = {}
        for name in (RECORDS, REJECTED, DROPPED_LEVELS):
            _keep_finished(out / name, finished)
            self._fds[name] = os.open(out / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._extra_meta = extra_meta

    def records(self, records: Iterable[dict[str, Any]]) -> None:
        lines = []
        for record in records:
            record["meta"].update(self._extra_meta)
            lines.append(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        write_all(self._fds[RECORDS], b"".join(lines))

    def rejected(self, unit: str, doc_id: str | None, source: str, stage: str, reason: str, **extra: Any) -> None:
        line = {"unit": unit, "id": doc_id, "source": source, "stage": stage, "reason": reason, **extra}
        write_all(self._fds[REJECTED], orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS))

    def dropped_levels(self, unit: str, drops: list[dict[str, Any]]) -> None:
        if drops:
            write_all(self._fds[DROPPED_LEVELS],
                      b"".join(orjson.dumps({"unit": unit, **d}, option=orjson.OPT_APPEND_NEWLINE) for d in drops))

    def close(self) -> None:
        for fd in self._fds.values():
            os.fsync(fd)
            os.close(fd)
        self._fds.clear()
