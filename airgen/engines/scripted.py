"""A scripted engine: answers each request from a function, after an optional delay. For unit tests and for
measuring the scheduler's own cost; it never stands in for a model in a real run."""
from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Callable

from airgen.calls import Completion, Request, split_key
from airgen.prompts import PromptSet

Responder = Callable[[Request], "str | Completion"]


class ScriptedEngine:
    def __init__(self, respond: Responder, *, name: str = "scripted",
                 latency: Callable[[Request], float] | None = None):
        self.name = name
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


class MethodScript:
    """Well-formed answers for every stage of the method, varied by call key, with knobs for the failure paths.

    `score`: the instruction score given; `fail`: share of constraints the student fails in the check step;
    `duplicate`: share of dedup verdicts that say "duplicate".
    """

    def __init__(self, prompts: PromptSet, *, score: int = 5, fail: float = 0.7, duplicate: float = 0.0):
        self.prompts = prompts
        self.score = score
        self.fail = fail
        self.duplicate = duplicate

    def __call__(self, request: Request) -> str:
        rng = random.Random(hashlib.blake2b(request.key.encode(), digest_size=8).digest())
        topic = split_key(request.key)[0]
        match request.stage:
            case "back_translate":
                return f"Write a short practical guide about topic {topic} for a general reader."
            case "refine":
                return f"Here is a clear guide about topic {topic}. It explains the main points step by step."
            case "score":
                return f"The instruction is a clear general task.\nScore: {self.score}/5"
            case "propose":
                # The first of the offered types in the prompt set's order.
                kind = next((t.name for t in self.prompts.types if t.name in request.args["allowed"]), None)
                if kind is None:
                    return "**Analysis**: nothing to add.\n**Selected Type**: None\n**Constraint**: None"
                return (f"**Analysis**: the answer lacks {kind.lower()} features.\n**Selected Type**: {kind}\n"
                        f"**Constraint**: The answer must follow the {kind.lower()} rule number {rng.randint(1, 999)}"
                        " throughout.")
            case "dedup":
                duplicate = rng.random() < self.duplicate
                # The question asked the other way round (dedup_asks = "new"): "Yes" means new.
                asks_new = self.prompts.templates["dedup_constraint_new"].template.split("\n")[0] in \
                    request.messages[-1]["content"]
                return "Answer: Yes" if duplicate != asks_new else "Answer: No"
            case "check":
                count = request.args["count"]
                return "\n\n".join(f"criterion {i}\t{0 if rng.random() < self.fail else 3}" for i in range(count))
            case "merge":
                return f"Write a practical guide about topic {topic} that meets every listed rule."
            case _:  # student answers, reference answers, final responses
                return f"This is a complete answer about topic {topic} with several useful details."


_WORDS = ("amber basalt cedar dune ember fjord garnet harbor iris juniper kelp lagoon maple nectar opal prairie quartz "
          "reef sierra tundra umber valley willow xenon yarrow zephyr anvil beacon canyon delta estuary falcon "
          "glacier heron inlet jasper").split()


class CrabScript:
    """Well-formed answers for every CRAB step, varied by call key. `unmet`: share of checks that find the
    constraint unmet (half of them with a rewrite); `same`: every proposal repeats one constraint (near-duplicates)."""

    def __init__(self, *, unmet: float = 0.2, same: bool = False):
        self.unmet = unmet
        self.same = same

    def __call__(self, request: Request) -> str:
        from airgen.crab.steps import GLOBAL_TYPES, LOCAL_TYPES  # deferred: the scripts serve AIR tests too

        rng = random.Random(hashlib.blake2b(request.key.encode(), digest_size=8).digest())
        topic = split_key(request.key)[0]
        match request.stage:
            case "refine_instruction":
                return f"Write a short practical guide about topic {topic} for a reader who is new to the subject."
            case "propose_global" | "propose_local":
                types = GLOBAL_TYPES if request.stage == "propose_global" else LOCAL_TYPES
                lines = []
                for i, kind in enumerate(types):
                    if self.same:
                        text = f"The response must keep a calm and plain tone about topic {topic}."
                    elif i % 3 == 2:
                        text = "NULL"
                    elif kind == "key_formatting":
                        text = "Mark each key term in **bold** so the reader can find it."
                    else:  # distinct words per constraint, so that none is a near-duplicate of another
                        text = " ".join(rng.sample(_WORDS, 9)).capitalize() + "."
                    lines.append(f'"{kind}": "{text}"')
                return "{\n" + ",\n".join(lines) + "\n}"
            case "check_constraint":
                roll = rng.random()
                if roll >= self.unmet:
                    return ('{\n"satisfaction": "YES",\n"explanation": "",\n"modified_constraint": "",\n'
                            '"constraint_validity": "YES"\n}')
                modified = "The text must mention the topic at least once." if roll < self.unmet / 2 else ""
                return ('{\n"satisfaction": "NO",\n"explanation": "It does not.",\n'
                        f'"modified_constraint": "{modified}",\n"constraint_validity": "{"YES" if modified else "NO"}"\n}}')
            case _:
                raise ValueError(f"CrabScript has no answer for stage {request.stage!r}")
