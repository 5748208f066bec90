"""AIR on the same model decisions under both presets: the default (airgen's choices) and `--preset authors`, which
keeps, ends and merges what the authors' code does (WeiLiuAH/AIR-Automatic-Iterative-Refinement at HEAD: init_process/,
judge_data_gene/main.py, judge_data_process/data_generate.py). Each test scripts one edge; what the authors' code
does is written from reading it, with the place it is done."""
from __future__ import annotations

import pytest

from airgen.air.flow import AirFlow, Sample
from airgen.config import load
from airgen.method.flow import Done, Rejected
from tests.conftest import completion, drive, script

DOC = "A long human-written article about gardening in small urban spaces. " * 8
PRESETS = ("default", "authors")


def flow(prompts, preset: str, **settings) -> AirFlow:
    config = load(preset=None if preset == "default" else preset, overrides={"flow": settings})
    return AirFlow(config.settings, prompts, 0)


def run(prompts, preset: str, overrides: dict | None = None, **settings):
    """One document through the flow; the student fails every checked constraint unless `overrides` say."""
    step, _ = drive(flow(prompts, preset, **settings), Sample("d1", DOC), script(prompts, overrides, fail=1.0))
    return step


def levels(step) -> list[int]:
    return [r["meta"]["level"] for r in step.records] if isinstance(step, Done) else []


def propose(kind: str, text: str):
    return lambda request: f"**Analysis**: the answer differs.\n**Selected Type**: {kind}\n**Constraint**: {text}"


def test_the_authors_preset_is_the_authors_settings(prompts):
    settings = load(preset="authors").settings
    assert settings.constraint_set == "all"  # main.py:736-787 merge constraints_loopK_document_check: C
    assert settings.merged_words == (4, 149)  # data_generate.py:53: 3 < words < 150
    assert settings.level_constraint_words == 4  # data_generate.py:53: the level's constraints > 3 words
    assert set(settings.keep_cut) == {"answer", "answer_with", "respond"}  # main.py:549, 646, 728
    assert settings.parsers == "authors" and not settings.structured  # no decode-time format in their code
    assert (settings.temperature, settings.top_p, settings.max_tokens, settings.merge_max_tokens) == (0.2, 0.9, 4096, 800)
    assert (settings.instruction_words, settings.constraint_words, settings.few_shot) == ((3, 50), (3, 26), 3)


# 1. A student answer cut at max_tokens: main.py never reads finish_reason for the student (~l.549, ~l.646).
@pytest.mark.parametrize("preset, made", [("default", []), ("authors", [1, 2, 3])])
def test_a_cut_student_answer(prompts, preset, made):
    cut = completion("This is a long answer about the topic that goes on and on", "length")
    step = run(prompts, preset, {"answer/1": cut}, rounds=3)
    assert levels(step) == made
    if not made:
        assert isinstance(step, Rejected) and "cut at max_tokens" in step.reason


# 2. A final answer cut at max_tokens: kept (main.py ~l.728 stores the text, finish_reason unread).
@pytest.mark.parametrize("preset, made", [("default", [1, 3]), ("authors", [1, 2, 3])])
def test_a_cut_final_answer(prompts, preset, made):
    cut = completion("A final answer that was cut before it could finish its", "length")
    assert levels(run(prompts, preset, {"respond/2": cut}, rounds=3, constraint_set="all")) == made


# 3. A student answer under 3 words in round k drops level k and every later one (data_generate.py ~l.50, 64,
# 78, 93, 108: `continue` past the later levels). Round k's answer is the student's answer to I_{k-1}
# (output_student_loopK, main.py:641-646); airgen ends the rounds there, which makes the same records.
@pytest.mark.parametrize("preset, settings, round3", [
    ("default", {}, "answer_with/2"),  # C': round 3's answer is the one round 2's check read
    ("default", {"constraint_set": "all"}, "answer/3"),
    ("authors", {}, "answer/3"),
])
def test_a_short_student_answer_ends_the_rounds_at_its_round(prompts, preset, settings, round3):
    step = run(prompts, preset, {round3: "Yes, fine."}, rounds=5, **settings)  # levels 3 and later go
    assert levels(step) == [1, 2]
    assert "round 3 answer: the student's answer has 2 words" in step.records[0]["meta"]["rounds_end"]
    first = run(prompts, preset, {"answer/1": "OK."}, rounds=5, **settings)
    assert isinstance(first, Rejected) and first.stage == "answer"


# 4. A level whose constraints have 3 words or fewer in all (data_generate.py ~l.53: `> 3`); the next level has two.
@pytest.mark.parametrize("preset, made", [("default", [1, 2]), ("authors", [2])])
def test_a_level_of_three_constraint_words(prompts, preset, made):
    kind = "Tone and Style Constraint"
    overrides = {"propose/1": propose(kind, "Use formal tone.")}
    assert levels(run(prompts, preset, overrides, rounds=2, constraint_set="all")) == made


