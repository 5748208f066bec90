"""The dataset card: a Hugging Face style README.md (YAML header, then how the data was made, its funnel, its plots and
its limits), for the folder `airgen export` lays out: one config per split, data/SPLIT.jsonl (AIR: level-K; CRAB:
forward, reverse). The recipe's own words come in the report's figures (`title`, `about`, `card`)."""
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
    changed = [f"`{name}` = {value!r} (default {default!r})" for name, value, default, _ in made["settings"]
               if value != default]
    unlike = [f"`{name}` = {value!r} (theirs {authors!r})" for name, value, authors in made["unlike_authors"]]
    body = [
        "",
        f"# Complex instruction-following data made with {f['title']}",
        "",
        f"{total} {f['about']}",
        "",
        "## How it was made",
        "",
        *(f"- {role} model: {name}" for role, name in made["models"].items()),
        f"- prompt set: {made['prompts']}" + ("" if made["prompts_match"] else " (not the bundled one)"),
        *(f"- {note}" for note in f["made_notes"]),
        f"- settings that differ from the method's defaults: {', '.join(changed) or 'none'}",
        *([f"- preset: {made['preset']}"] if made["preset"] else []),
        *([f"- settings that differ from the authors' code: {', '.join(unlike)}"] if unlike else []),
        "",
        "## Records",
        "",
        "| split | records | file |",
        "| --- | --- | --- |",
        *(f"| {k} | {counts[k]} | `{data_file(k)}` |" for k in splits),
        "",
        f"Each line holds the training pair and `meta`: {f['card']['fields']}",
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
    body.append(f"- {f['card']['caveat']}")
    body.append("")
    return "\n".join(header + body)
