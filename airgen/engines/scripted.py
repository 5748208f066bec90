"""A scripted engine: answers each request from a function, after an optional delay. For unit tests and for
measuring the scheduler's own cost; it never stands in for a model in a real run. Each recipe's well-formed answers
are its `Recipe.script`; `answers()` serves every registered recipe at once, by stage."""
from __future__ import annotations

import asyncio
from typing import Callable

from airgen.method.calls import Completion, Request
from airgen.method import recipes

Responder = Callable[[Request], "str | Completion"]


class ScriptedEngine:
    def __init__(self, respond: Responder, *, name: str = "scripted",
                 latency: Callable[[Request], float] | None = None):
        self.name = name
        self.about = f"{name} (scripted answers)"
        self._respond = respond
        self._latency = latency
        self.calls: list[Request] = []
        self.outstanding = 0
        self.peak_outstanding = 0

    async def generate(self, request: Request) -> Completion:
        self.calls.append(request)
        self.outstanding += 1
        self.peak_outstanding = max(self.peak_outstanding, self.outstanding)
        try:
            if self._latency is not None:
                await asyncio.sleep(self._latency(request))
            out = self._respond(request)
        finally:
            self.outstanding -= 1
        if isinstance(out, Completion):
            return out
        prompt = sum(len(m["content"].split()) for m in request.messages)
        return Completion(out, "stop", prompt, len(out.split()), 0, self.name)

    async def close(self) -> None:
        return None


def answers(**knobs: dict) -> Responder:
    """Each registered recipe's scripted answers, chosen by the request's stage (stage names are a recipe's own);
    `knobs` by recipe name, e.g. answers(air={"fail": 1.0})."""
    by_stage = {}
    for recipe in recipes.every():
        script = recipe.script(**knobs.get(recipe.name, {}))
        by_stage.update(dict.fromkeys(recipe.stages, script))

    def respond(request: Request):
        script = by_stage.get(request.stage)
        if script is None:
            raise ValueError(f"no recipe has a stage {request.stage!r}")
        return script(request)

    return respond
