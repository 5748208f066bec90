"""CRAB's rule-built constraints: built from what a response measurably is, and verified against it in code.

Each builder follows the authors' construction (THU-KEG/Crab, `3_llama3_unified_constraints.py`): word counts in
tens with a random margin, the longest sentence rounded up to five words, paragraphs' sentence counts with a random
margin, keywords the response repeats, a punctuation mark it never uses. Their construction can state what the
response breaks (a paragraph limit taken from the shortest paragraph plus up to two; a per-word minimum taken from
the longest word), so by default every rule goes through `holds`, an independent check, and the ones that fail are
removed and counted, and the per-word minimum is built from the shortest word, the one reading under which it can
hold. How a response is measured (`Measure`) and which of these choices hold (`How`) are settings: `crab/authors.py`
holds the authors' own measures (nltk's tokens and sentences, YAKE, the `rouge` package).

Also here: ROUGE-L between constraints and the greedy removal of near-duplicates.
"""
from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from airgen.checks import Check
from airgen.checks.text import line_sentences, lines, reader_words

WORD_COUNT = "word_count"
SENTENCE_WORDS = "sentence_words"
PARAGRAPH_SENTENCES = "paragraph_sentences"
WORD_CHARS = "word_chars"
KEYWORDS = "keywords"
NO_SYMBOL = "no_symbol"

_SYMBOLS = ((",", "commas"), (":", "colons"), ("?", "question marks"), ("!", "exclamation marks"))
_STOPWORDS = frozenset("""about above after again against also because been before being below between both
could does doing down during each every from further have having here into itself just more most must other
over same should some such than that their theirs them then there these they this those through under until very
what when where which while whom will with would your yours yourself another always among around called
cannot could every first given great little makes means might often other round since still though thing things
until using usually whether within without""".split())


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    text: str  # the constraint as it goes into an instruction
    low: int | None = None  # word_count: at least; paragraph/sentence/word rules: the one bound
    high: int | None = None  # word_count: at most
    around: int | None = None  # word_count: about this many
    items: tuple[str, ...] = ()  # keywords present, or the one symbol absent


# -- measuring ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measure:
    """How a response is cut into what the rules count."""

    words: Callable[[str], list[str]]  # the units a word count counts, in a text
    paragraphs: Callable[[str], list[str]]
    sentences: Callable[[str], list[str]]  # of one paragraph


WORDS = Measure(reader_words, lines, line_sentences)  # a reader's (`checks.text`)


def frequency_keywords(response: str) -> tuple[str, ...]:
    """Up to three content words the response uses most (the authors use YAKE; repetition is its main signal)."""
    found = [w.lower() for w in reader_words(response) if len(w) >= 5 and w.lower() not in _STOPWORDS and w.isalpha()]
    counts = Counter(found)
    ranked = sorted(counts, key=lambda w: (-counts[w], found.index(w)))
    return tuple(ranked[:3])


@dataclass(frozen=True)
class How:
    """The choices behind the rules: the measure, where the per-word minimum comes from, the keyword extractor."""

    measure: Measure = WORDS
    longest_word: bool = False  # the authors' per-word minimum: the longest word, rounded up to five (never holds)
    keywords: Callable[[str], tuple[str, ...]] = field(default=frequency_keywords)


