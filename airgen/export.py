"""`airgen export OUT --to DIR`: a run's records as training files, laid out as a Hugging Face dataset folder.

DIR/data/level-K.jsonl (one file per level), DIR/README.md (the dataset card, one config per level), DIR/plots/ and
DIR/dataset_info.json (LlamaFactory's dataset registry), so `datasets.load_dataset(DIR, "level-2")`,
`huggingface-cli upload` and LlamaFactory's `dataset_dir: DIR` take the folder as it is.

Formats: `alpaca` (instruction, input, output), `sharegpt` (conversations of from/value, human/gpt) and `messages`
(OpenAI chat messages of role/content). Each line also carries `id` and a compact `meta`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from airgen import card, report
from airgen.files import atomic_text, atomic_write, line
from airgen.runview import load_run

FORMATS = ("alpaca", "sharegpt", "messages")


class ExportError(ValueError):
    """An export that cannot be made as asked; the message says why."""


@dataclass(frozen=True)
class Job:
    out: Path  # the run folder
    to: Path
    format: str = "alpaca"
    levels: tuple[int, ...] | None = None  # None: every level
    min_constraints: int = 0
    constraint_set: str = "all"  # "failed": only records whose merged constraints the student all failed
    dedupe: bool = True  # one record per distinct instruction (the first, in document order)


def _row(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    meta = record["meta"]
    compact = {"doc_id": meta["doc_id"], "level": meta["level"],
               "constraints": [c["text"] for c in meta["constraints"]],
               "constraint_types": [c["type"] for c in meta["constraints"]],
               "initial_instruction": meta["initial_instruction"]}
    row: dict[str, Any] = {"id": f"{meta['doc_id']}#level-{meta['level']}"}
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


def dataset_info(fmt: str, levels: list[int], name: str) -> dict[str, Any]:
    """LlamaFactory's entries, one per level, with its column and tag names for `fmt`."""
    if fmt == "alpaca":
        extra: dict[str, Any] = {"columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    elif fmt == "sharegpt":
        extra = {"formatting": "sharegpt", "columns": {"messages": "conversations"},
                 "tags": {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}}
    else:
        extra = {"formatting": "sharegpt", "columns": {"messages": "messages"},
                 "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                          "assistant_tag": "assistant"}}
    return {f"{name}_level_{k}": {"file_name": card.data_file(k), **extra} for k in levels}


def export(job: Job) -> dict[int, int]:
    """Write the folder; returns records kept per level."""
    if job.format not in FORMATS:
        raise ExportError(f"--format must be one of {', '.join(FORMATS)}, not {job.format!r}")
    if job.constraint_set not in ("all", "failed"):
        raise ExportError(f"--constraint-set must be 'all' or 'failed', not {job.constraint_set!r}")
    view = load_run(job.out)
    if not view.records:
        raise ExportError(f"{job.out} has no records yet (see `airgen report {job.out}`)")
    if job.constraint_set == "failed" and view.config.flow.constraint_set == "all":
        raise ExportError("this run skipped the check step (constraint set C): no record knows which constraints "
                          "the student failed, so --constraint-set failed would keep nothing")
    made = sorted({r["meta"]["level"] for r in view.records})
    wanted = made if job.levels is None else sorted(job.levels)
    unknown = [k for k in wanted if k not in made]
    if unknown:
        raise ExportError(f"the run has no records at level {unknown[0]}; its levels: {', '.join(map(str, made))}")
    by_level: dict[int, list[bytes]] = {k: [] for k in wanted}
    seen: set[str] = set()
    for record in sorted(view.records, key=lambda r: (r["meta"]["level"], r["meta"]["doc_id"])):
        meta = record["meta"]
        if meta["level"] not in by_level or len(meta["constraints"]) < job.min_constraints:
            continue
        merged = set(meta["merged_constraints"])
        if job.constraint_set == "failed" and not all(c["failed"] for c in meta["constraints"] if c["text"] in merged):
            continue
        key = " ".join(record["instruction"].split()).lower()
        if job.dedupe and key in seen:
            continue
        seen.add(key)
        by_level[meta["level"]].append(line(_row(record, job.format)))
    counts = {k: len(rows) for k, rows in by_level.items()}
    if not any(counts.values()):
        raise ExportError("the filters keep no record")
    (job.to / "data").mkdir(parents=True, exist_ok=True)
    for k, rows in by_level.items():
        if rows:
            atomic_write(job.to / card.data_file(k), b"".join(rows))
    name = job.to.resolve().name.replace("-", "_") or "airgen"
    atomic_write(job.to / "dataset_info.json", orjson.dumps(
        dataset_info(job.format, [k for k, n in counts.items() if n], name), option=orjson.OPT_INDENT_2))
    f = report.figures(view)
    (job.to / "plots").mkdir(exist_ok=True)
    images = {k: f"plots/{v}" for k, v in report.plots(f, job.to / "plots").items()}
    with atomic_text(job.to / "README.md") as handle:
        handle.write(card.dataset_card(f, images, counts))
    return counts
