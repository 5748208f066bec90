"""A run folder read back in one pass, in memory bounded by what a run has in flight, never by its size: what
`airgen report`, `airgen export`, the dataset card and CRAB's reading of a run folder know, from its files alone.

Nothing is re-run and no input is read. The journal is streamed once: each unit's calls are replayed through the
same pure flow that made them as soon as its done marker comes (until then only where its lines are is kept), so
rejected documents and a run still going or killed are seen as well as finished ones. The output files are streamed
once each. A recipe sees each unit and each line once, through its `Tally` (`Recipe.tally`), and keeps only counts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson

from airgen.store import journal

from airgen.method import recipes

from airgen.store import sink
from airgen.method.calls import Completion, Refusal, Request, digest
from airgen.config import Config, ConfigError, load
from airgen.method.flow import Done, Rejected, Unit, replay
from airgen.method.recipe import Recipe
from airgen.store.files import atomic_binary
from airgen.method.rows import Rejection, unit_name
from airgen.store.folder import JOURNAL, RUN_FILE, stream


@dataclass(frozen=True)
class Folder:
    """A run folder and what it says of itself (run.json), before anything else is read."""

    out: Path
    info: dict[str, Any]  # run.json
    config: Config  # the method settings the run was made with (run.json's fingerprint fields)
    recipe: Recipe
    prompts_match: bool  # the bundled prompt set is the one the run was made with (else the replay may differ)
    selection: dict[str, Any] | None  # summary.json of the `airgen select` that made the input, if any

    @property
    def roles(self) -> dict[str, str]:
        """stage -> the role that answers it."""
        return {name: step.role for name, step in self.recipe.steps(self.config.settings).items()}


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


def open_folder(out: Path) -> Folder:
    out = Path(out)
    info, config = read_info(out)
    recipe = recipes.get(config.recipe)
    return Folder(out, info, config, recipe, recipe.prompts().fingerprint == info["settings"].get("prompts"),
                  _selection(info))


@dataclass
class Ended:
    """One unit of the journal, its calls replayed: `finished` when the journal marks it done; `ending` its Done
    or Rejected as the replay makes it (None while it is not finished, or where the replay stops short: prompts
    changed since); `sample` None for a unit with no call (rejected on reading, or before any call)."""

    id: str
    finished: bool
    sample: Unit | None = None
    ending: Done | Rejected | None = None
    calls: list[dict[str, Any]] = field(default_factory=list)  # its journal lines, answered and refused


def units(folder: Folder) -> Iterator[Ended]:
    """Each unit of the journal once, in the order units finished, then the unfinished ones, replayed from units
    with only their ids (no input is read): a key asked again (its request changed) counts with its latest
    answer."""
    path = folder.out / JOURNAL
    if not path.exists():
        return
    flow = folder.recipe.flow(folder.config.settings, folder.recipe.prompts(), folder.config.seed)
    spans: dict[str, list[tuple[int, int]]] = {}  # open unit -> where its lines are
    with open(path, "rb") as f, open(path, "rb") as lookup:
        def replayed(unit: str, finished: bool) -> Ended:
            events = []
            for offset, length in spans.pop(unit, ()):
                lookup.seek(offset)
                events.append(orjson.loads(lookup.read(length)))
            return replay_unit(flow, folder.recipe.blank(unit), unit, events, finished, None)

        offset = 0
        for raw in f:
            length = len(raw)
            if raw.endswith(b"\n"):  # a half-written last line (a run writing now) is not read
                try:
                    event = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    event = {}
                if "done" in event:
                    yield replayed(event["done"], True)
                elif "s" in event:
                    spans.setdefault(event["s"], []).append((offset, length))
            offset += length
        for unit in list(spans):
            yield replayed(unit, False)


def replay_unit(flow: Any, unit: Any, unit_id: str, events: list[dict[str, Any]], finished: bool,
                models: dict[str, str] | None) -> Ended:
    """One unit's journal lines replayed through `flow`. `unit` is the unit as read from the inputs, with
    the run's `models` to check each answer's digest against; or one with only its id (`Recipe.blank`) and None,
    whose prompts cannot be rebuilt: a key's latest answer is taken as it is."""
    calls = [e for e in events if "k" in e]
    if not calls:
        return Ended(unit_id, finished)
    sample = flow.sample(unit)
    step = replay(flow, sample, flow.start(sample), answers(calls, models))
    ending = step if isinstance(step, (Done, Rejected)) and finished else None
    return Ended(unit_id, finished, sample, ending, calls)


