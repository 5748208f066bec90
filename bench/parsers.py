"""How long each step takes to read an adversarial answer: every step of every recipe and preset, on answers made of,
ending with, or wrapping 100,000-character runs of one character, against the 50 ms a parse may take.

    python bench/parsers.py [--chars 100000]

A model that loops writes such runs (a line of 3,000 '*' froze a run for minutes when a reader backtracked); every
reader is linear now, and this prints the slowest case per step.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

from airgen.method import recipes
from airgen.method.calls import Completion
from airgen.method.flow import replay
from airgen.method.rows import Rejection
from airgen.method.step import Reject

TARGET_S = 0.050
# What a looping model writes, and where in its answer (tests/test_adversarial.py reads the same).
RUNS = ["*", "_", "-", "#", " ", "\n", "\t", "=", "|", "`", "0", "{", "[", "(", "'", "**a", "1 ", "\n\n"]
SHAPES = {
    "alone": lambda ok, run: run,
    "ending an answer": lambda ok, run: ok + run,
    "before an answer": lambda ok, run: run + ok,
    "inside a word": lambda ok, run: "x" + run + "x",
    "after a label": lambda ok, run: "Score: " + run + " 3",
}


def first_requests(recipe, settings):
    """One real request of each stage of the recipe under `settings`, with the scripted answer to it."""
    flow = recipe.flow(settings, recipe.prompts(), 0)
    script = recipe.script()
    unit = next(u for u in recipe.read([recipe.default_input()], 3) if not isinstance(u, Rejection))
    seen = {}

    def answer(request):
        seen.setdefault(request.stage, (request, script(request)))
        return Completion(script(request), "stop", 1, 1)

    sample = flow.sample(unit)
    replay(flow, sample, flow.start(sample), answer)
    return flow, seen


def every_variant():
    """(name, recipe, settings) for every recipe, by default and under each of its presets."""
    for recipe in recipes.every():
        yield recipe.name, recipe, recipe.settings()
        for preset, values in recipe.presets.items():
            yield f"{recipe.name}:{preset}", recipe, dataclasses.replace(recipe.settings(), **values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chars", type=int, default=100_000)
    args = parser.parse_args()
    worst_all = 0.0
    print(f"{'recipe':<14} {'step':<20} {'slowest ms':>10}  case")
    for name, recipe, settings in every_variant():
        flow, seen = first_requests(recipe, settings)
        for stage, (request, ok) in seen.items():
            worst = (0.0, "")
            for run in RUNS:
                for shape, make in SHAPES.items():
                    text = make(ok, run * (args.chars // len(run)))
                    began = time.perf_counter()
                    try:
                        flow.steps[stage].read(request, Completion(text, "stop", 1, 1), flow.config)
                    except Reject:
                        pass
                    worst = max(worst, (time.perf_counter() - began, f"{run!r} {shape}"))
            worst_all = max(worst_all, worst[0])
            print(f"{name:<14} {stage:<20} {1000 * worst[0]:>10.1f}  {worst[1]}")
    print(f"slowest of all: {1000 * worst_all:.1f} ms = {worst_all / TARGET_S:.2f} of the {1000 * TARGET_S:.0f} ms "
          f"a parse may take ({args.chars:,} characters)")


if __name__ == "__main__":
    main()
