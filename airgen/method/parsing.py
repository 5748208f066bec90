"""Lenient reading of model answers: the text helpers every step's parser shares.

Parsers are lenient about presentation (bold markers, headings, quotes, Windows newlines, preambles, trailing notes)
because guidance models of every size add them; they are strict about content. Each one returns its value or raises
`ParseError` with a short reason: why a sample was rejected or a level dropped.
"""
from __future__ import annotations

import re


class ParseError(ValueError):
    """A model output that cannot be turned into the expected value; str(e) is a short human reason."""


def word_count(text: str) -> int:
    return len(text.split())


QUOTES = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
NOTE = re.compile(r"^[\s*_(\[>#]*(note|notes|explanation|rationale|justification)\b[\s*_]*[:\uff1a]", re.I)
PREAMBLE = re.compile(
    r"^(here\s+is|here's|here\s+are|this\s+instruction|the\s+instruction|sure\b|certainly\b|of\s+course\b"
    r"|okay\b|ok\b|i\s+hope\b|hope\s+this\b|let\s+me\s+know\b|th(is|e)\s+(text|task|response)\b)", re.I)
# A note that talks about the rewriting, not about the subject.
ABOUT_EDIT = re.compile(
    r"\b(I|I've|I'm|(?i:my|original|rewrit\w*|revis\w*|improv\w*|enhanc\w*|chang\w*|removed|added|edit\w*))\b")
# What an opening "Here is ...:" line must talk about to count as a preamble rather than the answer's own lead-in.
ABOUT_OUTPUT = re.compile(
    r"\b(response|answer|reply|version|rewrit\w*|revis\w*|improv\w*|enhanc\w*|refin\w*|instruction|merged|combined)\b",
    re.I)


def split_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def unbold(text: str) -> str:
    return re.sub(r"\*\*|__", "", text)


def unquote(text: str) -> str:
    """Strip one pair of surrounding quotes, unless the same quote also occurs inside (then it is not a wrapper)."""
    text = text.strip()
    while len(text) >= 2 and QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1] \
            and text[-1] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def cut_notes(lines: list[str]) -> list[str]:
    """Drop a trailing note: from the last line that opens a note (after some content) to the end, when that note
    is the final paragraph or talks about the writing itself. A note inside the content ("Note: ovens vary") stays."""
    starts = [i for i, line in enumerate(lines) if NOTE.match(line) and any(ln.strip() for ln in lines[:i])]
    if not starts:
        return lines
    tail = "\n".join(lines[starts[-1]:]).strip()
    if "\n\n" not in re.sub(r"\n[ \t]*(?=\n)", "\n", tail) or ABOUT_EDIT.search(tail):
        return lines[:starts[-1]]
    return lines


def strip_markup(line: str) -> str:
    """A line without heading marks, bullets, bold markers and surrounding quotes."""
    line = re.sub(r"^\s*(#{1,6}\s*|>\s*|[-*\u2022]\s+)", "", line)
    return unquote(unbold(line).strip())


def drop_leading_labels(lines: list[str], label: re.Pattern[str]) -> list[str]:
    """Remove an opening 'Here is the ...:' line and a label such as 'Enhanced Response:' from the first content line."""
    lines = list(lines)
    for _ in range(2):  # "Sure, here it is:" and then "**Enhanced Response:**"
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            break
        first = unbold(lines[0]).strip()
        if PREAMBLE.match(first) and first.endswith(":") and ABOUT_OUTPUT.search(first):
            lines.pop(0)
        elif label.match(lines[0]):
            rest = label.sub("", lines[0], count=1).strip()
            lines[0:1] = [rest] if rest else []
        else:
            break
    return lines


def norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("&", "and"))
