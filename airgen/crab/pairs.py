"""Instruction-response pairs in, for CRAB: JSONL or Parquet rows in alpaca (`instruction`, optional `input`,
`output`), chat (`messages`) or ShareGPT (`conversations`) form, or the run folder of a recipe whose units hold
pairs (AIR: each sample's instruction and refined document).

On the shared reading layer (`airgen.rows`): streamed, and no entry is dropped silently: a row that is not a pair,
or a run's unit that holds none, comes out as a `Rejection` saying where and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from airgen.method.rows import (JSONL_SUFFIXES, PARQUET_SUFFIXES, CorpusError, Rejection, admit, check_jsonl, content_id,
                         jsonl_objects, parquet_rows, plain_id)
from airgen.store.folder import RUN_FILE
from airgen.read.view import open_folder, units_in_input_order


@dataclass(frozen=True, slots=True)
class Pair:
    id: str
    instruction: str
    response: str
    source: str  # "path:line" (or row), or "run-folder:doc-id"


def read_pairs(inputs: Sequence[Path]) -> Iterator[Pair | Rejection]:
    """Every pair of `inputs` in order, or a Rejection for each entry that is not one. All paths are checked first."""
    paths = [Path(p) for p in inputs]
    for path in paths:
        _check(path)
    return _read_all(paths)


def admitted_pairs(inputs: Sequence[Path], limit: int | None = None) -> Iterator[Pair | Rejection]:
    """What a run admits of `inputs` (`rows.admit`)."""
    return admit(read_pairs(inputs), limit)


def bundled_pairs() -> Path:
    """Twelve hand-written instruction-response pairs that ship with airgen, for the CRAB demo."""
    return Path(__file__).resolve().parent / "sample_pairs.jsonl"


def pair_from(row: dict[str, Any], source: str) -> Pair | Rejection:
    """A Pair from one row in any of the three forms, or the Rejection that says what is wrong with it."""
    raw_id = row.get("id")
    if "messages" in row or "conversations" in row:
        turns = row.get("messages", row.get("conversations"))
        found = _first_exchange(turns)
        if isinstance(found, str):
            return Rejection(plain_id(raw_id), source, "not_a_pair", found)
        instruction, response = found
    elif "instruction" in row and "output" in row:
        instruction, response = row["instruction"], row["output"]
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            return Rejection(plain_id(raw_id), source, "bad_type", f"input is {type(extra).__name__}")
        if isinstance(instruction, str) and extra and extra.strip():
            instruction = f"{instruction.rstrip()}\n\n{extra.strip()}"
    else:
        return Rejection(plain_id(raw_id), source, "missing_field",
                         "need instruction and output, messages, or conversations; has " + ", ".join(sorted(row)[:10]))
    for name, value in (("instruction", instruction), ("response", response)):
        if not isinstance(value, str):
            return Rejection(plain_id(raw_id), source, "bad_type", f"{name} is {type(value).__name__}")
        if not value.strip():
            return Rejection(plain_id(raw_id), source, "empty", name)
    if raw_id is None:
        return Pair(content_id(f"{instruction}\n\n{response}"), instruction.strip(), response.strip(), source)
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return Rejection(None, source, "bad_type", f"id is {type(raw_id).__name__}")
    return Pair(str(raw_id), instruction.strip(), response.strip(), source)


_ROLE_NAMES = {"user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


def _first_exchange(turns: Any) -> tuple[Any, Any] | str:
    """The first user turn and the assistant turn right after it; a reason where there is none."""
    if not isinstance(turns, list):
        return f"messages is {type(turns).__name__}, not a list"
    spoken = []
    for turn in turns:
        if not isinstance(turn, dict):
            return f"a turn is {type(turn).__name__}, not an object"
        role = _ROLE_NAMES.get(str(turn.get("role", turn.get("from", ""))).lower())
        if role is not None:  # system turns and tool turns are not part of the pair
            spoken.append((role, turn.get("content", turn.get("value"))))
    for (role, text), (next_role, reply) in zip(spoken, spoken[1:]):
        if role == "user" and next_role == "assistant":
            return text, reply
    return "no user turn followed by an assistant turn"


def _check(path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"input {path} does not exist")
    if path.is_dir():
        if not (path / RUN_FILE).is_file():
            raise CorpusError(f"input folder {path} is not an airgen run folder (no {RUN_FILE}); pairs come as "
                              "JSONL or Parquet, or from an AIR run folder")
        return
    if path.suffix.lower() not in JSONL_SUFFIXES + PARQUET_SUFFIXES:
        raise CorpusError(f"input {path}: pairs come as {', '.join(JSONL_SUFFIXES + PARQUET_SUFFIXES)} files or an "
                          f"AIR run folder, not {path.suffix or 'a file without a suffix'!r}")
    check_jsonl(path)


def _read_all(paths: list[Path]) -> Iterator[Pair | Rejection]:
    for path in paths:
        if path.is_dir():
            yield from _from_run(path)
            continue
        rows = parquet_rows(path) if path.suffix.lower() in PARQUET_SUFFIXES else jsonl_objects(path)
        for item in rows:
            yield item if isinstance(item, Rejection) else pair_from(item[1], item[0])


def _from_run(folder: Path) -> Iterator[Pair | Rejection]:
    """The pairs a run folder's units hold, as its recipe says (`Recipe.pair`), in the order the run read its
    inputs, one unit at a time; a unit without one is rejected with the recipe's reason."""
    run = open_folder(folder)
    for ended in units_in_input_order(run):
        if ended.sample is None:
            continue  # rejected on reading: it holds nothing
        found = run.recipe.pair(ended.sample)
        if found is None:
            raise CorpusError(f"input folder {folder} is a {run.recipe.name} run, whose {run.recipe.unit}s hold no "
                              "instruction-response pairs")
        if isinstance(found, str):
            yield Rejection(ended.id, f"{folder}:{ended.id}", "not_a_pair", found)
        else:
            yield Pair(ended.id, *found, f"{folder}:{ended.id}")
