"""The method as a state machine, driven with scripted completions: every transition and every drop reason."""
from __future__ import annotations

import pytest

from airgen.flow import Done, Dropped, FlowError, Sample
from tests.conftest import completion, drive, make_flow, script

DOC = "A long human-written article about gardening in small urban spaces. " * 8


def keys(requests):
    return ["/".join(r.key.split("/")[1:]) for r in requests]


def test_full_method_stage_order_and_records(prompts):
    flow = make_flow(prompts, rounds=3)
    step, requests = drive(flow, Sample("d1", DOC), script(prompts, fail=1.0))
    assert isinstance(step, Done)
    assert keys(requests) == [
        "back_translate/0", "refine/0", "score/0",
        "answer/1", "propose/1", "answer_with/1", "check/1",
        # Round 2 reuses the student's answer to I_1 from round 1's check: no second answer call.
        "propose/2", "dedup/2", "answer_with/2", "check/2",
        "propose/3", "dedup/3", "answer_with/3", "check/3",
        "merge/1", "respond/1", "merge/2", "respond/2", "merge/3", "respond/3",
    ]
    roles = {r.stage: r.role for r in requests}
    assert roles["answer"] == roles["answer_with"] == "student"
    assert {roles[s] for s in ("back_translate", "refine", "score", "propose", "check", "merge", "respond")} == {
        "guidance"}
    assert [r["meta"]["level"] for r in step.records] == [1, 2, 3]
    top = step.records[-1]
    assert [c["round"] for c in top["meta"]["constraints"]] == [1, 2, 3]
    assert len({c["type"] for c in top["meta"]["constraints"]}) == 3
    assert all(c["failed"] for c in top["meta"]["constraints"])
    assert top["messages"][0]["content"] == top["instruction"] and top["input"] == ""
    assert top["messages"][1]["content"] == top["output"]


def test_used_types_are_left_out_and_order_is_seeded(prompts):
    flow = make_flow(prompts, rounds=3)
    _, requests = drive(flow, Sample("d1", DOC), script(prompts, fail=1.0))
    proposals = [r for r in requests if r.stage == "propose"]
    sample = Sample("d1", DOC)
    drive(flow, sample, script(prompts, fail=1.0))
    used = [c.type for c in sample.constraints]
    for i, request in enumerate(proposals):
        user = request.messages[-1]["content"]
        for t in used[:i]:
            assert f"{t}:" not in user and t not in request.sampling.regex
        assert used[i] in request.sampling.regex
    # Another doc id or seed shuffles the type list differently; the same ones replay identically.
    _, again = drive(make_flow(prompts, rounds=3), Sample("d1", DOC), script(prompts, fail=1.0))
    assert [r.messages for r in again] == [r.messages for r in requests]
    _, other = drive(make_flow(prompts, seed=7, rounds=3), Sample("d1", DOC), script(prompts, fail=1.0))
    assert proposals[0].messages != [r for r in other if r.stage == "propose"][0].messages


def test_judge_sees_initial_instruction_and_refined_document(prompts):
    flow = make_flow(prompts, rounds=2)
    sample = Sample("d1", DOC)
    _, requests = drive(flow, sample, script(prompts, fail=1.0))
    propose2 = [r for r in requests if r.key.endswith("propose/2")][0].messages[-1]["content"]
    assert sample.refined in propose2 and sample.instruction in propose2
    assert sample.constraints[0].text not in propose2.split(sample.refined)[0]


@pytest.mark.parametrize(
    "overrides, stage, reason",
    [
        ({"back_translate": completion("Write", "length")}, "back_translate", "cut at max_tokens"),
        ({"back_translate": "Summarize."}, "back_translate", "instruction has 1 words"),
        ({"refine": "   "}, "refine", "empty output"),
        ({"refine": completion("Partial text", "length")}, "refine", "cut at max_tokens"),
        ({"score": "I think it is fine."}, "score", "Score"),
        ({"score": "Reasoning.\nScore: 3/5"}, "score", "score 3/5 below threshold 4"),
        ({"answer": completion("half an answer", "length")}, "answer", "cut at max_tokens"),
        ({"propose": "**Analysis**: same.\n**Selected Type**: None\n**Constraint**: None"}, "propose", "None"),
        ({"propose": "**Analysis**: x\n**Selected Type**: Inclusion\n**Constraint**: Be short."}, "propose",
         "constraint has 2 words"),
    ],
)
def test_drops_before_any_constraint(prompts, overrides, stage, reason):
    step, _ = drive(make_flow(prompts, rounds=3), Sample("d1", DOC), script(prompts, overrides, fail=1.0))
    assert isinstance(step, Dropped)
    assert step.stage == stage
    assert reason.lower() in step.reason.lower()


def test_invalid_later_round_ends_rounds_but_keeps_levels(prompts):
    bad = "**Analysis**: x\n**Selected Type**: Nonexistent Type\n**Constraint**: Use exactly five short bullet points."
    step, requests = drive(make_flow(prompts, rounds=4), Sample("d1", DOC),
                           script(prompts, {"propose/3": bad}, fail=1.0))
    assert isinstance(step, Done)
    assert [r["meta"]["level"] for r in step.records] == [1, 2]
    assert "round 3 propose" in step.records[0]["meta"]["rounds_end"]
    assert "propose/4" not in keys(requests)


def test_duplicate_ends_rounds(prompts):
    step, requests = drive(make_flow(prompts, rounds=4), Sample("d1", DOC),
                           script(prompts, {"dedup/2": "Answer: Yes"}, fail=1.0))
    assert isinstance(step, Done)
    assert [r["meta"]["level"] for r in step.records] == [1]
    assert "duplicate" in step.records[0]["meta"]["rounds_end"]
    assert "answer_with/2" not in keys(requests)


