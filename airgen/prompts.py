"""The prompt set: reads and checks the files in `prompts/` and renders a step's template into chat messages.

Which templates exist and which fields each one fills is declared by the recipe's steps (`Step.template`,
`Step.fields`); this module only checks the files against that and renders them.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from airgen.parsing import norm

SYSTEM_FILE = "system.txt"
TYPES_FILE = "constraint_types.toml"
EXAMPLES_FILE = "merge_examples.toml"


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
    fields: Mapping[str, frozenset[str]] = field(repr=False, default_factory=dict)  # template -> its fields

    @classmethod
    def load(cls, templates: Mapping[str, frozenset[str]], folder: Path | None = None) -> "PromptSet":
        """Read and check every prompt file: `templates` maps each template to the fields it must use, no more and
        no fewer. `folder` None reads the copy installed with airgen (`airgen_prompts`)."""
        root = Path(folder) if folder is not None else _bundled_folder()
        files = prompt_files(templates)
        raw: dict[str, bytes] = {}
        for name in files:
            try:
                raw[name] = (root / name).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise PromptFileError(f"prompt file {name} is missing from {root}") from None
        text = {name: _decode(name, data) for name, data in raw.items()}
        digest = hashlib.sha256()
        for name in files:  # length-prefixed, so moving bytes between files changes the hash
            digest.update(f"{name}\0{len(raw[name])}\0".encode())
            digest.update(raw[name])
        system = text[SYSTEM_FILE].strip()
        if not system or _placeholders(SYSTEM_FILE, system):
            raise PromptFileError(f"{SYSTEM_FILE} must be non-empty plain text without ${{...}} fields")
        rendered = {name: _template(f"{name}.txt", text[f"{name}.txt"], fields) for name, fields in templates.items()}
        return cls(
            system=system,
            templates=MappingProxyType(rendered),
            fields=MappingProxyType(dict(templates)),
            types=_load_types(text[TYPES_FILE]),
            merge_examples=_load_examples(text[EXAMPLES_FILE]),
            fingerprint=digest.hexdigest()[:16],
        )

    def messages(self, name: str, **fields: str | int) -> tuple[dict, ...]:
        """The chat messages of one call: the system message and the rendered template `name`."""
        template = self.templates.get(name)
        if template is None:
            raise KeyError(f"unknown prompt {name!r}; known: {', '.join(sorted(self.templates))}")
        expected = self.fields[name]
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


def prompt_files(templates: Mapping[str, frozenset[str]]) -> tuple[str, ...]:
    """Every file a prompt set reads, in fingerprint order."""
    return tuple(sorted([f"{name}.txt" for name in templates] + [SYSTEM_FILE, TYPES_FILE, EXAMPLES_FILE]))


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
    names = [norm(t.name) for t in types]
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
