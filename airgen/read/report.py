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

from airgen.read import card

from airgen.method import recipes

from airgen.store import sink
from airgen.method.calls import split_key
from airgen.engines import EMBEDDED
from airgen.store.files import atomic_binary, atomic_text, atomic_write
from airgen.method.flow import Done, Rejected
from airgen.method.recipe import Ended
from airgen.store.folder import METRICS, STATUS, stream
from airgen.read.view import OUTPUTS, Folder, defaults_first, lines, open_folder, units
from airgen.store.sink import split_order
from airgen.method.views import kind_of


def stage_of(key: str) -> str:
    return split_key(key)[1]

REPORT_DIR = "report"


# -- figures ----------------------------------------------------------------------------------------------------------

def _role_rates(tokens: dict[str, Any], wall: float, peaks: dict[str, float]) -> dict[str, Any]:
    rates = {}
    for role, stages in tokens.items():
        rate = sum(t["output_tokens"] for t in stages.values()) / wall if wall else None
        peak = peaks.get(role)
        rates[role] = {"output_tok_s": rate, "peak_tok_s": peak, "of_peak": rate / peak if rate and peak else None}
    return rates


class Shared:
    """What every run has, counted in the same pass as the recipe's own tally: units read, in flight and with
    records, records by split, rejections and drops by kind (one example each), tokens by role and stage, and what
    they were spent on."""

    def __init__(self, folder: Folder):
        self.roles = folder.roles
        self.units = self.in_flight = self.unreadable = self.records = self.with_records = 0
        self.by_split: Counter = Counter()
        self.last_unit: str | None = None
        self.kinds: dict[str, dict[str, dict[str, list]]] = {sink.REJECTED: {}, sink.DROPPED_LEVELS: {}}
        self.tokens: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self.spend: dict[str, Counter] = defaultdict(Counter)

    def unit(self, ended: Ended) -> None:
        self.units += 1
        self.in_flight += not ended.finished
        outcome = ("unfinished" if not ended.finished
                   else "records" if isinstance(ended.ending, Done) and ended.ending.records
                   else f"rejected at {ended.ending.stage}" if isinstance(ended.ending, Rejected) else "finished")
        for e in ended.calls:
            if "r" in e:
                continue
            stage = stage_of(e["k"])
            t = self.tokens[self.roles.get(stage, "?")][stage]
            t["calls"] += 1
            t["prompt_tokens"] += e["p"]
            t["output_tokens"] += e["o"]
            t["cached_tokens"] += e["c"]
            t["thinking_tokens"] += e.get("to", 0)
            self.spend[outcome]["prompt_tokens"] += e["p"]
            self.spend[outcome]["output_tokens"] += e["o"]

    def line(self, name: str, item: dict[str, Any]) -> None:
        if name == sink.RECORDS:
            self.records += 1
            self.by_split[item["meta"]["split"]] += 1
            unit = item["meta"]["doc_id"]
            if unit != self.last_unit:  # a unit's records are written together
                self.with_records += 1
                self.last_unit = unit
        elif name in self.kinds:
            if name == sink.REJECTED and item["stage"] == "read" and str(item.get("unit", "")).startswith("@"):
                self.unreadable += 1
            kinds = self.kinds[name].setdefault(item["stage"], {})
            kind = kinds.setdefault(kind_of(str(item["reason"])), [0, item])
            kind[0] += 1

    def by_kind(self, name: str, example_key: str) -> dict[str, list[dict[str, Any]]]:
        """stage -> [{reason kind, count, one example}], most common first."""
        return {stage: [{"reason": kind, "count": n, "example": {
            "id": item.get(example_key), "reason": item["reason"], "value": item.get("value")}}
            for kind, (n, item) in sorted(kinds.items(), key=lambda kv: -kv[1][0])]
            for stage, kinds in sorted(self.kinds[name].items(), key=lambda kv: -sum(n for n, _ in kv[1].values()))}

    def figures(self) -> dict[str, Any]:
        """What the recipe's figures may use (`Tally.figures`)."""
        return {"units_read": self.units, "unreadable": self.unreadable, "in_flight": self.in_flight,
                "records": self.records, "units_with_records": self.with_records,
                "records_by_split": {k: self.by_split[k] for k in sorted(self.by_split, key=split_order)}}


