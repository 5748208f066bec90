"""Instruction-response pairs in, for recipes that start from a finished answer (CRAB): JSONL or Parquet rows in
alpaca (`instruction`, optional `input`, `output`), chat (`messages`) or ShareGPT (`conversations`) form, or an
AIR run folder, whose pairs are each sample's instruction and refined document.

Like the document readers, these stream and never drop an entry silently: a row that is not a pair comes out as a
`Rejection` saying where and why.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from airgen.corpus import (JSONL_SUFFIXES, PARQUET_SUFFIXES, CorpusError, Document, Rejection, _first_byte,
                           _plain_id, content_id, first_ids, jsonl_objects, open_parquet)
from airgen.runfolder import JOURNAL, RUN_FILE, lines, read_info, replay_units

_PARQUET_BATCH_ROWS = 256


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
    """What a run admits: the first `limit` entries, a repeated id rejected as `duplicate_id` (as `corpus.admitted`)."""
    units: Iterator[Pair | Rejection] = read_pairs(inputs)
    if limit is not None:
        units = itertools.islice(units, limit)
    return first_ids(units)


def bundled_pairs() -> Path:
    """Twelve hand-written instruction-response pairs that ship with airgen, for the CRAB demo."""
    return Path(__file__).resolve().parent / "crab" / "sample_pairs.jsonl"


def pair_from(row: dict[str, Any], source: str) -> Pair | Rejection:
    """A Pair from one row in any of the three forms, or the Rejection that says what is wrong with it."""
    raw_id = row.get("id")
    if "messages" in row or "conversations" in row:
        turns = row.get("messages", row.get("conversations"))
        found = _first_exchange(turns)
        if isinstance(found, str):
            return Rejection(_plain_id(raw_id), source, "not_a_pair", found)
        instruction, response = found
    elif "instruction" in row and "output" in row:
        instruction, response = row["instruction"], row["output"]
        extra = row.get("input")
        if extra is not None and not isinstance(extra, str):
            return Rejection(_plain_id(raw_id), source, "bad_type", f"input is {type(extra).__name__}")
        if isinstance(instruction, str) and extra and extra.strip():
            instruction = f"{instruction.rstrip()}\n\n{extra.strip()}"
    else:
        return Rejection(_plain_id(raw_id), source, "missing_field",
                         "need instruction and output, messages, or conversations; has " + ", ".join(sorted(row)[:10]))
    for name, value in (("instruction", instruction), ("response", response)):
        if not isinstance(value, str):
            return Rejection(_plain_id(raw_id), source, "bad_type", f"{name} is {type(value).__name__}")
        if not value.strip():
            return Rejection(_plain_id(raw_id), source, "empty", name)
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
    if path.suffix.lower() in JSONL_SUFFIXES and _first_byte(path) == b"[":
        raise CorpusError(f"input {path} is one JSON array; write one JSON object per line (JSON Lines)")


def _read_all(paths: list[Path]) -> Iterator[Pair | Rejection]:
    for path in paths:
        if path.is_dir():
            yield from _from_air_run(path)
        elif path.suffix.lower() in PARQUET_SUFFIXES:
            yield from _read_parquet(path)
        else:
            yield from _read_jsonl(path)


def _read_jsonl(path: Path) -> Iterator[Pair | Rejection]:
    for item in jsonl_objects(path):
        yield item if isinstance(item, Rejection) else pair_from(item[1], item[0])


def _read_parquet(path: Path) -> Iterator[Pair | Rejection]:
    parquet = open_parquet(path)
    if isinstance(parquet, Rejection):
        yield parquet
        return
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS):
        for row in batch.to_pylist():
            number += 1
            yield pair_from(row, f"{path}:{number}")


def _from_air_run(folder: Path) -> Iterator[Pair | Rejection]:
    """An AIR run's samples as pairs: the back-translated instruction and the refined document (its reference
    answer). Samples without a refined document are not pairs and are not read."""
    from airgen.air.flow import Flow  # deferred: only an AIR run folder as input needs the AIR flow
    from airgen.air.steps import load_prompts

    _, config = read_info(folder)
    if config.recipe != "air":
        raise CorpusError(f"input folder {folder} is a {config.recipe} run; pairs come from an AIR run")
    calls = [e for e in lines(folder / JOURNAL) if "k" in e]
    samples = replay_units(Flow(config.flow, load_prompts(), config.seed), lambda u: Document(u, "", ""), calls)
    for doc_id, sample in sorted(samples.items()):
        if sample.instruction and sample.refined:
            yield Pair(doc_id, sample.instruction, sample.refined, f"{folder}:{doc_id}")
