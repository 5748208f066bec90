"""The dataset card: a Hugging Face style README.md (YAML header, then how the data was made, its funnel, its plots and
its limits), for the folder `airgen export` lays out: data/SPLIT.jsonl (AIR: level_K; CRAB: forward, reverse), a
default config `all` that holds every split as a split of its own, and one config per split. The recipe's own words
come in the report's figures (`title`, `about`, `card`)."""
from __future__ import annotations

from typing import Any

from airgen.method.views import checks_line


# The layouts `airgen export --format` writes (`export`).
FORMATS = ("alpaca", "sharegpt", "messages", "prompt-completion", "dpo", "rlvr")
RLVR_LINES = ("Each line is a prompt for RL with verifiable rewards: `prompt` (the instruction, as chat messages), "
              "`checks` (each checkable constraint it asks, as data: `kind`, IFEval's instruction id or airgen's own, "
              "and `args`), `reference` (the answer the run made) and `meta`. `airgen.checks.reward(completions, "
              "checks)` gives the share of checks a completion meets; passed to TRL's `GRPOTrainer` as a reward "
              "function it reads the `checks` column.")


_HEADINGS = {"records": "Records", "pairs": "Pairs", "rlvr": "RLVR rows"}


def size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def data_file(split: str) -> str:
    return f"data/{split}.jsonl"


def dataset_card(f: dict[str, Any], images: dict[str, str], counts: dict[str, int] | None = None,
                 lines: str = "records") -> str:
    """The card for the report's figures `f`; `counts` (split -> lines) where an export kept fewer than the run
    made, `images` (name -> path relative to the card) the plots to show, `lines` what the files hold ("records" or
    "pairs")."""
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
    ]
    if splits:
        # The default: every split, each a split of its own (load_dataset(DIR) and load_dataset(DIR, split=K)).
        header += ["configs:", "- config_name: all", "  default: true", "  data_files:",
                   *(f"  - split: {k}\n    path: {data_file(k)}" for k in splits)]
        for k in splits:
            header += [f"- config_name: {k}", f"  data_files: {data_file(k)}"]
    header.append("---")
    loading = ([f"`load_dataset(DIR)` gives every split (config `all`); `load_dataset(DIR, split=\"{splits[0]}\")` "
                f"one of them, and `load_dataset(DIR, \"{splits[0]}\")` the config of that split alone. `datasets` "
                "caches a folder by its name, not its files: after exporting into this folder again, load it with "
                "`download_mode=\"force_redownload\"`.", ""]
               if splits else [])
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
        *([f"- {checks_line(f['checks'])} (airgen.checks: IFEval's kinds and a few of airgen's; `airgen export "
           "--checked` keeps the records that meet all of theirs)"] if "checks" in f else []),
        f"- settings that differ from the method's defaults: {', '.join(changed) or 'none'}",
        *([f"- preset: {made['preset']}"] if made["preset"] else []),
        *([f"- settings that differ from the authors' code: {', '.join(unlike)}"] if unlike else []),
        "",
        f"## {_HEADINGS[lines]}",
        "",
        f"| split | {_HEADINGS[lines].lower()} | file |",
        "| --- | --- | --- |",
        *(f"| {k} | {counts[k]} | `{data_file(k)}` |" for k in splits),
        "",
        (f["card"]["pairs"] if lines == "pairs" else RLVR_LINES if lines == "rlvr"
         else f"Each line holds the training pair and `meta`: {f['card']['fields']}"),
        "",
        *loading,
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
