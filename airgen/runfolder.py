"""A run folder's own files, read back without running anything: the names of its files, its run.json as a config,
its JSONL lines one at a time, and whether a run is writing it now.

`run` writes these files; `runview` (report, export, the pair reader that takes a run folder as CRAB's input) and
`trace` read them through here.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import orjson

from airgen import recipes
from airgen.config import Config, ConfigError, load

RUN_FILE = "run.json"
JOURNAL = "journal.jsonl"
METRICS = "metrics.jsonl"


class NotARun(ConfigError):
    """The folder is not an airgen run folder; the message says what is missing."""


def read_info(out: Path) -> tuple[dict[str, Any], Config]:
    """run.json, and the method settings the run was made with (its fingerprint fields) as a config. A run that
    names no recipe is the default recipe's (AIR's runs keep the fields of runs made before there were others)."""
    out = Path(out)
    if not out.is_dir():
        raise NotARun(f"{out} is not a folder")
    run_file = out / RUN_FILE
    if not run_file.is_file():
        raise NotARun(f"{out} holds no {RUN_FILE}: not an airgen run folder")
    try:
        info = orjson.loads(run_file.read_bytes())
        settings = info["settings"]
        name = settings.get("recipe", recipes.DEFAULT)
        section = recipes.get(name).section
        config = load(overrides={"seed": settings["seed"], "recipe": name, section: settings[section]})
    except recipes.UnknownRecipe as e:
        raise NotARun(f"{run_file}: made by a recipe this airgen does not have: {e}") from None
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise NotARun(f"{run_file} is not a run.json airgen wrote ({e})") from None
    return info, config


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
    from airgen.lock import holder

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
