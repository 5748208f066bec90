"""Checked constraints: what code can decide of a constraint, and whether a response meets it.

`parse(text)` reads a constraint as a judge or a rule writes it into a `Check` (IFEval's instruction id where one
fits, airgen's own `airgen:` kinds where IFEval has none, and its arguments), or None where the text is not clearly
one of the kinds: a tone, examples to give, a limit on one part of the response. `Check.holds(response)` says whether
a response meets it, `reward(completions, checks)` the share of checks met: a TRL reward function as it is.

The bottom layer: it imports nothing of airgen's. IFEval's verifiers are written again here (`verify`), to run
offline, in linear time, without an evaluation harness; `tests/test_checks.py` holds each against lm-eval's own.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from airgen.checks import phrases, verify

KINDS = tuple(verify.VERIFIERS)


@dataclass(frozen=True)
class Check:
    kind: str  # "length_constraints:number_words", "punctuation:no_comma", "airgen:number_words_between", ...
    args: Mapping[str, Any] = field(default_factory=dict)

    def holds(self, response: str) -> bool:
        """Whether `response` (its thinking, if any, left out) meets the check."""
        return verify.holds(self.kind, answer_of(response), dict(self.args))

    def data(self) -> dict[str, Any]:
        """The check as data: what a record and an RLVR row carry."""
        return {"kind": self.kind, "args": dict(self.args)}

    @classmethod
    def of(cls, data: Mapping[str, Any] | "Check") -> "Check":
        if isinstance(data, Check):
            return data
        if data["kind"] not in verify.VERIFIERS:
            raise ValueError(f"unknown check kind {data['kind']!r}")
        return cls(data["kind"], dict(data.get("args") or {}))


def parse(text: str) -> Check | None:
    """The check a constraint's text states, or None where it states none that code can decide."""
    found = phrases.read(text)
    return None if found is None else Check(*found)


def assess(check: Check | None, response: str | None) -> dict[str, Any]:
    """What a record says of one constraint: its check as data (None where code cannot decide it) and whether
    `response` meets it (None where there is no check, or no response the constraint asks of)."""
    if check is None:
        return {"check": None, "holds": None}
    return {"check": check.data(), "holds": None if response is None else check.holds(response)}


def tally(assessed: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """What a record's meta says of its checks (`checks`, the same for every recipe): of the constraints its answer
    was asked to meet, how many code can check, how many of those the answer meets, and the checks themselves (the
    ground truth of an RLVR row)."""
    judged = [a for a in assessed if a.get("holds") is not None]
    return {"checkable": len(judged), "met": sum(a["holds"] for a in judged), "asked": [a["check"] for a in judged]}


def answer_of(completion: Any) -> str:
    """A completion's answer: the last message's content of a conversation, without a reasoning model's thinking
    (what comes before the first `</think>`; nothing where a `<think>` block is never closed). The rule of
    `airgen.method.calls.split_thinking`, written again since this layer imports nothing of airgen's."""
    if isinstance(completion, list):
        completion = completion[-1]["content"] if completion else ""
    elif isinstance(completion, dict):
        completion = completion.get("content", "")
    text = str(completion)
    _, closed, answer = text.partition("</think>")
    if closed:
        return answer.strip()
    return "" if text.lstrip().startswith("<think>") else text


def share_met(completion: Any, checks: Iterable[Mapping[str, Any] | Check]) -> float:
    checks = [Check.of(c) for c in checks]
    if not checks:
        return 0.0
    answer = answer_of(completion)
    return sum(c.holds(answer) for c in checks) / len(checks)


def reward(completions: Any, checks: Any = None, **_: Any) -> float | list[float]:
    """The share of `checks` a completion meets. Given one completion (text, or a conversation) and its checks, one
    float; called by TRL's GRPOTrainer (`reward_funcs=[airgen.checks.reward]`) with a batch of completions and the
    `checks` column of an `airgen export --format rlvr` dataset, one float per completion."""
    if isinstance(completions, str) or (isinstance(completions, list) and completions
                                        and isinstance(completions[0], dict)):
        return share_met(completions, checks or [])
    return [share_met(c, row) for c, row in zip(completions, checks)]
