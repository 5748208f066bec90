"""`airgen report OUT`: what a run made, in the paper's own views, from the run folder alone.

Writes OUT/report/: summary.json (every figure below), PNG plots, report.html (one static page with the plots and
tables) and README.md (a dataset card), and returns a short text summary. The views (paper section 4, appendix):
the funnel (Table 8), constraint types per round (Figure 3b, Table 10), instruction and response lengths per level
(Figure 4) with mean unique word trigrams (Figure 6a), the judge (C' against C per round, check scores, how rounds
ended) for AIR; for CRAB the funnel of constraints, their fates by source and the records by kind; for both,
rejections and dropped levels by stage with one example each, throughput from the journal and metrics, and how
the run was made. Each recipe gives its own views (`Recipe.views`, `Recipe.plots`); this module lays out what
every run has and renders both. Works on a finished run, on one still going or killed, and on one with no record
yet.
"""
from __future__ import annotations

import html
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from airgen import card
from airgen.engines import EMBEDDED
from airgen.files import atomic_binary, atomic_text, atomic_write
from airgen.runview import RunView, defaults_first, load_run, stage_of
from airgen.sink import split_order
from airgen.views import kind_of, mean

REPORT_DIR = "report"


# -- figures ----------------------------------------------------------------------------------------------------------

def _by_kind(lines: list[dict[str, Any]], example_key: str) -> dict[str, list[dict[str, Any]]]:
    """stage -> [{reason kind, count, one example}], most common first."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        groups[line["stage"]][kind_of(str(line["reason"]))].append(line)
    return {stage: [{"reason": kind, "count": len(items), "example": {
        "id": items[0].get(example_key), "reason": items[0]["reason"], "value": items[0].get("value")}}
        for kind, items in sorted(kinds.items(), key=lambda kv: -len(kv[1]))]
        for stage, kinds in sorted(groups.items(), key=lambda kv: -sum(len(v) for v in kv[1].values()))}


def _role_rates(tokens: dict[str, Any], wall: float, metrics: list[dict[str, Any]]) -> dict[str, Any]:
    peaks = metrics[-1].get("peaks", {}) if metrics else {}
    rates = {}
    for role, stages in tokens.items():
        rate = sum(t["output_tokens"] for t in stages.values()) / wall if wall else None
        peak = peaks.get(role)
        rates[role] = {"output_tok_s": rate, "peak_tok_s": peak, "of_peak": rate / peak if rate and peak else None}
    return rates


def _wall_s(metrics: list[dict[str, Any]]) -> float:
    """Wall time over every process that worked on the run: metrics.jsonl's elapsed restarts with each resume."""
    total, last = 0.0, 0.0
    for line in metrics:
        if line["elapsed_s"] < last:
            total += last
        last = line["elapsed_s"]
    return total + last