def units_in_input_order(folder: Folder) -> Iterator[Ended]:
    """Each unit the run read, in the order of its inputs, its journal lines found through the index (`index`): a
    reading whose order does not depend on when units finished."""
    idx = index(folder.out)
    flow = folder.recipe.flow(folder.config.settings, folder.recipe.prompts(), folder.config.seed)
    models = folder.info["settings"].get("models") or {}
    inputs = [Path(p) for p in folder.info.get("inputs", [])]
    for unit in folder.recipe.read(inputs, folder.config.run.limit):
        name = unit_name(unit)
        events = events_of(folder.out, name, idx)
        finished = any("done" in e for e in events)
        yield Ended(name, finished) if isinstance(unit, Rejection) else replay_unit(flow, unit, name, events,
                                                                                    finished, models)


def answers(events: list[dict[str, Any]], models: dict[str, str] | None,
            heard: Callable[[int, Request, dict[str, Any], Completion | Refusal], None] | None = None
            ) -> Callable[[Request], Completion | Refusal | None]:
    """A unit's journal lines (`events`, in journal order) as the answers a replay takes, as a resume takes them:
    a key's latest answer, and (given the run's `models`) only for the very request it answered (its digest).
    `heard(position, request, line, answer)` is told of each answer used."""
    latest = {e["k"]: (i, e) for i, e in enumerate(events) if "k" in e}

    def answer(request: Request) -> Completion | Refusal | None:
        found = latest.get(request.key)
        if found is None:
            return None
        i, event = found
        model = models.get(request.role) if models is not None else None
        if event.get("d") is not None and model is not None and event["d"] != digest(request, model):
            return None  # it answered another request (the document or a step changed since)
        known = journal.completion(event)
        if heard is not None:
            heard(i, request, event, known)
        return known

    return answer


INDEX = "trace.index"
# One entry per journal line: a hash of its unit's id, where the line starts, how long it is; sorted by the hash, so
# that a unit's lines are found by a binary search of a memory-mapped file, whatever the journal's size. The file:
# b"airgentr", the journal bytes it covers and its entries (each a little-endian uint64), then the columns: every
# hash, every offset, every length, so that the search reads a few pages of the first.
_ENTRY = np.dtype([("unit", "<u8"), ("offset", "<u8"), ("length", "<u4")])
_HEADER = 24


def _unit_hash(unit: str) -> int:
    return int.from_bytes(hashlib.blake2b(unit.encode(), digest_size=8).digest(), "little")


@dataclass
class Index:
    size: int  # the journal's bytes the index covers (whole lines)
    units: np.ndarray  # the hashes, sorted
    offsets: np.ndarray
    lengths: np.ndarray

    def spans(self, unit: str) -> list[tuple[int, int]]:
        """Where the unit's journal lines are (a hash shared with another unit gives its lines too: the caller
        checks each line's unit), in journal order."""
        h = np.uint64(_unit_hash(unit))
        found = range(np.searchsorted(self.units, h, "left"), np.searchsorted(self.units, h, "right"))
        return sorted((int(self.offsets[i]), int(self.lengths[i])) for i in found)

    def entries(self, low: int, high: int) -> np.ndarray:
        """The entries whose hash is in [low, high], as `_ENTRY`s."""
        i, j = np.searchsorted(self.units, np.uint64(low), "left"), np.searchsorted(self.units, np.uint64(high), "right")
        part = np.empty(j - i, _ENTRY)
        part["unit"], part["offset"], part["length"] = self.units[i:j], self.offsets[i:j], self.lengths[i:j]
        return part


def _load(stored: Path) -> Index:
    """The index as stored (memory-mapped), or an empty one."""
    if not stored.is_file() or stored.stat().st_size < _HEADER:
        return Index(0, *(np.zeros(0, t) for t in ("<u8", "<u8", "<u4")))
    with open(stored, "rb") as f:
        head = f.read(_HEADER)
    size, n = int.from_bytes(head[8:16], "little"), int.from_bytes(head[16:24], "little")
    if n == 0:
        return Index(size, *(np.zeros(0, t) for t in ("<u8", "<u8", "<u4")))
    columns, at = [], _HEADER
    for dtype in ("<u8", "<u8", "<u4"):
        columns.append(np.memmap(stored, dtype, "r", offset=at, shape=(n,)))
        at += n * np.dtype(dtype).itemsize
    return Index(size, *columns)


