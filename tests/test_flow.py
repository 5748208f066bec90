"""The method as a state machine, driven with scripted completions: every transition and every drop reason."""
from __future__ import annotations

import random

import pytest

from airgen.air.flow import Sample
from airgen.air.prompt_data import merge_examples, types
from airgen.method.calls import Completion
from airgen.method.flow import Done, Rejected, FlowError
from tests.conftest import completion, drive, make_flow, script

DOC = "A long human-written article about gardening in small urban spaces. " * 8


def keys(requests):
    return ["/".join(r.key.split("/")[1:]) for r in requests]


def answered_before(flow, sample, respond, pick=None):
    """Drive one sample; each request asked, with the keys whose answers had come back when it was asked."""
    todo, answered, asked = flow.start(sample), [], []
    asked += [(r, set()) for r in todo]
    while True:
        request = todo.pop(pick(todo) if pick else 0)
        out = respond(request)
        step = flow.advance(sample, request.key, out if isinstance(out, Completion) else completion(out))
        answered.append(keys([request])[0])
        if isinstance(step, (Done, Rejected)):
            return step, asked
        asked += [(r, set(answered)) for r in step]
        todo.extend(step)


def needs(key: str, settings: dict, asked: set[str]) -> set[str]:
    """What the method says a call reads (paper section 3): the answers that must be back before it is asked."""
    stage, n = key.split("/")[0], int(key.split("/")[1])
    accepted = lambda r: {f"propose/{r}"} | ({f"dedup/{r}"} if r > 1 and not settings.get("one_shot") else set())
    rules = {
        "back_translate": set(),
        "score": {"back_translate/0"},
        "refine": {"score/0"},
        "reference": {"score/0"},
        "answer": {"score/0"} if n == 1 else accepted(n - 1),
        "propose": ({"refine/0"} | ({"reference/0"} if settings.get("judge") == "model" else set())
                    | ({f"answer/{n}"} if f"answer/{n}" in asked else {f"answer_with/{n - 1}"} if n > 1 else set())),
        "dedup": {f"propose/{n}"},
        "answer_with": accepted(n),
        "check": {f"answer_with/{n}"},
        "merge": ({f"check/{r}" for r in range(1, n + 1) if f"check/{r}" in asked}
                  if settings.get("constraint_set", "failed") == "failed" else accepted(n)),
        "respond": {f"merge/{n}"},
    }
    return rules[stage]


def assert_dependencies(asked, settings):
    names = {keys([r])[0] for r, _ in asked}
    for request, before in asked:
        key = keys([request])[0]
        missing = needs(key, settings, names) - before
        assert not missing, f"{key} was asked before {sorted(missing)} came back"


@pytest.mark.parametrize("settings", [
    {"rounds": 3}, {"rounds": 3, "reuse_answer": False}, {"rounds": 3, "constraint_set": "all"},
    {"rounds": 3, "judge": "model"}, {"rounds": 3, "judge": "none"},
])
def test_every_call_waits_for_what_it_reads(prompts, settings):
    for seed in range(4):
        rng = random.Random(seed)
        step, asked = answered_before(make_flow(prompts, **settings), Sample("d1", DOC), script(prompts, fail=1.0),
                                      lambda todo: rng.randrange(len(todo)))
        assert isinstance(step, Done)
        assert_dependencies(asked, settings)


def test_full_method_stage_order_and_records(prompts):
    flow = make_flow(prompts, rounds=3)
    step, requests = drive(flow, Sample("d1", DOC), script(prompts, fail=1.0))
    assert isinstance(step, Done)
    # Round r+1's proposal reuses the student's answer to I_r from round r's check: one answer call in all.
    assert sorted(keys(requests)) == sorted([
        "back_translate/0", "score/0", "refine/0", "answer/1",
        *(f"{stage}/{r}" for r in (1, 2, 3) for stage in ("propose", "answer_with", "check", "merge", "respond")),
        "dedup/2", "dedup/3",
    ])
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
    assert isinstance(step, Rejected)
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
    assert step.dropped == [{"level": 1, "stage": "check", "reason": "the student met every constraint"}]