def figures(view: RunView) -> dict[str, Any]:
    """Every figure of the report, JSON-able: the recipe's own views, then what every run has (rejections,
    throughput, how it was made).

    A recipe's views (`Recipe.views`) give: `about` and `tags` (the card's), `levels`, `funnel` ([label, count]
    rows), `constraint_types` (group -> type -> count), `lengths` (split -> instruction_words and response_words
    lists), `made_notes`, `labels` (the plots' funnel_axis, funnel_title, types_title), `panels` (sections of the
    page: title, plot name, tables of head and rows), `highlights` (lines of the text summary), `card` (fields: what
    a record's meta holds; caveat: the data's own limit), and any figures of its own."""
    records = view.records
    by_split = Counter(r["meta"]["split"] for r in records)
    with_records = {r["meta"]["doc_id"] for r in records}

    tokens: dict[str, dict[str, dict[str, int]]] = defaultdict(lambda: defaultdict(Counter))
    spend: dict[str, Counter] = defaultdict(Counter)
    outcome = {line.get("unit", line.get("id")): f"rejected at {line['stage']}" for line in view.rejected}
    outcome.update({d: "records" for d in with_records})
    for e in view.calls:
        if "r" in e:
            continue
        stage = stage_of(e["k"])
        t = tokens[view.roles.get(stage, "?")][stage]
        t["calls"] += 1
        t["prompt_tokens"] += e["p"]
        t["output_tokens"] += e["o"]
        t["cached_tokens"] += e["c"]
        group = spend[outcome.get(e["s"], "unfinished")]
        group["prompt_tokens"] += e["p"]
        group["output_tokens"] += e["o"]
    prompt = sum(t["prompt_tokens"] for role in tokens.values() for t in role.values())
    cached = sum(t["cached_tokens"] for role in tokens.values() for t in role.values())
    output = sum(t["output_tokens"] for role in tokens.values() for t in role.values())
    total = sum(g["prompt_tokens"] + g["output_tokens"] for g in spend.values())
    useful = spend["records"]["prompt_tokens"] + spend["records"]["output_tokens"] if "records" in spend else 0
    settings_rows = defaults_first(view.config)
    wall = _wall_s(view.metrics)

    settings = view.run_info.get("settings", {})
    models = settings.get("models", {})
    names = records[0]["meta"].get("models", {}) if records else {}
    return {
        "out": str(view.out),
        "recipe": view.recipe.name,
        "title": view.recipe.title,
        "unit": view.recipe.unit,
        "records": len(records),
        "splits": sorted(by_split, key=split_order),
        "records_by_split": {k: by_split[k] for k in sorted(by_split, key=split_order)},
        "in_flight": len(view.in_flight),
        **view.recipe.views(view),
        "rejected": _by_kind(view.rejected, "id"),
        "dropped_levels": _by_kind(view.dropped_levels, "unit"),
        "throughput": {
            "tokens": {role: {stage: dict(t) for stage, t in stages.items()} for role, stages in tokens.items()},
            "prompt_tokens": prompt, "output_tokens": output, "cached_tokens": cached,
            "prefix_cache_hit": cached / prompt if prompt else None,
            "goodput": useful / total if total else None,
            "spend": {k: dict(v) for k, v in sorted(spend.items())},
            "wall_s": wall, "output_tok_s": output / wall if wall else None,
            # Each role's output tokens/s over the run, and the share of its engine's peak where one is known.
            "roles": _role_rates(tokens, wall, view.metrics),
        },
        "made": {
            "models": {role: names.get(role) or models.get(role) for role in view.recipe.roles},
            "model_identities": models,
            "prompts": settings.get("prompts"), "prompts_match": view.prompts_match,
            "preset": view.run_info.get("preset"),
            "settings": [list(row) for row in settings_rows],
            # Where the run's settings are not those of the authors' code (recipes with an authors preset).
            "unlike_authors": [[name, value, authors] for name, value, _, authors in settings_rows
                               if authors is not None and value != authors],
        },
        "limits": _limits(view, models),
    }


def _limits(view: RunView, models: dict[str, str]) -> list[str]:
    notes = []
    if EMBEDDED in models.values():
        notes.append("Made with the bundled 135M demo model (SmolLM2-135M-Instruct) and the 'tiny' preset: it shows "
                     "the method at work, it is not training data.")
    if view.in_flight:
        notes.append(f"The run is not finished: {len(view.in_flight)} samples were in flight when this report was "
                     "made (rerun the same `airgen run` command to finish it).")
    if not view.prompts_match:
        notes.append("The bundled prompt set differs from the one the run was made with: the rounds shown are "
                     "rebuilt with the current one and may differ from what the run did.")
    return notes


# -- the text summary ---------------------------------------------------------------------------------------------------

def text_summary(f: dict[str, Any], folder: Path) -> str:
    lines = [f"report of {f['out']} ({f['recipe']}): {f['records']} records"
             + (f" ({', '.join(f'{k} {n}' for k, n in f['records_by_split'].items())})" if f["records"] else "")
             + (f"; {f['in_flight']} samples still in flight" if f["in_flight"] else "")]
    width = max(len(label) for label, _ in f["funnel"])
    lines += [f"  {label:<{width}}  {'-' if n is None else n}" for label, n in f["funnel"]]
    for group, counts in f["constraint_types"].items():
        top = ", ".join(f"{t} {n}" for t, n in list(counts.items())[:3])
        lines.append(f"  {group} types: {top}")
    lines += [f"  {line}" for line in f["highlights"]]
    for stage, kinds in f["rejected"].items():
        lines.append(f"  rejected at {stage}: {sum(k['count'] for k in kinds)} ({kinds[0]['reason']})")
    t = f["throughput"]
    if t["output_tokens"]:
        hit = f", prefix-cache hit {t['prefix_cache_hit']:.0%}" if t["prefix_cache_hit"] is not None else ""
        good = f", goodput {t['goodput']:.0%}" if t["goodput"] is not None else ""
        lines.append(f"  {t['prompt_tokens']} prompt + {t['output_tokens']} output tokens{hit}{good}")
        lines += [f"  {role}: {r['output_tok_s']:,.0f} output tok/s, {r['of_peak']:.0%} of its peak "
                  f"{r['peak_tok_s']:,.0f}" for role, r in t["roles"].items() if r["of_peak"] is not None]
    made = f["made"]
    unlike = made["unlike_authors"]
    lines.append(f"  preset: {made['preset'] or 'none'}" + (
        f"; unlike the authors' code: {', '.join(f'{n} = {v!r} (theirs {a!r})' for n, v, a in unlike)}" if unlike
        else "; every method setting as in the authors' code" if any(row[3] is not None for row in made["settings"])
        else ""))
    lines += [f"  note: {n}" for n in f["limits"]]
    if not f["records"]:
        lines.append("  no records yet: the report shows how far the run got")
    lines.append(f"  {folder / 'report.html'} (open it in a browser), {folder / 'README.md'} (dataset card)")
    return "\n".join(lines)


