"""`airgen export OUT --to DIR`: a run's records (or its preference pairs) as training files, laid out as a Hugging
Face dataset folder.

DIR/data/SPLIT.jsonl (one file per split: AIR's levels, level_K; CRAB's record kinds, forward and reverse),
DIR/README.md (the dataset card: a default config `all` with every split, and one config per split), DIR/plots/ and
DIR/dataset_info.json (LlamaFactory's dataset registry), so `datasets.load_dataset(DIR)` (every split),
`load_dataset(DIR, split="level_2")`, `huggingface-cli upload` and LlamaFactory's `dataset_dir: DIR` take the
folder as it is.

Formats of the records: `alpaca` (instruction, input, output), `sharegpt` (conversations of from/value,
human/gpt), `messages` (OpenAI chat messages of role/content) and `prompt-completion` (TRL's conversational
prompt and completion, which TRL trains on the completion alone). `dpo` exports the preference pairs (pairs.jsonl):
TRL's conversational preference format (prompt, chosen, rejected) and, in the same lines, LlamaFactory's ranking
columns. Each line also carries `id` (the unit's id and its split: `d1#level_2`, `p7#forward`) and a compact `meta`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from airgen import card, report
from airgen.files import atomic_text, atomic_write, line
from airgen.runview import load_run
from airgen.sink import split_order

FORMATS = ("alpaca", "sharegpt", "messages", "prompt-completion", "dpo")
# The meta fields a line keeps besides the split and the constraints (each with every field the run gave it).
_META = ("level", "kind", "initial_instruction", "failed_constraints")


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


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _row(item: dict[str, Any], fmt: str) -> dict[str, Any]:
    meta = item["meta"]
    row: dict[str, Any] = {"id": f"{meta['doc_id']}#{meta['split']}"}
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
    else:
        row.update(prompt=_user(item["instruction"]), completion=_assistant(item["output"]))
    row["meta"] = {"doc_id": meta["doc_id"], "split": meta["split"], "constraints": meta["constraints"],
                   **{k: meta[k] for k in _META if k in meta}}
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


def export(job: Job) -> dict[str, int]:
    """Write the folder; returns lines kept per split."""
    if job.format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {job.format!r}")
    if job.constraint_set not in ("all", "failed"):
        raise ExportError(f"--constraint-set must be 'all' or 'failed', not {job.constraint_set!r}")
    name = dataset_name(job)
    view = load_run(job.out)
    pairs = job.format == "dpo"
    items = view.pairs if pairs else view.records
    if not items:
        raise ExportError(f"{job.out} has no preference pairs (AIR makes them with --set flow.preference_pairs=true)"
                          if pairs else f"{job.out} has no records yet (see `airgen report {job.out}`)")
    splits = sorted({r["meta"]["split"] for r in items}, key=split_order)
    try:
        chosen, keep = view.recipe.export_selection(view, job.levels, job.constraint_set)
    except ValueError as e:
        raise ExportError(f"{e} (its splits: {', '.join(splits)})") from None
    by_split: dict[str, list[bytes]] = {k: [] for k in chosen or splits}
    seen: set[str] = set()
    for item in sorted(items, key=lambda r: (split_order(r["meta"]["split"]), r["meta"]["doc_id"])):
        meta = item["meta"]
        if meta["split"] not in by_split or len(meta["constraints"]) < job.min_constraints:
            continue
        if keep is not None and not pairs and not keep(item):
            continue
        key = " ".join((item["prompt"] if pairs else item["instruction"]).split()).lower()
        if job.dedupe and key in seen:
            continue
        seen.add(key)
        by_split[meta["split"]].append(line(_row(item, job.format)))
    counts = {k: len(rows) for k, rows in by_split.items()}
    if not any(counts.values()):
        raise ExportError("the filters keep no " + ("pair" if pairs else "record"))
    (job.to / "data").mkdir(parents=True, exist_ok=True)
    for k, rows in by_split.items():
        if rows:
            atomic_write(job.to / card.data_file(k), b"".join(rows))
    info = dataset_info(job.format, [k for k, n in counts.items() if n], name)
    if info:
        atomic_write(job.to / "dataset_info.json", orjson.dumps(info, option=orjson.OPT_INDENT_2))
    f = report.figures(view)
    (job.to / "plots").mkdir(exist_ok=True)
    images = {k: f"plots/{v}" for k, v in report.plots(f, job.to / "plots", view.recipe).items()}
    with atomic_text(job.to / "README.md") as handle:
        handle.write(card.dataset_card(f, images, counts, "pairs" if pairs else "records"))
    return counts
