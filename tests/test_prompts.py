"""The prompt set: loading, rendering, parsing messy model outputs, and decode-time formats."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from airgen.air import parsers, steps
from airgen.air.prompt_data import merge_examples, types
from airgen.air.recipe import RECIPE as AIR
from airgen.method.parsing import ParseError, word_count
from airgen.method.prompts import PromptFileError, PromptSet

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
TABLE_16 = (
    "Data Format", "Document Structure", "Domain-Specific Format", "Inclusion", "Exclusion", "Citation",
    "Prior Condition", "Target Audience", "Tone and Style", "Emotion", "Linguistic Characteristics", "Multilingual",
)
ALLOWED = ("Inclusion", "Tone and Style", "Domain-Specific Format", "Data Format")


@pytest.fixture(scope="module")
def ps() -> PromptSet:
    return AIR.prompts(PROMPTS)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A writable copy of the prompt folder."""
    copy = tmp_path / "prompts"
    shutil.copytree(PROMPTS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


# --- loading -----------------------------------------------------------------------------------------------

def test_twelve_types_in_order(ps):
    assert tuple(t.name for t in types(ps)) == TABLE_16
    for t in types(ps):
        assert len(t.description.split()) >= 8, t.name
        assert 10 <= word_count(t.example) <= 20, t.example


def test_merge_examples(ps):
    assert len(merge_examples(ps)) >= 10
    assert len({e.instruction for e in merge_examples(ps)}) == len(merge_examples(ps))
    for e in merge_examples(ps):
        assert 1 <= len(e.constraints) <= 5
        assert word_count(e.merged) > word_count(e.instruction)


def test_fingerprint_tracks_file_bytes(ps, folder):
    assert re.fullmatch(r"[0-9a-f]{16}", ps.fingerprint)
    assert AIR.prompts(folder).fingerprint == ps.fingerprint
    path = folder / "dedup_constraint.txt"
    path.write_text(path.read_text() + "\nBe brief.\n")
    assert AIR.prompts(folder).fingerprint != ps.fingerprint


def test_fingerprint_covers_data_files(ps, folder):
    from airgen.crab.recipe import RECIPE as CRAB

    crab = CRAB.prompts(folder).fingerprint
    path = folder / "merge_examples.toml"
    path.write_text(path.read_text().replace("Explain how vaccines", "Explain how antibodies", 1))
    changed = AIR.prompts(folder)
    assert changed.fingerprint != ps.fingerprint
    assert merge_examples(changed)[0].instruction.startswith("Explain how antibodies")
    # A recipe's fingerprint covers its own files only: AIR's examples are no part of CRAB's prompt set.
    assert CRAB.prompts(folder).fingerprint == crab and "types" not in CRAB.prompts(folder).data
    (folder / "crab_check.txt").write_text((folder / "crab_check.txt").read_text() + "\nBe brief.\n")
    assert CRAB.prompts(folder).fingerprint != crab


def test_bundled_copy_is_the_source_folder(ps):
    pytest.importorskip("airgen_prompts", reason="airgen is not installed")
    assert AIR.prompts().fingerprint == ps.fingerprint


@pytest.mark.parametrize("name, edit, message", [
    ("check_constraints.txt", None, "check_constraints.txt is missing"),
    ("back_translate.txt", lambda s: s + "${extra}", "unknown: ['extra']"),
    ("refine_document.txt", lambda s: s.replace("${instruction}", "the instruction"), "missing: ['instruction']"),
    ("score_instruction.txt", lambda s: s + "Costs $5.", "'$'"),
    ("system.txt", lambda s: "", "system.txt must be non-empty"),
    ("system.txt", lambda s: s + "${document}", "system.txt must be non-empty"),
    ("constraint_types.toml", lambda s: s + "[[type\n", "not valid TOML"),
    ("constraint_types.toml", lambda s: "# none\n", "at least one [[type]]"),
    ("constraint_types.toml", lambda s: s.replace('"Exclusion"', '"inclusion"'), "distinct"),
    ("constraint_types.toml", lambda s: s.replace('"Emotion"', '"None"'), "reserved"),
    ("constraint_types.toml", lambda s: s.replace('name = "Citation"', 'name = "Citation"\ncolour = "red"'),
     "unknown key 'colour'"),
    ("constraint_types.toml", lambda s: s.replace('name = "Citation"', 'name = ""'), "'name' must be non-empty"),
    ("merge_examples.toml", lambda s: s.replace(
        'constraints = [\n    "Return the ideas as a JSON array whose items have name, main_ingredients and '
        'prep_minutes fields.",\n]', "constraints = []"), "list of 1 to 5"),
    ("merge_examples.toml", lambda s: s.replace('"Keep the email under 120 words.",', '"a", "b", "c",'),
     "list of 1 to 5"),
    ("merge_examples.toml", lambda s: s.replace("merged =", "answer =", 1), "unknown key 'answer'"),
])
def test_bad_folder_is_a_clear_error(folder, name, edit, message):
    path = folder / name
    if edit is None:
        path.unlink()
    else:
        path.write_text(edit(path.read_text()))
    with pytest.raises(PromptFileError, match=re.escape(message)):
        AIR.prompts(folder)


def test_not_utf8(folder):
    (folder / "system.txt").write_bytes(b"\xff\xfe helpful")
    with pytest.raises(PromptFileError, match="not UTF-8"):
        AIR.prompts(folder)


def test_no_sentences_from_the_paper():
    borrowed = ("You are a professional editor", "would lead to the given text as a response",
                "skilled writing specialist who excels", "Review the user's instruction using the additive",
                "I want you to act as a quality evaluator", "Please analyze both outputs carefully",
                "Gary Gilmour", "awaiting their college admission")
    for path in PROMPTS.iterdir():
        if path.suffix in (".txt", ".toml"):
            text = path.read_text().lower()
            for phrase in borrowed:
                assert phrase.lower() not in text, (path.name, phrase)


# --- rendering ---------------------------------------------------------------------------------------------

def test_every_template_renders_its_fields(ps):
    for name, fields in AIR.templates().items():
        values = {f: f"<<{f.upper()}-VALUE>>" for f in fields}
        system, user = ps.messages(name, **values)
        assert system == {"role": "system", "content": ps.system}
        assert user["role"] == "user"
        for value in values.values():
            assert value in user["content"], (name, value)
        assert "${" not in user["content"] and "$" not in user["content"], name


def test_field_values_are_not_reinterpreted(ps):
    _, user = ps.messages("back_translate", document="Price: $5 and ${document} stay literal.")
    assert "Price: $5 and ${document} stay literal." in user["content"]


def test_missing_unknown_and_wrong_fields(ps):
    with pytest.raises(KeyError, match="'answer'"):
        ps.messages("check_constraints", instruction="i", constraints="c")
    with pytest.raises(ValueError, match="'reference'"):
        ps.messages("score_instruction", instruction="i", reference="r")
    with pytest.raises(KeyError, match="no_such_prompt"):
        ps.messages("no_such_prompt", instruction="i")
    with pytest.raises(TypeError, match="'existing'"):
        ps.messages("dedup_constraint", constraint="c", existing=["a", "b"])


def test_count_may_be_an_int(ps):
    _, user = ps.messages("propose_constraints_oneshot", instruction="i", reference="r", answer="a",
                          types="t", count=3)
    assert "the 3 most important ways" in user["content"]


def test_judge_prompt_keeps_the_repeated_part_first(ps):
    """Across rounds only the answer and the shuffled type list change: everything before the answer is shared."""
    offered = list(types(ps))
    first = ps.messages("propose_constraint", instruction="Explain tides.", reference="Tides follow the moon.",
                        answer="Water moves.", types=steps.format_types(offered[:6]))[1]["content"]
    later = ps.messages("propose_constraint", instruction="Explain tides.", reference="Tides follow the moon.",
                        answer="The sea rises.", types=steps.format_types(offered[6:][::-1]))[1]["content"]
    shared = first[:first.index("Water moves.")]
    assert later.startswith(shared)
    assert shared.index("Explain tides.") < shared.index("Tides follow the moon.")
    assert first.index("Water moves.") < first.index("- " + offered[0].name)
    assert first.rstrip().endswith("**Constraint**: <one sentence of 10 to 20 words, or None>")


def test_helpers(ps):
    assert steps.append_constraints(" Write a poem. ", ["Use rhyme.", " Be short. "]) == \
        "Write a poem.\n\nUse rhyme.\n\nBe short."
    assert steps.append_constraints("Write a poem.", []) == "Write a poem."
    assert steps.format_numbered(["a", "b "]) == "1. a\n2. b"
    listed = steps.format_types(types(ps)[:2])
    for t in types(ps)[:2]:
        assert t.name in listed and t.description in listed and t.example in listed
    assert steps.format_examples([]) == ""
    block = steps.format_examples(merge_examples(ps)[:2])
    assert block.count("[Merged Instruction]") == 2 and merge_examples(ps)[1].merged in block
    assert word_count("  one two\nthree\tfour ") == 4


# --- parse_instruction ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Explain how tides work.", "Explain how tides work."),
    ("Here is the instruction:\n\nExplain how tides work.\n", "Explain how tides work."),
    ("Instruction: \"Explain how tides work.\"", "Explain how tides work."),
    ("**Instruction:** Explain how tides work.", "Explain how tides work."),
    ("### Instruction\r\n\r\n“Explain how tides work.”\r\n", "Explain how tides work."),
    ("Sure! Here's an instruction: Describe the life cycle of a frog.", "Describe the life cycle of a frog."),
    ("Explain how tides work.\n\nThis instruction focuses on the main idea of the text.",
     "Explain how tides work."),
    ("Instruction:Explain how tides work.\n\nNote: I left out the details about the moon's orbit.",
     "Explain how tides work."),
    ("Describe the history of jazz.\n\nExplanation: The text is a history of jazz.\nI hope this helps!",
     "Describe the history of jazz."),
    ("Generated instruction - 'Write a guide to composting at home.'", "Write a guide to composting at home."),
])
def test_parse_instruction(text, expected):
    assert parsers.parse_instruction(text) == expected


