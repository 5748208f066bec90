"""CRAB's scripted answers: well-formed answers for every step, varied by call key, for tests and benches."""
from __future__ import annotations

import hashlib
import random

from airgen.method.calls import Request, split_key
from airgen.crab.steps import GLOBAL_TYPES, LOCAL_TYPES

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
