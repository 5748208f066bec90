"""What every recipe's flow shares: the sans-IO contract the scheduler drives, and the bookkeeping behind it.

A recipe turns one unit (a document, an instruction-response pair) into records through model calls. The scheduler
knows it only through three events:

  start(sample)                        -> the first requests, or the unit's end (a unit the recipe cannot use)
  advance(sample, key, completion)     -> the requests it unlocks (none while others are in flight) | Done | Rejected
  refused(sample, key, reason)         -> the same, after an engine refused one request for good

A handler builds requests and returns them; `advance` commits what is returned (the sample's `pending`), so a
request built and not returned can never leave a sample waiting. An event the state machine cannot accept (a
completion for a call that is not pending, a second start) is a loud `FlowError`, never a silent drop. Randomness
comes from a generator seeded by (seed, unit id, call key), so replaying a journal makes the same requests in any
order; resume relies on that.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Callable, Mapping

from airgen.method.calls import Completion, Refusal, Request, call_key
from airgen.method.prompts import PromptSet
from airgen.method.step import Reject, Step


class FlowError(RuntimeError):
    """An event the state machine cannot accept (a bug in the caller, never bad model output)."""


@dataclass(frozen=True, slots=True)
class Done:
    records: list[dict[str, Any]]
    # Parts that produced no record (each {its part in the recipe's words (AIR: "level"), "stage", "reason"}, a line
    # of dropped_levels.jsonl); the unit itself succeeded.
    dropped: list[dict[str, Any]]
    # Preference pairs ({"prompt", "chosen", "rejected", "meta"}), where the recipe makes them.
    pairs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Rejected:
    stage: str
    reason: str
    dropped: list[dict[str, Any]] = field(default_factory=list)
    value: Any = None  # what the recipe measured, for the rejection line (CRAB: its constraint counts)


# Requests to ask (an empty list: wait for the calls in flight), or the unit's end.
Next = list[Request] | Done | Rejected


@dataclass(frozen=True, slots=True)
class Fault:
    """A step's answer that was rejected, handed to the transition instead of a value."""

    reason: str


@dataclass(slots=True)
class Unit:
    """The part of a sample's state that the shared machinery keeps; a recipe's sample adds its own fields."""

    doc_id: str
    _: KW_ONLY
    source: str = ""  # where the unit was read, for rejection lines
    started: bool = False
    pending: dict[str, Request] = field(default_factory=dict)  # key -> request in flight
    calls: int = 0
    # Set when an engine refused one of the sample's requests: the sample ends with it once its other calls return.
    refusal: Rejected | None = None


