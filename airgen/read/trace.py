"""`airgen trace OUT ID`: the whole story of one unit of a run, rebuilt by replaying its journaled calls through the
flow that made them: each call in the order it came back (its stage and round or level, the prompt as sent, the
answer, tokens, time, prefix-cache hit, what the step made of it) and how the unit ended (its records and dropped
levels, or its rejection). A unit still in flight, or one of a killed run, gets the part that happened and says so.

Fast on big folders: the first trace of a folder indexes its journal (each unit's lines, by byte offset) into
OUT/trace.index, a sorted binary file; later traces search it memory-mapped, add what the journal grew by since,
and read only the unit's lines.
"""
from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from airgen.method import recipes
from airgen.method.calls import Completion, Refusal, Request, split_key
from airgen.store.files import atomic_text
from airgen.method.flow import Done, FlowError, Rejected, replay
from airgen.method.rows import Rejection, unit_name
from airgen.read.view import answers, events_by_scan, events_of, index, read_info
from airgen.method.step import Reject



class TraceError(ValueError):
    """No story to tell (an unknown id, a folder that is no run); the message says why."""


@dataclass
class Call:
    """One call of the unit, as it happened."""

    request: Request
    event: dict[str, Any]  # its journal line
    made: str  # what the step made of the answer: "accepted: ...", "fault: ...", "refused: ..."


@dataclass
class Story:
    unit: str
    source: str
    recipe: str
    calls: list[Call] = field(default_factory=list)
    ending: Done | Rejected | None = None
    waiting: list[str] = field(default_factory=list)  # call keys asked and not answered (in flight, or to come)
    rejected_on_reading: Rejection | None = None


# -- the story ---------------------------------------------------------------------------------------------------

def trace(out: Path, unit_id: str) -> Story:
    """The story of one unit, its journal lines found through the index (`view.index`); TraceError for an id
    the run never read."""
    return _stories(out, [unit_id], missing_ok=False, by_index=True)[unit_id]


def stories(out: Path, unit_ids: list[str]) -> dict[str, Story]:
    """The stories of a few units (the report's examples), the run's inputs and journal each read once for all of
    them; an id the run never read has none."""
    return _stories(out, unit_ids, missing_ok=True, by_index=False)


def _stories(out: Path, unit_ids: list[str], missing_ok: bool, by_index: bool) -> dict[str, Story]:
    out = Path(out)
    info, config = read_info(out)
    recipe = recipes.get(config.recipe)
    inputs = [Path(p) for p in info.get("inputs", [])]
    wanted, found, read = set(unit_ids), {}, 0
    for unit in recipe.read(inputs, config.run.limit):
        read += 1
        for name in {unit_name(unit), *([unit.id] if isinstance(unit, Rejection) else [])} & wanted:
            found.setdefault(name, unit)  # the first entry of that name: a document before a repeat of its id
        if len(found) == len(wanted):
            break
    if not missing_ok and wanted - set(found):
        raise TraceError(f"no {recipe.unit} {sorted(wanted - set(found))[0]!r} among the {read} the run read from "
                         f"{', '.join(map(str, inputs))}")
    if by_index:
        idx = index(out)
        events = {name: events_of(out, name, idx) for name in found}
    else:
        events = events_by_scan(out, set(found))
    flow = recipe.flow(config.settings, recipe.prompts(), config.seed)
    models = info["settings"].get("models") or {}
    return {name: _story(flow, recipe, unit, name, events[name], models) for name, unit in found.items()}


def _story(flow: Any, recipe: Any, unit: Any, unit_id: str, lines: list[dict[str, Any]],
           models: dict[str, str]) -> Story:
    if isinstance(unit, Rejection):
        return Story(unit_id, unit.source, recipe.name, rejected_on_reading=unit)
    sample = flow.sample(unit)
    story = Story(unit_id, unit.source, recipe.name)
    events = [e for e in lines if "k" in e]
    calls: list[tuple[int, Call]] = []

    def heard(i: int, request: Request, event: dict[str, Any], known: Completion | Refusal) -> None:
        calls.append((i, Call(request, event, _made(flow, request, known))))

    try:
        step = replay(flow, sample, flow.start(sample), answers(events, models, heard))
    except FlowError as e:
        raise TraceError(f"{unit_id}: the journal and the flow disagree ({e})") from None
    story.calls = [call for _, call in sorted(calls, key=lambda c: c[0])]  # in the order they came back
    if isinstance(step, list):
        story.waiting = sorted(sample.pending)
    else:
        story.ending = step
    return story