@pytest.mark.parametrize("text", ["", "  \n\n", "Here is the instruction:", "Instruction:\n\"\"\n---"])
def test_parse_instruction_rejects(text):
    with pytest.raises(ParseError, match="no instruction line"):
        parsers.parse_instruction(text)


# --- parse_refined ---------------------------------------------------------------------------------------------

def test_parse_refined_strips_label_and_note():
    text = ("**Enhanced Response:**\n\nTides are caused by the moon.\n\n- Spring tides\n- Neap tides\n\n"
            "Note: I removed the unrelated paragraph about boats.\n")
    assert parsers.parse_refined(text) == "Tides are caused by the moon.\n\n- Spring tides\n- Neap tides"


def test_parse_refined_preamble_then_label():
    text = "Sure, here is the improved response:\r\nImproved response: Tides rise twice a day.\r\n---\r\n"
    assert parsers.parse_refined(text) == "Tides rise twice a day."


def test_parse_refined_keeps_the_answers_own_lead_in():
    text = "Here are five tips for better sleep:\n1. Keep a schedule.\n2. Avoid caffeine late.\n"
    assert parsers.parse_refined(text) == text.strip()


def test_parse_refined_cuts_a_note_about_the_edit_with_its_list():
    text = ("Preheat the oven.\n\nNote: ovens vary, so check early.\n\nBake for 20 minutes.\n\n"
            "**Note:** Changes made:\n\n- removed the ad\n- added steps")
    assert parsers.parse_refined(text) == "Preheat the oven.\n\nNote: ovens vary, so check early.\n\nBake for 20 minutes."


