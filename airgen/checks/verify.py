"""Whether a response does what one check asks: IFEval's verifiers (Zhou et al. 2023, google-research
`instruction_following_eval`, as lm-eval carries them), written again so that they run offline, in linear time on any
text, and with no import of an evaluation harness; and the few kinds airgen adds where IFEval has none.

Each function takes the response and the check's arguments (IFEval's keyword names) and returns a bool. Where
airgen's reading differs from IFEval's on purpose, the function says so; `tests/test_checks.py` holds each against
lm-eval's own class on responses made to pass and to fail.
"""
from __future__ import annotations

import collections
import json
import re
from typing import Any, Callable

from airgen.checks import text as T

LESS, AT_LEAST = "less than", "at least"


def _compare(value: int, relation: str, n: int) -> bool:
    if relation == LESS:
        return value < n
    if relation == AT_LEAST:
        return value >= n
    raise ValueError(f"unknown relation {relation!r}")


def number_words(response: str, num_words: int, relation: str) -> bool:
    return _compare(T.word_count(response), relation, num_words)


def number_words_between(response: str, low: int, high: int | None) -> bool:
    """airgen's: from `low` to `high` (None: no upper bound) words, both included, counted as a reader counts them
    (`text.reader_words`: "don't" is one word, where IFEval counts two)."""
    n = len(T.reader_words(response))
    return low <= n and (high is None or n <= high)


def number_sentences(response: str, num_sentences: int, relation: str) -> bool:
    return _compare(len(T.sentences(response)), relation, num_sentences)


def number_paragraphs(response: str, num_paragraphs: int) -> bool:
    """Exactly N paragraphs separated by a `***` line (IFEval's reading: an empty paragraph inside fails)."""
    parts = re.split(r"\s?\*\*\*\s?", response)
    count = len(parts)
    for i, part in enumerate(parts):
        if not part.strip():
            if i in (0, len(parts) - 1):
                count -= 1
            else:
                return False
    return count == num_paragraphs


def blank_line_paragraphs(response: str, num_paragraphs: int, relation: str) -> bool:
    """airgen's: paragraphs as a reader sees them, separated by blank lines (IFEval counts `***` dividers only);
    `relation` may also be "exactly"."""
    count = len(T.paragraphs(response))
    return count == num_paragraphs if relation == "exactly" else _compare(count, relation, num_paragraphs)


def nth_paragraph_first_word(response: str, num_paragraphs: int, nth_paragraph: int, first_word: str) -> bool:
    """N paragraphs split at blank lines, the nth (counting empty ones, as IFEval indexes them) starting with the
    word."""
    paragraphs = re.split(r"\n\n", response)
    count = sum(1 for p in paragraphs if p.strip())
    if nth_paragraph > count:
        return False
    paragraph = paragraphs[nth_paragraph - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].strip().lstrip("'").lstrip('"')
    first = ""
    for letter in word:
        if letter in ".,?!'\"":
            break
        first += letter.lower()
    return count == num_paragraphs and first == first_word


def keywords_existence(response: str, keywords: list[str]) -> bool:
    """Each keyword found, in any case. (IFEval searches a keyword as a pattern; airgen as the text it is.)"""
    lowered = response.lower()
    return all(k.lower() in lowered for k in keywords)


def keyword_frequency(response: str, keyword: str, frequency: int, relation: str) -> bool:
    return _compare(response.lower().count(keyword.lower()), relation, frequency)


def forbidden_words(response: str, forbidden_words: list[str]) -> bool:  # noqa: A002 - IFEval's argument name
    return not any(re.search(rf"\b{re.escape(w)}\b", response, re.IGNORECASE) for w in forbidden_words)


def letter_frequency(response: str, letter: str, let_frequency: int, let_relation: str) -> bool:
    return _compare(collections.Counter(response.lower())[letter.lower()], let_relation, let_frequency)


def response_language(response: str, language: str) -> bool:
    """The language langdetect finds (seeded); a text it cannot read counts as met, as in IFEval."""
    found = T.language(response)
    return found is None or found == language


def number_placeholders(response: str, num_placeholders: int) -> bool:
    return T.bracketed(response) >= num_placeholders


