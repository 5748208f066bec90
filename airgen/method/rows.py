"""The reading layer every recipe's reader stands on: JSON Lines and Parquet rows streamed one line (or one batch) at
a time, stable content ids, and the rule that no entry vanishes: what cannot be read comes out as a `Rejection`
saying where, which rule and what was seen. `corpus` reads documents on it, `crab.pairs` instruction-response pairs.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

JSONL_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)
_PARQUET_BATCH_ROWS = 1024


class CorpusError(ValueError):
    """Input that cannot be read at all (missing path, unknown format); the message says which and why."""


@dataclass(frozen=True, slots=True)
class Rejection:
    id: str | None
    source: str
    rule: str
    value: object


def unit_name(unit: object) -> str:
    """A unit's name in the journal and the output files: its id, or "@source" for an entry that could not be read
    as one (a Rejection at reading)."""
    return f"@{unit.source}" if isinstance(unit, Rejection) else unit.id  # type: ignore[attr-defined]


def content_id(text: str) -> str:
    """Stable id of a text: the same characters give the same id whatever their Unicode composition."""
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode("utf-8")).hexdigest()[:16]


def plain_id(raw_id: object) -> str | None:
    """An id as read, where it is one (text or a whole number), for a rejection line; else None."""
    return str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None


def admit(units: Iterable, limit: int | None) -> Iterator:
    """What a run admits, in input order: the first `limit` entries read (rejections count), each unit whose id was
    seen before turned into a `duplicate_id` Rejection. `airgen run` and `airgen bench` both read through it."""
    if limit is not None:
        units = itertools.islice(units, limit)
    return first_ids(units)


def first_ids(units: Iterable) -> Iterator:
    """Each unit (a Document, or any unit with an id and a source) whose id was seen before, as a Rejection."""
    seen: dict[str, str] = {}  # unit id -> source of its first occurrence
    for unit in units:
        if not isinstance(unit, Rejection):
            if unit.id in seen:
                unit = Rejection(unit.id, unit.source, "duplicate_id", f"first seen at {seen[unit.id]}")
            else:
                seen[unit.id] = unit.source
        yield unit


def check_jsonl(path: Path) -> None:
    """Refuse, before anything is read, a JSON file that is one array: read line by line it would become one bad_json
    rejection per line."""
    if path.suffix.lower() in JSONL_SUFFIXES and _first_byte(path) == b"[":
        raise CorpusError(f"input {path} is one JSON array; write one JSON object per line (JSON Lines)")


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                return line.lstrip()[:1]
    return b""


def jsonl_objects(path: Path) -> Iterator[tuple[str, dict] | Rejection]:
    """(source, object) for each line of a JSON Lines file, or the Rejection of a line that is not one object."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            source = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Rejection(None, source, "not_utf8", f"byte {e.start}")
                continue
            if not line.strip():
                yield Rejection(None, source, "empty", 0)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield Rejection(None, source, "bad_json", e.msg)
                continue
            if not isinstance(record, dict):
                yield Rejection(None, source, "bad_json", f"a {type(record).__name__}, not an object")
                continue
            yield source, record


def parquet_rows(path: Path, columns: list[str] | None = None) -> Iterator[tuple[str, dict[str, Any]] | Rejection]:
    """(source, row) for each row of a Parquet file (only `columns`, if given), or one Rejection for a file that
    cannot be read as Parquet."""
    parquet = open_parquet(path)
    if isinstance(parquet, Rejection):
        yield parquet
        return
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            number += 1
            yield f"{path}:{number}", row


def open_parquet(path: Path):
    """The Parquet file at `path`, or the Rejection saying why it cannot be read as one."""
    import pyarrow.parquet as pq  # deferred: only Parquet inputs pay for the import

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged or non-Parquet file
        return Rejection(None, str(path), "bad_parquet", str(e)[:200])
