"""The prompt set: renders the templates in `prompts/` and parses model outputs into typed results.

Every parser returns its value or raises `ParseError` with a short reason, which the flow records as the reason a
sample was dropped. Parsers are lenient about presentation (bold markers, headings, quotes, Windows newlines,
preambles, trailing notes) because guidance models of every size add them; they are strict about content.

The `*_REGEX` values constrain fixed-format answers at decode time. They stay inside the regex subset that vLLM's
structured-output backends accept: no lookarounds, no backreferences, no lazy quantifiers, every repetition bounded.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

# Template name -> the fields it must use, no more and no fewer.
TEMPLATE_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType({
    "back_translate": frozenset({"document"}),
    "refine_document": frozenset({"instruction", "document"}),
    "score_instruction": frozenset({"instruction"}),
    "propose_constraint": frozenset({"instruction", "reference", "answer", "types"}),
    "propose_constraint_blind": frozenset({"instruction", "types"}),
    "propose_constraints_oneshot": frozenset({"instruction", "reference", "answer", "types", "count"}),
    "dedup_constraint": frozenset({"constraint", "existing"}),
    "check_constraints": frozenset({"instruction", "answer", "constraints"}),
    "merge_constraints": frozenset({"instruction", "constraints", "examples"}),
})
SYSTEM_FILE = "system.txt"
TYPES_FILE = "constraint_types.toml"
EXAMPLES_FILE = "merge_examples.toml"
PROMPT_FILES: tuple[str, ...] = tuple(sorted(
    [f"{name}.txt" for name in TEMPLATE_FIELDS] + [SYSTEM_FILE, TYPES_FILE, EXAMPLES_FILE]
))


class ParseError(ValueError):
    """A model output that cannot be turned into the expected value; str(e) is a short human reason."""


class PromptFileError(ValueError):
    """A prompt folder with a missing or malformed file; the message names the file and the problem."""


@dataclass(frozen=True)
class ConstraintType:
    name: str
    description: str
    example: str


@dataclass(frozen=True)
class MergeExample:
    instruction: str
    constraints: tuple[str, ...]
    merged: str


@dataclass(frozen=True)
class PromptSet:
    system: str
    templates: Mapping[str, string.Template] = field(repr=False)
    types: tuple[ConstraintType, ...]
    merge_examples: tuple[MergeExample, ...]
    # Recorded in every output record, so a dataset names the exact prompts that made it.
    fingerprint: str

    @classmethod
    def load(cls, folder: Path | None = None) -> "PromptSet":
        """Read and check every prompt file; `None` reads the copy installed with airgen (`airgen_prompts`)."""
        root = Path(folder) if folder is not None else _bundled_folder()
        raw: dict[str, bytes] = {}
        for name in PROMPT_FILES:
            try:
                raw[name] = (root / name).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise PromptFileError(f"prompt file {name} is missing from {root}") from None
        text = {name: _decode(name, data) for name, data in raw.items()}
        digest = hashlib.sha256()
        for name in PROMPT_FILES:  # length-prefixed, so moving bytes between files changes the hash
            digest.update(f"{name}\0{len(raw[name])}\0".encode())
            digest.update(raw[name])
        system = text[SYSTEM_FILE].strip()
        if not system or _placeholders(SYSTEM_FILE, system):
            raise PromptFileError(f"{SYSTEM_FILE} must be non-empty plain text without ${{...}} fields")
        templates = {name: _template(f"{name}.txt", text[f"{name}.txt"], fields)
                     for name, fields in TEMPLATE_FIELDS.items()}
        return cls(
            system=system,
            templates=MappingProxyType(templates),
            types=_load_types(text[TYPES_FILE]),
            merge_examples=_load_examples(text[EXAMPLES_FILE]),
            fingerprint=digest.hexdigest()[:16],
        )

    def messages(self, name: str, **fields: str | int) -> tuple[dict, ...]:
        """The chat messages of one call: the system message and the rendered template `name`."""
        template = self.templates.get(name)
        if template is None:
            raise KeyError(f"unknown prompt {name!r}; known: {', '.join(sorted(self.templates))}")
        expected = TEMPLATE_FIELDS[name]
        unknown = sorted(set(fields) - expected)
        if unknown:
            raise ValueError(f"prompt {name!r} has no field {unknown[0]!r}; its fields: {', '.join(sorted(expected))}")
        missing = sorted(expected - set(fields))
        if missing:
            raise KeyError(f"prompt {name!r} needs field {missing[0]!r}")
        for key, value in fields.items():
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise TypeError(f"prompt {name!r} field {key!r} must be text, not {type(value).__name__}")
        values = {key: str(value).strip() for key, value in fields.items()}
        return self.chat(template.substitute(values))

    def chat(self, text: str) -> tuple[dict, ...]:
        return ({"role": "system", "content": self.system}, {"role": "user", "content": text})


def _bundled_folder() -> Path:
    try:
        return Path(str(importlib.resources.files("airgen_prompts")))
    except ModuleNotFoundError:
        raise PromptFileError(
            "the bundled prompts (package airgen_prompts) are not installed; install airgen or pass a prompt folder"
        ) from None


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PromptFileError(f"prompt file {name} is not UTF-8: {e}") from None


def _placeholders(name: str, text: str) -> set[str]:
    template = string.Template(text)
    if not template.is_valid():
        raise PromptFileError(f"{name} has a '$' that is not a ${{field}} placeholder (write $$ for a literal $)")
    return set(template.get_identifiers())


def _template(name: str, text: str, expected: frozenset[str]) -> string.Template:
    found = _placeholders(name, text)
    if found != expected:
        extra, absent = sorted(found - expected), sorted(expected - found)
        raise PromptFileError(f"{name} must use exactly the fields {sorted(expected)}; "
                              f"unknown: {extra or 'none'}, missing: {absent or 'none'}")
    return string.Template(text.strip() + "\n")


def _toml_list(name: str, text: str, key: str) -> list[dict]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PromptFileError(f"{name} is not valid TOML: {e}") from None
    entries = data.get(key)
    if not isinstance(entries, list) or not entries:
        raise PromptFileError(f"{name} needs at least one [[{key}]] table")
    return entries


def _text_field(name: str, index: int, entry: dict, key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PromptFileError(f"{name} entry {index}: '{key}' must be non-empty text")
    return value.strip()


def _check_keys(name: str, index: int, entry: dict, keys: set[str]) -> None:
    unknown = sorted(set(entry) - keys)
    if unknown:
        raise PromptFileError(f"{name} entry {index}: unknown key {unknown[0]!r}; expected {sorted(keys)}")


def _load_types(text: str) -> tuple[ConstraintType, ...]:
    types = []
    for i, entry in enumerate(_toml_list(TYPES_FILE, text, "type"), 1):
        _check_keys(TYPES_FILE, i, entry, {"name", "description", "example"})
        types.append(ConstraintType(*(_text_field(TYPES_FILE, i, entry, k) for k in ("name", "description", "example"))))
    names = [_norm(t.name) for t in types]
    if len(set(names)) != len(names):
        raise PromptFileError(f"{TYPES_FILE}: type names must be distinct (ignoring case and punctuation)")
    if "none" in names:
        raise PromptFileError(f"{TYPES_FILE}: 'None' is reserved for 'no constraint found' and cannot be a type")
    return tuple(types)


def _load_examples(text: str) -> tuple[MergeExample, ...]:
    examples = []
    for i, entry in enumerate(_toml_list(EXAMPLES_FILE, text, "example"), 1):
        _check_keys(EXAMPLES_FILE, i, entry, {"instruction", "constraints", "merged"})
        constraints = entry.get("constraints")
        if (not isinstance(constraints, list) or not 1 <= len(constraints) <= 5
                or not all(isinstance(c, str) and c.strip() for c in constraints)):
            raise PromptFileError(f"{EXAMPLES_FILE} entry {i}: 'constraints' must be a list of 1 to 5 non-empty texts")
        examples.append(MergeExample(
            instruction=_text_field(EXAMPLES_FILE, i, entry, "instruction"),
            constraints=tuple(c.strip() for c in constraints),
            merged=_text_field(EXAMPLES_FILE, i, entry, "merged"),
        ))
    return tuple(examples)


# ---------------------------------------------------------------------------------------------------------------
# Rendering helpers: the pieces the flow puts into template fields.

def with_constraints(instruction: str, constraints: Sequence[str]) -> str:
    """The instruction as the student sees it: each constraint appended as its own paragraph."""
    return "\n\n".join([instruction.strip(), *(c.strip() for c in constraints)])


def format_types(types: Sequence[ConstraintType]) -> str:
    """The type list the judge picks from. Unnumbered, so a judge echoes a bare name rather than '3. Name'."""
    return "\n".join(f"- {t.name}: {t.description}\n  Example: {t.example}" for t in types)


def format_numbered(items: Sequence[str]) -> str:
    return "\n".join(f"{i}. {item.strip()}" for i, item in enumerate(items, 1))


def format_examples(examples: Sequence[MergeExample]) -> str:
    """The few-shot block of the merge prompt, laid out like the task that follows it; empty for no examples."""
    if not examples:
        return ""
    blocks = [
        f"Example {i}\n[Instruction]\n{e.instruction}\n\n[Constraints]\n{format_numbered(e.constraints)}\n\n"
        f"[Merged Instruction]\n{e.merged}\n"
        for i, e in enumerate(examples, 1)
    ]
    return "Examples:\n\n" + "\n".join(blocks)


def word_count(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------------------------------------------------------
# Decode-time formats. Groups are plain parentheses: every backend accepts them.

# Unbounded repeats on purpose: xgrammar compiles a bounded one like [^\n]{1,800} into a state per count, which took
# over vLLM's 5 s compile limit; max_tokens bounds the length anyway.
_LINE = "[^\\n]+"
# For small models that never end a line on their own: the same formats with free-text lines capped.
SHORT_LINE = "[^\\n]{1,150}"


def shorten(regex: str) -> str:
    """`regex` with its free-text lines capped at SHORT_LINE."""
    return regex.replace(_LINE, SHORT_LINE)
# One to four plain sentences on one line: the sentence end lets decoding stop (small models otherwise ramble).
_SENTENCE = "[A-Z][^\\n.?!]{2,150}[.?!]"
SENTENCES_REGEX = f"{_SENTENCE}( {_SENTENCE}){{0,2}}"
SCORE_REGEX = f"{_LINE}\\n{{1,2}}Score: [1-5]/5"
DUPLICATE_CHOICES: tuple[str, str] = ("Answer: Yes", "Answer: No")
_ANALYSIS_REGEX = f"\\*\\*Analysis\\*\\*: {_LINE}"
_CONSTRAINT_REGEX = f"\\*\\*Constraint\\*\\*: {_LINE}"
_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()/")


def _literal(text: str) -> str:
    """`text` as a regex literal. Unlike re.escape it leaves spaces and '-' alone, which some backends reject escaped."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


