from __future__ import annotations

from typing import Callable

import pytest

from airgen.method.calls import Completion, Request, split_key
from airgen.air.settings import FlowConfig
from airgen.air.script import MethodScript
from airgen.air.flow import AirFlow, Sample
from airgen.air.recipe import RECIPE as AIR
from airgen.method.prompts import PromptSet
from airgen.method.flow import Done, Rejected


@pytest.fixture(scope="session")
def prompts() -> PromptSet:
    return AIR.prompts()


def completion(text: str, finish: str = "stop") -> Completion:
    return Completion(text, finish, 10, len(text.split()), 0, "scripted")


def drive(flow: AirFlow, sample: Sample, respond: Callable[[Request], str | Completion],
          pick: Callable[[list[Request]], int] | None = None):
    """Run one sample through the flow with scripted answers; returns (final step, requests made). Of the calls in
    flight, the first asked returns first, or the one `pick` chooses."""
    todo = flow.start(sample)
    requests = list(todo)
    while True:
        request = todo.pop(pick(todo) if pick else 0)
        out = respond(request)
        step = flow.advance(sample, request.key, out if isinstance(out, Completion) else completion(out))
        if isinstance(step, (Done, Rejected)):
            return step, requests
        todo.extend(step)
        requests.extend(step)


def script(prompts: PromptSet, overrides: dict[str, object] | None = None, **knobs):
    """MethodScript with per-stage overrides: {stage or 'stage/n': text | Completion | callable(request)}."""
    base = MethodScript(prompts, **knobs)
    overrides = overrides or {}

    def respond(request: Request):
        _, stage, n = split_key(request.key)
        for key in (f"{stage}/{n}", stage):
            if key in overrides:
                out = overrides[key]
                return out(request) if callable(out) else out
        return base(request)

    return respond


def make_flow(prompts: PromptSet, seed: int = 0, **settings) -> AirFlow:
    return AirFlow(FlowConfig(**settings), prompts, seed)