def test_student_meets_everything_drops_sample(prompts):
    step, _ = drive(make_flow(prompts, rounds=2), Sample("d1", DOC), script(prompts, fail=0.0))
    assert isinstance(step, Rejected) and step.stage == "check"
    assert "no level produced a record" in step.reason


def test_unreadable_check_keeps_constraint_out_of_failed_set(prompts):
    step, _ = drive(make_flow(prompts, rounds=2), Sample("d1", DOC),
                    script(prompts, {"check/1": "looks good to me"}, fail=1.0))
    assert isinstance(step, Done)
    constraints = step.records[-1]["meta"]["constraints"]
    assert constraints[0]["failed"] is None and constraints[1]["failed"] is True
    assert any("check unreadable" in d["reason"] for d in step.dropped)


def test_all_constraints_set_skips_check(prompts):
    step, asked = answered_before(make_flow(prompts, rounds=2, constraint_set="all"), Sample("d1", DOC),
                                  script(prompts))
    assert isinstance(step, Done)
    names = [keys([r])[0] for r, _ in asked]
    assert not any(n.startswith(("answer_with", "check")) for n in names)
    # Without checks, level k starts as soon as round k's constraint is accepted, alongside round k+1.
    before_merge1 = next(before for r, before in asked if keys([r])[0] == "merge/1")
    assert "propose/1" in before_merge1 and "propose/2" not in before_merge1
    assert all(c["failed"] is None for c in step.records[-1]["meta"]["constraints"])


def test_fresh_answer_each_round_when_reuse_is_off(prompts):
    _, requests = drive(make_flow(prompts, rounds=2, reuse_answer=False), Sample("d1", DOC), script(prompts, fail=1))
    assert "answer/2" in keys(requests)


def test_merge_and_response_failures_drop_only_their_level(prompts):
    overrides = {"merge/1": completion("Write about", "length"), "respond/2": "Too short."}
    step, _ = drive(make_flow(prompts, rounds=3), Sample("d1", DOC), script(prompts, overrides, fail=1.0))
    assert isinstance(step, Done)
    assert [r["meta"]["level"] for r in step.records] == [3]
    assert [(d["level"], d["stage"]) for d in step.dropped] == [(1, "merge"), (2, "respond")]


def test_merge_uses_seeded_few_shot_examples(prompts):
    def merge_prompt(doc_id: str, seed: int) -> str:
        _, requests = drive(make_flow(prompts, seed=seed, rounds=2, few_shot=3), Sample(doc_id, DOC),
                            script(prompts, fail=1.0))
        return [r for r in requests if r.key.endswith("merge/2")][0].messages[-1]["content"]

    def picks(prompt: str) -> list[str]:
        """The examples shown, in the order shown, and the order of the constraints to merge."""
        shown = sorted((prompt.index(e.merged), e.merged) for e in merge_examples(prompts) if e.merged in prompt)
        return [merged for _, merged in shown] + [prompt.rsplit("[Constraints]", 1)[1][:200]]

    first = picks(merge_prompt("d1", 0))
    assert len(first) == 4  # three examples, then the constraints
    assert picks(merge_prompt("d1", 0)) == first  # the same (seed, doc) replays the same picks
    others = [picks(merge_prompt(doc, seed)) for doc, seed in [("d2", 0), ("d3", 0), ("d1", 1), ("d1", 2)]]
    assert any(o != first for o in others)  # another document or seed draws afresh


def test_judge_model_asks_for_a_reference_answer(prompts):
    sample = Sample("d1", DOC)
    _, requests = drive(make_flow(prompts, rounds=1, judge="model"), sample,
                        script(prompts, {"reference": "A reference answer written by the guidance model itself."},
                               fail=1.0))
    assert "reference/0" in keys(requests)
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


