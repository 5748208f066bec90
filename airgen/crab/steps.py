"""CRAB's model steps, one unit each: refine the instruction, propose the global and the local constraints a
response already meets (JSON keyed by type, "NULL" where a type does not apply), and check each proposed
constraint against the response. Every step is the guidance model's.

Each template puts the response first, so a pair's calls share one prompt prefix (the engine's prefix cache).
"""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airgen.method.parsing import ParseError, word_count
from airgen.method.step import SHORT_LINE_CHARS, Format, Reject, Step

REFINE = "refine_instruction"
GLOBAL = "propose_global"
LOCAL = "propose_local"
CHECK = "check_constraint"
STAGES = (REFINE, GLOBAL, LOCAL, CHECK)

# The constraint types, as the authors group them; the templates describe each one under these keys.
GLOBAL_TYPES = ("writing_style", "semantic_elements", "morphological", "multilingual", "literary_devices",
                "grammatical_structure")
LOCAL_TYPES = ("hierarchical_instructions", "output_format", "paragraphs", "specific_sentence", "key_formatting",
               "item_listing")
NOT_APPLICABLE = "NULL"
# Authors' filter: a local constraint naming one of these marks is kept only if the response uses it.
MARKS = ("******", "**", "*", "•", "1.", "-")
MARKED_TYPES = frozenset({"key_formatting", "item_listing", "paragraphs"})

# A JSON string value: no quote, backslash or newline inside, so the answer parses whatever the model writes.
_VALUE = r'"[^"\\\n]+"'
_SHORT_VALUE = r'"[^"\\\n]{1,%d}"' % SHORT_LINE_CHARS
_NOTE = r'"[^"\\\n]*"'
_SHORT_NOTE = r'"[^"\\\n]{0,%d}"' % SHORT_LINE_CHARS


def json_regex(keys: tuple[str, ...], value: str) -> str:
    """One JSON object with exactly `keys` in order, one per line, each "NULL" or a one-line text."""
    body = ",\\n".join(f'"{k}": ("{NOT_APPLICABLE}"|{value})' for k in keys)
    return "\\{\\n" + body + "\\n\\}"


def json_schema(keys: tuple[str, ...]) -> str:
    """The same object as `json_regex` as a JSON schema: every key, each a string ("NULL" where it does not
    apply)."""
    return json.dumps({"type": "object", "properties": {k: {"type": "string"} for k in keys},
                       "required": list(keys), "additionalProperties": False})


# The check's answer as a JSON schema (`judgement_regex` as a regex).
JUDGEMENT_SCHEMA = json.dumps({
    "type": "object",
    "properties": {"satisfaction": {"type": "string", "enum": ["YES", "NO"]}, "explanation": {"type": "string"},
                   "modified_constraint": {"type": "string"},
                   "constraint_validity": {"type": "string", "enum": ["YES", "NO"]}},
    "required": ["satisfaction", "explanation", "modified_constraint", "constraint_validity"],
    "additionalProperties": False})


def judgement_regex(short: bool) -> str:
    note = _SHORT_NOTE if short else _NOTE
    return ('\\{\\n"satisfaction": "(YES|NO)",\\n"explanation": ' + note + ',\\n"modified_constraint": ' + note
            + ',\\n"constraint_validity": "(YES|NO)"\\n\\}')


# -- parsers --------------------------------------------------------------------------------------------------------

