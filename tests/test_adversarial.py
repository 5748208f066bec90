"""Model output read in linear time, and a reader's failure is its sample's: every step of every recipe (each preset)
reads answers ending in, made of, or wrapping 100,000-character runs; the linear readers agree with the patterns they
replace; an exception inside a parser rejects its sample with the reason, live and on replay alike."""
from __future__ import annotations

import dataclasses
import random
import re
import time

import pytest

from airgen.air import authors, parsers
from airgen.method.calls import Completion
from airgen.engines import dialects
from airgen.method.flow import Rejected, replay
from airgen.method.step import Reject
from bench.parsers import RUNS, SHAPES, every_variant, first_requests

# A quadratic reader takes minutes on 100,000 characters, a linear one milliseconds: the bound is far from both.
# (The figures themselves, against 50 ms a parse: `python bench/parsers.py`.)
BOUND_S = 2.0


@pytest.mark.parametrize("name, recipe, settings", list(every_variant()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_step_reads_long_runs_in_linear_time(name, recipe, settings):
    flow, seen = first_requests(recipe, settings)
    assert seen, name
    slowest = (0.0, "")
    for stage, (request, ok) in seen.items():
        for run in RUNS:
            for shape, make in SHAPES.items():
                text = make(ok, run * (100_000 // len(run)))
                began = time.perf_counter()
                try:
                    flow.steps[stage].read(request, Completion(text, "stop", 1, 1), flow.config)
                except Reject:
                    pass  # a recorded fault: what a garbage answer should get
                took = time.perf_counter() - began
                slowest = max(slowest, (took, f"{stage}, {run!r} {shape}"))
    assert slowest[0] < BOUND_S, f"{name}: {slowest[1]} took {slowest[0]:.2f} s"


# The patterns the linear readers replace, kept here as their definition.
TRAILING_SCORE = re.compile(
    r"(?P<tail>[(\[]?[\s*_]*(?P<label>score\s*[:=]?\s*)?[*_]*\s*(?P<score>\d{1,2})\s*(?P<outof>/\s*3)?[\s*_]*[)\]]?\.?)"
    r"\s*$", re.I)
BOLD_FIELD = r"\*\*(.*?{})\*\*:\s*(.*?)(?=(?:\*\*|$))"


def random_lines(alphabet: list[str], n: int, longest: int, seed: int):
    rng = random.Random(seed)
    for _ in range(n):
        yield "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))


def test_the_trailing_score_reader_agrees_with_its_pattern():
    alphabet = [" ", "  ", "\t", "*", "_", "(", "[", ")", "]", ".", "/", ":", "=", "0", "1", "2", "3", "4", "12",
                "score", "Score", "SCORE", "a", "x:", "3/3", "/ 3", "-"]
    for line in random_lines(alphabet, 60_000, 9, seed=1):
        m = TRAILING_SCORE.search(line)
        expected = None if m is None else (m.start(), int(m.group("score")), bool(m.group("label")),
                                           bool(m.group("outof")))
        assert parsers._trailing_score(line) == expected, repr(line)


@pytest.mark.parametrize("label", ["Constraint", "Answer"])
def test_the_bold_field_reader_agrees_with_the_authors_pattern(label):
    pattern = re.compile(BOLD_FIELD.format(label), re.DOTALL)
    alphabet = ["**", "*", ":", " ", "\n", "a", "No", label, f"{label}**:", f"**{label}**:", "x**"]
    for text in random_lines(alphabet, 40_000, 8, seed=2):
        m = pattern.search(text)
        assert authors.bold_field(text, label) == (None if m is None else m.group(2)), repr(text)


def test_a_choice_wrapped_in_deep_json_is_left_to_the_parser():
    from airgen.method.calls import Sampling

    deep = "[" * 100_000
    assert dialects.answer("openai", Sampling(16, choice=("Yes", "No")), deep) == deep


def test_a_parser_that_raises_rejects_its_sample_with_the_reason(prompts):
    """Not a stopped run: the sample's fault, on the live path and on replay alike."""
    from airgen.method.corpus import Document
    from tests.conftest import drive, make_flow, script

    def broken(text, args):
        raise IndexError("list index out of range")

    flow = make_flow(prompts)
    flow.steps = {**flow.steps, "score": dataclasses.replace(flow.steps["score"], parse=broken)}
    doc = Document("d1", "a document about bees " * 20, "test")
    end, requests = drive(flow, flow.sample(doc), script(prompts))
    assert isinstance(end, Rejected) and end.stage == "score"
    assert "could not be read" in end.reason and "IndexError" in end.reason
    answers = {r.key: Completion(script(prompts)(r), "stop", 1, 1) for r in requests}
    again = flow.sample(doc)
    assert replay(flow, again, flow.start(again), lambda r: answers.get(r.key)) == end
