"""The AIR steps' parsers: each turns one step's answer into its value, or raises `ParseError` with the reason."""
from __future__ import annotations

import re
from collections.abc import Sequence

from airgen.method.parsing import (
    PREAMBLE, ParseError, cut_notes, drop_leading_labels, norm, split_lines, strip_markup, unbold, unquote,
)

_INSTRUCTION_LABEL = re.compile(
    r"^(the\s+)?((generated|new|final|initial|possible|likely|suggested|single)\s+)?instruction\s*"
    r"(:|\uff1a|-\s|$)\s*", re.I)


def parse_instruction(text: str) -> str:
    """The last non-empty line that is not a preamble, without its 'Instruction:' label, quotes or bold."""
    for line in reversed(cut_notes(split_lines(text))):
        line = strip_markup(line)
        if not line or re.fullmatch(r"[-=*_`~]{3,}", line):
            continue
        if PREAMBLE.match(line):
            # "Here is the instruction: Explain X." keeps what follows the colon.
            head, colon, rest = line.partition(":")
            if not (colon and rest.strip() and len(head) <= 80):
                continue
            line = rest
        line = unquote(_INSTRUCTION_LABEL.sub("", unquote(line), count=1))
        if line and not line.endswith(":"):
            return line
    raise ParseError("no instruction line")


_RESPONSE_LABEL = re.compile(
    r"^[\s#*_\[]*((enhanced|improved|rewritten|revised|refined|edited|final|new|updated)\s+)?"
    r"(response|answer|reply|version)[\s*_\]]*(:|\uff1a|$)[\s*_]*", re.I)


def parse_refined(text: str) -> str:
    """The rewritten document without an opening label or a trailing note."""
    lines = drop_leading_labels(cut_notes(split_lines(text)), _RESPONSE_LABEL)
    while lines and re.fullmatch(r"\s*([-=*_]{3,})?\s*", lines[-1]):  # trailing blank lines and rules
        lines.pop()
    body = unquote("\n".join(lines).strip())
    if not body:
        raise ParseError("empty response")
    return body


_SCORE = re.compile(r"score[\s*_:=]{0,8}(\d{1,2})\s*(/|out\s+of)\s*5\b", re.I)
_BARE_SCORE = re.compile(r"^[\s#*_]*(total\s+)?score[\s*_]*[:=][\s*_]*(\d{1,2})[\s*_.]*$", re.I)


def parse_score(text: str) -> int:
    """N from the last 'Score: N/5' (or a final bare 'Score: N' line)."""
    found = _SCORE.findall(text)
    if found:
        value = int(found[-1][0])
    else:
        bare = [m.group(2) for line in split_lines(text) if (m := _BARE_SCORE.match(line))]
        if not bare:
            raise ParseError("no 'Score: N/5' line")
        value = int(bare[-1])
    if not 0 <= value <= 5:
        raise ParseError(f"score {value} is outside 0..5")
    return value


# Possessive runs (*+): a line of 100,000 '*' is read in linear time (with plain runs, in quadratic).
_FIELD = re.compile(
    r"^[\s#>*_\-\u2022]*+(\d{1,2}[.)]\s*+)?[*_\[]*+\s*+"
    r"(?P<label>((selected|constraint)[\s_]*)?type|constraint|analysis)"
    r"(\s*+#?\s*+\d{1,2})?[\s*_\]]*+(:|\uff1a|-\s|$)[\s*_]*(?P<value>.*)$", re.I)
_NONE = re.compile(r"^(none|n/a|null|no\s+type|no\s+constraint)\b", re.I)
_FORBIDDEN = re.compile(r"\boutput\s*[-_#]?\s*[12]\b|\boriginal\s+instruction|\bthese\s+constraints\b", re.I)


def _fields(text: str) -> list[tuple[str, str]]:
    """(label, value) for each 'Label: value' line; a label alone on its line takes the next line as its value."""
    lines = split_lines(text)
    out: list[tuple[str, str]] = []
    for i, line in enumerate(lines):
        m = _FIELD.match(line)
        if not m:
            continue
        label = m.group("label").lower()
        kind = "analysis" if label == "analysis" else "constraint" if label == "constraint" else "type"
        value = m.group("value").strip()
        if not value:
            following = next((ln for ln in lines[i + 1:] if ln.strip()), "")
            value = "" if _FIELD.match(following) else following.strip()
        out.append((kind, _clean_value(value)))
    return out