def _type_choice(type_names: Sequence[str], none: bool = True) -> str:
    """The alternation in sorted order: the prompt's list is shuffled per sample, but the engine compiles and caches
    one grammar per distinct regex, so the same set of types must give the same string."""
    if not type_names:
        raise ValueError("at least one constraint type name is needed")
    return "(" + "|".join(_literal(n) for n in [*sorted(type_names), *(["None"] if none else [])]) + ")"


def propose_regex(type_names: Sequence[str], none: bool = True) -> str:
    """The three-line judge answer, with the type restricted to `type_names` (or None, unless `none` is False)."""
    return (f"{_ANALYSIS_REGEX}\\n\\*\\*Selected Type\\*\\*: {_type_choice(type_names, none)}"
            f"\\n{_CONSTRAINT_REGEX}")


def propose_many_regex(type_names: Sequence[str], count: int) -> str:
    """The one-shot answer: the analysis line, then `count` type/constraint pairs (distinctness is the parser's job)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    pair = f"\\n\\*\\*Selected Type\\*\\*: {_type_choice(type_names)}\\n{_CONSTRAINT_REGEX}"
    return _ANALYSIS_REGEX + pair * count


def check_regex(count: int) -> str:
    """`count` lines of criterion text, a TAB and a 0..3 score, separated by blank lines."""
    if count < 1:
        raise ValueError("count must be >= 1")
    return "\\n\\n".join(["[^\\t\\n]+\\t[0-3]"] * count)


# ---------------------------------------------------------------------------------------------------------------
# Parsers.

_QUOTES = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
_NOTE = re.compile(r"^[\s*_(\[>#]*(note|notes|explanation|rationale|justification)\b[\s*_]*[:\uff1a]", re.I)
_PREAMBLE = re.compile(
    r"^(here\s+is|here's|here\s+are|this\s+instruction|the\s+instruction|sure\b|certainly\b|of\s+course\b"
    r"|okay\b|ok\b|i\s+hope\b|hope\s+this\b|let\s+me\s+know\b|th(is|e)\s+(text|task|response)\b)", re.I)
# A note that talks about the rewriting, not about the subject.
_ABOUT_EDIT = re.compile(
    r"\b(I|I've|I'm|(?i:my|original|rewrit\w*|revis\w*|improv\w*|enhanc\w*|chang\w*|removed|added|edit\w*))\b")
# What an opening "Here is ...:" line must talk about to count as a preamble rather than the answer's own lead-in.
_ABOUT_OUTPUT = re.compile(
    r"\b(response|answer|reply|version|rewrit\w*|revis\w*|improv\w*|enhanc\w*|refin\w*|instruction|merged|combined)\b",
    re.I)


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _unbold(text: str) -> str:
    return re.sub(r"\*\*|__", "", text)


def _unquote(text: str) -> str:
    """Strip one pair of surrounding quotes, unless the same quote also occurs inside (then it is not a wrapper)."""
    text = text.strip()
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and text[0] not in text[1:-1] \
            and text[-1] not in text[1:-1]:
        text = text[1:-1].strip()
    return text


def _cut_notes(lines: list[str]) -> list[str]:
    """Drop a trailing note: from the last line that opens a note (after some content) to the end, when that note
    is the final paragraph or talks about the writing itself. A note inside the content ("Note: ovens vary") stays."""
    starts = [i for i, line in enumerate(lines) if _NOTE.match(line) and any(ln.strip() for ln in lines[:i])]
    if not starts:
        return lines
    tail = "\n".join(lines[starts[-1]:]).strip()
    if "\n\n" not in re.sub(r"\n[ \t]*(?=\n)", "\n", tail) or _ABOUT_EDIT.search(tail):
        return lines[:starts[-1]]
    return lines


def _strip_markup(line: str) -> str:
    """A line without heading marks, bullets, bold markers and surrounding quotes."""
    line = re.sub(r"^\s*(#{1,6}\s*|>\s*|[-*\u2022]\s+)", "", line)
    return _unquote(_unbold(line).strip())


_INSTRUCTION_LABEL = re.compile(
    r"^(the\s+)?((generated|new|final|initial|possible|likely|suggested|single)\s+)?instruction\s*"
    r"(:|\uff1a|-\s|$)\s*", re.I)


def parse_instruction(text: str) -> str:
    """The last non-empty line that is not a preamble, without its 'Instruction:' label, quotes or bold."""
    for line in reversed(_cut_notes(_lines(text))):
        line = _strip_markup(line)
        if not line or re.fullmatch(r"[-=*_`~]{3,}", line):
            continue
        if _PREAMBLE.match(line):
            # "Here is the instruction: Explain X." keeps what follows the colon.
            head, colon, rest = line.partition(":")
            if not (colon and rest.strip() and len(head) <= 80):
                continue
            line = rest
        line = _unquote(_INSTRUCTION_LABEL.sub("", _unquote(line), count=1))
        if line and not line.endswith(":"):
            return line
    raise ParseError("no instruction line")


_RESPONSE_LABEL = re.compile(
    r"^[\s#*_\[]*((enhanced|improved|rewritten|revised|refined|edited|final|new|updated)\s+)?"
    r"(response|answer|reply|version)[\s*_\]]*(:|\uff1a|$)[\s*_]*", re.I)


def _drop_leading_labels(lines: list[str], label: re.Pattern[str]) -> list[str]:
    """Remove an opening 'Here is the ...:' line and a label such as 'Enhanced Response:' from the first content line."""
    lines = list(lines)
    for _ in range(2):  # "Sure, here it is:" and then "**Enhanced Response:**"
        while lines and not lines[0].strip():
            lines.pop(0)
        if not lines:
            break
        first = _unbold(lines[0]).strip()
        if _PREAMBLE.match(first) and first.endswith(":") and _ABOUT_OUTPUT.search(first):
            lines.pop(0)
        elif label.match(lines[0]):
            rest = label.sub("", lines[0], count=1).strip()
            lines[0:1] = [rest] if rest else []
        else:
            break
    return lines


def parse_refined(text: str) -> str:
    """The rewritten document without an opening label or a trailing note."""
    lines = _drop_leading_labels(_cut_notes(_lines(text)), _RESPONSE_LABEL)
    while lines and re.fullmatch(r"\s*([-=*_]{3,})?\s*", lines[-1]):  # trailing blank lines and rules
        lines.pop()
    body = _unquote("\n".join(lines).strip())
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
        bare = [m.group(2) for line in _lines(text) if (m := _BARE_SCORE.match(line))]
        if not bare:
            raise ParseError("no 'Score: N/5' line")
        value = int(bare[-1])
    if not 0 <= value <= 5:
        raise ParseError(f"score {value} is outside 0..5")
    return value


_FIELD = re.compile(
    r"^[\s#>*_\-\u2022]*(\d{1,2}[.)]\s*)?[*_\[]*\s*"
    r"(?P<label>((selected|constraint)[\s_]*)?type|constraint|analysis)"
    r"(\s*#?\s*\d{1,2})?[\s*_\]]*(:|\uff1a|-\s|$)[\s*_]*(?P<value>.*)$", re.I)
_NONE = re.compile(r"^(none|n/a|null|no\s+type|no\s+constraint)\b", re.I)
_FORBIDDEN = re.compile(r"\boutput\s*[-_#]?\s*[12]\b|\boriginal\s+instruction|\bthese\s+constraints\b", re.I)


def _fields(text: str) -> list[tuple[str, str]]:
    """(label, value) for each 'Label: value' line; a label alone on its line takes the next line as its value."""
    lines = _lines(text)
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
    value = _unbold(value).strip()
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1].strip()
    return _unquote(value)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("&", "and"))


def _match_type(value: str, allowed: Sequence[str]) -> str:
    if not value:
        raise ParseError("no type given")
    if _NONE.match(value):
        raise ParseError("judge selected type None (no gap found)")
    wanted = _norm(value)
    by_norm = {_norm(name): name for name in allowed}
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


def parse_constraints(text: str, allowed: Sequence[str], count: int) -> list[tuple[str, str]]:
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


def parse_duplicate(text: str) -> bool:
    """True for 'Answer: Yes' (a duplicate), False for 'Answer: No'; the last verdict counts."""
    found = _VERDICT.findall(text)
    if found:
        return found[-1].lower() == "yes"
    bare = re.match(r"^[\s*_\"'`]*(yes|no)\b", text, re.I)
    if bare:
        return bare.group(1).lower() == "yes"
    raise ParseError("no 'Answer: Yes/No' verdict")


_NUMBERING = re.compile(r"^\s*([-*\u2022]|\d{1,2}[.)]|\(\d{1,2}\))\s+")
_TRAILING_SCORE = re.compile(
    r"(?P<tail>[(\[]?[\s*_]*(?P<label>score\s*[:=]?\s*)?[*_]*\s*(?P<score>\d{1,2})\s*(?P<outof>/\s*3)?[\s*_]*[)\]]?\.?)"
    r"\s*$", re.I)


def _line_score(line: str) -> int | None:
    """The score a check line ends with, or None for a line that carries no score (prose, a bare criterion)."""
    line = _NUMBERING.sub("", line.rstrip(), count=1)
    if line.lstrip().startswith("|"):  # a Markdown table row: "| criterion | 2 |"
        line = line.strip().strip("|")
    if "\t" in line:
        head, _, tail = line.rpartition("\t")
        m = _TRAILING_SCORE.fullmatch(tail.strip())
        if m:
            return _in_range(int(m.group("score")), line)
    m = _TRAILING_SCORE.search(line)
    if not m:
        return None
    # The pattern may start on the whitespace before the score; the separator test needs that whitespace.
    start = m.start() + len(m.group("tail")) - len(m.group("tail").lstrip())
    score, prefix, tail = int(m.group("score")), line[:start], line[start:]
    marked = bool(m.group("label") or m.group("outof"))
    separated = (not prefix.strip() or prefix.rstrip()[-1:] in (":", "=", "|", "-", "\u2013", "\u2014")
                 or re.search(r"\s{2,}$", prefix) is not None
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
    scores = [s for line in _lines(text) if line.strip() and (s := _line_score(line)) is not None]
    if len(scores) != count:
        raise ParseError(f"expected {count} criterion scores, found {len(scores)}")
    return scores


_MERGED_LABEL = re.compile(
    r"^[\s#*_\[]*((merged|combined|final|new|rewritten)\s+)?instruction[\s*_\]]*(:|\uff1a|$)[\s*_]*", re.I)
_BRACKET_LABEL = re.compile(r"^\s*\[[^\]]{1,40}\]\s*$")


def parse_merged(text: str) -> str:
    """The merged instruction without its label, quotes or bold, cut before any further '[Section]' the model adds."""
    lines = _drop_leading_labels(_cut_notes(_lines(text)), _MERGED_LABEL)
    for i, line in enumerate(lines):
        if _BRACKET_LABEL.match(line) and any(ln.strip() for ln in lines[:i]):
            lines = lines[:i]
            break
    body = _unquote(_unbold("\n".join(lines)).strip())
    if not body:
        raise ParseError("empty merged instruction")
    return body
