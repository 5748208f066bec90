"""A run folder's own files: their names, their JSONL lines read one at a time (never a half-written last one), and
whether a run is writing the folder now. The run writes them; the read side reads them through here."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import orjson


RUN_FILE = "run.json"
JOURNAL = "journal.jsonl"
METRICS = "metrics.jsonl"
STATUS = "status.json"  # where the run stands, for schedulers (`runtime.status`)
INPUTS = "inputs.jsonl"  # rows given to `airgen.run` as dicts, read as a file


def stream(path: Path) -> Iterator[dict[str, Any]]:
    """A JSONL file's whole lines, one at a time; a torn last line (a run killed mid-write, or writing now) and a
    line that is no JSON are left out."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for raw in f:
            if raw.endswith(b"\n") and raw.strip():
                try:
                    yield orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue


def last_line(path: Path) -> dict[str, Any] | None:
    """The last whole line of a JSONL file, read from its end (a shard's metrics grow all run long)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - 65536))
            tail = f.read()
    except OSError:
        return None
    for raw in reversed(tail.split(b"\n")):
        if raw.strip():
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:  # a torn line, or the first one cut by the 64 KiB window
                continue
    return None


def in_progress(out: Path, unit: str) -> str | None:
    """One line saying that a run is writing `out` now and how far it has come (from its latest metrics line), or
    None when no live writer holds it. What a reader shows then is what is on disk so far."""
    from airgen.store.lock import holder

    who = holder(out)
    if who is None:
        return None
    last = last_line(Path(out) / METRICS)
    if last is None:
        return f"{out} is being written now ({who.describe()}); no progress line from it yet"
    s = last["samples"]
    done = s["records"] + s["rejected"] + s.get("resumed", 0)
    total = f" of {s['total']}" if s.get("total") else ""
    return (f"{out} is being written now ({who.describe()}): {done}{total} {unit}s finished, {s['in_flight']} in "
            f"flight {time.time() - last['time']:.0f} s ago; this shows what is on disk so far")
