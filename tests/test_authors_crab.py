"""CRAB under both presets, pinned to the authors' code as read (THU-KEG/Crab at HEAD): their rule builders
(scripts/seed_data_generator/3_llama3_unified_constraints.py), their duplicate filter (6_mix_filter.py), their check
reading (5_res_constraints_check.py) and their record draws (train_data_generator/, Crab_2_Constraint_Combination.sh).
The authors' measures are the libraries their scripts call: nltk, YAKE, langdetect and the `rouge` package."""
from __future__ import annotations

import random
from collections import Counter

import pytest

from airgen.config import load
from airgen.crab import records, rules
from airgen.crab.flow import CrabFlow
from airgen.crab.pairs import Pair
from airgen.crab.script import CrabScript
from airgen.crab.steps import CHECK, GLOBAL, LOCAL, authors_judgement
from airgen.method.flow import Done
from airgen.method.parsing import ParseError
from tests.conftest import drive

authors = pytest.importorskip("airgen.crab.authors")
pytest.importorskip("nltk")
pytest.importorskip("yake")
pytest.importorskip("rouge")
THEIRS = rules.How(authors.MEASURE, longest_word=True, keywords=authors.keywords)


@pytest.fixture(scope="module")
def crab_prompts():
    from airgen.crab.recipe import RECIPE

    return RECIPE.prompts()


def settings(preset: str):
    return load(preset=None if preset == "default" else preset, overrides={"recipe": "crab"}).sections["crab"]


def test_the_authors_preset_is_the_authors_settings():
    s = settings("authors")
    assert s.forward_rate == 0.70  # Crab_2_Constraint_Combination.sh: --forward_rate 0.70
    assert (s.diverse_rate, s.reverse_diverse_rate) == (0.3, 0.3)  # both generators draw 1..all at 0.3
    assert (s.forward_constraints, s.reverse_constraints) == ((6, 8), (3, 6))
    assert s.dedup_rouge == 0.6 and s.dedup_after_check and s.keep_unreadable and not s.verify_rules
    assert (s.counting, s.keywords, s.rouge, s.dedup_ties, s.word_chars_from) == (
        "nltk", "yake", "package", "authors", "longest")


# -- the rule builders: nltk's tokens and sentences ---------------------------------------------------------------

def test_a_word_count_counts_nltk_tokens():
    # word_tokenize counts punctuation and splits contractions: 48 words here are 96 tokens (refined_number, l.78).
    text = ("Don't stop, it's fine: we're near. " * 8).strip()
    assert len(rules.reader_words(text)) == 48 and len(authors.tokens(text)) == 96
    seed = next(i for i in range(100) if rules._word_count(text, random.Random(i)).around is not None)
    ours, theirs = (rules._word_count(text, random.Random(seed), how) for how in (rules.How(), THEIRS))
    assert (ours.around, theirs.around) == (40, 90)  # "about N words": N is the count in tens


def test_the_longest_sentence_counts_tokens_with_punctuation():
    text = "Red, green, blue, gold, gray."  # 5 words (no rule), 10 tokens (limit 10)
    assert rules._sentence_words(text, random.Random(0)) is None
    assert rules._sentence_words(text, random.Random(0), THEIRS).low == 10


def test_nltk_knows_abbreviations_a_regex_does_not():
    paragraph = "Dr. Smith arrived at 5 p.m. on Monday. He left early."
    assert len(authors.sentences(paragraph)) == 2
    assert len(rules.line_sentences(paragraph)) > 2


def test_a_line_of_spaces_is_a_paragraph_without_sentences():
    # refined_Length, l.43-48: content.split("\n"), only "" skipped: "   " gives min_s = 0, so no paragraph rule.
    text = "Plant early. Water often. Feed monthly.\n   \nHarvest late. Dry the seeds. Store them cool."
    assert rules._paragraph_sentences(text, random.Random(0)).low >= 3
    assert rules._paragraph_sentences(text, random.Random(0), THEIRS) is None


def test_the_per_word_minimum_from_the_longest_token_never_holds():
    text = "Extraordinary gardens flourish."  # longest token 13 -> at least 15 characters (l.67-71)
    rule = rules._word_chars(text, random.Random(0), THEIRS)
    assert rule.low == 15 and not rules.holds(rule, text, authors.MEASURE)
    assert rules._word_chars(text, random.Random(0)).low == 7  # airgen: the shortest word, which holds


def test_yake_keywords_under_their_threshold():
    text = "Bees visit flowers. Honey bees pollinate apple orchards and almond groves across the valley every spring."
    found = authors.keywords(text)
    assert 0 < len(found) <= 3 and all(isinstance(k, str) for k in found)
    # Exactly YAKE's top three in the language langdetect finds, less those scored 0.07 or over: the threshold
    # removes some here, so a threshold read wrongly changes what is found.
    import langdetect
    import yake

    langdetect.DetectorFactory.seed = 0
    scored = yake.KeywordExtractor(lan=langdetect.detect_langs(text)[0].lang, top=3, features=None
                                   ).extract_keywords(text)
    assert found == tuple(k for k, score in scored if score < authors.YAKE_MAX_SCORE)
    assert any(score >= authors.YAKE_MAX_SCORE for _, score in scored), scored
    rule = rules._keywords(text, random.Random(0), THEIRS)
    assert rule.items == found and rules.holds(rule, text, authors.MEASURE)  # a phrase is looked for as a phrase


