"""How the authors' own code reads each answer (WeiLiuAH/AIR-Automatic-Iterative-Refinement), for
`flow.parsers = "authors"`: their rules, written anew, with their exact tests: first or last match as they take it,
case-sensitive substrings, any constraint type of 2..6 words. airgen's own parsers (`air.parsers`) read the same
answers more leniently; the README's table "Where airgen differs from the authors' code" lists where it matters.

Each function takes the answer's text and returns the step's value, or raises ParseError with the reason.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from airgen.method.parsing import ParseError

# init_process/instruct_generate.py: lines naming a preamble are skipped by these substrings.
_PREAMBLES = ("This instruction", "Here is a")
# judge_data_gene/main.py: a constraint holding any of these (case-sensitive substrings) is refused.
_REFUSED = ("Output1", "Output2", "original instruction", "ese constraints", "None")
_TYPE = re.compile(r"(?:\*\*)?\bSelected Type\b(?:\*\*)?:\s*(\*{0,2})(.*?)\*{0,2}(?=\*\*|\n|$)", re.DOTALL)
_SCORE = re.compile(r"(?i)Score: (\d+)/5")


def bold_field(text: str, label: str) -> str | None:
    r"""The value of the first '**...LABEL**:' field, running to the next '**' or the end: what their pattern
    \*\*(.*?LABEL)\*\*:\s*(.*?)(?=(?:\*\*|$)) (DOTALL) finds first, found in linear time (searched, that
    pattern is quadratic on a run of '*')."""
    first = text.find("**")
    named = text.find(f"{label}**:", first + 2) if first >= 0 else -1
    if named < 0:
        return None
    start = named + len(label) + 3
    while start < len(text) and text[start].isspace():
        start += 1
    ends = [len(text)]  # `$`: the end, or just before a final newline
    if text.endswith("\n") and len(text) - 1 >= start:
        ends.append(len(text) - 1)
    bold = text.find("**", start)
    if bold >= 0:
        ends.append(bold)
    return text[start:min(ends)]


def _unquote(line: str) -> str:
    return line[1:-1] if len(line) >= 2 and line[0] == '"' and line[-1] == '"' else line


def instruction(text: str) -> str:
    """The last line of 5 or more characters that names no preamble, else the last line; outer quotes dropped."""
    lines = text.split("\n")
    kept = [line for line in lines if not any(p in line for p in _PREAMBLES) and len(line) >= 5]
    line = (kept[-1] if kept else lines[-1]).strip()
    if not line:
        raise ParseError("no instruction line")
    return _unquote(line)


def score(text: str) -> int:
    """The first 'Score: N/5' (any case)."""
    m = _SCORE.search(text)
    if m is None or not 0 <= int(m.group(1)) <= 5:
        raise ParseError("no 'Score: N/5'")
    return int(m.group(1))


def free_text(text: str) -> str:
    """The refined document or the merged instruction: the text before a '\\n\\nNote:' paragraph, if it has 3
    characters or more."""
    if len(text) < 3:
        raise ParseError("fewer than 3 characters")
    body = text.split("\n\nNote:")[0].strip()
    if not body:
        raise ParseError("empty")
    return body


def constraint(text: str, offered: Sequence[str]) -> tuple[str, str]:
    """(type, constraint): the first 'Selected Type' and the first '**...Constraint**:' field, the constraint running
    to the next '**' or the end. Refused: a type of other than 2..6 words (offered or not), a constraint holding
    'Output1', 'Output2', 'original instruction', 'ese constraints' or 'None' anywhere. (The 3..26 words are the
    step's accept rule, `flow.constraint_words`.)"""
    text = text.split("\n\nNote:")[0]
    kind = m.group(2).strip() if (m := _TYPE.search(text)) else ""
    found = (bold_field(text, "Constraint") or "").strip()
    if not 2 <= len(kind.split()) <= 6:
        raise ParseError(f"type {kind!r} does not have 2..6 words")
    refused = next((s for s in _REFUSED if s in found), None)
    if refused is not None:
        raise ParseError(f"constraint holds {refused!r}")
    if not found:
        raise ParseError("no constraint given")
    return kind, found


def duplicate(text: str) -> bool:
    """The first '**Answer**:' field starting with 'no' or 'yes' (any case) decides; else 'no' as a word after the
    last '**Answer**:' means new; else it counts as a duplicate."""
    text = text.split("\n\nNote:")[0]
    answer = bold_field(text, "Answer")
    if answer is not None:
        answer = answer.strip()
        answer = answer[2:] if answer.startswith("**") else answer
        if answer.lower()[:2] == "no":
            return False
        if answer.lower()[:3] == "yes":
            return True
    tail = text.split("**Answer**:")[-1].strip()
    if len(tail.split("**")) >= 2:
        tail = tail.split("**")[1].replace(",", "")
    return "no" not in [word.lower() for word in tail.split()]


def check(text: str, count: int) -> list[int]:
    """Exactly `count` blocks split at blank lines, each 'criterion<TAB>score' with a score of 0..3."""
    blocks = text.split("\n\n")
    if len(blocks) != count:
        raise ParseError(f"expected {count} criterion lines, found {len(blocks)}")
    scores = []
    for block in blocks:
        parts = block.split("\t")
        if len(parts) != 2:
            raise ParseError(f"not 'criterion<TAB>score': {block.strip()[:60]!r}")
        try:
            value = float(parts[1].strip())
        except ValueError:
            raise ParseError(f"score {parts[1].strip()!r} is no number") from None
        if value not in (0, 1, 2, 3):
            raise ParseError(f"score {parts[1].strip()!r} is not 0..3")
        scores.append(int(value))
    return scores
