"""CRAB's flow with scripted answers: what each step's answer does to a pair's constraints, and the records."""
from __future__ import annotations

import re

import pytest

from airgen.method.calls import Request
from airgen.crab.recipe import RECIPE as CRAB
from airgen.crab.settings import CrabConfig
from airgen.crab import steps
from airgen.crab.flow import CrabFlow
from airgen.crab.steps import CHECK, GLOBAL, LOCAL, REFINE
from airgen.crab.script import CrabScript
from airgen.crab.pairs import Pair
from airgen.method.parsing import ParseError
from airgen.method.flow import Done, Rejected
from tests.conftest import drive

RESPONSE = ("Basil wants light, warmth and water.\n- Light: a sunny window gives six hours of sun.\n"
            "- Water: water when the top soil feels dry. Let the pot drain.")


@pytest.fixture(scope="module")
def crab_prompts():
    return CRAB.prompts()


def flow(prompts, seed: int = 0, **settings) -> CrabFlow:
    return CrabFlow(CrabConfig(**settings), prompts, seed)


def pair(i: int = 0, response: str = RESPONSE) -> Pair:
    return Pair(f"p{i}", "How do I keep basil alive indoors?", response, f"pairs.jsonl:{i + 1}")


def run(f: CrabFlow, p: Pair, respond=None, pick=None):
    return drive(f, f.sample(p), respond or CrabScript(), pick)


def local_answer(**values: str) -> str:
    return "{\n" + ",\n".join(f'"{k}": "{values.get(k, "NULL")}"' for k in steps.LOCAL_TYPES) + "\n}"


def test_a_pair_makes_one_record_and_every_constraint_has_a_fate(crab_prompts):
    end, requests = run(flow(crab_prompts), pair())
    assert isinstance(end, Done) and len(end.records) == 1
    meta = end.records[0]["meta"]
    counts = meta["counts"]
    fates = sum(v for k, v in counts.items() if k.startswith(("rule_", "model_")))
    assert fates == counts["built_by_rule"] + counts["proposed_by_model"]
    stages = [r.stage for r in requests]
    assert stages[:3] == [REFINE, GLOBAL, LOCAL] and set(stages[3:]) == {CHECK}
    # One check per model constraint that survived the mark filter and the near-duplicate removal.
    assert stages.count(CHECK) == counts["proposed_by_model"] - counts.get("model_unmarked", 0) - \
        counts.get("model_duplicate", 0)
    # Every template starts with the response: the pair's calls share one prompt prefix.
    assert all(r.messages[1]["content"].startswith(("Response:\n'''\n" + RESPONSE, "Text:\n'''\n" + RESPONSE))
               for r in requests)


def test_the_order_answers_come_back_in_changes_nothing(crab_prompts):
    first, _ = run(flow(crab_prompts), pair())
    last, _ = run(flow(crab_prompts), pair(), pick=lambda todo: len(todo) - 1)
    assert first == last


def test_a_local_constraint_naming_a_mark_the_response_lacks_is_dropped(crab_prompts):
    def respond(request: Request):
        if request.stage == LOCAL:
            return local_answer(key_formatting="Write every key term in **bold** for the reader.",
                                item_listing="List the needs as items that start with a hyphen (-).")
        return CrabScript(unmet=0.0)(request)

    end, requests = run(flow(crab_prompts), pair(), respond)
    kept = {c["type"]: c["status"] for c in end.records[0]["meta"]["constraints"] if c["source"] == "local"}
    assert end.records[0]["meta"]["counts"]["model_unmarked"] == 1
    assert not any("bold" in m["content"] for r in requests if r.stage == CHECK for m in r.messages)
    assert "key_formatting" not in kept


def test_near_duplicates_are_checked_once(crab_prompts):
    end, requests = run(flow(crab_prompts), pair(), CrabScript(same=True, unmet=0.0))
    counts = end.records[0]["meta"]["counts"]
    assert counts["model_duplicate"] == counts["proposed_by_model"] - 1
    assert sum(1 for r in requests if r.stage == CHECK) == 1


@pytest.mark.parametrize("verdict, keep_modified, status, text", [
    ('"YES", "explanation": "", "modified_constraint": "", "constraint_validity": "NO"', True, "kept", None),
    ('"NO", "explanation": "x", "modified_constraint": "The text names two needs.", "constraint_validity": "YES"',
     True, "modified", "The response names two needs."),
    ('"NO", "explanation": "x", "modified_constraint": "The text names two needs.", "constraint_validity": "YES"',
     False, "unmet", None),
    ('"NO", "explanation": "x", "modified_constraint": "", "constraint_validity": "NO"', True, "vague", None),
    ('not json at all', True, "unreadable", None),
])
def test_the_checks_verdict_decides_a_constraints_fate(crab_prompts, verdict, keep_modified, status, text):
    def respond(request: Request):
        if request.stage == GLOBAL:
            return "{\n" + ",\n".join(f'"{k}": "NULL"' for k in steps.GLOBAL_TYPES) + "\n}"
        if request.stage == LOCAL:
            return local_answer(hierarchical_instructions="Cover light first, then water, then drainage.")
        if request.stage == CHECK:
            return "{" + f'"satisfaction": {verdict}' + "}" if verdict[0] == '"' else verdict
        return CrabScript()(request)

    end, _ = run(flow(crab_prompts, keep_modified=keep_modified, forward_rate=1.0, diverse_rate=0.0), pair(),
                 respond)
    counts = end.records[0]["meta"]["counts"]
    assert counts.get(f"model_{status}") == 1
    used = [c for c in end.records[0]["meta"]["constraints"] if c["source"] == "local"]
    if status in ("kept", "modified"):  # kept ones are in the pool; with 6..8 drawn from a small pool, all are used
        assert [c["text"] for c in used] == [text or "Cover light first, then water, then drainage."]
        assert used[0].get("proposed") == ("Cover light first, then water, then drainage." if text else None)
    else:
        assert used == []