# -- plots --------------------------------------------------------------------------------------------------------------

def plots(f: dict[str, Any], folder: Path, recipe: Any) -> dict[str, str]:
    """name -> PNG file written into `folder`; a view without data has no plot. `recipe` adds its own."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    made: dict[str, str] = {}

    def save(fig, name: str) -> None:
        fig.tight_layout()
        with atomic_binary(folder / f"{name}.png") as handle:
            fig.savefig(handle, format="png", dpi=100)
        plt.close(fig)
        made[name] = f"{name}.png"

    labels = [label for label, n in f["funnel"] if n is not None]
    if labels:
        counts = [n for _, n in f["funnel"] if n is not None]
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(labels) + 1))
        ax.barh(labels[::-1], counts[::-1], color="tab:blue")
        for y, n in enumerate(counts[::-1]):
            ax.text(n, y, f" {n}", va="center")
        ax.set_xlabel(f["labels"]["funnel_axis"])
        ax.set_title(f["labels"]["funnel_title"])
        save(fig, "funnel")

    rounds = f["constraint_types"]
    if rounds:
        kinds = sorted({t for c in rounds.values() for t in c})
        cmap = plt.get_cmap("tab20")
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(rounds) + 2))
        for i, (r, counts) in enumerate(rounds.items()):
            total, left = sum(counts.values()), 0.0
            for j, kind in enumerate(kinds):
                share = counts.get(kind, 0) / total
                ax.barh(r, share, left=left, color=cmap(j % 20), label=kind if i == 0 else None)
                left += share
        ax.set_xlim(0, 1)
        ax.set_xlabel("share of the group's constraints")
        ax.set_title(f["labels"]["types_title"])
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
        save(fig, "constraint_types")

    lengths = {k: v for k, v in f["lengths"].items() if v["instruction_words"]}
    answered = [k for k, v in lengths.items() if "response_words" in v]  # AIR's initial instructions have none
    if answered:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        keys = list(lengths)
        axes[0].boxplot([lengths[k]["instruction_words"] for k in keys], tick_labels=[_level_label(k) for k in keys])
        axes[0].set_title("instruction length (words)")
        axes[1].boxplot([lengths[k]["response_words"] for k in answered],
                        tick_labels=[_level_label(k) for k in answered])
        axes[1].set_title("response length (words)")
        save(fig, "lengths")
    if len(lengths) > 1 and "mean_unique_trigrams" in f:
        trigrams = {k: v for k, v in f["mean_unique_trigrams"].items() if v is not None}
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot([_level_label(k) for k in trigrams], list(trigrams.values()), marker="o")
        ax.set_ylabel("mean unique word trigrams per instruction")
        ax.set_title("diversity across levels (paper Figure 6a)")
        save(fig, "trigrams")

    recipe.plots(f, plt, save)
    return made


def _level_label(key: str) -> str:
    """An AIR level's key ("2") as "level 2"; other keys ("init", a CRAB record kind) as they are."""
    return f"level {key}" if key.isdigit() else key


# -- the page -----------------------------------------------------------------------------------------------------------

_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}"
        ".note{background:#fff6d6;padding:.5em 1em;border-left:4px solid #e0b000}td.n{text-align:right}")


class Link(NamedTuple):
    """A table cell whose text links to a page, where there is one."""

    text: str
    href: str | None


def _table(head: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, Link):
            text, href = v
            return (f'<td><a href="{html.escape(href)}">{html.escape(text)}</a></td>' if href
                    else f"<td>{html.escape(text)}</td>")
        text = "-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)
        return f'<td class="n">{html.escape(text)}</td>' if isinstance(v, (int, float)) else f"<td>{html.escape(text)}</td>"
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows) + "</table>")