def _made(flow: Any, request: Request, answer: Completion | Refusal) -> str:
    if isinstance(answer, Refusal):
        return f"refused by the engine: {answer.reason}"
    try:
        value = flow.steps[request.stage].read(request, answer, flow.config, keep_cut=request.stage in flow.keep_cut)
    except Reject as e:
        return f"fault: {e}"
    return f"accepted: {_short(repr(value) if not isinstance(value, str) else value, 300)}"


def _short(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


# -- telling it --------------------------------------------------------------------------------------------------

def _about(call: Call) -> str:
    e, r = call.event, call.request
    _, stage, n = split_key(r.key)
    if "r" in e:
        numbers = "refused"
    else:
        cached = f", {e['c'] / e['p']:.0%} from the prefix cache" if e.get("p") and e.get("c") else ""
        thinking = f" ({e['to']} thinking)" if e.get("to") else ""
        numbers = f"{e['p']} prompt + {e['o']} output tokens{thinking}{cached}, {e.get('ms', 0) / 1000:.1f} s"
        numbers += ", cut at max_tokens" if e.get("f") == "length" else ""
    return f"{stage} {n} ({r.role}): {numbers}"


def ending(story: Story) -> str:
    if story.rejected_on_reading is not None:
        r = story.rejected_on_reading
        return f"rejected when read: {r.rule}" + (f" ({r.value})" if r.value is not None else "")
    end = story.ending
    if end is None:
        return (f"not finished: {len(story.waiting)} calls asked and not answered ({', '.join(story.waiting)}); "
                "the run is still going, or was stopped (rerun it to finish)")
    drops = "; ".join(" ".join(f"{k} {v}" for k, v in d.items() if k not in ("stage", "reason"))
                      + f" dropped at {d['stage']}: {d['reason']}" for d in end.dropped)
    if isinstance(end, Rejected):
        return f"rejected at {end.stage}: {end.reason}" + (f"; {drops}" if drops else "")
    made = ", ".join(r["meta"]["split"] for r in end.records)
    pairs = f", {len(end.pairs)} preference pairs" if end.pairs else ""
    return f"{len(end.records)} records ({made}){pairs}" + (f"; {drops}" if drops else "")


def text(story: Story) -> str:
    lines = [f"{story.recipe} {story.unit}, read from {story.source}: {len(story.calls)} calls"]
    for i, call in enumerate(story.calls, 1):
        lines.append(f"\n[{i}] {_about(call)}")
        for m in call.request.messages:
            lines.append(f"  {m['role']}: " + m["content"].replace("\n", "\n    "))
        if call.event.get("th"):
            lines.append("  thinking: " + call.event["th"].replace("\n", "\n    "))
        answer = call.event.get("t", call.event.get("r", ""))
        lines.append("  answer: " + answer.replace("\n", "\n    "))
        lines.append(f"  -> {call.made}")
    lines.append(f"\nended: {ending(story)}")
    return "\n".join(lines)


def page(story: Story) -> str:
    rows = []
    for i, call in enumerate(story.calls, 1):
        prompt = "".join(f"<p class='m'><b>{html.escape(m['role'])}</b></p><pre>{html.escape(m['content'])}</pre>"
                         for m in call.request.messages)
        answer = html.escape(call.event.get("t", call.event.get("r", "")))
        thinking = (f"<details><summary>thinking</summary><pre>{html.escape(call.event['th'])}</pre></details>"
                    if call.event.get("th") else "")
        rows.append(f"<h3>[{i}] {html.escape(_about(call))}</h3><details><summary>prompt as sent</summary>{prompt}"
                    f"</details>{thinking}<p><b>answer</b></p><pre>{answer}</pre>"
                    f"<p class='made'>{html.escape(call.made)}</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>trace {html.escape(story.unit)}</title>"
            "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}pre{white-space:pre-wrap;"
            "background:#f6f6f6;padding:.5em}.made{color:#555}</style></head><body>"
            f"<h1>{html.escape(story.recipe)} {html.escape(story.unit)}</h1><p>read from "
            f"{html.escape(story.source)}; {len(story.calls)} calls</p>{''.join(rows)}"
            f"<h2>How it ended</h2><p>{html.escape(ending(story))}</p></body></html>\n")


def write_page(folder: Path, story: Story) -> Path:
    """The story's page in `folder` (a run's report/trace/), written whole."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / page_name(story.unit)
    with atomic_text(path) as handle:
        handle.write(page(story))
    return path


def page_name(unit_id: str) -> str:
    """A file name for a unit's page (an id may hold any character)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in unit_id)[:60]
    return f"{safe}-{hashlib.blake2b(unit_id.encode(), digest_size=4).hexdigest()}.html"
