"""AIR's scripted answers: well-formed answers for every stage, varied by call key, for tests and benches."""
from __future__ import annotations

import hashlib
import random

from airgen.air.prompt_data import types
from airgen.method.calls import Request, split_key
from airgen.method.prompts import PromptSet


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
                # The first of the offered types in the prompt set's order (offered as named, maybe "X Constraint").
                order = {t.name: i for i, t in enumerate(types(self.prompts))}
                kind = min(request.args["allowed"], key=lambda a: order.get(a.removesuffix(" Constraint"), len(order)),
                           default=None)
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
            case "check" | "pair_check":
                count = request.args["count"]
                return "\n\n".join(f"criterion {i}\t{0 if rng.random() < self.fail else 3}" for i in range(count))
            case "pair_answer":  # the student's answer to a level's merged instruction
                return f"A short answer about topic {topic} that leaves out part of what was asked."
            case "merge":
                return f"Write a practical guide about topic {topic} that meets every listed rule."
            case _:  # student answers, reference answers, final responses
                return f"This is a complete answer about topic {topic} with several useful details."