def page(f: dict[str, Any], images: dict[str, str]) -> str:
    img = lambda name: f'<img src="{images[name]}" alt="{name}">' if name in images else ""  # noqa: E731
    parts = [f"<h1>airgen report: {html.escape(f['out'])}</h1>",
             *(f'<p class="note">{html.escape(n)}</p>' for n in f["limits"]),
             f"<p>{html.escape(f['title'])} run: {f['records']} records ("
             + html.escape(", ".join(f"{k}: {n}" for k, n in f["records_by_split"].items()) or "none yet") + ").</p>",
             "<h2>Funnel</h2>", img("funnel"), _table(["stage", "count"], f["funnel"]),
             "<h2>Constraint types</h2>", img("constraint_types"),
             _table(["group", "type", "count"], [[r, t, n] for r, c in f["constraint_types"].items()
                                                  for t, n in c.items()]),
             "<h2>Lengths</h2>", img("lengths"), img("trigrams"),
             _table(["records", "count", "mean instruction words", "mean response words", "mean unique trigrams"],
                    [[_level_label(k), len(v["instruction_words"]), mean(v["instruction_words"]),
                      mean(v.get("response_words", [])), f.get("mean_unique_trigrams", {}).get(k)]
                     for k, v in f["lengths"].items()])]
    for panel in f["panels"]:
        parts += [f"<h2>{html.escape(panel['title'])}</h2>", img(panel["plot"]) if panel["plot"] else "",
                  *(_table(t["head"], t["rows"]) for t in panel["tables"])]
    traces = f.get("traces", {})
    for title, key in ((f"Rejected {f['unit']}s", "rejected"), ("Dropped levels", "dropped_levels")):
        parts.append(f"<h2>{title}</h2>")
        parts.append(_table(["stage", "reason", "count", "example"],
                            [[stage, k["reason"], k["count"],
                              Link(f"{k['example']['id']}: {k['example']['reason']}", traces.get(k["example"]["id"]))]
                             for stage, kinds in f[key].items() for k in kinds]))
    t = f["throughput"]
    parts += ["<h2>Throughput</h2>",
              _table(["role", "stage", "calls", "prompt tokens", "output tokens", "cached tokens"],
                     [[role, stage, v.get("calls"), v.get("prompt_tokens"), v.get("output_tokens"),
                       v.get("cached_tokens")] for role, stages in t["tokens"].items() for stage, v in stages.items()]),
              _table(["figure", "value"], [["prefix-cache hit", t["prefix_cache_hit"]], ["goodput", t["goodput"]],
                                           ["wall s (all processes)", t["wall_s"]],
                                           ["output tokens/s", t["output_tok_s"]],
                                           *([f"{role} output tokens/s, share of its peak {r['peak_tok_s']:,.0f}",
                                              r["of_peak"]] for role, r in t["roles"].items()
                                             if r["of_peak"] is not None)]),
              "<h2>How it was made</h2>",
              _table(["", ""], [*([f"{role} model", name] for role, name in f["made"]["models"].items()),
                                ["prompt set", f["made"]["prompts"]], ["preset", f["made"]["preset"]]]),
              _table(["setting", "value", "default", "authors' code"], f["made"]["settings"])]
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>airgen report</title><style>{_CSS}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def _trace_pages(f: dict[str, Any], out: Path, folder: Path) -> dict[str, str]:
    """Each example rejection's and dropped level's document told call by call (`airgen trace`): id -> its page."""
    from airgen import trace

    made = {}
    ids = {k["example"]["id"] for key in ("rejected", "dropped_levels") for kinds in f[key].values() for k in kinds}
    for unit in sorted(i for i in ids if i):
        try:
            story = trace.trace(out, unit)
        except (trace.TraceError, OSError):
            continue
        made[unit] = f"trace/{trace.write_page(folder / 'trace', story).name}"
    return made


def write_report(out: Path) -> tuple[Path, str]:
    """Write OUT/report/ and return (the folder, the text summary)."""
    view = load_run(out)
    f = figures(view)
    folder = Path(out) / REPORT_DIR
    folder.mkdir(exist_ok=True)
    f["traces"] = _trace_pages(f, Path(out), folder)
    images = plots(f, folder, view.recipe)
    atomic_write(folder / "summary.json", orjson.dumps(f, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    with atomic_text(folder / "report.html") as handle:
        handle.write(page(f, images))
    with atomic_text(folder / "README.md") as handle:
        handle.write(card.dataset_card(f, images))
    return folder, text_summary(f, folder)