def _metrics(out: Path) -> tuple[float, dict[str, float]]:
    """(wall time over every process that worked on the run, the engines' known peaks) from metrics.jsonl, whose
    elapsed restarts with each resume."""
    total, last, peaks = 0.0, 0.0, {}
    for line in stream(out / METRICS):
        if line["elapsed_s"] < last:
            total += last
        last = line["elapsed_s"]
        peaks = line.get("peaks", peaks)
    return total + last, peaks


def figures(out: Path) -> dict[str, Any]:
    """Every figure of the report, JSON-able, in one pass over the run folder: the recipe's own (`Recipe.tally`),
    then what every run has (rejections, throughput, how it was made)."""
    folder = open_folder(out)
    tally, shared = folder.recipe.tally(folder), Shared(folder)
    for ended in units(folder):
        shared.unit(ended)
        tally.unit(ended)
    for name in OUTPUTS:
        for item in lines(folder, name):
            shared.line(name, item)
            tally.line(name, item)
    common = shared.figures()
    own = tally.figures(common)
    tokens = shared.tokens
    prompt = sum(t["prompt_tokens"] for role in tokens.values() for t in role.values())
    cached = sum(t["cached_tokens"] for role in tokens.values() for t in role.values())
    output = sum(t["output_tokens"] for role in tokens.values() for t in role.values())
    thinking = sum(t["thinking_tokens"] for role in tokens.values() for t in role.values())
    spend = shared.spend
    total = sum(g["prompt_tokens"] + g["output_tokens"] for g in spend.values())
    useful = spend["records"]["prompt_tokens"] + spend["records"]["output_tokens"] if "records" in spend else 0
    settings_rows = defaults_first(folder.config)
    wall, peaks = _metrics(folder.out)
    settings = folder.info.get("settings", {})
    models = settings.get("models", {})
    return {
        "out": str(folder.out),
        "recipe": folder.recipe.name,
        "title": folder.recipe.title,
        "unit": folder.recipe.unit,
        "records": common["records"],
        "splits": list(common["records_by_split"]),
        "records_by_split": common["records_by_split"],
        "in_flight": common["in_flight"],
        **own,
        "rejected": shared.by_kind(sink.REJECTED, "id"),
        "dropped_levels": shared.by_kind(sink.DROPPED_LEVELS, "unit"),
        "throughput": {
            "tokens": {role: {stage: dict(t) for stage, t in stages.items()} for role, stages in tokens.items()},
            "prompt_tokens": prompt, "output_tokens": output, "cached_tokens": cached, "thinking_tokens": thinking,
            "prefix_cache_hit": cached / prompt if prompt else None,
            "goodput": useful / total if total else None,
            "spend": {k: dict(v) for k, v in sorted(spend.items())},
            "wall_s": wall, "output_tok_s": output / wall if wall else None,
            # Each role's output tokens/s over the run, and the share of its engine's peak where one is known.
            "roles": _role_rates(tokens, wall, peaks),
        },
        "made": {
            "models": {role: models.get(role) for role in folder.recipe.roles},
            "prompts": settings.get("prompts"), "prompts_match": folder.prompts_match,
            "preset": folder.info.get("preset"),
            "settings": [list(row) for row in settings_rows],
            # Where the run's settings are not those of the authors' code (recipes with an authors preset).
            "unlike_authors": [[name, value, authors] for name, value, _, authors in settings_rows
                               if authors is not None and value != authors],
        },
        "limits": _limits(folder, models, common["in_flight"]),
    }


