"""The recipes a run can follow, and what the shared machinery needs to know of each: its flow, its prompt set,
the roles it asks, its stages in the method's order, and how it reads its input.

`run`, `bench`, `report` and `export` look a recipe up here by `config.recipe`; nothing else names one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from airgen.calls import Role
from airgen.config import Config
from airgen.prompts import PromptSet
from airgen.recipe import Recipe
from airgen.step import Step


@dataclass(frozen=True)
class Kind:
    name: str
    roles: tuple[Role, ...]
    stages: tuple[str, ...]
    flow: Callable[[Config, PromptSet], Recipe]
    steps: Callable[[Config], dict[str, Step]]
    prompts: Callable[[Path | None], PromptSet]
    read: Callable[[Sequence[Path], int | None], Iterator[Any]]  # the admitted units of `inputs`, up to a limit
    default_input: Callable[[], Path]  # what `airgen run` reads when given no input
    unit: str  # what one input entry is called, in messages and the report
    blank: Callable[[str], Any]  # an input unit with only its id: enough to replay a journal (keys, not texts)
    section: str  # the config section of the recipe's settings
    barrier: Callable[[Any], tuple[int, int, int]]  # a request's batch in the authors' stage-by-stage schedule


def _air() -> Kind:
    from airgen import corpus
    from airgen.air import steps
    from airgen.air.flow import Flow

    return Kind("air", ("guidance", "student"), steps.STAGES, lambda c, p: Flow(c.flow, p, c.seed),
                lambda c: steps.steps_for(c.flow), steps.load_prompts, corpus.admitted, corpus.bundled_corpus,
                "document", lambda unit: corpus.Document(unit, "", ""), "flow", steps.barrier_key)


def _crab() -> Kind:
    from airgen import pairs
    from airgen.crab import steps
    from airgen.crab.flow import CrabFlow

    return Kind("crab", ("guidance",), steps.STAGES, lambda c, p: CrabFlow(c.crab, p, c.seed),
                lambda c: dict(steps.STEPS), steps.load_prompts, pairs.admitted_pairs, pairs.bundled_pairs, "pair",
                lambda unit: pairs.Pair(unit, "", "", ""), "crab", steps.barrier_key)


KINDS: dict[str, Callable[[], Kind]] = {"air": _air, "crab": _crab}


def recipe_of(config: Config) -> Kind:
    return KINDS[config.recipe]()