def test_parse_refined_keeps_a_note_inside_the_content():
    text = "Preheat the oven.\n\nNote: ovens vary, so check early.\n\nBake for 20 minutes."
    assert parsers.parse_refined(text) == text


def test_parse_refined_keeps_an_inner_note_word():
    text = "Note that the moon matters.\nTides rise twice a day."
    assert parsers.parse_refined(text) == text


@pytest.mark.parametrize("text", ["", "Enhanced Response:", "Enhanced Response:\n\n(Note: nothing to change.)"])
def test_parse_refined_empty(text):
    with pytest.raises(ParseError, match="empty response"):
        parsers.parse_refined(text)


# --- parse_score ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("It is a clear task (+1). General (+1).\nScore: 4/5", 4),
    ("Justification: fine.\n\n**Score:** 5/5", 5),
    ("Score: 3 / 5\r\n", 3),
    ("the total is ... so my score 2/5.", 2),
    ("An earlier draft said Score: 5/5 but on reflection\nScore: 3/5\n\nNote: strict.", 3),
    ("## Final\n**Score**: 1 out of 5", 1),
    ("Points: task, knowledge.\nScore: 2", 2),
])
def test_parse_score(text, expected):
    assert parsers.parse_score(text) == expected


def test_parse_score_errors():
    with pytest.raises(ParseError, match=r"no 'Score: N/5' line"):
        parsers.parse_score("This instruction deserves four points.")
    with pytest.raises(ParseError, match="outside 0..5"):
        parsers.parse_score("Score: 7/5")


