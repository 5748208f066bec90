"""AIR's prompt data files beside its templates: the constraint-type taxonomy the judge picks from
(constraint_types.toml) and the few-shot examples of the merge (merge_examples.toml)."""
from __future__ import annotations

from dataclasses import dataclass

from airgen.method.parsing import norm
from airgen.method.prompts import PromptFileError, PromptSet, check_keys, text_field, toml_entries

TYPES_FILE = "constraint_types.toml"
EXAMPLES_FILE = "merge_examples.toml"


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


def read_types(text: str) -> tuple[ConstraintType, ...]:
    types = []
    for i, entry in enumerate(toml_entries(TYPES_FILE, text, "type"), 1):
        check_keys(TYPES_FILE, i, entry, {"name", "description", "example"})
        types.append(ConstraintType(*(text_field(TYPES_FILE, i, entry, k) for k in ("name", "description", "example"))))
    names = [norm(t.name) for t in types]
    if len(set(names)) != len(names):
        raise PromptFileError(f"{TYPES_FILE}: type names must be distinct (ignoring case and punctuation)")
    if "none" in names:
        raise PromptFileError(f"{TYPES_FILE}: 'None' is reserved for 'no constraint found' and cannot be a type")
    return tuple(types)


def read_examples(text: str) -> tuple[MergeExample, ...]:
    examples = []
    for i, entry in enumerate(toml_entries(EXAMPLES_FILE, text, "example"), 1):
        check_keys(EXAMPLES_FILE, i, entry, {"instruction", "constraints", "merged"})
        constraints = entry.get("constraints")
        if (not isinstance(constraints, list) or not 1 <= len(constraints) <= 5
                or not all(isinstance(c, str) and c.strip() for c in constraints)):
            raise PromptFileError(f"{EXAMPLES_FILE} entry {i}: 'constraints' must be a list of 1 to 5 non-empty texts")
        examples.append(MergeExample(
            instruction=text_field(EXAMPLES_FILE, i, entry, "instruction"),
            constraints=tuple(c.strip() for c in constraints),
            merged=text_field(EXAMPLES_FILE, i, entry, "merged"),
        ))
    return tuple(examples)


DATA_FILES = {TYPES_FILE: ("types", read_types), EXAMPLES_FILE: ("merge_examples", read_examples)}


def types(prompts: PromptSet) -> tuple[ConstraintType, ...]:
    return prompts.data["types"]


def merge_examples(prompts: PromptSet) -> tuple[MergeExample, ...]:
    return prompts.data["merge_examples"]