def around_tolerance(n: int) -> int:
    """How far "about N words" may be off: the authors' N is the count rounded down to tens, so up to 9 words; ten,
    or a tenth of N for long answers."""
    return max(10, n // 10)


# -- building -------------------------------------------------------------------------------------------------------

def build(response: str, rng: random.Random, how: How = How()) -> list[Rule]:
    """Every rule the authors would build for `response`, in their order (randomness from `rng` only)."""
    rules = [_word_count(response, rng, how)]
    for make in (_paragraph_sentences, _sentence_words, _word_chars, _keywords, _no_symbol):
        rule = make(response, rng, how)
        if rule is not None:
            rules.append(rule)
    return rules


def _word_count(response: str, rng: random.Random, how: How = How()) -> Rule:
    n = len(how.measure.words(response))
    tens = n // 10
    if tens == 0:
        low, high, around = 3, 20, 10
    else:
        low = tens * 10 - min(rng.randint(0, tens - 1), 2) * 10
        high = (tens + 1) * 10 + rng.randint(0, 2) * 10
        around = tens * 10
    form = rng.randint(1, 4)
    if form == 1:
        return Rule(WORD_COUNT, _pick(rng, (f"Keep the response between {low} and {high} words.",
                                            f"Write no fewer than {low} and no more than {high} words.")),
                    low=low, high=high)
    if form == 2:
        return Rule(WORD_COUNT, _pick(rng, (f"Write at least {low} words.",
                                            f"The response must run to {low} words or more.")), low=low)
    if form == 3:
        return Rule(WORD_COUNT, _pick(rng, (f"Use at most {high} words.",
                                            f"Keep the response to {high} words or fewer.")), high=high)
    return Rule(WORD_COUNT, _pick(rng, (f"Aim for about {around} words.",
                                        f"The response should be roughly {around} words long.")), around=around)


def _paragraph_sentences(response: str, rng: random.Random, how: How = How()) -> Rule | None:
    m = how.measure
    counts = [len(m.sentences(p)) for p in m.paragraphs(response)]
    fewest = min(counts, default=0)
    if fewest <= 1:
        return None
    limit = fewest + rng.randint(0, 2)  # the authors' margin: from the shortest paragraph, so it may not hold
    return Rule(PARAGRAPH_SENTENCES, _pick(rng, (f"No paragraph may have more than {limit} sentences.",
                                                 f"Keep every paragraph to {limit} sentences or fewer.")), low=limit)


def _sentence_words(response: str, rng: random.Random, how: How = How()) -> Rule | None:
    m = how.measure
    longest = max((len(m.words(s)) for p in m.paragraphs(response) for s in m.sentences(p)), default=0)
    if longest <= 5:
        return None
    limit = _up_to_five(longest)
    return Rule(SENTENCE_WORDS, _pick(rng, (f"No sentence may be longer than {limit} words.",
                                            f"Keep each sentence to at most {limit} words.")), low=limit)


def _word_chars(response: str, rng: random.Random, how: How = How()) -> Rule | None:
    m = how.measure
    lengths = [len(w) for p in m.paragraphs(response) for s in m.sentences(p) for w in m.words(s)]
    if how.longest_word:  # the authors': their longest token rounded up to five, "at least" that many characters
        longest = max(lengths, default=0)
        if longest <= 3:
            return None
        low = _up_to_five(longest)
    else:
        low = min(lengths, default=0)
        if low <= 3:
            return None
    return Rule(WORD_CHARS, _pick(rng, (f"Every word must have at least {low} characters.",
                                        f"Use only words of {low} or more letters.")), low=low)


def _keywords(response: str, rng: random.Random, how: How = How()) -> Rule | None:
    chosen = how.keywords(response)
    if not chosen:
        return None
    quoted = ", ".join(f'"{w}"' for w in chosen)
    return Rule(KEYWORDS, _pick(rng, (f"Use the words {quoted} in the response.",
                                      f"The response must mention {quoted}.")), items=chosen)


def _no_symbol(response: str, rng: random.Random, how: How = How()) -> Rule | None:
    for symbol, name in _SYMBOLS:
        if symbol not in response:
            return Rule(NO_SYMBOL, _pick(rng, (f"Do not use any {name} in the response.",
                                               f"The response must contain no {name}.")), items=(symbol,))
    return None


def _up_to_five(n: int) -> int:
    """`n` rounded up to a multiple of five (the authors' limits)."""
    return ((n - 1) // 5 + 1) * 5


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return options[rng.randrange(len(options))]


# -- verifying ------------------------------------------------------------------------------------------------------

def holds(rule: Rule, response: str, measure: Measure = WORDS) -> bool:
    """Whether `response` meets `rule`, measured afresh the way it was built."""
    m = measure
    if rule.kind == WORD_COUNT:
        n = len(m.words(response))
        if rule.around is not None:
            return abs(n - rule.around) <= around_tolerance(rule.around)
        return (rule.low is None or n >= rule.low) and (rule.high is None or n <= rule.high)
    if rule.kind == PARAGRAPH_SENTENCES:
        return all(len(m.sentences(p)) <= rule.low for p in m.paragraphs(response))
    if rule.kind == SENTENCE_WORDS:
        return all(len(m.words(s)) <= rule.low for p in m.paragraphs(response) for s in m.sentences(p))
    if rule.kind == WORD_CHARS:
        return all(len(w) >= rule.low for w in m.words(response))
    if rule.kind == KEYWORDS:  # a keyword may be a phrase (YAKE's are)
        text = response.lower()
        return all(re.search(rf"(?<!\w){re.escape(k.lower())}(?!\w)", text) for k in rule.items)
    if rule.kind == NO_SYMBOL:
        return not any(s in response for s in rule.items)
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def check(rule: Rule) -> Check:
    """The rule as a check (`airgen.checks`), which holds exactly where `holds` does under the reader's measure."""
    if rule.kind == WORD_COUNT:
        if rule.around is not None:
            slack = around_tolerance(rule.around)
            return Check("airgen:number_words_between", {"low": rule.around - slack, "high": rule.around + slack})
        return Check("airgen:number_words_between", {"low": rule.low or 0, "high": rule.high})
    if rule.kind == PARAGRAPH_SENTENCES:
        return Check("airgen:paragraph_sentences", {"max_sentences": rule.low})
    if rule.kind == SENTENCE_WORDS:
        return Check("airgen:sentence_words", {"max_words": rule.low})
    if rule.kind == WORD_CHARS:
        return Check("airgen:word_chars", {"min_chars": rule.low})
    if rule.kind == KEYWORDS:
        return Check("keywords:existence", {"keywords": list(rule.items)})
    if rule.items == (",",):
        return Check("punctuation:no_comma")
    return Check("airgen:no_symbols", {"symbols": list(rule.items)})


# -- near-duplicates --------------------------------------------------------------------------------------------------

def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 over lower-cased words: the longest common subsequence against both lengths. (The authors call
    the `rouge` package, `authors.rouge_l`: case-sensitive, punctuation kept on words, sentences split at ".".)"""
    x, y = [w.lower() for w in reader_words(a)], [w.lower() for w in reader_words(b)]
    if not x or not y:
        return 0.0
    previous = [0] * (len(y) + 1)
    for token in x:
        current = [0]
        for j, other in enumerate(y, 1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(y), lcs / len(x)
    return 2 * precision * recall / (precision + recall)


def near_duplicates(texts: list[str], threshold: float, rouge: Callable[[str, str], float] = rouge_l,
                    authors_ties: bool = False) -> set[int]:
    """Indexes to remove so that no two kept texts have ROUGE-L above `threshold` (`rouge(earlier, later)`): the text
    with the most near-duplicates goes first (the authors' greedy order). Ties: the earlier text first; with
    `authors_ties`, in the order the authors' code meets them (each linked pair's later text, then its earlier one),
    which removes the later of two equally linked texts."""
    links: dict[int, set[int]] = {}
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if rouge(texts[i], texts[j]) > threshold:
                for a, b in ((j, i), (i, j)):
                    links.setdefault(a, set()).add(b)
    order = list(links) if authors_ties else sorted(links)
    removed: set[int] = set()
    for i in sorted(order, key=lambda k: -len(links[k])):
        if links[i]:
            removed.add(i)
            for j in links[i]:
                links[j].discard(i)
            links[i].clear()
    return removed