def _object(text: str) -> dict[str, Any]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise ParseError("no JSON object")
    try:
        value = json.loads(text[start:end + 1])
    except json.JSONDecodeError as e:
        raise ParseError(f"not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise ParseError("not a JSON object")
    return value


def type_key(name: str) -> str:
    return re.sub(r"[^a-z]+", "_", name.lower()).strip("_").replace("multi_lingual", "multilingual")


def parse_proposals(text: str, types: tuple[str, ...]) -> dict[str, str]:
    """type -> constraint for the types that apply; keys outside `types`, "NULL" and empty values are left out."""
    found = {}
    for name, value in _object(text).items():
        kind = type_key(str(name))
        if kind not in types or not isinstance(value, str):
            continue
        value = " ".join(value.split())
        if value and value.upper() not in (NOT_APPLICABLE, "NONE", "N/A"):
            found[kind] = value
    return found


@dataclass(frozen=True, slots=True)
class Verdict:
    satisfied: bool
    valid: bool
    modified: str  # the checker's rewrite of an unmet constraint ("" when none)


def parse_judgement(text: str) -> Verdict:
    value = _object(text)
    satisfied, valid = (str(value.get(k, "")).strip().upper() for k in ("satisfaction", "constraint_validity"))
    if satisfied not in ("YES", "NO"):
        raise ParseError("no satisfaction YES or NO")
    modified = value.get("modified_constraint")
    return Verdict(satisfied == "YES", valid != "NO", " ".join(modified.split()) if isinstance(modified, str) else "")


def parse_refined(text: str) -> str:
    """The refined instruction without the labels and quotes a model may wrap it in."""
    text = re.sub(r"^\s*(#?\s*refined instruction#?\s*:?)\s*", "", text.strip(), flags=re.IGNORECASE)
    text = text.strip().strip("'\"“”").strip()
    if not text:
        raise ParseError("no instruction")
    return text


# -- how the authors' scripts read the answers (crab.parsers = "authors") ----------------------------------------------

def _authors_json(text: str) -> Any:
    """The answer as JSON, or its second blank-line-separated block as JSON (3_llama3_unified_constraints.py)."""
    for candidate in (text, *text.split("\n\n")[1:2]):
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ParseError("not JSON, nor its second block")


def authors_proposals(text: str, types: tuple[str, ...]) -> dict[str, str]:
    """Every key whose value is not "NULL" (a key airgen's prompt names is read as that type; any other key is kept
    under its own name, as their dictionary keeps it)."""
    value = _authors_json(text)
    if not isinstance(value, dict):
        raise ParseError("not a JSON object")
    found = {}
    for name, constraint in value.items():
        if constraint == NOT_APPLICABLE or not isinstance(constraint, str):
            continue
        key = type_key(str(name))
        found[key if key in types else str(name)] = constraint
    return found


def authors_judgement(text: str) -> Verdict:
    """5_res_constraints_check.py: an answer with satisfaction, modified_constraint and constraint_validity; a
    satisfaction other than exactly "NO" keeps the constraint as it is, a validity of exactly "NO" removes it."""
    value = _authors_json(text)
    if not isinstance(value, dict) or not {"satisfaction", "modified_constraint", "constraint_validity"} <= set(value):
        raise ParseError("no satisfaction, modified_constraint and constraint_validity")
    modified = value["modified_constraint"]
    return Verdict(value["satisfaction"] != "NO", value["constraint_validity"] != "NO",
                   modified if isinstance(modified, str) else "")


def authors_refined(text: str) -> str:
    """The answer as a Python string literal when it is one, cut after a "refined instruction:" heading."""
    # Only what can be a string literal is evaluated: Python's parser gives up (MemoryError) on a long run of
    # '-' or '(' read as an expression.
    if text[:1] in "'\"" and text[-1:] in "'\"":
        try:
            value = ast.literal_eval(text)
            text = value if isinstance(value, str) else text
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            pass
    text = text.split("refined instruction:\n\n")[-1]
    if not text.strip():
        raise ParseError("no instruction")
    return text


# -- the steps ------------------------------------------------------------------------------------------------------

def _refined(text: str, c: Any, args: Mapping[str, Any]) -> str:
    """The prompt asks for 10 to 20 more words; a rewrite that adds more than `crab.refine_max_added_words` or
    drops words is not a refinement (the pair keeps its own instruction)."""
    added = word_count(text) - args["instruction_words"]
    if c.refine_max_added_words is not None and not 0 <= added <= c.refine_max_added_words:
        raise Reject(f"the refinement changes the instruction by {added:+d} words (allowed 0 to "
                     f"+{c.refine_max_added_words})")
    return text


# Not free text: a refinement cut at max_tokens is no instruction.
STEP_REFINE = Step(REFINE, "guidance", "crab_refine", frozenset({"instruction", "response"}),
                   parse=lambda text, args: parse_refined(text), accept=_refined,
                   max_tokens=lambda c: min(c.max_tokens, 256))
def _proposal_format(types: tuple[str, ...]) -> Any:
    return lambda c, args: Format(regex=json_regex(types, _SHORT_VALUE if c.short_lines else _VALUE),
                                  schema=json_schema(types))


STEP_GLOBAL = Step(GLOBAL, "guidance", "crab_global", frozenset({"instruction", "response"}),
                   decode=_proposal_format(GLOBAL_TYPES),
                   parse=lambda text, args: parse_proposals(text, GLOBAL_TYPES))
STEP_LOCAL = Step(LOCAL, "guidance", "crab_local", frozenset({"instruction", "response"}),
                  decode=_proposal_format(LOCAL_TYPES),
                  parse=lambda text, args: parse_proposals(text, LOCAL_TYPES))
STEP_CHECK = Step(CHECK, "guidance", "crab_check", frozenset({"response", "constraint"}),
                  decode=lambda c, args: Format(regex=judgement_regex(c.short_lines), schema=JUDGEMENT_SCHEMA),
                  parse=lambda text, args: parse_judgement(text), max_tokens=lambda c: min(c.max_tokens, 400))

STEPS: Mapping[str, Step] = {s.name: s for s in (STEP_REFINE, STEP_GLOBAL, STEP_LOCAL, STEP_CHECK)}

# crab.parsers = "authors": the steps read their answers by the rules of the authors' scripts.
AUTHORS_PARSERS = {
    REFINE: lambda text, args: authors_refined(text),
    GLOBAL: lambda text, args: authors_proposals(text, GLOBAL_TYPES),
    LOCAL: lambda text, args: authors_proposals(text, LOCAL_TYPES),
    CHECK: lambda text, args: authors_judgement(text),
}


def steps_for(config: Any) -> Mapping[str, Step]:
    """Stage -> the step that answers it under `config` (its parsers: `crab.parsers`)."""
    if config.parsers == "authors":
        return {name: dataclasses.replace(step, parse=AUTHORS_PARSERS[name]) for name, step in STEPS.items()}
    return STEPS