# 5. Merged-instruction bounds: strictly 3 < words < 150 (data_generate.py ~l.53).
@pytest.mark.parametrize("words, preset, kept", [
    (3, "default", True), (3, "authors", False), (4, "authors", True),
    (150, "default", True), (150, "authors", False), (149, "authors", True),
])
def test_merged_instruction_bounds(prompts, words, preset, kept):
    merged = " ".join(["word"] * (words - 1) + ["end."])
    step = run(prompts, preset, {"merge": merged}, rounds=1, constraint_set="all")
    assert levels(step) == ([1] if kept else [])


# 6. "None" anywhere in the constraint, case-sensitive (main.py:448): "Nonetheless" ends the rounds there.
@pytest.mark.parametrize("preset, made", [("default", [1, 2]), ("authors", [1])])
def test_a_constraint_that_says_nonetheless(prompts, preset, made):
    text = "Nonetheless, the answer must end with a short summary sentence."
    overrides = {"propose/2": lambda r: propose(r.args["allowed"][0], text)(r)}
    assert levels(run(prompts, preset, overrides, rounds=2, constraint_set="all")) == made


# 7. A type that is not one of the offered ones: any 2..6-word type name is taken (main.py:448).
@pytest.mark.parametrize("preset, made", [("default", [1]), ("authors", [1, 2])])
def test_a_type_that_was_not_offered(prompts, preset, made):
    overrides = {"propose/2": propose("Humor Style Constraint", "The answer must include one gentle joke about soil.")}
    step = run(prompts, preset, overrides, rounds=2, constraint_set="all")
    assert levels(step) == made
    if preset == "authors":
        assert step.records[-1]["meta"]["constraints"][-1]["type"] == "Humor Style Constraint"


# 8. "output 2" in lower case with a space passes the authors' exact, case-sensitive "Output2" test; "Output2"
# itself is refused by both.
@pytest.mark.parametrize("text, preset, made", [
    ("Mention every detail that output 2 leaves out about the soil.", "default", [1]),
    ("Mention every detail that output 2 leaves out about the soil.", "authors", [1, 2]),
    ("Mention every detail that Output2 leaves out about the soil.", "authors", [1]),
])
def test_output_two_written_another_way(prompts, text, preset, made):
    overrides = {"propose/2": lambda r: propose(r.args["allowed"][0], text)(r)}
    assert levels(run(prompts, preset, overrides, rounds=2, constraint_set="all")) == made


# 9. The same constraint text twice (the duplicate check said no): main.py:708 merges a set of texts. Both presets
# merge it once; the authors' code also makes level 2 from the same set again (main.py:746-755).
@pytest.mark.parametrize("preset, made", [("default", [1]), ("authors", [1, 2])])
def test_the_same_constraint_twice_is_merged_once(prompts, preset, made):
    same = "The answer must use exactly three numbered steps."
    overrides = {"propose": lambda r: propose(r.args["allowed"][0], same)(r)}
    step = run(prompts, preset, overrides, rounds=2, constraint_set="all")
    assert levels(step) == made
    for record in step.records:
        assert record["meta"]["merged_constraints"] == [same]
    assert [c["text"] for c in step.records[-1]["meta"]["constraints"]] == [same] * made[-1]


# 10. The set each level merges: C in the authors' script (the check's result is never read again), C' by default.
@pytest.mark.parametrize("preset, merged", [("default", 1), ("authors", 2)])
def test_which_set_a_level_merges(prompts, preset, merged):
    # Round 1's constraint failed, round 2's met (each check decides its own round's constraint).
    met = {"check/2": lambda r: "\n\n".join(f"c{i}\t{0 if i == 0 else 3}" for i in range(r.args["count"]))}
    step = run(prompts, preset, met, rounds=2)
    top = step.records[-1]["meta"]
    assert len(top["merged_constraints"]) == merged


# The authors' reading of a score and of a back-translation (init_process/instruct_generate.py).
@pytest.mark.parametrize("preset, kept", [("default", True), ("authors", False)])
def test_the_first_score_counts_for_the_authors(prompts, preset, kept):
    step = run(prompts, preset, {"score": "Score: 2/5 at first sight, but on reflection Score: 5/5"}, rounds=1)
    assert isinstance(step, Done) == kept


def test_the_authors_back_translation_is_the_last_line_of_five_characters(prompts):
    answer = 'Here is a suitable instruction:\n"Describe how to grow herbs on a small balcony."\nOK'
    step = run(prompts, "authors", {"back_translate": answer}, rounds=1)
    assert step.records[0]["meta"]["initial_instruction"] == "Describe how to grow herbs on a small balcony."
