"""AIR's scripted answers: well-formed answers for every stage, varied by call key, for tests and benches."""
from __future__ import annotations

import hashlib
import random

from airgen.air.prompt_data import types
from airgen.method.calls import Request, split_key
from airgen.method.prompts import PromptSet


# Constraints code can check: the scripted final answer ("This is a complete answer about topic ... with several
# useful details.") meets the first three and misses the last three.
CHECKABLE = ("Use at most 60 words in the response.", "Do not use any commas in the response.",
             "Include the keyword 'useful' in the answer.", "Write your entire response in lowercase letters.",
             "Write at least 200 words in the response.", "End your response with the phrase 'Any questions?'")


class MethodScript:
    """Well-formed answers for every stage of the method, varied by call key, with knobs for the failure paths.

    `score`: the instruction score given; `fail`: share of constraints the student fails in the check step;
    `duplicate`: share of dedup verdicts that say "duplicate"; `checkable`: the judge writes constraints code can check
    (`CHECKABLE`, some of which the final answers meet), else ones it cannot.
    """

    def __init__(self, prompts: PromptSet, *, score: int = 5, fail: float = 0.7, duplicate: float = 0.0,
                 checkable: bool = False):
        self.prompts = prompts
        self.score = score
        self.fail = fail
        self.duplicate = duplicate
        self.checkable = checkable

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
                constraint = (rng.choice(CHECKABLE) if self.checkable else f"The answer must follow the {kind.lower()} "
                              f"rule number {rng.randint(1, 999)} throughout.")
                return (f"**Analysis**: the answer lacks {kind.lower()} features.\n**Selected Type**: {kind}\n"
                        f"**Constraint**: {constraint}")
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
