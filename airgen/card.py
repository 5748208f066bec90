"""The dataset card: a Hugging Face style README.md (YAML header, then how the data was made, its funnel, its plots and
its limits), for the folder `airgen export` lays out: one config per split, data/SPLIT.jsonl (AIR: level-K; CRAB:
forward, reverse)."""
from __future__ import annotations

from typing import Any


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def data_file(split: str) -> str:
    return f"data/{split}.jsonl"


def dataset_card(f: dict[str, Any], images: dict[str, str], counts: dict[str, int] | None = None) -> str:
    """The card for the report's figures `f`; `counts` (split -> records) where an export kept fewer than the run
    made, `images` (name -> path relative to the card) the plots to show."""
    counts = counts if counts is not None else dict(f["records_by_split"])
    splits = [k for k, n in counts.items() if n]
    total = sum(counts.values())
    made = f["made"]
    header = [
        "---",
        "license: other  # SET THIS: the terms of your source documents and of the models that wrote the data",
        "language:",
        "- en  # SET THIS if your documents are in another language",
        "task_categories:",
        "- text-generation",
        "size_categories:",
        f"- {size_category(total)}",
        "tags:",
        "- synthetic",
        *(f"- {tag}" for tag in f["tags"]),
        "configs:",
    ]
    for i, k in enumerate(splits):
        header += [f"- config_name: {k}", f"  data_files: {data_file(k)}"] + (["  default: true"] if i == 0 else [])
    header.append("---")
    changed = [f"`{name}` = {value!r} (default {default!r})" for name, value, default in made["settings"]
               if value != default]
    method = "AIR" if f["recipe"] == "air" else "CRAB"
    body = [
        "",
        f"# Complex instruction-following data made with {method}",
        "",
        f"{total} {f['about']}",
        "",
        "## How it was made",
        "",
        *(f"- {role} model: {name}" for role, name in made["models"].items()),
        f"- prompt set: {made['prompts']}" + ("" if made["prompts_match"] else " (not the bundled one)"),
        *(f"- {note}" for note in f["made_notes"]),
        f"- settings that differ from the method's defaults: {', '.join(changed) or 'none'}",
        "",
        "## Records",
        "",
        "| split | records | file |",
        "| --- | --- | --- |",
        *(f"| {k} | {counts[k]} | `{data_file(k)}` |" for k in splits),
        "",
        "Each line holds the training pair and `meta`: "
        + ("the document id, the level, the constraints in order with their type and round, and the initial "
           "instruction." if f["recipe"] == "air" else "the pair's id, the record kind, the constraints used with "
           "their type and source (rule or model), and the original instruction."),
        "",
        "## Funnel",
        "",
        "| stage | count |",
        "| --- | --- |",
        *(f"| {label} | {'-' if n is None else n} |" for label, n in f["funnel"]),
        "",
    ]
    if images:
        body += ["## Plots", "", *(f"![{name}]({path})" for name, path in images.items()), ""]
    body += ["## Limits", ""]
    body += [f"- {note}" for note in f["limits"]] or ["- none known from the run itself"]
    body.append("- Synthetic data: responses are written by the guidance model and inherit its errors and biases."
                if f["recipe"] == "air" else "- Synthetic constraints: the responses are the input's own; the "
                "constraints are written by the guidance model (checked by it) or built by rule (verified in code).")
    body.append("")
    return "\n".join(header + body)
