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
from typing import Callable
from pathlib import Path
from types import MappingProxyType

SYSTEM_FILE = "system.txt"


class PromptFileError(ValueError):
    """A prompt folder with a missing or malformed file; the message names the file and the problem."""


@dataclass(frozen=True)
class PromptSet:
    system: str
    templates: Mapping[str, string.Template] = field(repr=False)
    # Recorded in every output record, so a dataset names the exact prompts that made it.
    fingerprint: str
    fields: Mapping[str, frozenset[str]] = field(repr=False, default_factory=dict)  # template -> its fields
    # What the recipe's data files hold (AIR: its constraint types and merge examples), by the key it gave them.
    data: Mapping[str, object] = field(repr=False, default_factory=dict)

    @classmethod
    def load(cls, templates: Mapping[str, frozenset[str]], folder: Path | None = None,
             data_files: Mapping[str, tuple[str, Callable[[str], object]]] | None = None) -> "PromptSet":
        """Read and check every prompt file of one recipe, and only those: `templates` maps each template to the
        fields it must use, no more and no fewer; `data_files` maps a data file's name to (its key in `data`, the
        reader of its text). `folder` None reads the copy installed with airgen (`airgen_prompts`)."""
        root = Path(folder) if folder is not None else _bundled_folder()
        data_files = data_files or {}
        files = prompt_files(templates, data_files)
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
            data=MappingProxyType({key: read(text[name]) for name, (key, read) in data_files.items()}),
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


def prompt_files(templates: Mapping[str, frozenset[str]], data_files: Mapping[str, object] = ()) -> tuple[str, ...]:
    """Every file a prompt set reads, in fingerprint order."""
    return tuple(sorted([f"{name}.txt" for name in templates] + [SYSTEM_FILE, *data_files]))


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


def toml_entries(name: str, text: str, key: str) -> list[dict]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PromptFileError(f"{name} is not valid TOML: {e}") from None
    entries = data.get(key)
    if not isinstance(entries, list) or not entries:
        raise PromptFileError(f"{name} needs at least one [[{key}]] table")
    return entries


def text_field(name: str, index: int, entry: dict, key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PromptFileError(f"{name} entry {index}: '{key}' must be non-empty text")
    return value.strip()


def check_keys(name: str, index: int, entry: dict, keys: set[str]) -> None:
    unknown = sorted(set(entry) - keys)
    if unknown:
        raise PromptFileError(f"{name} entry {index}: unknown key {unknown[0]!r}; expected {sorted(keys)}")
