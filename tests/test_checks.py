"""Checked constraints: every kind read from many phrasings, and none from texts that are no kind (precision first);
each verifier agrees with lm-eval's copy of IFEval's on answers made to pass and to fail; the reward as TRL calls it;
every verifier linear on adversarial text."""
from __future__ import annotations

import importlib.util
import pathlib
import sys
import time
import types

import pytest

from airgen import checks
from airgen.checks import Check, parse, reward
from bench.parsers import RUNS, SHAPES

W = "length_constraints:number_words"
PHRASINGS = [
    # words
    ("Use at most 120 words.", W, {"num_words": 121, "relation": "less than"}),
    ("Keep the response to 120 words or fewer.", W, {"num_words": 121, "relation": "less than"}),
    ("The answer must be no more than 80 words long.", W, {"num_words": 81, "relation": "less than"}),
    ("Write fewer than 50 words.", W, {"num_words": 50, "relation": "less than"}),
    ("Your reply should be under 200 words.", W, {"num_words": 200, "relation": "less than"}),
    ("Do not write more than 100 words.", W, {"num_words": 101, "relation": "less than"}),
    ("The response must not exceed 150 words.", W, {"num_words": 151, "relation": "less than"}),
    ("Limit the answer to a maximum of 60 words.", W, {"num_words": 61, "relation": "less than"}),
    ("Write at least 300 words.", W, {"num_words": 300, "relation": "at least"}),
    ("The response must run to 40 words or more.", W, {"num_words": 40, "relation": "at least"}),
    ("Answer in more than fifty words.", W, {"num_words": 51, "relation": "at least"}),
    ("Provide a minimum of 250 words.", W, {"num_words": 250, "relation": "at least"}),
    ("Keep the response between 50 and 80 words.", "airgen:number_words_between", {"low": 50, "high": 80}),
    ("Write no fewer than 40 and no more than 90 words.", "airgen:number_words_between", {"low": 40, "high": 90}),
    ("The answer should be 100-150 words.", "airgen:number_words_between", {"low": 100, "high": 150}),
    ("Respond in exactly 12 words.", "airgen:number_words_between", {"low": 12, "high": 12}),
    # sentences
    ("Respond in fewer than 5 sentences.", "length_constraints:number_sentences",
     {"num_sentences": 5, "relation": "less than"}),
    ("Use at most three sentences.", "length_constraints:number_sentences",
     {"num_sentences": 4, "relation": "less than"}),
    ("Write at least 10 sentences.", "length_constraints:number_sentences",
     {"num_sentences": 10, "relation": "at least"}),
    # paragraphs
    ("The answer must be written in 4 paragraphs.", "airgen:number_paragraphs",
     {"num_paragraphs": 4, "relation": "exactly"}),
    ("Organize the response into exactly three paragraphs.", "airgen:number_paragraphs",
     {"num_paragraphs": 3, "relation": "exactly"}),
    ("Use no more than 2 paragraphs.", "airgen:number_paragraphs", {"num_paragraphs": 3, "relation": "less than"}),
    ("There should be 3 paragraphs, separated by the markdown divider ***.", "length_constraints:number_paragraphs",
     {"num_paragraphs": 3}),
    # bullets
    ("Answer with exactly 3 bullet points.", "detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("Present the tips as 5 bullet points.", "detectable_format:number_bullet_lists", {"num_bullets": 5}),
    ("Use four markdown bullet points.", "detectable_format:number_bullet_lists", {"num_bullets": 4}),
    # keywords
    ('Include the keywords "solar" and "wind".', "keywords:existence", {"keywords": ["solar", "wind"]}),
    ("Use the words 'bee' and 'hive' in the response.", "keywords:existence", {"keywords": ["bee", "hive"]}),
    ('The response must mention "rooftop", "garden".', "keywords:existence", {"keywords": ["rooftop", "garden"]}),
    ("Mention the term “carbon budget”.", "keywords:existence", {"keywords": ["carbon budget"]}),
    ('Use the word "light" at least 3 times.', "keywords:frequency",
     {"keyword": "light", "frequency": 3, "relation": "at least"}),
    ("Mention 'data' no more than 2 times.", "keywords:frequency",
     {"keyword": "data", "frequency": 3, "relation": "less than"}),
    ("Don't use the word 'very'.", "keywords:forbidden_words", {"forbidden_words": ["very"]}),
    ('Avoid the words "basically" and "literally".', "keywords:forbidden_words",
     {"forbidden_words": ["basically", "literally"]}),
    ("Do not mention 'Python' anywhere.", "keywords:forbidden_words", {"forbidden_words": ["python"]}),
    ("The letter 'z' should appear at least 4 times.", "keywords:letter_frequency",
     {"letter": "z", "let_frequency": 4, "let_relation": "at least"}),
    # punctuation and case
    ("Do not use any commas in the response.", "punctuation:no_comma", {}),
    ("Write without commas.", "punctuation:no_comma", {}),
    ("Refrain from using commas.", "punctuation:no_comma", {}),
    ("Do not use any colons in the response.", "airgen:no_symbols", {"symbols": [":"]}),
    ("The response must contain no question marks.", "airgen:no_symbols", {"symbols": ["?"]}),
    ("Avoid semicolons and exclamation marks.", "airgen:no_symbols", {"symbols": ["!", ";"]}),
    ("Write without commas or colons.", "airgen:no_symbols", {"symbols": [",", ":"]}),
    ("No sentence may be longer than 25 words.", "airgen:sentence_words", {"max_words": 25}),
    ("Keep each sentence to at most 25 words.", "airgen:sentence_words", {"max_words": 25}),
    ("Each sentence must not exceed 20 words.", "airgen:sentence_words", {"max_words": 20}),
    ("Keep each sentence under 20 words.", "airgen:sentence_words", {"max_words": 19}),
    ("Sentences should have no more than 15 words.", "airgen:sentence_words", {"max_words": 15}),
    ("No paragraph may have more than 4 sentences.", "airgen:paragraph_sentences", {"max_sentences": 4}),
    ("Keep every paragraph to 4 sentences or fewer.", "airgen:paragraph_sentences", {"max_sentences": 4}),
    ("Each paragraph should contain at most three sentences.", "airgen:paragraph_sentences", {"max_sentences": 3}),
    ("Your entire response should be in lowercase letters.", "change_case:english_lowercase", {}),
    ("Write everything in all lowercase, no capital letters.", "change_case:english_lowercase", {}),
    ("Write your response in all capital letters.", "change_case:english_capital", {}),
    ("The entire response must be in uppercase.", "change_case:english_capital", {}),
    ("Use fewer than 3 words in all capital letters.", "change_case:capital_word_frequency",
     {"capital_frequency": 3, "capital_relation": "less than"}),
    # format
    ("Include a title wrapped in double angular brackets, such as <<poem of joy>>.", "detectable_format:title", {}),
    ("Give the answer a title in <<double angular brackets>>.", "detectable_format:title", {}),
    ("Format the response as valid JSON.", "detectable_format:json_format", {}),
    ("The entire output should be in JSON format.", "detectable_format:json_format", {}),
    ("Wrap your entire response in double quotation marks.", "startend:quotation", {}),
    ("Enclose the whole answer in double quotes.", "startend:quotation", {}),
    ('End your response with "Is there anything else I can help with?"', "startend:end_checker",
     {"end_phrase": "is there anything else i can help with?"}),
    ("Finish the answer with the exact phrase 'Stay curious.'", "startend:end_checker",
     {"end_phrase": "stay curious."}),
    ("Include a postscript starting with P.S.", "detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("Add a P.P.S at the end.", "detectable_content:postscript", {"postscript_marker": "P.P.S"}),
    ("Include at least 2 placeholders in square brackets, such as [address].",
     "detectable_content:number_placeholders", {"num_placeholders": 2}),
    ("Highlight at least 3 sections with markdown, i.e. *highlighted section*.",
     "detectable_format:number_highlighted_sections", {"num_highlights": 3}),
    ("Write 4 sections, marking the beginning of each section with SECTION X.", "detectable_format:multiple_sections",
     {"section_spliter": "SECTION", "num_sections": 4}),
    ("Answer with one of: 'My answer is yes.', 'My answer is no.', 'My answer is maybe.'",
     "detectable_format:constrained_response", {}),
    # language
    ("Respond in French.", "language:response_language", {"language": "fr"}),
    ("Your entire response must be written in German.", "language:response_language", {"language": "de"}),
    ("Write only in Spanish.", "language:response_language", {"language": "es"}),
]
UNCHECKABLE = [
    "Use a formal tone.", "Include two concrete examples.", "Keep it concise.", "Mention at least three benefits.",
    "The first sentence must be under 10 words.", "Each sentence should have at least 5 words.",
    "Use question marks but no exclamation marks.", "Each paragraph should be under 100 words.",
    "Write in three paragraphs of at most 4 sentences each.", "Do not use commas in the first paragraph.",
    "The title must be under 10 words.", "Aim for about 150 words.",
    "The response should be roughly 100 words long.", "Use only words of 3 or more letters.",
    "Every word must have at least 5 characters.", "Avoid jargon.", "End with a question.",
    "Write in the style of a news report.", "Use British English spelling.", "Use bullet points.",
    "Include keywords related to health.", "Cite at least two sources.", "Use active voice.",
    "Start with a short summary.", "Include a comparison table.", "Respond in a friendly tone.",
    "Use Markdown headings.", "The first paragraph should be at most 50 words.", "List at least 5 steps.",
    "Use simple words a child understands.", "Each sentence should have about 15 words.",
    "Each bullet point must be under 15 words.", "Include a JSON snippet showing the configuration.",
    "Make every answer to the questions under 30 words.", "Write a haiku.", "Use vivid imagery.",
    "Give at least 3 reasons, each in its own sentence.", "Use words like 'innovative' sparingly.",
    "Mention the author's name.", "Explain the concept to a beginner.", "Keep the introduction under 40 words.",
    "Write the conclusion in all lowercase.", "Answer the question in English words a child knows.",
    "Include three examples of renewable energy.", "Summarize the article in a tweet.",
    "Do not exceed the scope of the question.", "Use at least three headings.", "Write a list of 5 items.",
    "Limit each line to 40 characters.", "Use exactly one emoji.", "Compare two approaches.",
    "Add a call to action.", "Respond as a pirate would.", "Keep sentences short.",
    "Use at least two metaphors.", "Write more than the other answer did.", "Never repeat yourself.",
    "Ask the reader two questions.", "Include a date in ISO format.", "Write 3 tips.",
    "Make it rhyme.", "Use the second person.", "Do not use passive voice.", "Include at least one statistic.",
    "The last sentence must not exceed 12 words.", "Do not use colons in the title.", "Use colons to introduce lists.",
    "Keep each bullet under three sentences.", "Every paragraph should open with a topic sentence.",
    "No section may be longer than 200 words.", "Avoid long sentences.", "Each sentence must mention the product.",
    "Use no more than two technical terms.", "Write at most three questions.", "Use fewer adjectives.",
    "Keep the summary to 2 sentences or fewer.", "Include no more than 3 examples.",
]


@pytest.mark.parametrize("text, kind, args", PHRASINGS, ids=[p[0][:40] for p in PHRASINGS])
def test_each_kind_is_read_from_its_phrasings(text, kind, args):
    assert parse(text) == Check(kind, args)


@pytest.mark.parametrize("text", UNCHECKABLE)
def test_a_constraint_that_is_no_kind_gets_no_check(text):
    assert parse(text) is None


def test_the_table_covers_every_kind_and_more_uncheckable_texts_than_checkable_ones():
    assert {kind for _, kind, _ in PHRASINGS} == set(checks.KINDS) - {
        "length_constraints:nth_paragraph_first_word",  # a kind no judge phrases alone: its checks are tested below
        "airgen:word_chars"}  # CRAB's rules make it (tests/test_crab_rules.py), in words no judge writes
    assert len(UNCHECKABLE) >= len(PHRASINGS)


# -- against IFEval's verifiers as lm-eval carries them ---------------------------------------------------------------

@pytest.fixture(scope="module")
def ifeval():
    """lm-eval's IFEval registry, loaded by itself (lm-eval's package imports its whole task machinery). Its sentence
    splitter and word tokenizer want NLTK data it would download: they are given the punkt model airgen ships."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None:
        pytest.skip("lm-eval is not installed (make install puts it in the test environment)")
    root = pathlib.Path(spec.submodule_search_locations[0])
    for name, path in (("lm_eval", root), ("lm_eval.tasks", root / "tasks"),
                       ("lm_eval.tasks.ifeval", root / "tasks" / "ifeval")):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module
    from lm_eval.tasks.ifeval import instructions_registry, instructions_util

    from airgen.checks import text

    instructions_util._get_sentence_tokenizer = text._sentence_splitter
    instructions_util.nltk.word_tokenize = text.tokens
    return instructions_registry.INSTRUCTION_DICT


def theirs(registry, kind, args, response):
    instruction = registry[kind](kind)
    instruction.build_description(**args)
    return bool(instruction.check_following(response))


PARAS = "First part about bees.\n\nSecond part about hives.\n\nThird part about honey."
AGREEMENT = [  # kind, args, an answer that meets it, one that does not
    (W, {"num_words": 6, "relation": "less than"}, "Bees make honey in hives.", "Bees make sweet honey in big hives."),
    (W, {"num_words": 4, "relation": "at least"}, "Bees make honey daily.", "Bees make honey."),
    ("length_constraints:number_sentences", {"num_sentences": 3, "relation": "less than"},
     "Dr. Smith keeps bees. They make honey.", "One. Two. Three."),
    ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"},
     "It rained. We stayed in.", "It rained all day."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "One part.\n***\nAnother part.",
     "One part.\n***\n***\nAnother."),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "second"},
     PARAS, PARAS.replace("Second", "Next")),
    ("keywords:existence", {"keywords": ["honey", "hive"]}, "A hive makes Honey.", "A hive makes wax."),
    ("keywords:frequency", {"keyword": "bee", "frequency": 2, "relation": "at least"}, "bee, bee", "one bee"),
    ("keywords:frequency", {"keyword": "bee", "frequency": 2, "relation": "less than"}, "one bee", "bee bee bee"),
    ("keywords:forbidden_words", {"forbidden_words": ["very"]}, "Everything is fine.", "It is Very fine."),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "Zig zag",
     "zag"),
    ("language:response_language", {"language": "fr"},
     "Les abeilles fabriquent du miel dans leurs ruches chaque été.",
     "Bees make honey in their hives every summer, and we eat it."),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Send it to [name] at [address].",
     "Send it to [name]."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Done.\nP.S. Thanks.", "Done. Thanks."),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Done.\nP.P.S also.", "Done.\nP.S. also."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Tips:\n* water\n- sun", "Tips:\n* water"),
    ("detectable_format:constrained_response", {}, "My answer is yes.", "Yes, surely."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "A *first* and **second** note.",
     "A *first* note."),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nBees.\nSECTION 2\nHives.", "SECTION 1\nBees."),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', "a: 1"),
    ("detectable_format:title", {}, "<<Bees at Work>>\nThey fly.", "Bees at Work\nThey fly."),
    ("startend:end_checker", {"end_phrase": "Stay curious."}, "Bees are busy. stay curious.", "Stay curious. Bees."),
    ("startend:quotation", {}, '"Bees make honey."', "Bees make honey."),
    ("change_case:english_capital", {}, "BEES MAKE HONEY IN THE SUMMER MONTHS.", "Bees make honey in summer."),
    ("change_case:english_lowercase", {}, "bees make honey in the summer months.", "Bees make honey in summer."),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "The BEE makes honey.", "The BEE makes HONEY in JUNE."),
    ("punctuation:no_comma", {}, "Bees make honey.", "Bees, wasps and ants."),
]


@pytest.mark.parametrize("kind, args, meets, misses", AGREEMENT, ids=[a[0] for a in AGREEMENT])
def test_holds_agrees_with_ifevals_verifier(ifeval, kind, args, meets, misses):
    check = Check(kind, args)
    assert check.holds(meets) and not check.holds(misses)
    assert theirs(ifeval, kind, args, meets) and not theirs(ifeval, kind, args, misses)


def test_airgens_own_kinds():
    between = Check("airgen:number_words_between", {"low": 3, "high": 5})
    assert [between.holds(t) for t in ("a b", "a b c", "a b c d e", "a b c d e f")] == [False, True, True, False]
    paragraphs = Check("airgen:number_paragraphs", {"num_paragraphs": 3, "relation": "exactly"})
    assert paragraphs.holds(PARAS) and not paragraphs.holds("One.\n\nTwo.")
    assert paragraphs.holds(PARAS.replace("\n\n", "\n   \n"))  # a line of spaces separates too
    assert Check("airgen:number_words_between", {"low": 2, "high": None}).holds("don't stop now")  # 3, no upper bound
    assert not between.holds("well-known don't")  # a reader's words: two, where IFEval counts four
    sentence = Check("airgen:sentence_words", {"max_words": 3})
    assert sentence.holds("Bees fly. They make honey!\nWe eat it.")
    assert not sentence.holds("Bees fly. They make honey daily.")
    per_line = Check("airgen:paragraph_sentences", {"max_sentences": 2})
    assert per_line.holds("One. Two.\nThree. Four.") and not per_line.holds("One. Two. Three.\nFour.")
    chars = Check("airgen:word_chars", {"min_chars": 4})
    assert chars.holds("Honey doesn't spoil.") and not chars.holds("Honey is sweet.")
    marks = Check("airgen:no_symbols", {"symbols": [":", "!"]})
    assert marks.holds("Bees, ants; wasps?") and not marks.holds("Note: bees.") and not marks.holds("Bees!")


def test_the_reward_as_one_call_and_as_trl_calls_it():
    short = Check(W, {"num_words": 4, "relation": "less than"}).data()
    nocomma = Check("punctuation:no_comma").data()
    assert reward("Bees make honey.", [short, nocomma]) == 1.0
    assert reward("Bees, wasps, ants and more.", [short, nocomma]) == 0.0
    assert reward("Bees, ants.", [short, nocomma]) == 0.5
    # GRPOTrainer: keyword arguments, a batch of conversational completions, the `checks` column, other columns.
    batch = reward(prompts=[[{"role": "user", "content": "?"}]] * 2,
                   completions=[[{"role": "assistant", "content": "<think>a, b, c, d, e</think>Bees make honey."}],
                                [{"role": "assistant", "content": "Bees, wasps, ants and more."}]],
                   checks=[[short, nocomma], [short]], completion_ids=[[1], [2]], reference=["x", "y"])
    assert batch == [1.0, 0.0]  # the thinking before </think> is not the answer


@pytest.mark.parametrize("kind, args, meets, misses", AGREEMENT, ids=[a[0] for a in AGREEMENT])
def test_every_verifier_is_linear_on_adversarial_text(kind, args, meets, misses):
    check = Check(kind, args)
    for run in RUNS:
        for shape in SHAPES.values():
            text = shape(meets, run * (100_000 // len(run)))
            began = time.perf_counter()
            check.holds(text)
            assert time.perf_counter() - began < 2.0, (kind, run, shape)


def test_reading_a_long_text_is_cheap():
    for run in RUNS:
        began = time.perf_counter()
        assert parse("Use at most 5 words " + run * 50_000) is None  # no constraint is this long
        assert time.perf_counter() - began < 0.5