# --- parse_constraint ------------------------------------------------------------------------------------------

GOOD = "Mention at least two concrete historical examples and the year each event happened."


@pytest.mark.parametrize("text", [
    f"**Analysis**: Output1 gives examples.\n**Selected Type**: Inclusion\n**Constraint**: {GOOD}",
    f"Analysis: x\r\nSelected Type:inclusion\r\nConstraint:{GOOD}\r\n",
    f"- **Selected Type:** **Inclusion**\n- **Constraint:** \"{GOOD}\"\n\nNote: this is the biggest gap.",
    f"Let me compare.\n\n### Analysis\nOutput2 lacks examples.\n\n### Selected Type\n[Inclusion]\n\n"
    f"### Constraint\n{GOOD}\n",
    f"1. **Analysis**: gap\n2. **Selected Type**: Inclusion (Output1 cites examples)\n3. **Constraint**: {GOOD}",
    f"**analysis**: gap\n**selected type**: INCLUSION.\n**constraint**: {GOOD}",
])
def test_parse_constraint_messy(text):
    assert parsers.parse_constraint(text, ALLOWED) == ("Inclusion", GOOD)


@pytest.mark.parametrize("written, expected", [
    ("tone & style", "Tone and Style"),
    ("Domain specific format", "Domain-Specific Format"),
    ("Data-Format", "Data Format"),
])
def test_parse_constraint_type_spelling(written, expected):
    text = f"**Analysis**: a\n**Selected Type**: {written}\n**Constraint**: {GOOD}"
    assert parsers.parse_constraint(text, ALLOWED) == (expected, GOOD)


