"""The paper's rule filters for `airgen select` (section 3.1): length, symbol-to-text ratio, redundancy (repeated
lines, runs of one character), then exact duplicates and reused ids."""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from airgen.config import FilterConfig
from airgen.method.corpus import Document
from airgen.method.rows import Rejection, content_id

# The rules of `filter_documents`; every other Rejection is one of reading (bad_json, not_utf8, ...).
FILTER_RULES = frozenset({"words", "symbol_ratio", "duplicate_lines", "char_run", "duplicate", "duplicate_id"})

_SYMBOL = re.compile(r"[^\w\s]")


def check_document(doc: Document, config: FilterConfig) -> Rejection | None:
    """The first rule `doc` fails, with the measured value; None if it passes. Dedup is `deduplicate`'s job."""
    words = len(doc.text.split())
    if not config.min_words <= words <= config.max_words:
        return _reject(doc, "words", words)
    if config.symbol_filter:
        ratio = symbol_ratio(doc.text)
        if ratio > config.max_symbol_ratio:
            return _reject(doc, "symbol_ratio", round(ratio, 4))
    if config.redundancy_filter:
        share = duplicate_line_share(doc.text)
        if share > config.max_duplicate_line_share:
            return _reject(doc, "duplicate_lines", round(share, 4))
        run = longest_char_run(doc.text)
        if run > config.max_char_run:
            return _reject(doc, "char_run", run)
    return None


def filter_documents(items: Iterable[Document | Rejection], config: FilterConfig) -> Iterator[Document | Rejection]:
    """Applies the rule filters, then drops exact duplicates (same content; the value names the kept copy's id)
    and reused ids. Its only growing state is one content hash and one id per kept document.
    """
    first_with: dict[str, str] = {}  # content hash -> id of the kept document with that content
    seen_ids: set[str] = set()
    for item in items:
        if isinstance(item, Rejection):
            yield item
            continue
        rejection = check_document(item, config)
        key = content_id(item.text) if config.dedup and rejection is None else ""
        if key in first_with:
            rejection = _reject(item, "duplicate", first_with[key])
        # Two different texts under one id would make the manifest ambiguous, whatever the dedup setting.
        if rejection is None and item.id in seen_ids:
            rejection = _reject(item, "duplicate_id", item.id)
        if rejection is not None:
            yield rejection
            continue
        if key:
            first_with[key] = item.id
        seen_ids.add(item.id)
        yield item


def symbol_ratio(text: str) -> float:
    """Share of characters that are neither word characters nor whitespace."""
    return len(_SYMBOL.findall(text)) / len(text) if text else 0.0


def duplicate_line_share(text: str) -> float:
    """Share of non-empty lines that repeat an earlier one.

    Lines, not paragraphs: a repeated paragraph repeats all its lines, so it counts here as well.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


def longest_char_run(text: str) -> int:
    """Longest run of one repeated non-space character (whitespace runs are layout, such as indentation)."""
    longest = run = 0
    previous = ""
    for char in text:
        run = run + 1 if char == previous else 1
        previous = char
        if not char.isspace() and run > longest:
            longest = run
    return longest


def _reject(doc: Document, rule: str, value: object) -> Rejection:
    return Rejection(id=doc.id, source=doc.source, rule=rule, value=value)