def postscript(response: str, postscript_marker: str) -> bool:
    lowered = response.lower()
    if postscript_marker == "P.P.S":
        return re.search(r"p\.\s?p\.\s?s", lowered) is not None
    if postscript_marker == "P.S.":
        return re.search(r"p\.\s?s\.", lowered) is not None
    return postscript_marker.lower() in lowered


def number_bullet_lists(response: str, num_bullets: int) -> bool:
    """Exactly N lines that start (after spaces) with `* ` or `-` (a line starting `**` is bold, not a bullet)."""
    count = 0
    for line in response.split("\n"):
        stripped = line.lstrip()
        count += (stripped.startswith("*") and not stripped.startswith("**")) or stripped.startswith("-")
    return count == num_bullets


def constrained_response(response: str) -> bool:
    return any(option in response for option in ("My answer is yes.", "My answer is no.", "My answer is maybe."))


def number_highlighted_sections(response: str, num_highlights: int) -> bool:
    return T.highlights(response) >= num_highlights


def multiple_sections(response: str, section_spliter: str, num_sections: int) -> bool:
    sections = re.split(rf"\s?{re.escape(section_spliter)}\s?\d+\s?", response)
    return len(sections) - 1 >= num_sections


def json_format(response: str) -> bool:
    value = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        value = value.removeprefix(fence)
    value = value.removesuffix("```").strip()
    try:
        json.loads(value)
    except (ValueError, RecursionError):
        return False
    return True


def title(response: str) -> bool:
    return T.has_title(response)


def end_checker(response: str, end_phrase: str) -> bool:
    return response.strip().lower().endswith(end_phrase.strip().lower())


def quotation(response: str) -> bool:
    value = response.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


def english_capital(response: str) -> bool:
    found = T.language(response)
    return response.isupper() and (found is None or found == "en")


def english_lowercase(response: str) -> bool:
    found = T.language(response)
    return response.islower() and (found is None or found == "en")


def capital_word_frequency(response: str, capital_frequency: int, capital_relation: str) -> bool:
    return _compare(sum(1 for w in T.tokens(response) if w.isupper()), capital_relation, capital_frequency)


def no_comma(response: str) -> bool:
    return "," not in response


# airgen's kinds for CRAB's rules (`crab/rules.py: check`), which IFEval lacks, in the reader's measure
# (`text.reader_words`, `lines`, `line_sentences`).

def sentence_words(response: str, max_words: int) -> bool:
    return all(len(T.reader_words(s)) <= max_words for line in T.lines(response) for s in T.line_sentences(line))


def paragraph_sentences(response: str, max_sentences: int) -> bool:
    return all(len(T.line_sentences(line)) <= max_sentences for line in T.lines(response))


def word_chars(response: str, min_chars: int) -> bool:
    return all(len(w) >= min_chars for w in T.reader_words(response))


def no_symbols(response: str, symbols: list[str]) -> bool:
    return not any(s in response for s in symbols)


# Check id -> its verifier: IFEval's ids where one fits, airgen's own (`airgen:`) where IFEval has none.
VERIFIERS: dict[str, Callable[..., bool]] = {
    "length_constraints:number_words": number_words,
    "airgen:number_words_between": number_words_between,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "airgen:number_paragraphs": blank_line_paragraphs,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "keywords:existence": keywords_existence,
    "keywords:frequency": keyword_frequency,
    "keywords:forbidden_words": forbidden_words,
    "keywords:letter_frequency": letter_frequency,
    "language:response_language": response_language,
    "detectable_content:number_placeholders": number_placeholders,
    "detectable_content:postscript": postscript,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:constrained_response": constrained_response,
    "detectable_format:number_highlighted_sections": number_highlighted_sections,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:json_format": json_format,
    "detectable_format:title": title,
    "startend:end_checker": end_checker,
    "startend:quotation": quotation,
    "change_case:english_capital": english_capital,
    "change_case:english_lowercase": english_lowercase,
    "change_case:capital_word_frequency": capital_word_frequency,
    "punctuation:no_comma": no_comma,
    "airgen:sentence_words": sentence_words,
    "airgen:paragraph_sentences": paragraph_sentences,
    "airgen:word_chars": word_chars,
    "airgen:no_symbols": no_symbols,
}


def holds(kind: str, response: str, args: dict[str, Any]) -> bool:
    return VERIFIERS[kind](response, **args)