@pytest.mark.parametrize("text, reason", [
    (f"**Analysis**: a\n**Constraint**: {GOOD}", "no type given"),
    ("I think the answers are equally good.", "no type given"),
    ("**Analysis**: a\n**Selected Type**:\n**Constraint**: x", "no type given"),
    ("**Analysis**: same\n**Selected Type**: None\n**Constraint**: None", "None (no gap found)"),
    (f"**Analysis**: a\n**Selected Type**: Citation\n**Constraint**: {GOOD}", "'Citation' is not one of the offered"),
    ("**Analysis**: a\n**Selected Type**: Inclusion\n", "no constraint given"),
    ("**Analysis**: a\n**Selected Type**: Inclusion\n**Constraint**: None.", "constraint is None"),
    ("**Analysis**: a\n**Selected Type**: Inclusion\n**Constraint**: Add the examples that Output 1 lists.",
     "mentions 'Output 1'"),
    ("**Analysis**: a\n**Selected Type**: Inclusion\n**Constraint**: Keep the original instruction's scope.",
     "mentions 'original instruction'"),
    ("**Analysis**: a\n**Selected Type**: Inclusion\n**Constraint**: Follow all of these constraints carefully.",
     "mentions 'these constraints'"),
])
def test_parse_constraint_reasons(text, reason):
    with pytest.raises(ParseError, match=re.escape(reason)):
        parsers.parse_constraint(text, ALLOWED)


def test_parse_constraints_one_shot():
    text = (
        "**Analysis**: several gaps\n\n"
        "**Selected Type 1**: Inclusion\n**Constraint 1**: Name two examples.\n\n"
        "**Selected Type 2**: Citation\n**Constraint 2**: Cite a source.\n\n"          # not offered: skipped
        "**Selected Type 3**: Inclusion\n**Constraint 3**: Name three examples.\n\n"   # repeated type: skipped
        "**Selected Type 4**: Tone and Style\n**Constraint 4**: Keep a formal tone.\n"
        "**Selected Type 5**: Data Format\n**Constraint 5**: Answer as a table.\n"
    )
    assert parsers.parse_oneshot(text, ALLOWED, 2) == [("Inclusion", "Name two examples."),
                                                     ("Tone and Style", "Keep a formal tone.")]
    assert [t for t, _ in parsers.parse_oneshot(text, ALLOWED, 5)] == ["Inclusion", "Tone and Style", "Data Format"]


def test_parse_constraints_none_valid():
    text = "**Analysis**: a\n**Selected Type**: Citation\n**Constraint**: Cite.\n**Selected Type**: None\n"
    with pytest.raises(ParseError, match=r"no valid constraint: type 'Citation' is not one.*None"):
        parsers.parse_oneshot(text, ALLOWED, 2)
    with pytest.raises(ParseError, match="no valid constraint: no type given"):
        parsers.parse_oneshot("nothing here", ALLOWED, 2)


# --- parse_yes_no -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Answer: Yes", True), ("Answer: No", False), ("**Answer:** yes", True), ("answer:no\r\n", False),
    ("Both ask for a formal tone.\n\nAnswer: Yes\n\nNote: reworded only.", True),
    ("No, the new requirement asks for citations.", False), ("Yes.", True),
])
def test_parse_verdict(text, expected):
    assert parsers.parse_yes_no(text) is expected


def test_parse_verdict_unclear():
    with pytest.raises(ParseError, match="no 'Answer: Yes/No' verdict"):
        parsers.parse_yes_no("The two requirements are related.")


# --- parse_check -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Use a formal tone.\t2\n\nMention two examples.\t0", [2, 0]),
    ("Use a formal tone.\t2\r\n\r\nMention two examples.\t0\r\n", [2, 0]),
    ("1. Use a formal tone.\t3\n2. Mention two examples.\t1\n", [3, 1]),
    ("Here is my evaluation:\n\nUse a formal tone: 2\n\nMention two examples - **1**\n\nDone.", [2, 1]),
    ("Use a formal tone.\nScore: 2\n\nMention two examples.\nScore: 0", [2, 0]),
    ("- Use a formal tone. (2/3)\n- Keep it under 100 words.  3", [2, 3]),
    ("Use a formal tone.\t**Score: 1**\n\nKeep it under 100 words.\t3\t", [1, 3]),
    ("| Use a formal tone | 2 |\n| Keep it under 100 words | 0 |", [2, 0]),
])
def test_parse_check(text, expected):
    assert parsers.parse_check(text, len(expected)) == expected


