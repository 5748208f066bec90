"""How each OpenAI-compatible server is told a decode-time format: the same constraint in each server's words, and
the answer read back as the step wrote its format.

- vllm: `structured_outputs` {"regex"} or {"choice"}, plus vLLM's own sampling fields;
- sglang: `regex` (a choice becomes an alternation of its literal options);
- llamacpp: `grammar`, the regex written as GBNF (llama.cpp's servers take no regex);
- openai: OpenAI's `response_format` with a JSON schema, for the formats that are one: a step's JSON object (CRAB's
  proposals and checks) and a choice (an `enum`, inside an object as OpenAI asks; the answer is unwrapped to the
  chosen text). Other formats go plain, for the lenient parsers;
- none: only the standard fields; the lenient parsers read what comes back.

`auto` asks the server who it is (`identify`): its model list's `owned_by` (vLLM, SGLang and llama.cpp's own
server say their name), else what only llama.cpp's servers answer (llama-server's /props, llama-cpp-python's API
title); any other server gets none.
"""
from __future__ import annotations

import json
from typing import Any

from airgen.method.calls import Sampling
from airgen.method.step import regex_literal

# owned_by -> dialect, for servers that say who they are in their model list.
_OWNERS = {"vllm": "vllm", "sglang": "sglang", "llamacpp": "llamacpp", "openai": "openai", "system": "openai"}
# The property a choice's answer is wrapped in under the openai dialect (OpenAI wants an object at the top).
_CHOICE_FIELD = "answer"


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
    elif dialect == "openai":
        schema = _schema(sampling)
        if schema is not None:
            out["response_format"] = {"type": "json_schema",
                                      "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    if dialect in ("vllm", "sglang", "llamacpp"):  # each takes these sampling fields under these names
        if sampling.repetition_penalty != 1.0:
            out["repetition_penalty"] = sampling.repetition_penalty
        if sampling.ignore_eos:
            out["ignore_eos"] = True
    return out


def answer(dialect: str, sampling: Sampling, text: str) -> str:
    """The answer as its step reads it: under openai, a choice comes back wrapped in an object and is unwrapped
    (an answer that is not the wrapped object is left as it is, for the lenient parser)."""
    if dialect != "openai" or sampling.choice is None or sampling.schema is not None:
        return text
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past the decoder's depth
        return text
    chosen = value.get(_CHOICE_FIELD) if isinstance(value, dict) else None
    return chosen if isinstance(chosen, str) else text


def _schema(sampling: Sampling) -> dict[str, Any] | None:
    if sampling.schema is not None:
        return json.loads(sampling.schema)
    if sampling.choice is not None:
        return {"type": "object", "properties": {_CHOICE_FIELD: {"type": "string", "enum": list(sampling.choice)}},
                "required": [_CHOICE_FIELD], "additionalProperties": False}
    return None


def from_listing(entry: dict[str, Any]) -> str | None:
    """The dialect a model list's entry names (its `owned_by`), or None when it does not say."""
    owner = str(entry.get("owned_by") or "").lower().replace(".", "").replace("-", "").replace("_", "")
    return _OWNERS.get(owner)


def is_llamacpp(props: Any = None, openapi: Any = None) -> bool:
    """Whether a server's other answers are llama.cpp's: llama-server's GET /props (its generation settings and
    build) or llama-cpp-python's GET /openapi.json (its API title)."""
    if isinstance(props, dict) and ("default_generation_settings" in props or "build_info" in props):
        return True
    title = openapi.get("info", {}).get("title", "") if isinstance(openapi, dict) else ""
    return "llama.cpp" in str(title) or "llama_cpp" in str(title)


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
