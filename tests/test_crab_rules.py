"""CRAB's rule-built constraints against hand-written cases: what each builder states, and whether `holds` agrees."""
from __future__ import annotations

import random

import pytest

from airgen.crab import rules
from airgen.crab.rules import Rule

TWO_PARAGRAPHS = ("The river rises in spring. Farmers watch it closely.\n"
                  "Boats wait in the harbor. Nets dry on the poles. Gulls circle above. The tide turns at noon.")


def test_words_are_what_a_reader_counts():
    assert rules.reader_words("- Item one: 3 apples, don't stop • well-known") == [
        "Item", "one", "3", "apples", "don't", "stop", "well-known"]
    assert rules.lines("a\n\n  b  \n") == ["a", "b"]
    assert rules.line_sentences("One two. Three four! Five?  Six") == ["One two.", "Three four!", "Five?", "Six"]


def test_word_count_rules_hold_for_the_response_they_come_from():
    response = " ".join(f"word{i}" for i in range(47))
    seen = set()
    for seed in range(200):
        rule = rules._word_count(response, random.Random(seed))
        seen.add((rule.low is not None, rule.high is not None, rule.around is not None))
        assert rules.holds(rule, response), rule
        if rule.around is not None:
            assert rule.around == 40  # the authors' tens, rounded down
        if rule.low is not None:
            assert rule.low in (20, 30, 40)
        if rule.high is not None:
            assert rule.high in (50, 60, 70)
    assert seen == {(True, True, False), (True, False, False), (False, True, False), (False, False, True)}


@pytest.mark.parametrize("rule, n, expected", [
    (Rule(rules.WORD_COUNT, "", low=50), 49, False),
    (Rule(rules.WORD_COUNT, "", low=50), 50, True),
    (Rule(rules.WORD_COUNT, "", high=20), 21, False),
    (Rule(rules.WORD_COUNT, "", low=10, high=20), 15, True),
    (Rule(rules.WORD_COUNT, "", around=100), 91, True),
    (Rule(rules.WORD_COUNT, "", around=100), 111, False),
    (Rule(rules.WORD_COUNT, "", around=300), 330, True),  # a tenth of 300
    (Rule(rules.WORD_COUNT, "", around=300), 331, False),
])
def test_word_count_verification(rule, n, expected):
    assert rules.holds(rule, " ".join(["w"] * n)) is expected


def test_the_authors_paragraph_limit_can_state_what_the_response_breaks():
    # Paragraphs of 2 and 4 sentences: the authors take the shortest (2) plus 0..2, so a limit of 2 or 3 is false.
    built = {rules._paragraph_sentences(TWO_PARAGRAPHS, random.Random(seed)).low for seed in range(60)}
    assert built == {2, 3, 4}
    assert not rules.holds(Rule(rules.PARAGRAPH_SENTENCES, "", low=3), TWO_PARAGRAPHS)
    assert rules.holds(Rule(rules.PARAGRAPH_SENTENCES, "", low=4), TWO_PARAGRAPHS)
    assert rules._paragraph_sentences("One sentence only.\nAnother.", random.Random(0)) is None


def test_sentence_and_word_length_rules():
    text = TWO_PARAGRAPHS + " The old ferry leaves the quay at dawn."
    rule = rules._sentence_words(text, random.Random(0))
    assert rule.low == 10 and rules.holds(rule, text)  # the longest sentence has 8 words: up to the next five
    assert not rules.holds(Rule(rules.SENTENCE_WORDS, "", low=7), text)
    assert rules._sentence_words(TWO_PARAGRAPHS, random.Random(0)) is None  # no sentence over five words
    text = "Every answer matters greatly"
    rule = rules._word_chars(text, random.Random(0))
    assert rule.low == 5 and rules.holds(rule, text)
    assert not rules.holds(Rule(rules.WORD_CHARS, "", low=6), text)
    assert rules._word_chars("A cat sat", random.Random(0)) is None


