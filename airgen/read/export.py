"""`airgen export OUT --to DIR`: a run's records (or its preference pairs) as training files, laid out as a Hugging
Face dataset folder.

DIR/data/SPLIT.jsonl (one file per split: AIR's levels, level_K; CRAB's record kinds, forward and reverse),
DIR/README.md (the dataset card: a default config `all` with every split, and one config per split), DIR/plots/ and
DIR/dataset_info.json (LlamaFactory's dataset registry), so `datasets.load_dataset(DIR)` (every split),
`load_dataset(DIR, split="level_2")`, `huggingface-cli upload` and LlamaFactory's `dataset_dir: DIR` take the
folder as it is.

Formats of the records: `alpaca` (instruction, input, output), `sharegpt` (conversations of from/value,
human/gpt), `messages` (OpenAI chat messages of role/content), `prompt-completion` (TRL's conversational
prompt and completion, which TRL trains on the completion alone) and `rlvr` (a prompt, the checks of its checkable
constraints as data, the reference answer: for RL with verifiable rewards, `airgen.checks.reward`). `dpo` exports the
preference pairs (pairs.jsonl): TRL's conversational preference format (prompt, chosen, rejected) and, in the same
lines, LlamaFactory's ranking columns. Each line also carries `id` (the unit's id and its split: `d1#level_2`, `p7#forward`) and the `meta` its
recipe keeps (`Recipe.export_meta`).
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from airgen.read import card

from airgen.read import report

from airgen.store import sink
from airgen.store.files import atomic_binary, atomic_text, atomic_write, line
from airgen.read.view import lines, open_folder
from airgen.store.sink import split_order

class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Job:
    out: Path  # the run folder
    to: Path
    format: str = "alpaca"
    levels: tuple[int, ...] | None = None  # the levels to keep (a recipe with levels: AIR); None: every split
    min_constraints: int = 0
    constraint_set: str = "all"  # "failed" (AIR): only records whose merged constraints the student all failed
    dedupe: bool = True  # one record per distinct instruction (the first, in document order)
    name: str | None = None  # LlamaFactory's dataset names start with it (default: the folder's name)
    checked: bool = False  # only records whose answer meets every checkable constraint it was asked


@dataclass
class Exported:
    counts: dict[str, int]  # lines kept per split
    unchecked: int = 0  # records --checked left out: their answer misses a checkable constraint
    uncheckable: int = 0  # records --format rlvr left out: none of their constraints is checkable


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _row(item: dict[str, Any], fmt: str, meta: dict[str, Any]) -> dict[str, Any]:
    """One exported line of a record (or, for dpo, a preference pair), with the `meta` its recipe keeps."""
    row: dict[str, Any] = {"id": f"{item['meta']['doc_id']}#{item['meta']['split']}"}
    if fmt == "dpo":
        prompt, chosen, rejected = item["prompt"], item["chosen"], item["rejected"]
        row.update(prompt=_user(prompt), chosen=_assistant(chosen), rejected=_assistant(rejected),
                   instruction=prompt, input="", chosen_response=chosen, rejected_response=rejected)
    elif fmt == "alpaca":
        row.update(instruction=item["instruction"], input=item["input"], output=item["output"])
    elif fmt == "sharegpt":
        row["conversations"] = [{"from": "human", "value": item["instruction"]},
                                {"from": "gpt", "value": item["output"]}]
    elif fmt == "messages":
        row["messages"] = _user(item["instruction"]) + _assistant(item["output"])
    elif fmt == "rlvr":  # the prompt, the checks a reward needs (its ground truth), the answer the run made
        row.update(prompt=_user(item["instruction"]), checks=item["meta"]["checks"]["asked"],
                   reference=item["output"])
    else:
        row.update(prompt=_user(item["instruction"]), completion=_assistant(item["output"]))
    row["meta"] = {"doc_id": item["meta"]["doc_id"], "split": item["meta"]["split"], **meta}
    return row


def dataset_info(fmt: str, splits: list[str], name: str) -> dict[str, Any]:
    """LlamaFactory's entries, one per split, with its column and tag names for `fmt`; none for prompt-completion,
    a layout LlamaFactory does not read."""
    if fmt == "alpaca":
        extra: dict[str, Any] = {"columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    elif fmt == "dpo":
        extra = {"ranking": True, "columns": {"prompt": "instruction", "query": "input", "chosen": "chosen_response",
                                              "rejected": "rejected_response"}}
    elif fmt == "sharegpt":
        extra = {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                 "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
    elif fmt == "messages":
        extra = {"formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant"}}
    else:
        return {}
    return {f"{name}_{k}": {"file_name": card.data_file(k), **extra} for k in splits}


def dataset_name(job: Job) -> str:
    name = job.name if job.name is not None else job.to.resolve().name
    name = re.sub(r"\W+", "_", name).strip("_")
    if not name:
        raise ExportError("--name must hold a letter or a digit")
    return name


def _key(item: dict[str, Any], pairs: bool) -> int:
    """What makes two lines the same for --keep-duplicates: the instruction, spaced and cased alike."""
    text = " ".join((item["prompt"] if pairs else item["instruction"]).split()).lower()
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _checked(item: dict[str, Any]) -> bool:
    """The record's answer meets every checkable constraint it was asked (`checks.tally`)."""
    checks = item["meta"]["checks"]
    return checks["met"] == checks["checkable"]


