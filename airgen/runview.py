"""A run folder read back: what `airgen report` and `airgen export` know about a run, from its files alone.

Nothing is re-run and no input is read: the records, rejections and dropped levels are the output files; the state of
every sample (its rounds, constraints, check scores, how its rounds ended) is rebuilt by replaying the journal
through the same pure flow that made it, so rejected documents and a run that is still going or was killed are seen
as well as finished ones.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from airgen import journal, run, sink
from airgen.air.flow import Flow, Sample
from airgen.air.steps import load_prompts, steps_for
from airgen.calls import Completion, Refusal, split_key
from airgen.config import Config, ConfigError, load
from airgen.corpus import Document
from airgen.recipe import replay


class NotARun(ConfigError):
    """The folder is not an airgen run folder; the message says what is missing."""


@dataclass
class RunView:
    out: Path
    run_info: dict[str, Any]  # run.json
    config: Config  # the method settings the run was made with (run.json's fingerprint fields)
    records: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    dropped_levels: list[dict[str, Any]]
    samples: dict[str, Sample]  # doc id -> its state, replayed from the journal
    finished: set[str]  # units the journal marks done
    calls: list[dict[str, Any]]  # journal call events (answered and refused), in order
    metrics: list[dict[str, Any]]  # metrics.jsonl lines
    prompts_match: bool  # the bundled prompt set is the one the run was made with (else the replay may differ)
    selection: dict[str, Any] | None = None  # summary.json of the `airgen select` that made the input, if any
    roles: dict[str, str] = field(default_factory=dict)  # stage -> role

    @property
    def in_flight(self) -> list[str]:
        """Samples with journaled calls but no end: in flight when the run stopped (or now)."""
        return sorted(d for d in self.samples if d not in self.finished)


def _lines(path: Path) -> list[dict[str, Any]]:
    """A JSONL file's whole lines; a torn last line (a run killed mid-write, or writing now) is left out."""
    if not path.exists():
        return []
    out = []
    for raw in path.read_bytes().split(b"\n"):
        if raw.strip():
            try:
                out.append(orjson.loads(raw))
            except orjson.JSONDecodeError:
                continue
    return out


def load_run(out: Path) -> RunView:
    out = Path(out)
    if not out.is_dir():
        raise NotARun(f"{out} is not a folder")
    run_file = out / run.RUN_FILE
    if not run_file.is_file():
        raise NotARun(f"{out} holds no {run.RUN_FILE}: not an airgen run folder")
    try:
        info = orjson.loads(run_file.read_bytes())
        settings = info["settings"]
        config = load(overrides={"flow": settings["flow"], "seed": settings["seed"]})
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise NotARun(f"{run_file} is not a run.json airgen wrote ({e})") from None
    prompts = load_prompts()
    events = _lines(out / run.JOURNAL)
    calls = [e for e in events if "k" in e]
    finished = {e["done"] for e in events if "done" in e}
    samples = _replay(config, prompts, calls)
    return RunView(
        out=out, run_info=info, config=config,
        records=_lines(out / sink.RECORDS), rejected=_lines(out / sink.REJECTED),
        dropped_levels=_lines(out / sink.DROPPED_LEVELS), samples=samples, finished=finished, calls=calls,
        metrics=_lines(out / run.METRICS), prompts_match=prompts.fingerprint == settings.get("prompts"),
        selection=_selection(info), roles={name: step.role for name, step in steps_for(config.flow).items()},
    )


def _replay(config: Config, prompts, calls: list[dict[str, Any]]) -> dict[str, Sample]:
    """Each journaled sample's state: its calls replayed through the flow (the document text is not needed, only
    the keys the flow asks for)."""
    answers: dict[str, dict[str, Completion | Refusal]] = defaultdict(dict)
    for e in calls:
        answers[e["s"]][e["k"]] = journal.completion(e)
    flow = Flow(config.flow, prompts, config.seed)
    samples = {}
    for unit, known in answers.items():
        sample = flow.sample(Document(unit, "", ""))
        replay(flow, sample, flow.start(sample), lambda request: known.get(request.key))
        samples[unit] = sample
    return samples


def _selection(info: dict[str, Any]) -> dict[str, Any] | None:
    """The summary of `airgen select` when the run's one input is a selection's selected.jsonl."""
    inputs = [Path(p) for p in info.get("inputs", [])]
    if len(inputs) == 1 and inputs[0].name == "selected.jsonl":
        summary = inputs[0].with_name("summary.json")
        if summary.is_file():
            try:
                return orjson.loads(summary.read_bytes())
            except orjson.JSONDecodeError:
                return None
    return None


def stage_of(key: str) -> str:
    return split_key(key)[1]


def defaults_first(config: Config) -> list[tuple[str, Any, Any]]:
    """(setting, value, default) of the method settings, the ones that differ from the defaults first."""
    default = dataclasses.asdict(load().flow)
    rows = [(f"flow.{k}", v, default[k]) for k, v in dataclasses.asdict(config.flow).items()]
    rows.append(("seed", config.seed, 0))
    return sorted(rows, key=lambda r: r[1] == r[2])

