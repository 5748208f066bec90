"""The dataset card: a Hugging Face style README.md (YAML header, then how the data was made, its funnel, its plots and
its limits), for the folder `airgen export` lays out: one config per level, data/level-K.jsonl."""
from __future__ import annotations

from typing import Any


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def data_file(level: int) -> str:
    return f"data/level-{level}.jsonl"


def dataset_card(f: dict[str, Any], images: dict[str, str], counts: dict[int, int] | None = None) -> str:
    """The card for the report's figures `f`; `counts` (level -> records) where an export kept fewer than the run
    made, `images` (name -> path relative to the card) the plots to show."""
    counts = counts if counts is not None else {int(k): v for k, v in f["records_by_level"].items()}
    levels = sorted(k for k, n in counts.items() if n)
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
        "- air",
        "- instruction-following",
        "- complex-instructions",
        "configs:",
    ]
    for i, k in enumerate(levels):
        header += [f"- config_name: level-{k}", f"  data_files: {data_file(k)}"] + (["  default: true"] if i == 0
                                                                                  else [])
    header.append("---")
    changed = [f"`{name}` = {value!r} (default {default!r})" for name, value, default in made["settings"]
               if value != default]
    body = [
        "",
        "# Complex instruction-following data made with AIR",
        "",
        f"{total} instruction-response records at {len(levels)} levels of constraint complexity, made by airgen with "
        "AIR (Automatic Iterative Refinement): an instruction is back-translated from each human-written document, the "
        "document is rewritten into a reference answer, and for up to "
        f"{max(levels, default=0)} rounds a guidance model, as judge, compares a student model's answer with it and "
        "adds one constraint the student misses. Level k merges the constraints of rounds 1..k into one instruction, "
        "which the guidance model answers.",
        "",
        "## How it was made",
        "",
        f"- guidance model: {made['models']['guidance']}",
        f"- student model: {made['models']['student']}",
        f"- prompt set: {made['prompts']}" + ("" if made["prompts_match"] else " (not the bundled one)"),
        f"- constraint set merged: {f['judge']['constraint_set']} "
        + ("(C': the constraints the student still failed)" if f["judge"]["constraint_set"] == "failed"
           else "(C: every constraint found)"),
        f"- settings that differ from the method's defaults: {', '.join(changed) or 'none'}",
        "",
        "## Records",
        "",
        "| level | records | file |",
        "| --- | --- | --- |",
        *(f"| {k} | {counts[k]} | `{data_file(k)}` |" for k in levels),
        "",
        "Each line holds the training pair and `meta`: the document id, the level, the constraints in order with their "
        "type and round, and the initial instruction.",
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
    body += ["- Synthetic data: responses are written by the guidance model and inherit its errors and biases.", ""]
    return "\n".join(header + body)