def index(out: Path) -> Index:
    """The journal's index, brought up to date: only what the journal grew by since it was made is read. Built in
    memory that does not grow with the journal: new entries spill into `_BUCKETS` files by the top byte of their
    hash, and each bucket (old entries and new) is sorted and written out in turn."""
    path, stored = Path(out) / JOURNAL, Path(out) / INDEX
    old = _load(stored)
    journal_size = path.stat().st_size if path.exists() else 0
    if journal_size < old.size:  # the journal was cut back (a torn line repaired) or replaced: start over
        old = _load(Path(out) / "no such index")
    if journal_size > old.size:
        with tempfile.TemporaryDirectory(prefix=".index-", dir=out) as spill:
            size = _spill(path, old.size, Path(spill))
            columns = [open(Path(spill) / name, "w+b") for name in ("units", "offsets", "lengths")]
            n = 0
            for b in range(_BUCKETS):
                part = old.entries(b << 56, ((b + 1) << 56) - 1)
                spilled = Path(spill) / str(b)
                if spilled.exists():
                    part = np.concatenate([part, np.fromfile(spilled, _ENTRY)])
                part = part[np.argsort(part["unit"], kind="stable")]
                for column, name in zip(columns, ("unit", "offset", "length")):
                    column.write(np.ascontiguousarray(part[name]).tobytes())
                n += len(part)
            del old  # the memory maps of the file about to be replaced
            with atomic_binary(stored) as f:
                f.write(b"airgentr" + size.to_bytes(8, "little") + n.to_bytes(8, "little"))
                for column in columns:
                    column.seek(0)
                    shutil.copyfileobj(column, f, 1 << 20)
                    column.close()
        old = _load(stored)
    return old


_BUCKETS = 256


def _spill(path: Path, start: int, folder: Path) -> int:
    """The journal's whole lines from `start` as index entries, into one file per bucket; returns where they end."""
    waiting: list[list[tuple[int, int, int]]] = [[] for _ in range(_BUCKETS)]

    def flush(b: int) -> None:
        with open(folder / str(b), "ab") as f:
            f.write(np.array(waiting[b], _ENTRY).tobytes())
        waiting[b].clear()

    offset = start
    with open(path, "rb") as f:
        f.seek(start)
        for raw in f:
            if not raw.endswith(b"\n"):
                break  # a line still being written: left for a later trace
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                event = {}
            unit = event.get("s", event.get("done"))
            if unit is not None:
                h = _unit_hash(unit)
                waiting[h >> 56].append((h, offset, len(raw)))
                if len(waiting[h >> 56]) >= 512:
                    flush(h >> 56)
            offset += len(raw)
    for b in range(_BUCKETS):
        if waiting[b]:
            flush(b)
    return offset


def events_by_scan(out: Path, wanted: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The journal lines of a few units, in journal order, by one pass over the journal (no index is made)."""
    found: dict[str, list[dict[str, Any]]] = {unit: [] for unit in wanted}
    for event in stream(Path(out) / JOURNAL):
        unit = event.get("s", event.get("done"))
        if unit in found:
            found[unit].append(event)
    return found


def events_of(out: Path, unit: str, idx: Index) -> list[dict[str, Any]]:
    """A unit's journal lines, in journal order, found through the index."""
    found = []
    with open(Path(out) / JOURNAL, "rb") as f:
        for offset, length in idx.spans(unit):
            f.seek(offset)
            event = orjson.loads(f.read(length))
            if event.get("s", event.get("done")) == unit:
                found.append(event)
    return found


def lines(folder: Folder, name: str) -> Iterator[dict[str, Any]]:
    """The whole lines of one of the run's output files (`sink`), streamed."""
    return stream(folder.out / name)


OUTPUTS = (sink.RECORDS, sink.REJECTED, sink.DROPPED_LEVELS, sink.PAIRS)


def _selection(info: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of `airgen select` when the run's one input is a selection's selected.jsonl."""
    inputs = [Path(p) for p in info.get("inputs", [])]
    if len(inputs) == 1 and inputs[0].name == "selected.jsonl":
        summary = inputs[0].with_name("summary.json")
        if summary.is_file():
            try:
                return orjson.loads(summary.read_bytes())
            except orjson.JSONDecodeError:
                return None
    return None


AUTHORS = "authors"  # the preset that reproduces the authors' code, where a recipe has one


def defaults_first(config: Config) -> list[tuple[str, Any, Any, Any]]:
    """(setting, value, default, the authors' code's value or None) of the method settings, the ones that differ
    from the defaults first."""
    recipe = recipes.get(config.recipe)
    default = dataclasses.asdict(recipe.settings())
    theirs = recipe.presets.get(AUTHORS)
    authors = dataclasses.asdict(dataclasses.replace(recipe.settings(), **theirs)) if theirs is not None else {}
    rows = [(f"{recipe.section}.{k}", v, default[k], authors.get(k)) for k, v in
            dataclasses.asdict(config.settings).items()]
    rows.append(("seed", config.seed, 0, None))
    return sorted(rows, key=lambda r: r[1] == r[2])