def propose_many(prompts):
    """A one-shot proposal of three constraints, of the first three types the request allows."""
    def many(request):
        names = [t.name for t in types(prompts) if t.name in request.sampling.regex][:3]
        pairs = "\n".join(f"**Selected Type**: {n}\n**Constraint**: The answer must satisfy the {n.lower()} rule "
                          "stated in full." for n in names)
        return f"**Analysis**: several gaps.\n{pairs}"

    return many


def test_one_shot_proposes_all_constraints_in_one_call(prompts):
    step, requests = drive(make_flow(prompts, rounds=3, one_shot=True), Sample("d1", DOC),
                           script(prompts, {"propose": propose_many(prompts)}, fail=1.0))
    assert isinstance(step, Done)
    assert keys(requests).count("propose/1") == 1 and "dedup/2" not in keys(requests)
    assert [r["meta"]["level"] for r in step.records] == [1, 2, 3]


def test_impossible_events_are_loud(prompts):
    flow = make_flow(prompts)
    sample = Sample("d1", DOC)
    with pytest.raises(FlowError):
        flow.advance(sample, "d1/back_translate/0", completion("x"))
    flow.start(sample)
    with pytest.raises(FlowError):
        flow.start(sample)
    with pytest.raises(FlowError):
        flow.advance(sample, "d1/refine/0", completion("x"))


def test_score_comes_before_the_refinement(prompts):
    step, requests = drive(make_flow(prompts), Sample("d1", DOC), script(prompts, score=2))
    assert isinstance(step, Rejected) and step.stage == "score"
    assert keys(requests) == ["back_translate/0", "score/0"]


@pytest.mark.parametrize("constraint_set, unlocks", [
    ("failed", {"score/0": ["refine/0", "answer/1"], "refine/0": [], "answer/1": ["propose/1"],
                "answer_with/1": ["check/1", "propose/2"], "check/1": ["merge/1"], "merge/1": ["respond/1"],
                "answer_with/2": ["check/2", "propose/3"], "check/2": ["merge/2"], "check/3": ["merge/3"]}),
    ("all", {"score/0": ["refine/0", "answer/1"], "propose/1": ["answer/2", "merge/1"], "dedup/2": ["answer/3", "merge/2"], "dedup/3": ["merge/3"]}),
])
def test_checks_and_levels_run_alongside_the_rounds(prompts, constraint_set, unlocks):
    flow = make_flow(prompts, rounds=3, constraint_set=constraint_set)
    sample, respond = Sample("d1", DOC), script(prompts, fail=1.0)
    seen, todo = {}, flow.start(sample)
    while todo:
        step = flow.advance(sample, todo[0].key, completion(respond(todo[0])))
        seen[keys(todo[:1])[0]] = sorted(keys(step)) if isinstance(step, list) else step
        todo = todo[1:] + (step if isinstance(step, list) else [])
    assert {k: seen[k] for k in unlocks} == {k: sorted(v) for k, v in unlocks.items()}
    assert isinstance(step, Done) and [r["meta"]["level"] for r in step.records] == [1, 2, 3]


def test_level_k_waits_for_the_checks_of_rounds_1_to_k(prompts):
    flow, sample = make_flow(prompts, rounds=3), Sample("d1", DOC)
    respond = script(prompts, fail=0.5)

    def answer(request):
        if request.stage == "merge":
            assert not any(r.stage == "check" and r.n <= request.n for r in sample.pending.values())
            assert all(c.score is not None for c in sample.constraints if c.round <= request.n)
        return respond(request)

    def checks_last(todo):
        return next((i for i, r in enumerate(todo) if r.stage != "check"), 0)

    step, requests = drive(flow, sample, answer, checks_last)
    assert isinstance(step, Done) and "merge/1" in keys(requests)
    assert step == drive(make_flow(prompts, rounds=3), Sample("d1", DOC), respond)[0]


