"""CRAB's records: forward (the instruction with sampled constraints -> the original response) and reverse (the
instruction and the response -> the refined instruction with its constraints, the authors' auxiliary objective).

The layouts vary the way constraints are joined to an instruction (a numbered list, a bulleted list, running
text), as the authors' combinations do, so a model trained on the records does not learn one layout.
"""
from __future__ import annotations

import random

FORWARD = "forward"
REVERSE = "reverse"
KINDS = (FORWARD, REVERSE)


def lay_out_constraints(instruction: str, constraints: list[str], rng: random.Random) -> str:
    layout = rng.randrange(3)
    if layout == 0:
        return f"{instruction}\n\n" + "\n".join(f"{i}. {c}" for i, c in enumerate(constraints, 1))
    if layout == 1:
        return f"{instruction}\n\nRequirements:\n" + "\n".join(f"- {c}" for c in constraints)
    return f"{instruction} " + " ".join(constraints)


# What a reverse record asks for: the refined instruction and its constraints, only the one or only the other.
BOTH, REFINED, CONSTRAINTS = "both", "refined", "constraints"
_ASKS = {
    BOTH: "Write the full instruction that this response answers: first the instruction made specific to the "
          "response, then the constraints the response meets, numbered, one per line.",
    REFINED: "Write the instruction this response answers, made specific to the response.",
    CONSTRAINTS: "Write the constraints this response meets, numbered, one per line.",
}


def reverse_targets(rng: random.Random) -> str:
    """The authors' draw (Reverse_data_generate.py): the refined instruction with probability 0.3, the constraints
    with 0.5 beside it and always without it."""
    refined = rng.random() > 0.7
    constraints = rng.random() > 0.5 or not refined
    return BOTH if refined and constraints else REFINED if refined else CONSTRAINTS


def reverse_prompt(instruction: str, response: str, targets: str = BOTH) -> str:
    return (f"Below are a response and the short instruction it was written for. {_ASKS[targets]}\n\n"
            f"Response:\n{response}\n\nShort instruction:\n{instruction}")


def reverse_target(refined: str, constraints: list[str], targets: str = BOTH) -> str:
    numbered = "\n".join(f"{i}. {c}" for i, c in enumerate(constraints, 1))
    if targets == REFINED:
        return refined
    if targets == CONSTRAINTS:
        return numbered
    return f"{refined}\n\nConstraints:\n{numbered}"


def how_many(pool: int, bounds: tuple[int, int], rng: random.Random, diverse_rate: float = 0.0) -> int:
    """Constraints a record takes from a pool of `pool`: within `bounds` (capped at the pool), or, with
    probability `diverse_rate`, anywhere from 1 to the whole pool (the authors' diverse draw)."""
    if rng.random() < diverse_rate:
        return rng.randint(1, pool)
    low, high = min(bounds[0], pool), min(bounds[1], pool)
    return rng.randint(low, high)
