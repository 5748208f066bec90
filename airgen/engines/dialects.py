"""How each OpenAI-compatible server is told a decode-time format: the same constraint in each server's words.

- vllm: `structured_outputs` {"regex"} or {"choice"}, plus vLLM's own sampling fields;
- sglang: `regex` (a choice becomes an alternation of its literal options);
- llamacpp: `grammar`, the regex written as GBNF (llama.cpp's server takes no regex);
- none: only the standard fields; the lenient parsers read what comes back.

`auto` asks the server's /v1/models who owns its model ("vllm", "sglang", "llamacpp") and uses that dialect, or
none for any other server.
"""
from __future__ import annotations

from typing import Any

from airgen.calls import Sampling
from airgen.step import regex_literal


def fields(dialect: str, sampling: Sampling) -> dict[str, Any]:
    """The request fields beyond the standard ones, for `dialect`."""
    regex = sampling.regex
    if regex is None and sampling.choice is not None:
        regex = "(" + "|".join(regex_literal(c) for c in sampling.choice) + ")"
    out: dict[str, Any] = {}
    if dialect == "vllm":
        if sampling.regex is not None:
            out["structured_outputs"] = {"regex": sampling.regex}
        elif sampling.choice is not None:
            out["structured_outputs"] = {"choice": list(sampling.choice)}
    elif dialect == "sglang" and regex is not None:
        out["regex"] = regex
    elif dialect == "llamacpp" and regex is not None:
        out["grammar"] = gbnf(regex)
    if dialect in ("vllm", "sglang", "llamacpp"):  # each takes these sampling fields under these names
        if sampling.repetition_penalty != 1.0:
            out["repetition_penalty"] = sampling.repetition_penalty
        if sampling.ignore_eos:
            out["ignore_eos"] = True
    return out


def detect(owned_by: str) -> str:
    owner = owned_by.lower().replace(".", "").replace("-", "").replace("_", "")
    return owner if owner in ("vllm", "sglang", "llamacpp") else "none"


def gbnf(regex: str) -> str:
    """A GBNF grammar for `regex`, in the subset airgen's formats use: literals and escapes, character classes,
    groups, alternation and the quantifiers * + ? {m} {m,n}. Anything else is an error, never a silent change."""
    parts: list[str] = []
    i = 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            if i + 1 == len(regex):
                raise ValueError(f"regex ends in a lone backslash: {regex!r}")
            nxt = regex[i + 1]
            if nxt in "dDwWsSbB":
                raise ValueError(f"regex class \\{nxt} has no GBNF form here: {regex!r}")
            parts.append(_quoted({"n": "\n", "t": "\t"}.get(nxt, nxt)))
            i += 2
        elif c == "[":
            end = _class_end(regex, i)
            parts.append(regex[i:end + 1])
            i = end + 1
        elif c == "{" or c in "*+?":  # a quantifier sticks to the item before it
            end = regex.index("}", i) if c == "{" else i
            if not parts or parts[-1] in ("(", "|"):
                raise ValueError(f"quantifier with nothing to repeat in {regex!r}")
            parts[-1] += regex[i:end + 1]
            i = end + 1
        elif c in "()|":
            parts.append(c)
            i += 1
        elif c in ".^$":
            raise ValueError(f"regex {c!r} has no GBNF form here: {regex!r}")
        else:
            parts.append(_quoted(c))
            i += 1
    return "root ::= " + " ".join(parts)


def _class_end(regex: str, start: int) -> int:
    i = start + 1
    while i < len(regex):
        if regex[i] == "\\":
            i += 2
            continue
        if regex[i] == "]":
            return i
        i += 1
    raise ValueError(f"unclosed character class in {regex!r}")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'