def _checkable(item: dict[str, Any]) -> bool:
    return bool(item["meta"]["checks"]["asked"])


def export(job: Job) -> Exported:
    """Write the folder; returns what it kept. Three streaming passes over the records (or pairs), in
    memory that does not grow with them but by 9 bytes a line: the splits; which lines the options keep and each
    one's instruction (a hash); then the lines kept, each split's file in the order the run wrote them, and of the
    kept lines with one instruction only the first."""
    if job.format not in card.FORMATS:
        raise ExportError(f"--format must be one of {', '.join(card.FORMATS)}, not {job.format!r}")
    if job.constraint_set not in ("all", "failed"):
        raise ExportError(f"--constraint-set must be 'all' or 'failed', not {job.constraint_set!r}")
    name = dataset_name(job)
    folder = open_folder(job.out)
    pairs = job.format == "dpo"
    source = sink.PAIRS if pairs else sink.RECORDS
    splits = sorted({item["meta"]["split"] for item in lines(folder, source)}, key=split_order)
    if not splits:
        made_with = folder.recipe.pairs_setting
        raise ExportError((f"{job.out} has no preference pairs (a {folder.recipe.name} run makes them with --set "
                           f"{made_with})" if made_with else f"a {folder.recipe.name} run makes no preference pairs")
                          if pairs else f"{job.out} has no records yet (see `airgen report {job.out}`)")
    try:
        chosen, keep = folder.recipe.export_selection(folder.config.settings, splits, job.levels, job.constraint_set,
                                                      job.min_constraints)
    except ValueError as e:
        raise ExportError(f"{e} (its splits: {', '.join(splits)})") from None
    if (job.checked or job.format == "rlvr") and (pairs or not any("checks" in r["meta"] for r in lines(folder,
                                                                                                        source))):
        raise ExportError(f"{'--format dpo' if pairs else f'a {folder.recipe.name} run'}'s lines carry no checks "
                          "(a recipe's records do where it checks their constraints: AIR, CRAB)")
    wanted = chosen or splits
    kept, keys = array("b"), array("Q")
    done = Exported({})
    for item in lines(folder, source):
        ok = item["meta"]["split"] in wanted and (pairs or keep is None or keep(item))
        if ok and job.checked and not _checked(item):
            ok, done.unchecked = False, done.unchecked + 1
        if ok and job.format == "rlvr" and not _checkable(item):
            ok, done.uncheckable = False, done.uncheckable + 1
        kept.append(ok)
        keys.append(_key(item, pairs) if ok else 0)
    written = np.frombuffer(kept, np.int8).astype(bool)
    if job.dedupe and written.any():
        positions = np.flatnonzero(written)
        first = np.unique(np.frombuffer(keys, np.uint64)[positions], return_index=True)[1]
        written[:] = False
        written[positions[first]] = True
    if not written.any():
        raise ExportError("the filters keep no " + ("pair" if pairs else "record"))
    counts = dict.fromkeys(wanted, 0)
    (job.to / "data").mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        handles = {k: files.enter_context(atomic_binary(job.to / card.data_file(k))) for k in wanted}
        for i, item in enumerate(lines(folder, source)):
            if written[i]:
                split = item["meta"]["split"]
                handles[split].write(line(_row(item, job.format, folder.recipe.export_meta(item["meta"]))))
                counts[split] += 1
    for k, n in counts.items():
        if not n:
            (job.to / card.data_file(k)).unlink()
    counts = done.counts = {k: n for k, n in counts.items() if n}
    info = dataset_info(job.format, list(counts), name)
    if info:
        atomic_write(job.to / "dataset_info.json", orjson.dumps(info, option=orjson.OPT_INDENT_2))
    f = report.figures(job.out)
    (job.to / "plots").mkdir(exist_ok=True)
    images = {k: f"plots/{v}" for k, v in report.plots(f, job.to / "plots", folder.recipe).items()}
    with atomic_text(job.to / "README.md") as handle:
        handle.write(card.dataset_card(f, images, counts, "pairs" if pairs else "rlvr" if job.format == "rlvr"
                                       else "records"))
    return done
