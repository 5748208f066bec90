"""A step: one kind of model call, read as input -> output (curator's prompt()/parse() pair).

A `Step` holds side by side what a recipe needs to ask one call and to read its answer: the role that answers it,
its template in `prompts/` and the fields the template fills, its decode-time format, its parser and the rule that
accepts or rejects the parsed value. A recipe is a set of steps plus one transition table over its samples' state;
the scheduler, engines and journal never see a step, only the `Request` it builds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from airgen.method.calls import Completion, Request, Role, Sampling
from airgen.method.parsing import ParseError
from airgen.method.prompts import PromptSet


# The cap on free-text lines of constrained formats under a recipe's `short_lines` (small models never end a line).
SHORT_LINE_CHARS = 150

_REGEX_SPECIAL = frozenset("\\.^$*+?{}[]|()/")


def regex_literal(text: str) -> str:
    """`text` as a regex literal. Unlike re.escape it leaves spaces and '-' alone, which some backends reject
    escaped."""
    return "".join("\\" + ch if ch in _REGEX_SPECIAL else ch for ch in text)


class Reject(Exception):
    """An answer the method does not accept; str(e) is the reason recorded (a rejection, a drop, a round's end)."""


@dataclass(frozen=True, slots=True)
class Format:
    """A decode-time constraint: the answer matches `regex`, or is one of `choice`. A format whose answer is a JSON
    object also gives its `schema` (JSON text), for engines that take JSON schemas rather than regexes."""

    regex: str | None = None
    choice: tuple[str, ...] | None = None
    schema: str | None = None


def _as_is(text: str, args: Mapping[str, Any]) -> str:
    return text


def _accept_all(value: Any, config: Any, args: Mapping[str, Any]) -> Any:
    return value


@dataclass(frozen=True)
class Step:
    name: str  # the stage: part of every call key, so renaming one orphans the journals that hold it
    role: Role
    # The template in prompts/ (NAME.txt) and the fields it fills; None: the user message is the field `text` itself.
    template: str | None = None
    fields: frozenset[str] = frozenset({"text"})
    # (config, args) -> the format its answer is held to at decode time, or None for free text.
    decode: Callable[[Any, Mapping[str, Any]], Format | None] | None = None
    # (text, args) -> the value; raises ParseError with the reason.
    parse: Callable[[str, Mapping[str, Any]], Any] = _as_is
    # (value, config, args) -> the value kept (possibly narrowed); raises Reject with the reason.
    accept: Callable[[Any, Any, Mapping[str, Any]], Any] = _accept_all
    # Free text may be kept when cut at max_tokens (the setting `keep_cut`); formatted answers never are.
    free_text: bool = False
    # (config) -> max_tokens of this step's calls; None: the recipe's default.
    max_tokens: Callable[[Any], int] | None = None

    def request(self, prompts: PromptSet, key: str, inputs: Mapping[str, str | int], sampling: Mapping[str, Any],
                config: Any, *, structured: bool, args: Mapping[str, Any] | None = None, progress: int = 0,
                seed: int | None = None) -> Request:
        """The call for `inputs` (the template's fields), with the recipe's `sampling` settings; `args` go to the
        decode format and, with the request, to the parser and the accept rule when the answer comes back."""
        args = dict(args or {})
        messages = (prompts.chat(str(inputs["text"])) if self.template is None
                    else prompts.messages(self.template, **inputs))
        fmt = self.decode(config, args) if self.decode is not None and structured else None
        if fmt is not None or self.max_tokens is not None:
            sampling = dict(sampling)
            if fmt is not None:
                sampling.update(regex=fmt.regex, choice=fmt.choice, schema=fmt.schema)
            if self.max_tokens is not None:
                sampling["max_tokens"] = self.max_tokens(config)
        return Request(key=key, role=self.role, stage=self.name, messages=messages, sampling=Sampling(**sampling),
                       progress=progress, args=args, seed=seed)

    def read(self, request: Request, completion: Completion, config: Any, *, keep_cut: bool = False) -> Any:
        """The step's value from `completion`, or Reject with the reason."""
        if completion.finish_reason == "length" and not (self.free_text and keep_cut):
            raise Reject(f"output cut at max_tokens={request.sampling.max_tokens}")
        text = completion.text.strip()
        if not text:
            raise Reject("empty output")
        try:
            value = self.parse(text, request.args)
        except ParseError as e:
            raise Reject(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a parser's own failure is this answer's fault, not the run's
            raise Reject(f"the answer could not be read ({type(e).__name__}: {e})") from None
        try:
            return self.accept(value, config, request.args)
        except Reject:
            raise
        except Exception as e:  # noqa: BLE001 - the same for the accept rule
            raise Reject(f"the answer could not be accepted ({type(e).__name__}: {e})") from None