def test_parse_check_ignores_numbers_inside_criteria():
    text = "List exactly 3 reasons\t1\n\nKeep it under 3\n\nUse 2 examples\t0"
    assert parsers.parse_check(text, 2) == [1, 0]


@pytest.mark.parametrize("text, count, reason", [
    ("Use a formal tone.\t2", 2, "expected 2 criterion scores, found 1"),
    ("A\t1\n\nB\t2\n\nC\t3", 2, "expected 2 criterion scores, found 3"),
    ("The answer is good overall.", 1, "expected 1 criterion scores, found 0"),
    ("Use a formal tone.\t5", 1, "score 5 is outside 0..3"),
])
def test_parse_check_errors(text, count, reason):
    with pytest.raises(ParseError, match=re.escape(reason)):
        parsers.parse_check(text, count)


# --- parse_merged ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Write a formal poem about rain in French.",
    "[Merged Instruction]\nWrite a formal poem about rain in French.",
    "Merged instruction: \"Write a formal poem about rain in French.\"",
    "**Merged Instruction:** Write a formal poem about rain in French.\n\nNote: both constraints kept.",
    "Here is the merged instruction:\r\n\r\nWrite a formal poem about rain in French.\r\n",
    "Write a formal poem about rain in French.\n\n[Response]\nLa pluie tombe...",
])
def test_parse_merged(text):
    assert parsers.parse_merged(text) == "Write a formal poem about rain in French."


@pytest.mark.parametrize("text", ["", "[Merged Instruction]", "Merged instruction:\n\n"])
def test_parse_merged_empty(text):
    with pytest.raises(ParseError, match="empty merged instruction"):
        parsers.parse_merged(text)


# --- decode-time formats ---------------------------------------------------------------------------------------

TYPES = list(TABLE_16)


def _plain(regex: str) -> bool:
    """No lookarounds, backreferences, lazy quantifiers or counted repeats above 200 (xgrammar compiles a state
    per count: {1,800} took over vLLM's 5 s compile limit, while the tiny preset's {1,150} compiles at once)."""
    bare = re.sub(r"\\.", "", regex)           # drop escapes
    bare = re.sub(r"\[[^\]]*\]", "C", bare)      # drop character classes
    counts = [int(hi) for hi in re.findall(r"\{\d*,(\d+)\}", bare)]
    return not re.search(r"\(\?[=!<]|[+*}]\?", bare) and all(hi <= 200 for hi in counts)


def _sent(regex: str) -> list[str]:
    """`regex` as the default settings send it and as the tiny preset does (free-text lines capped)."""
    return [regex, steps.shorten(regex)]


def _samples():
    """(regex, an output matching it, the parser, what the parser returns)."""
    one = f"**Analysis**: Output2 lacks examples.\n**Selected Type**: Inclusion\n**Constraint**: {GOOD}"
    many = ("**Analysis**: two gaps\n**Selected Type**: Inclusion\n**Constraint**: Name two examples.\n"
            "**Selected Type**: Tone and Style\n**Constraint**: Keep the tone formal throughout.")
    check = "Use a formal tone.\t2\n\nMention two examples.\t0\n\nKeep it under 100 words.\t3"
    return [
        (steps.SCORE_REGEX, "Clear task (+1), general knowledge (+1), self-contained (+1).\nScore: 3/5",
         parsers.parse_score, 3),
        (steps.SCORE_REGEX, "Justification: a task (+1).\n\nScore: 1/5", parsers.parse_score, 1),
        (steps.propose_regex(TYPES), one, lambda t: parsers.parse_constraint(t, TYPES), ("Inclusion", GOOD)),
        (steps.propose_many_regex(TYPES, 2), many, lambda t: parsers.parse_oneshot(t, TYPES, 2),
         [("Inclusion", "Name two examples."), ("Tone and Style", "Keep the tone formal throughout.")]),
        (steps.check_lines_regex(3), check, lambda t: parsers.parse_check(t, 3), [2, 0, 3]),
        ("(" + "|".join(map(re.escape, steps.DUPLICATE_CHOICES)) + ")", "Answer: Yes", parsers.parse_yes_no, True),
        ("(" + "|".join(map(re.escape, steps.DUPLICATE_CHOICES)) + ")", "Answer: No", parsers.parse_yes_no, False),
    ]