def test_check_decides_failed_set(prompts):
    # Round 1's constraint is met (score 3), round 2's is failed: C' = {c2}; level 1 has no failed constraint.
    def check(request):
        n = 1 if request.key.endswith("/1") else 2
        scores = [3, 0][:n]
        return "\n\n".join(f"c{i}\t{s}" for i, s in enumerate(scores))

    step, _ = drive(make_flow(prompts, rounds=2), Sample("d1", DOC), script(prompts, {"check": check}))
    assert isinstance(step, Done)
    assert [r["meta"]["level"] for r in step.records] == [2]
    record = step.records[0]
    assert [c["failed"] for c in record["meta"]["constraints"]] == [False, True]
    assert record["meta"]["merged_constraints"] == [record["meta"]["constraints"][1]["text"]]
    assert step.level_drops == [{"level": 1, "stage": "check", "reason": "the student met every constraint"}]


def test_student_meets_everything_drops_sample(prompts):
    step, _ = drive(make_flow(prompts, rounds=2), Sample("d1", DOC), script(prompts, fail=0.0))
    assert isinstance(step, Dropped) and step.stage == "check"
    assert "no level produced a record" in step.reason


def test_unreadable_check_keeps_constraint_out_of_failed_set(prompts):
    step, _ = drive(make_flow(prompts, rounds=2), Sample("d1", DOC),
                    script(prompts, {"check/1": "looks good to me"}, fail=1.0))
    assert isinstance(step, Done)
    constraints = step.records[-1]["meta"]["constraints"]
    assert constraints[0]["failed"] is None and constraints[1]["failed"] is True
    assert any("check unreadable" in d["reason"] for d in step.level_drops)


def test_all_constraints_set_skips_check(prompts):
    step, requests = drive(make_flow(prompts, rounds=2, constraint_set="all"), Sample("d1", DOC), script(prompts))
    assert isinstance(step, Done)
    assert keys(requests)[3:] == ["answer/1", "propose/1", "answer/2", "propose/2", "dedup/2",
                                  "merge/1", "respond/1", "merge/2", "respond/2"]
    assert all(c["failed"] is None for c in step.records[-1]["meta"]["constraints"])


def test_fresh_answer_each_round_when_reuse_is_off(prompts):
    _, requests = drive(make_flow(prompts, rounds=2, reuse_answer=False), Sample("d1", DOC), script(prompts, fail=1))
    assert "answer/2" in keys(requests)


def test_merge_and_response_failures_drop_only_their_level(prompts):
    overrides = {"merge/1": completion("Write about", "length"), "respond/2": "Too short."}
    step, _ = drive(make_flow(prompts, rounds=3), Sample("d1", DOC), script(prompts, overrides, fail=1.0))
    assert isinstance(step, Done)
    assert [r["meta"]["level"] for r in step.records] == [3]
    assert [(d["level"], d["stage"]) for d in step.level_drops] == [(1, "merge"), (2, "respond")]


def test_merge_uses_seeded_few_shot_examples(prompts):
    flow = make_flow(prompts, rounds=1, few_shot=3)
    _, requests = drive(flow, Sample("d1", DOC), script(prompts, fail=1.0))
    merge = [r for r in requests if r.stage == "merge"][0].messages[-1]["content"]
    shown = [e for e in prompts.merge_examples if e.merged in merge]
    assert len(shown) == 3


def test_judge_model_asks_for_a_reference_answer(prompts):
    sample = Sample("d1", DOC)
    _, requests = drive(make_flow(prompts, rounds=1, judge="model"), sample,
                        script(prompts, {"reference": "A reference answer written by the guidance model itself."},
                               fail=1.0))
    assert keys(requests)[3] == "reference/0"
    propose = [r for r in requests if r.stage == "propose"][0].messages[-1]["content"]
    assert "A reference answer written by the guidance model itself." in propose
    assert sample.refined not in propose


def test_no_judge_proposes_without_student_answer(prompts):
    step, requests = drive(make_flow(prompts, rounds=2, judge="none"), Sample("d1", DOC), script(prompts, fail=1.0))
    assert isinstance(step, Done)
    assert "answer/1" not in keys(requests)
    blind = prompts.messages("propose_constraint_blind", instruction="@@", types="Y")[-1]["content"]
    first = [r for r in requests if r.stage == "propose"][0].messages[-1]["content"]
    assert first.startswith(blind.split("@@")[0])


def test_one_shot_proposes_all_constraints_in_one_call(prompts):
    def many(request):
        names = [t.name for t in prompts.types if t.name in request.sampling.regex][:3]
        pairs = "\n".join(f"**Selected Type**: {n}\n**Constraint**: The answer must satisfy the {n.lower()} rule "
                          "stated in full." for n in names)
        return f"**Analysis**: several gaps.\n{pairs}"

    step, requests = drive(make_flow(prompts, rounds=3, one_shot=True), Sample("d1", DOC),
                           script(prompts, {"propose": many}, fail=1.0))
    assert isinstance(step, Done)
    assert keys(requests).count("propose/1") == 1 and "dedup/2" not in keys(requests)
    assert [r["meta"]["level"] for r in step.records] == [1, 2, 3]


def test_impossible_events_are_loud(prompts):
    flow = make_flow(prompts)
    sample = Sample("d1", DOC)
    with pytest.raises(FlowError):
        flow.advance(sample, completion("x"))
    flow.start(sample)
    with pytest.raises(FlowError):
        flow.start(sample)


def test_structured_outputs_can_be_switched_off(prompts):
    _, requests = drive(make_flow(prompts, rounds=1, structured=False), Sample("d1", DOC),
                        script(prompts, {"check": "c\t0"}, fail=1.0))
    assert all(r.sampling.regex is None and r.sampling.choice is None for r in requests)
