"""`airgen export OUT --to DIR`: a run's records as training files, laid out as a Hugging Face dataset folder.

DIR/data/SPLIT.jsonl (one file per split: AIR's levels, level-K; CRAB's record kinds, forward and reverse),
DIR/README.md (the dataset card, one config per split), DIR/plots/ and DIR/dataset_info.json (LlamaFactory's
dataset registry), so `datasets.load_dataset(DIR, "level-2")`,
`huggingface-cli upload` and LlamaFactory's `dataset_dir: DIR` take the folder as it is.

Formats: `alpaca` (instruction, input, output), `sharegpt` (conversations of from/value, human/gpt) and `messages`
(OpenAI chat messages of role/content). Each line also carries `id` (the unit's id and its split: `d1#level-2`,
`p7#forward`) and a compact `meta`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from airgen import card, report
from airgen.files import atomic_text, atomic_write, line
from airgen.runview import load_run
from airgen.sink import split_order

FORMATS = ("alpaca", "sharegpt", "messages")


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


def _row(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    meta = record["meta"]
    compact = {"doc_id": meta["doc_id"], "split": meta["split"],
               "constraints": [c["text"] for c in meta["constraints"]],
               "constraint_types": [c["type"] for c in meta["constraints"]],
               **{k: meta[k] for k in ("level", "kind", "initial_instruction") if k in meta}}
    row: dict[str, Any] = {"id": f"{meta['doc_id']}#{meta['split']}"}
    if fmt == "alpaca":
        row.update(instruction=record["instruction"], input=record["input"], output=record["output"])
    elif fmt == "sharegpt":
        row["conversations"] = [{"from": "human", "value": record["instruction"]},
                                {"from": "gpt", "value": record["output"]}]
    else:
        row["messages"] = [{"role": "user", "content": record["instruction"]},
                           {"role": "assistant", "content": record["output"]}]
    row["meta"] = compact
    return row


def dataset_info(fmt: str, splits: list[str], name: str) -> dict[str, Any]:
    """LlamaFactory's entries, one per split, with its column and tag names for `fmt`."""
    if fmt == "alpaca":
        extra: dict[str, Any] = {"columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    elif fmt == "sharegpt":
        extra = {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                 "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
    else:
        extra = {"formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant"}}
    return {f"{name}_{k.replace('-', '_')}": {"file_name": card.data_file(k), **extra} for k in splits}


def export(job: Job) -> dict[str, int]:
    """Write the folder; returns records kept per split."""
    if job.format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {job.format!r}")
    if job.constraint_set not in ("all", "failed"):
        raise ExportError(f"--constraint-set must be 'all' or 'failed', not {job.constraint_set!r}")
    view = load_run(job.out)
    if not view.records:
        raise ExportError(f"{job.out} has no records yet (see `airgen report {job.out}`)")
    splits = sorted({r["meta"]["split"] for r in view.records}, key=split_order)
    try:
        chosen, keep = view.recipe.export_selection(view, job.levels, job.constraint_set)
    except ValueError as e:
        raise ExportError(f"{e} (its splits: {', '.join(splits)})") from None
    by_split: dict[str, list[bytes]] = {k: [] for k in chosen or splits}
    seen: set[str] = set()
    for record in sorted(view.records, key=lambda r: (split_order(r["meta"]["split"]), r["meta"]["doc_id"])):
        meta = record["meta"]
        if meta["split"] not in by_split or len(meta["constraints"]) < job.min_constraints:
            continue
        if keep is not None and not keep(record):
            continue
        key = " ".join(record["instruction"].split()).lower()
        if job.dedupe and key in seen:
            continue
        seen.add(key)
        by_split[meta["split"]].append(line(_row(record, job.format)))
    counts = {k: len(rows) for k, rows in by_split.items()}
    if not any(counts.values()):
        raise ExportError("the filters keep no record")
    (job.to / "data").mkdir(parents=True, exist_ok=True)
    for k, rows in by_split.items():
        if rows:
            atomic_write(job.to / card.data_file(k), b"".join(rows))
    name = job.to.resolve().name.replace("-", "_") or "airgen"
    atomic_write(job.to / "dataset_info.json", orjson.dumps(
        dataset_info(job.format, [k for k, n in counts.items() if n], name), option=orjson.OPT_INDENT_2))
    f = report.figures(view)
    (job.to / "plots").mkdir(exist_ok=True)
    images = {k: f"plots/{v}" for k, v in report.plots(f, job.to / "plots", view.recipe).items()}
    with atomic_text(job.to / "README.md") as handle:
        handle.write(card.dataset_card(f, images, counts))
    return counts