def _stopped_early(folder: Folder) -> str | None:
    """What status.json says of a run its deadline stopped (or one that was stopped otherwise)."""
    try:
        status = orjson.loads((folder.out / STATUS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    s, unit = status["samples"], folder.recipe.unit
    left = "" if s["left"] is None else f", {s['left']} left"
    if status["state"] == "stopped" and status["why"] == "deadline":
        return (f"The run stopped at its deadline ({status['deadline']}): {s['finished']} {unit}s finished{left}; "
                "the same `airgen run` command continues it.")
    if status["state"] == "stopped" and status["why"] in ("interrupted", "cancelled", "error"):
        return (f"The run was stopped ({status['why']}"
                + (f": {status['last_error']}" if status["last_error"] else "")
                + f"): {s['finished']} {unit}s finished{left}; the same `airgen run` command continues it.")
    return None


def _limits(folder: Folder, models: dict[str, str], in_flight: int) -> list[str]:
    notes = []
    stopped = _stopped_early(folder)
    if stopped is not None:
        notes.append(stopped)
    if EMBEDDED in models.values():
        notes.append("Made with the bundled 135M demo model (SmolLM2-135M-Instruct) and the 'tiny' preset: it shows "
                     "the method at work, it is not training data.")
    if in_flight:
        notes.append(f"The run is not finished: {in_flight} {folder.recipe.unit}s were in flight when this report was "
                     "made (rerun the same `airgen run` command to finish it).")
    if not folder.prompts_match:
        notes.append("The bundled prompt set differs from the one the run was made with: the rounds shown are "
                     "rebuilt with the current one and may differ from what the run did.")
    return notes


# -- the text summary ---------------------------------------------------------------------------------------------------

def text_summary(f: dict[str, Any], folder: Path) -> str:
    lines = [f"report of {f['out']} ({f['recipe']}): {f['records']} records"
             + (f" ({', '.join(f'{k} {n}' for k, n in f['records_by_split'].items())})" if f["records"] else "")
             + (f"; {f['in_flight']} {f['unit']}s still in flight" if f["in_flight"] else "")]
    width = max(len(label) for label, _ in f["funnel"])
    lines += [f"  {label:<{width}}  {'-' if n is None else n}" for label, n in f["funnel"]]
    lines += [f"  {line}" for line in f["highlights"]]
    for stage, kinds in f["rejected"].items():
        lines.append(f"  rejected at {stage}: {sum(k['count'] for k in kinds)} ({kinds[0]['reason']})")
    t = f["throughput"]
    if t["output_tokens"]:
        hit = f", prefix-cache hit {t['prefix_cache_hit']:.0%}" if t["prefix_cache_hit"] is not None else ""
        good = f", goodput {t['goodput']:.0%}" if t["goodput"] is not None else ""
        thinking = f" ({t['thinking_tokens']} of them thinking)" if t["thinking_tokens"] else ""
        lines.append(f"  {t['prompt_tokens']} prompt + {t['output_tokens']} output tokens{thinking}{hit}{good}")
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
    """name -> PNG file written into `folder`: the funnel, and the recipe's own (`Recipe.plots`); a view without
    data has no plot."""
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
    recipe.plots(f, plt, save)
    return made


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
             "<h2>Funnel</h2>", img("funnel"), _table(["stage", "count"], f["funnel"])]
    for panel in f["panels"]:
        parts += [f"<h2>{html.escape(panel['title'])}</h2>", *(img(name) for name in panel["plots"]),
                  *(_table(t["head"], t["rows"]) for t in panel["tables"])]
    traces = f.get("traces", {})
    for title, key in ((f"Rejected {f['unit']}s", "rejected"), ("Parts that made no record", "dropped_levels")):
        parts.append(f"<h2>{title}</h2>")
        parts.append(_table(["stage", "reason", "count", "example"],
                            [[stage, k["reason"], k["count"],
                              Link(f"{k['example']['id']}: {k['example']['reason']}", traces.get(k["example"]["id"]))]
                             for stage, kinds in f[key].items() for k in kinds]))
    t = f["throughput"]
    parts += ["<h2>Throughput</h2>",
              _table(["role", "stage", "calls", "prompt tokens", "output tokens", "of them thinking", "cached tokens"],
                     [[role, stage, v.get("calls"), v.get("prompt_tokens"), v.get("output_tokens"),
                       v.get("thinking_tokens"), v.get("cached_tokens")]
                      for role, stages in t["tokens"].items() for stage, v in stages.items()]),
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
    from airgen.read import trace

    ids = {k["example"]["id"] for key in ("rejected", "dropped_levels") for kinds in f[key].values() for k in kinds}
    try:
        told = trace.stories(out, sorted(i for i in ids if i))
    except (trace.TraceError, OSError):
        return {}
    return {unit: f"trace/{trace.write_page(folder / 'trace', story).name}" for unit, story in sorted(told.items())}


def write_report(out: Path) -> tuple[Path, str]:
    """Write OUT/report/ and return (the folder, the text summary)."""
    f = figures(out)
    folder = Path(out) / REPORT_DIR
    folder.mkdir(exist_ok=True)
    f["traces"] = _trace_pages(f, Path(out), folder)
    images = plots(f, folder, recipes.get(f["recipe"]))
    atomic_write(folder / "summary.json", orjson.dumps(f, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    with atomic_text(folder / "report.html") as handle:
        handle.write(page(f, images))
    with atomic_text(folder / "README.md") as handle:
        handle.write(card.dataset_card(f, images))
    return folder, text_summary(f, folder)