def _clean_value(value: str) -> str:
    value = unbold(value).strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1].strip()
    return unquote(value)


def _match_type(value: str, allowed: Sequence[str]) -> str:
    if not value:
        raise ParseError("no type given")
    if _NONE.match(value):
        raise ParseError("judge selected type None (no gap found)")
    wanted = norm(value)
    by_norm = {norm(name): name for name in allowed}
    if wanted in by_norm:
        return by_norm[wanted]
    # "Inclusion (the reference names two examples)": the longest allowed name the value starts with.
    prefixes = [key for key in by_norm if key and wanted.startswith(key)]
    if prefixes:
        return by_norm[max(prefixes, key=len)]
    raise ParseError(f"type {value!r} is not one of the offered types")


def _check_constraint(constraint: str | None) -> str:
    if not constraint:
        raise ParseError("no constraint given")
    if _NONE.fullmatch(constraint.rstrip(".")):
        raise ParseError("constraint is None")
    bad = _FORBIDDEN.search(constraint)
    if bad:
        raise ParseError(f"constraint mentions {bad.group(0)!r}")
    return constraint


def _pairs(text: str) -> list[tuple[str | None, str | None]]:
    """(type, constraint) in answer order; a constraint belongs to the type line before it."""
    pairs: list[list[str | None]] = []
    for kind, value in _fields(text):
        if kind == "type":
            pairs.append([value, None])
        elif kind == "constraint":
            if pairs and pairs[-1][1] is None:
                pairs[-1][1] = value
            else:
                pairs.append([None, value])
    return [(t, c) for t, c in pairs]


def _validate(pair: tuple[str | None, str | None], allowed: Sequence[str]) -> tuple[str, str]:
    type_value, constraint = pair
    if type_value is None:
        raise ParseError("no type given")
    name = _match_type(type_value, allowed)
    return name, _check_constraint(constraint)


def parse_constraint(text: str, allowed: Sequence[str]) -> tuple[str, str]:
    """(type name as spelled in `allowed`, constraint) from a judge answer; the first pair counts."""
    pairs = _pairs(text)
    if not pairs:
        raise ParseError("no type given")
    return _validate(pairs[0], allowed)


def parse_oneshot(text: str, allowed: Sequence[str], count: int) -> list[tuple[str, str]]:
    """Up to `count` valid pairs with distinct types; invalid or repeated pairs are skipped."""
    kept: list[tuple[str, str]] = []
    reasons: list[str] = []
    for pair in _pairs(text):
        if len(kept) == count:
            break
        try:
            name, constraint = _validate(pair, allowed)
        except ParseError as e:
            reasons.append(str(e))
            continue
        if any(name == k for k, _ in kept):
            reasons.append(f"type {name!r} repeated")
            continue
        kept.append((name, constraint))
    if not kept:
        raise ParseError("no valid constraint: " + ("; ".join(dict.fromkeys(reasons)) or "no type given"))
    return kept


_VERDICT = re.compile(r"answer[\s*_]*[:=\uff1a]?[\s*_\"']*(yes|no)\b", re.I)


def parse_yes_no(text: str) -> bool:
    """True for 'Answer: Yes', False for 'Answer: No'; the last verdict counts."""
    found = _VERDICT.findall(text)
    if found:
        return found[-1].lower() == "yes"
    bare = re.match(r"^[\s*_\"'`]*(yes|no)\b", text, re.I)
    if bare:
        return bare.group(1).lower() == "yes"
    raise ParseError("no 'Answer: Yes/No' verdict")


_NUMBERING = re.compile(r"^\s*([-*\u2022]|\d{1,2}[.)]|\(\d{1,2}\))\s+")


def _skip_back(line: str, i: int, chars: str = "", space: bool = True) -> int:
    """The position before the run of `chars` (and whitespace, with `space`) that ends at `i`."""
    while i and ((space and line[i - 1].isspace()) or line[i - 1] in chars):
        i -= 1
    return i