@pytest.mark.parametrize("index", range(7))
def test_regex_outputs_parse(index):
    regex, sample, parse, expected = _samples()[index]
    assert re.fullmatch(regex, sample), (regex, sample)
    assert parse(sample) == expected


def test_regexes_reject_wrong_formats():
    assert not re.fullmatch(steps.SCORE_REGEX, "Looks good.\nScore: 6/5")
    assert not re.fullmatch(steps.propose_regex(TYPES), "**Analysis**: a\n**Selected Type**: Style\n**Constraint**: b")
    assert re.fullmatch(steps.propose_regex(TYPES), "**Analysis**: a\n**Selected Type**: None\n**Constraint**: None")
    assert not re.fullmatch(steps.check_lines_regex(2), "A\t1")
    assert not re.fullmatch(steps.check_lines_regex(1), "A\t4")
    assert not re.fullmatch(steps.propose_many_regex(TYPES, 2), _samples()[2][1])
    with pytest.raises(ValueError):
        steps.check_lines_regex(0)
    with pytest.raises(ValueError):
        steps.propose_regex([])


def test_regex_type_names_are_literal():
    regex = steps.propose_regex(["A.B (x)", "C|D"])
    assert re.fullmatch(regex, "**Analysis**: a\n**Selected Type**: A.B (x)\n**Constraint**: c")
    assert not re.fullmatch(regex, "**Analysis**: a\n**Selected Type**: AxB (x)\n**Constraint**: c")
    assert parsers.parse_constraint("**Selected Type**: C|D\n**Constraint**: c", ["A.B (x)", "C|D"]) == ("C|D", "c")


SENT = [r for base in (steps.SCORE_REGEX, steps.propose_regex(TYPES), steps.propose_many_regex(TYPES, 5),
                        steps.check_lines_regex(4), steps.SENTENCES_REGEX) for r in _sent(base)]


def test_regexes_are_in_the_structured_output_subset():
    assert steps.SHORT_LINE in steps.shorten(steps.SCORE_REGEX)
    for regex in SENT:
        assert _plain(regex), regex
    assert not _plain("a{1,800}") and not _plain("(?=a)b") and not _plain("a{1,3}?") and _plain("a+")
    assert _plain("[^\\n]{1,150}")


def test_regexes_validate_in_llguidance():
    llguidance = pytest.importorskip("llguidance")
    for regex in [*(r for r, _, _, _ in _samples()), *SENT]:
        assert llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("regex", regex)) == "", regex


def test_regexes_compile_in_xgrammar():
    xgr = pytest.importorskip("xgrammar")
    from xgrammar.testing import _is_grammar_accept_string
    for regex, sample, _, _ in _samples():
        grammar = xgr.Grammar.from_regex(regex)
        assert _is_grammar_accept_string(grammar, sample), regex
        assert not _is_grammar_accept_string(grammar, sample + "\nextra"), regex
    for regex in SENT:
        xgr.Grammar.from_regex(regex)


def test_type_regex_is_the_same_for_the_same_set_in_any_order():
    shuffled = list(reversed(TYPES))
    assert steps.propose_regex(shuffled) == steps.propose_regex(TYPES)
    assert steps.propose_many_regex(shuffled, 2) == steps.propose_many_regex(TYPES, 2)
    assert steps.propose_regex(TYPES[1:]) != steps.propose_regex(TYPES)