# -- ROUGE-L and the duplicate filter --------------------------------------------------------------------------------

def test_their_rouge_is_case_sensitive_and_keeps_punctuation():
    a, b = "The answer must be short.", "the answer must be short"
    assert rules.rouge_l(a, b) == 1.0
    assert authors.rouge_l(a, b) < 0.85  # "The" != "the", "short." != "short"
    assert authors.rouge_l("", "x") == 1.0  # calculate_rouge_l: a failure counts as a full match


def test_ties_in_the_duplicate_filter_remove_the_later_text():
    texts = ["Keep the answer under fifty words.", "Keep the answer under fifty words total.",
             "Mention the soil type."]
    assert rules.near_duplicates(texts, 0.6) == {0}
    assert rules.near_duplicates(texts, 0.6, authors.rouge_l, authors_ties=True) == {1}


# -- the flow: the check, the order of the filters, the records ----------------------------------------------------

RESPONSE = ("Basil wants light, warmth and water.\n- Light: a sunny window gives six hours of sun.\n"
            "- Water: water when the top soil feels dry. Let the pot drain.")


def run(preset: str, prompts, respond, i: int = 0, **overrides):
    config = settings(preset)
    import dataclasses

    flow = CrabFlow(dataclasses.replace(config, **overrides), prompts, 0)
    pair = Pair(f"p{i}", "How do I keep basil alive indoors?", RESPONSE, f"pairs.jsonl:{i + 1}")
    end, requests = drive(flow, flow.sample(pair), respond)
    return end, requests


def test_their_check_reading_keeps_an_unreadable_or_unclear_verdict():
    assert authors_judgement('{"satisfaction": "Partly", "modified_constraint": "x", "constraint_validity": "YES"}'
                             ).satisfied  # only exactly "NO" is unmet
    with pytest.raises(ParseError):
        authors_judgement('{"satisfaction": "NO"}')  # keys missing: unreadable, and their code keeps it


@pytest.mark.parametrize("preset, kept", [("default", 0), ("authors", 1)])
def test_an_unreadable_check_keeps_the_constraint_for_the_authors(preset, kept, crab_prompts):
    def respond(request):
        if request.stage == CHECK:
            return "I think it is fine."
        if request.stage == GLOBAL:
            return ('{"writing_style": "Write in a warm and friendly voice for beginners.", '
                    '"semantic_elements": "NULL", "morphological": "NULL", "multilingual": "NULL", '
                    '"literary_devices": "NULL", "grammatical_structure": "NULL"}')
        if request.stage == LOCAL:
            return "{}"
        return CrabScript()(request)

    end, _ = run(preset, crab_prompts, respond)
    counts = end.records[0]["meta"]["counts"] if isinstance(end, Done) else end.value
    assert counts.get("model_unchecked", 0) == kept


@pytest.mark.parametrize("preset", ["default", "authors"])
def test_duplicates_go_before_the_check_or_after_it(preset, crab_prompts):
    same = "Write in a warm and friendly voice for beginners."

    def respond(request):
        if request.stage in (GLOBAL, LOCAL):
            return '{"%s": "%s"}' % ("writing_style" if request.stage == GLOBAL else "output_format", same)
        return CrabScript(unmet=0.0)(request)

    end, requests = run(preset, crab_prompts, respond)
    checks = sum(1 for r in requests if r.stage == CHECK)
    counts = end.records[0]["meta"]["counts"]
    assert counts["model_duplicate"] == 1
    # Before the check, the duplicate costs no call (airgen); the authors check both, then filter (6_mix_filter).
    assert checks == (1 if preset == "default" else 2)


def test_the_forward_share_and_the_reverse_draws(crab_prompts):
    kinds, asks = Counter(), Counter()
    for i in range(300):
        end, _ = run("authors", crab_prompts, CrabScript(unmet=0.0), i=i, max_tokens=1024)
        meta = end.records[0]["meta"]
        kinds[meta["kind"]] += 1
        if meta["kind"] == records.REVERSE:
            asks[meta["asks"]] += 1
    assert 0.62 <= kinds["forward"] / 300 <= 0.78  # 0.70
    reverse = sum(asks.values())
    assert asks[records.CONSTRAINTS] > asks[records.REFINED] and asks[records.CONSTRAINTS] / reverse > 0.5
    draws = Counter(records.reverse_targets(random.Random(i)) for i in range(4000))
    assert abs(draws[records.CONSTRAINTS] / 4000 - 0.70) < 0.03 and abs(draws[records.BOTH] / 4000 - 0.15) < 0.03
    one_to_all = sum(records.how_many(8, (3, 6), random.Random(i), 0.3) in (1, 2, 7, 8) for i in range(2000))
    assert one_to_all > 0  # the 1..all draw reaches outside 3..6 for reverse records too
