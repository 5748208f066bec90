"""How long each step takes to read an adversarial answer: every step of every recipe and preset, on answers made of,
ending with, or wrapping 100,000-character runs of one character, against the 50 ms a parse may take; then every
kind of `airgen.checks` deciding such an answer, and `checks.parse` reading a constraint made of such runs.

    python bench/parsers.py [--chars 100000]

A model that loops writes such runs (a line of 3,000 '*' froze a run for minutes when a reader backtracked); every
reader is linear now, and this prints the slowest case per step and per check.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

from airgen import checks
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


# One check of each kind (`airgen.checks.KINDS`), with arguments as a judge's text gives them.
CHECKS = {
    "length_constraints:number_words": {"num_words": 120, "relation": "less than"},
    "airgen:number_words_between": {"low": 50, "high": 80},
    "length_constraints:number_sentences": {"num_sentences": 5, "relation": "at least"},
    "length_constraints:number_paragraphs": {"num_paragraphs": 3},
    "airgen:number_paragraphs": {"num_paragraphs": 3, "relation": "exactly"},
    "length_constraints:nth_paragraph_first_word": {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "bees"},
    "keywords:existence": {"keywords": ["honey", "hive"]},
    "keywords:frequency": {"keyword": "bee", "frequency": 2, "relation": "at least"},
    "keywords:forbidden_words": {"forbidden_words": ["very", "really"]},
    "keywords:letter_frequency": {"letter": "z", "let_frequency": 3, "let_relation": "at least"},
    "language:response_language": {"language": "fr"},
    "detectable_content:number_placeholders": {"num_placeholders": 2},
    "detectable_content:postscript": {"postscript_marker": "P.S."},
    "detectable_format:number_bullet_lists": {"num_bullets": 3},
    "detectable_format:constrained_response": {},
    "detectable_format:number_highlighted_sections": {"num_highlights": 2},
    "detectable_format:multiple_sections": {"section_spliter": "SECTION", "num_sections": 2},
    "detectable_format:json_format": {},
    "detectable_format:title": {},
    "startend:end_checker": {"end_phrase": "Any questions?"},
    "startend:quotation": {},
    "change_case:english_capital": {},
    "change_case:english_lowercase": {},
    "change_case:capital_word_frequency": {"capital_frequency": 3, "capital_relation": "less than"},
    "punctuation:no_comma": {},
    "airgen:sentence_words": {"max_words": 20},
    "airgen:paragraph_sentences": {"max_sentences": 4},
    "airgen:word_chars": {"min_chars": 3},
    "airgen:no_symbols": {"symbols": [":", ";"]},
}
ANSWER = "Bees make honey in their hives. They work all summer, and the honey keeps."


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
    print(f"\n{'check':<46} {'slowest ms':>10}  case")
    worst_checks = (0.0, "")
    for kind, values in CHECKS.items():
        check = checks.Check(kind, values)
        worst = (0.0, "")
        for run in RUNS:
            for shape, make in SHAPES.items():
                text = make(ANSWER, run * (args.chars // len(run)))
                began = time.perf_counter()
                check.holds(text)
                worst = max(worst, (time.perf_counter() - began, f"{run!r} {shape}"))
        worst_checks = max(worst_checks, (worst[0], kind))
        print(f"{kind:<46} {1000 * worst[0]:>10.1f}  {worst[1]}")
    began, slowest = time.perf_counter(), 0.0
    for run in RUNS:  # a constraint is read only up to 2,000 characters; the runs that fill one
        for shape, make in SHAPES.items():
            one = time.perf_counter()
            checks.parse(make("Use at most 5 words and the keyword 'bee'.", run * (1990 // len(run))))
            slowest = max(slowest, time.perf_counter() - one)
    print(f"slowest check: {1000 * worst_checks[0]:.1f} ms ({worst_checks[1]}); checks.parse of a 2,000-character "
          f"constraint: slowest {1000 * slowest:.1f} ms, all {len(RUNS) * len(SHAPES)} in "
          f"{1000 * (time.perf_counter() - began):.0f} ms")


if __name__ == "__main__":
    main()
