"""A run folder read back: what `airgen report` and `airgen export` know about a run, from its files alone.

Nothing is re-run and no input is read: the records, rejections and dropped levels are the output files; the state of
every sample (its rounds, constraints, check scores, how its rounds ended) is rebuilt by replaying the journal
through the same pure flow that made it, so rejected documents and a run that is still going or was killed are seen
as well as finished ones.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from airgen import recipes, sink
from airgen.calls import split_key
from airgen.config import Config
from airgen.flow import Unit
from airgen.recipe import Recipe
from airgen.runfolder import JOURNAL, METRICS, lines, read_info, replay_units


@dataclass
class RunView:
    out: Path
    run_info: dict[str, Any]  # run.json
    config: Config  # the method settings the run was made with (run.json's fingerprint fields)
    records: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    dropped_levels: list[dict[str, Any]]
    samples: dict[str, Unit]  # unit id -> its state (the recipe's sample), replayed from the journal
    finished: set[str]  # units the journal marks done
    calls: list[dict[str, Any]]  # journal call events (answered and refused), in order
    metrics: list[dict[str, Any]]  # metrics.jsonl lines
    prompts_match: bool  # the bundled prompt set is the one the run was made with (else the replay may differ)
    selection: dict[str, Any] | None = None  # summary.json of the `airgen select` that made the input, if any
    roles: dict[str, str] = field(default_factory=dict)  # stage -> role
    recipe: Recipe | None = None
    pairs: list[dict[str, Any]] = field(default_factory=list)  # preference pairs (pairs.jsonl), where made

    @property
    def in_flight(self) -> list[str]:
        """Samples with journaled calls but no end: in flight when the run stopped (or now)."""
        return sorted(d for d in self.samples if d not in self.finished)


def load_run(out: Path) -> RunView:
    out = Path(out)
    info, config = read_info(out)
    settings = info["settings"]
    recipe = recipes.get(config.recipe)
    prompts = recipe.prompts()
    events = lines(out / JOURNAL)
    calls = [e for e in events if "k" in e]
    finished = {e["done"] for e in events if "done" in e}
    samples = replay_units(recipe.flow(config.settings, prompts, config.seed), recipe.blank, calls)
    return RunView(
        out=out, run_info=info, config=config,
        records=lines(out / sink.RECORDS), rejected=lines(out / sink.REJECTED),
        dropped_levels=lines(out / sink.DROPPED_LEVELS), samples=samples, finished=finished, calls=calls,
        metrics=lines(out / METRICS), prompts_match=prompts.fingerprint == settings.get("prompts"),
        selection=_selection(info), recipe=recipe, pairs=lines(out / sink.PAIRS),
        roles={name: step.role for name, step in recipe.steps(config.settings).items()},
    )


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


AUTHORS = "authors"  # the preset that reproduces the authors' code, where a recipe has one


def defaults_first(config: Config) -> list[tuple[str, Any, Any, Any]]:
    """(setting, value, default, the authors' code's value or None) of the method settings, the ones that differ
    from the defaults first."""
    recipe = recipes.get(config.recipe)
    default = dataclasses.asdict(recipe.settings())
    theirs = recipe.presets.get(AUTHORS)
    authors = dataclasses.asdict(dataclasses.replace(recipe.settings(), **theirs)) if theirs is not None else {}
    rows = [(f"{recipe.section}.{k}", v, default[k], authors.get(k)) for k, v in
            dataclasses.asdict(config.settings).items()]
    rows.append(("seed", config.seed, 0, None))
    return sorted(rows, key=lambda r: r[1] == r[2])