def test_keywords_are_repeated_content_words_and_must_all_appear():
    text = "Basil needs light. Basil needs water. Light from a window helps the basil grow."
    rule = rules._keywords(text, random.Random(0))
    assert rule.items == ("basil", "needs", "light")  # by count, ties by first use and rules.holds(rule, text.upper())
    assert not rules.holds(rule, "Basil needs water.")


def test_no_symbol_picks_the_first_mark_the_response_never_uses():
    rule = rules._no_symbol("Yes, it works. Does it?", random.Random(0))
    assert rule.items == (":",) and "colons" in rule.text and rules.holds(rule, "Yes, it works.")
    assert not rules.holds(rule, "Note: it works.")
    assert rules._no_symbol("a, b: c? d!", random.Random(0)) is None


def test_build_is_deterministic_and_every_kind_is_known():
    first = rules.build(TWO_PARAGRAPHS, random.Random(7))
    assert first == rules.build(TWO_PARAGRAPHS, random.Random(7))
    kinds = {rules.WORD_COUNT, rules.SENTENCE_WORDS, rules.PARAGRAPH_SENTENCES, rules.WORD_CHARS, rules.KEYWORDS,
             rules.NO_SYMBOL}
    assert {r.kind for r in first} <= kinds and first[0].kind == rules.WORD_COUNT
    assert all(isinstance(rules.holds(r, TWO_PARAGRAPHS), bool) for r in first)  # holds() knows every kind built
    with pytest.raises(ValueError):
        rules.holds(Rule("nonsense", ""), "x")


RESPONSES = (TWO_PARAGRAPHS, "Short one.", "A list:\n- first item, done\n- second item: don't stop!\n- third?",
             " ".join(f"word{i}" for i in range(95)) + ".", "Well-known facts. " * 30,
             "Markets rose today. Prices of grain fell sharply; traders said markets would recover. Prices matter.")


@pytest.mark.parametrize("how", [rules.How(), rules.How(longest_word=True)], ids=["default", "longest word"])
def test_a_rules_check_holds_exactly_where_the_rule_does(how):
    """Each rule as `airgen.checks` states it (what a record and an RLVR row carry) agrees with `holds` on its own
    response and on every other one, where it holds and where it does not."""
    outcomes = set()
    for i, source in enumerate(RESPONSES):
        for seed in range(12):
            for rule in rules.build(source, random.Random(seed * 31 + i), how):
                check = rules.check(rule)
                for response in RESPONSES:
                    expected = rules.holds(rule, response)
                    assert check.holds(response) is expected, (rule, check, response)
                    outcomes.add((rule.kind, expected))
    assert {kind for kind, holds in outcomes if holds} == {kind for kind, holds in outcomes if not holds} == {
        rules.WORD_COUNT, rules.SENTENCE_WORDS, rules.PARAGRAPH_SENTENCES, rules.WORD_CHARS, rules.KEYWORDS,
        rules.NO_SYMBOL}


def test_rouge_l_by_hand():
    assert rules.rouge_l("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert rules.rouge_l("red green", "blue yellow") == 0.0
    # LCS "the cat on the mat" = 5 of 6 words each way.
    assert rules.rouge_l("the cat sat on the mat", "The cat lay on the mat") == pytest.approx(5 / 6)
    assert rules.rouge_l("", "anything") == 0.0


def test_near_duplicates_removes_the_most_linked_first():
    a = "Write the answer in a formal and polite tone for managers"
    b = "Write the answer in a formal and polite tone for readers"
    c = "Write the answer in a formal and polite voice for managers"
    d = "Use exactly three bullet points"
    assert rules.rouge_l(b, c) > 0.6 and rules.rouge_l(a, b) > 0.6
    # a, b and c are all linked; the first with most links goes, then the next still linked.
    removed = rules.near_duplicates([a, b, c, d], 0.6)
    assert 3 not in removed and len(removed) == 2
    assert rules.near_duplicates([a, d], 0.6) == set()