def _trailing_score(line: str) -> tuple[int, int, bool, bool] | None:
    r"""(where the score's tail starts, the score, whether a 'score' label precedes it, whether '/ 3' follows it) for
    the score a line ends with: the leftmost match of
        [(\[]? [\s*_]* (score \s* [:=]? \s* [*_]* \s*)? \d{1,2} \s* (/\s*3)? [\s*_]* [)\]]? \.? \s* $
    read from the line's end in linear time (that pattern, searched, backtracks cubically on a run of '*')."""
    i = _skip_back(line, len(line))
    i -= i > 0 and line[i - 1] == "."
    i -= i > 0 and line[i - 1] in ")]"
    end = _skip_back(line, i, "*_")
    out_of = False
    if end and line[end - 1] == "3":  # "2/3": the score before "/ 3"; else the 3 is the score itself
        k = _skip_back(line, end - 1)
        if k and line[k - 1] == "/":
            k = _skip_back(line, k - 1)
            if k and line[k - 1].isdecimal():
                out_of, end = True, k
    first = end
    while first and line[first - 1].isdecimal():
        first -= 1
    if first == end:
        return None
    digits = max(first, end - 2)  # a longer number: its last two digits (what \d{1,2} can end the line with)
    j = _skip_back(line, _skip_back(line, _skip_back(line, digits), "*_", space=False))
    if j and line[j - 1] in ":=":
        j = _skip_back(line, j - 1)
    labelled = j >= 5 and line[j - 5:j].lower() == "score"
    start = _skip_back(line, j - 5 if labelled else digits, "*_")
    start -= start > 0 and line[start - 1] in "(["
    return start, int(line[digits:end]), labelled, out_of


def _line_score(line: str) -> int | None:
    """The score a check line ends with, or None for a line that carries no score (prose, a bare criterion)."""
    line = _NUMBERING.sub("", line.rstrip(), count=1)
    if line.lstrip().startswith("|"):  # a Markdown table row: "| criterion | 2 |"
        line = line.strip().strip("|")
    if "\t" in line:
        found = _trailing_score(line.rpartition("\t")[2].strip())
        if found is not None and found[0] == 0:  # the whole cell after the tab is the score
            return _in_range(found[1], line)
    found = _trailing_score(line)
    if found is None:
        return None
    # The tail may start on the whitespace before the score; the separator test needs that whitespace.
    start = len(line) - len(line[found[0]:].lstrip())
    score, prefix, tail = found[1], line[:start], line[start:]
    marked = found[2] or found[3]
    separated = (not prefix.strip() or prefix.rstrip()[-1:] in (":", "=", "|", "-", "\u2013", "\u2014")
                 or len(prefix) - len(prefix.rstrip()) >= 2
                 or (prefix[-1:].isspace() and (marked or tail[:1] in "*_([")))
    if not separated:
        return None  # e.g. a criterion that merely ends in a number
    if marked or not prefix.strip():
        return _in_range(score, line)
    return score if 0 <= score <= 3 else None


def _in_range(score: int, line: str) -> int:
    if not 0 <= score <= 3:
        raise ParseError(f"score {score} is outside 0..3 in {line.strip()[:60]!r}")
    return score


def parse_check(text: str, count: int) -> list[int]:
    """Exactly `count` scores 0..3, one per criterion line, in order."""
    scores = [s for line in split_lines(text) if line.strip() and (s := _line_score(line)) is not None]
    if len(scores) != count:
        raise ParseError(f"expected {count} criterion scores, found {len(scores)}")
    return scores


_MERGED_LABEL = re.compile(
    r"^[\s#*_\[]*((merged|combined|final|new|rewritten)\s+)?instruction[\s*_\]]*(:|\uff1a|$)[\s*_]*", re.I)
_BRACKET_LABEL = re.compile(r"^\s*\[[^\]]{1,40}\]\s*$")


def parse_merged(text: str) -> str:
    """The merged instruction without its label, quotes or bold, cut before any further '[Section]' the model adds."""
    lines = drop_leading_labels(cut_notes(split_lines(text)), _MERGED_LABEL)
    for i, line in enumerate(lines):
        if _BRACKET_LABEL.match(line) and any(ln.strip() for ln in lines[:i]):
            lines = lines[:i]
            break
    body = unquote(unbold("\n".join(lines)).strip())
    if not body:
        raise ParseError("empty merged instruction")
    return body