class Flow:
    """Base of a recipe's flow. A subclass declares `steps` (stage -> Step) and its transition table
    `on` (stage -> handler(sample, request, value | Fault) -> Next), and implements `sample`, `begin` and `finish`.
    `config` is the recipe's settings (a `config.Sampling`)."""

    steps: Mapping[str, Step]

    def __init__(self, config: Any, prompts: PromptSet, seed: int = 0):
        self.config = config
        self.prompts = prompts
        self.seed = seed
        # The stages whose free text is kept when cut at max_tokens (the setting `keep_cut`); formatted answers
        # never are.
        self.keep_cut = frozenset(config.keep_cut)
        self.on: Mapping[str, Callable[[Any, Request, Any], Next]] = {}
        # stage -> answers its step rejected (unreadable, cut, out of bounds): what a user watches to see that a
        # server ignores the decode-time formats.
        self.faults: Counter = Counter()
        # Every call's decoding settings, before its step's format and max_tokens.
        self._sampling = {"max_tokens": config.max_tokens, "temperature": config.temperature, "top_p": config.top_p,
                          "repetition_penalty": config.repetition_penalty}

    # -- the events ---------------------------------------------------------------------------------------------

    def start(self, sample: Unit) -> Next:
        if sample.started:
            raise FlowError(f"{sample.doc_id}: already started")
        sample.started = True
        step = self.begin(sample)
        return self._commit(sample, self._conclude(sample, step) if isinstance(step, list) and not step else step)

    def advance(self, sample: Unit, key: str, completion: Completion) -> Next:
        request = self._take(sample, key)
        if sample.refusal is not None:
            return self._commit(sample, self._conclude(sample, []))
        try:
            value = self.steps[request.stage].read(request, completion, self.config,
                                                   keep_cut=request.stage in self.keep_cut)
        except Reject as e:
            value = Fault(str(e))
            self.faults[request.stage] += 1
        return self._commit(sample, self._conclude(sample, self.on[request.stage](sample, request, value)))

    def refused(self, sample: Unit, key: str, reason: str) -> Next:
        """The engine refused a request (a prompt longer than its context, say): the sample is rejected at that
        stage, once the calls it still has in flight have returned."""
        request = self._take(sample, key)
        if sample.refusal is None:
            sample.refusal = Rejected(request.stage, f"engine refused the request: {reason}")
        return self._commit(sample, self._conclude(sample, []))

    # -- what a recipe implements -------------------------------------------------------------------------------

    def sample(self, unit: Any) -> Unit:
        """The state of one unit read from the input."""
        raise NotImplementedError

    def begin(self, sample: Unit) -> list[Request] | Rejected:
        raise NotImplementedError

    def unlocked(self, sample: Unit) -> list[Request]:
        """Requests that any event may unlock (AIR: the levels whose rounds are settled); none by default."""
        return []

    def finish(self, sample: Unit) -> Done | Rejected:
        """The sample's end, once nothing is in flight and nothing more is asked."""
        raise NotImplementedError

    def end_refused(self, sample: Unit) -> Rejected:
        assert sample.refusal is not None
        return sample.refusal

    # -- helpers for the recipes ----------------------------------------------------------------------------------

    def ask(self, sample: Unit, stage: str, n: int, inputs: Mapping[str, str | int],
            args: Mapping[str, Any] | None = None) -> Request:
        """Build (never register) the call of step `stage` for round or level `n`."""
        key = call_key(sample.doc_id, stage, n)
        seed = hashlib.blake2b(f"{self.seed}/{key}".encode(), digest_size=4).digest()
        return self.steps[stage].request(self.prompts, key, inputs, self._sampling, self.config,
                                         structured=self.config.structured, args=args, progress=sample.calls,
                                         seed=int.from_bytes(seed, "big") >> 1)  # 31 bits: every engine takes it

    @staticmethod
    def waiting_on(sample: Unit, stages: tuple[str, ...], asked: list[Request] = ()) -> bool:
        """Whether a call of one of `stages` is in flight (or among `asked`, going out now)."""
        return any(r.stage in stages for r in [*sample.pending.values(), *asked])

    def rng(self, sample: Unit, key: str) -> random.Random:
        digest = hashlib.blake2b(f"{self.seed}/{sample.doc_id}/{key}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "big"))

    # -- bookkeeping ------------------------------------------------------------------------------------------------

    def _take(self, sample: Unit, key: str) -> Request:
        request = sample.pending.pop(key, None)
        if request is None:
            raise FlowError(f"{sample.doc_id}: no pending request {key!r}")
        sample.calls += 1
        return request

    def _conclude(self, sample: Unit, step: Next) -> Next:
        """After each event: add what it unlocked; with nothing in flight and nothing to ask, the sample is over."""
        if isinstance(step, list):
            if sample.refusal is None:
                step = step + self.unlocked(sample)
            if not step and not sample.pending:
                step = self.end_refused(sample) if sample.refusal is not None else self.finish(sample)
        return step

    @staticmethod
    def _commit(sample: Unit, step: Next) -> Next:
        if isinstance(step, list):
            for request in step:
                if request.key in sample.pending:
                    raise FlowError(f"{sample.doc_id}: {request.key!r} asked twice")
                sample.pending[request.key] = request
        elif sample.pending:
            raise FlowError(f"{sample.doc_id}: ended with calls in flight: {sorted(sample.pending)}")
        return step


def record(instruction: str, output: str, meta: dict[str, Any]) -> dict[str, Any]:
    """One output record: alpaca fields, the same pair as chat `messages`, and the recipe's `meta` (which names its
    unit, `doc_id`, and its `split`)."""
    return {"instruction": instruction, "input": "", "output": output,
            "messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}],
            "meta": meta}


def replay(flow: Flow, sample: Unit, requests: Next,
           answer: Callable[[Request], Completion | Refusal | None]) -> Next:
    """Advance `sample` through every request `answer` knows (a journal's completions and refusals); give what is
    left to ask, or the sample's end."""
    if not isinstance(requests, list):
        return requests
    todo, ask = list(requests), []
    while todo:
        request = todo.pop()
        known = answer(request)
        if known is None:
            ask.append(request)
            continue
        if isinstance(known, Refusal):
            step = flow.refused(sample, request.key, known.reason)
        else:
            step = flow.advance(sample, request.key, known)
        if not isinstance(step, list):
            return step
        todo.extend(step)
    return ask