def test_without_the_check_step_proposals_are_kept_unchecked(crab_prompts):
    end, requests = run(flow(crab_prompts, check=False), pair())
    assert CHECK not in {r.stage for r in requests}
    assert end.records[0]["meta"]["counts"]["model_unchecked"] > 0


def test_records_mix_forward_and_reverse_at_the_forward_rate(crab_prompts):
    kinds = [run(flow(crab_prompts), pair(i))[0].records[0]["meta"]["kind"] for i in range(400)]
    share = kinds.count("forward") / len(kinds)
    assert 0.65 <= share <= 0.75  # 0.70 by default; the draw is per pair and seed, so this is fixed
    assert {run(flow(crab_prompts, forward_rate=0.0), pair(i))[0].records[0]["meta"]["kind"] for i in range(20)} \
        == {"reverse"}


def test_a_forward_record_keeps_the_response_and_draws_six_to_eight(crab_prompts):
    f = flow(crab_prompts, forward_rate=1.0, diverse_rate=0.0)
    for i in range(30):
        record = run(f, pair(i))[0].records[0]
        meta = record["meta"]
        assert record["output"] == RESPONSE and meta["split"] == "forward"
        assert min(6, meta["kept_constraints"]) <= len(meta["constraints"]) <= 8
        assert record["instruction"].startswith(meta["instruction_used"])
        assert all(c["text"] in record["instruction"] for c in meta["constraints"])
        assert meta["instruction_used"] in (meta["initial_instruction"], meta["refined_instruction"])


def test_a_reverse_record_asks_for_the_refined_instruction_and_its_constraints(crab_prompts):
    record = run(flow(crab_prompts, forward_rate=0.0, reverse_diverse_rate=0.0), pair())[0].records[0]
    meta = record["meta"]
    assert RESPONSE in record["instruction"] and meta["initial_instruction"] in record["instruction"]
    assert record["output"].startswith(meta["refined_instruction"] + "\n\nConstraints:\n1. ")
    assert 3 <= len(meta["constraints"]) <= 6 and meta["asks"] == "both"
    assert record["messages"][1]["content"] == record["output"]


def test_a_response_over_the_word_limit_is_rejected_before_any_call(crab_prompts):
    f = flow(crab_prompts, max_response_words=10)
    s = f.sample(pair())
    end = f.start(s)
    assert isinstance(end, Rejected) and end.stage == "length" and end.value == len(RESPONSE.split())


def test_the_decode_formats_match_well_formed_answers():
    script = CrabScript(unmet=0.5)
    for stage, types in ((GLOBAL, steps.GLOBAL_TYPES), (LOCAL, steps.LOCAL_TYPES)):
        regex = steps.json_regex(types, steps._VALUE)
        for i in range(20):
            answer = script(Request(f"p{i}/{stage}/0", "guidance", stage, (), None))  # type: ignore[arg-type]
            assert re.fullmatch(regex, answer), answer
    for short in (False, True):
        for i in range(20):
            answer = script(Request(f"p{i}/{CHECK}/3", "guidance", CHECK, (), None))  # type: ignore[arg-type]
            assert re.fullmatch(steps.judgement_regex(short), answer), answer


def test_parsers():
    found = steps.parse_proposals('Sure:\n{"Writing_Style": "Plain and warm for new gardeners.", '
                                    '"Multi-lingual": "Write in English only.", "semantic_elements": "NULL", '
                                    '"invented": "x y z", "literary_devices": 3}', steps.GLOBAL_TYPES)
    assert found == {"writing_style": "Plain and warm for new gardeners.", "multilingual": "Write in English only."}
    with pytest.raises(ParseError):
        steps.parse_proposals("no json here", steps.GLOBAL_TYPES)
    with pytest.raises(ParseError):
        steps.parse_judgement('{"satisfaction": "maybe"}')
    assert steps.parse_refined("Refined instruction: 'Explain basil care.'") == "Explain basil care."


def test_each_template_describes_every_type_it_asks_for():
    folder = CRAB.prompts()
    for name, types in (("crab_global", steps.GLOBAL_TYPES), ("crab_local", steps.LOCAL_TYPES)):
        text = folder.templates[name].template
        assert all(f"- {t}:" in text for t in types)


@pytest.mark.parametrize("refined, kept", [
    ("How do I keep a potted basil plant alive and growing indoors through a cold winter?", True),
    ("How do I keep basil alive? " + "Tell me everything about every herb there is. " * 6, False),  # +48 words
    ("Basil?", False),  # fewer words than the instruction
])
def test_a_refinement_must_add_a_little(crab_prompts, refined, kept):
    def respond(request: Request):
        return refined if request.stage == REFINE else CrabScript()(request)

    meta = run(flow(crab_prompts, forward_rate=0.0), pair(), respond)[0].records[0]["meta"]
    assert (meta["refined_instruction"] == refined) is kept
    assert ("refine_instruction" in meta["faults"]) is not kept
    assert meta["instruction_used"] == (refined if kept else meta["initial_instruction"])