@pytest.mark.parametrize("settings", [
    {"rounds": 4},
    {"rounds": 4, "reuse_answer": False},
    {"rounds": 3, "constraint_set": "all"},
    {"rounds": 3, "one_shot": True},
    {"rounds": 3, "judge": "model"},
    {"rounds": 3, "judge": "none"},
])
def test_results_do_not_depend_on_the_order_calls_return(prompts, settings):
    overrides = {"check/2": "looks fine", "merge/3": completion("Write", "length")}
    if settings.get("one_shot"):
        overrides["propose"] = propose_many(prompts)
    # One-shot has one check for all constraints: let the student fail it, so that levels are made.
    respond = script(prompts, overrides, fail=1.0 if settings.get("one_shot") else 0.6)
    first, asked = drive(make_flow(prompts, **settings), Sample("d1", DOC), respond)
    assert isinstance(first, Done)
    for seed in range(5):
        rng = random.Random(seed)
        step, requests = drive(make_flow(prompts, **settings), Sample("d1", DOC), respond,
                               lambda todo: rng.randrange(len(todo)))
        assert step == first
        assert sorted((r.key, r.messages, r.sampling) for r in requests) == sorted(
            (r.key, r.messages, r.sampling) for r in asked)


@pytest.mark.parametrize("overrides, stage", [
    ({"refine": "   ", "answer": "   "}, "refine"),
    ({"reference": "   ", "answer": "   "}, "reference"),
    ({"refine": "   ", "reference": "   "}, "refine"),
    ({"answer": "   "}, "answer"),
])
def test_calls_asked_together_fail_in_stage_order(prompts, overrides, stage):
    # The refinement, the reference and round 1's answer are in flight together; whichever returns first, the
    # sample ends at the earliest stage that failed, with nothing proposed.
    respond = script(prompts, overrides, fail=1.0)
    for pick in (lambda todo: 0, lambda todo: len(todo) - 1):
        step, requests = drive(make_flow(prompts, judge="model"), Sample("d1", DOC), respond, pick)
        assert isinstance(step, Rejected) and step.stage == stage and "empty output" in step.reason
        assert {"refine/0", "reference/0", "answer/1"} <= set(keys(requests)) and "propose/1" not in keys(requests)


def test_refused_request_ends_the_sample_once_its_other_calls_return(prompts):
    flow, sample = make_flow(prompts, rounds=3), Sample("d1", DOC)
    respond = script(prompts, fail=1.0)
    todo = flow.start(sample)
    while [r.stage for r in todo] != ["check", "propose"]:
        step = flow.advance(sample, todo[0].key, completion(respond(todo[0])))
        todo = todo[1:] + step
    check, propose = todo
    assert flow.refused(sample, check.key, "prompt longer than the context") == []
    step = flow.advance(sample, propose.key, completion(respond(propose)))
    assert isinstance(step, Rejected) and step.stage == "check"
    assert "engine refused the request: prompt longer than the context" in step.reason
    assert not sample.pending


def test_structured_outputs_can_be_switched_off(prompts):
    _, requests = drive(make_flow(prompts, rounds=1, structured=False), Sample("d1", DOC),
                        script(prompts, {"check": "c\t0"}, fail=1.0))
    assert all(r.sampling.regex is None and r.sampling.choice is None for r in requests)


@pytest.mark.parametrize("asks", ["duplicate", "new"])
def test_the_duplicate_check_asked_either_way_round(prompts, asks):
    flow = make_flow(prompts, rounds=3, dedup_asks=asks)
    yes = "Answer: Yes"
    # "Yes" to every question: a duplicate (ends the rounds at round 2) or a new constraint (all 3 rounds).
    step, requests = drive(flow, Sample("d1", DOC), script(prompts, {"dedup": yes}, fail=1.0))
    dedup = [r for r in requests if r.stage == "dedup"][0].messages[-1]["content"]
    assert ("is new" in dedup) == (asks == "new")
    assert [r["meta"]["level"] for r in step.records] == ([1] if asks == "duplicate" else [1, 2, 3])
