"""The data that crosses between the flow, the scheduler and the engines."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import orjson

Role = Literal["guidance", "student"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Decoding settings of one call; `regex`/`choice` constrain the output where the engine can, and `schema` (a
    JSON schema, as JSON text) says the same for engines that take formats as JSON schemas."""

    max_tokens: int
    temperature: float = 0.2
    top_p: float = 0.9
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    schema: str | None = None
    repetition_penalty: float = 1.0
    # Benchmarks replay recorded output lengths: generate exactly max_tokens, ignoring end-of-sequence.
    ignore_eos: bool = False


def call_key(unit: str, stage: str, n: int) -> str:
    """The stable name of one call: unit/stage/n. A unit id may itself hold "/" (a file path, say)."""
    return f"{unit}/{stage}/{n}"


def split_key(key: str) -> tuple[str, str, int]:
    """(unit, stage, n) of a `call_key`: split at the last two "/", since only the unit may hold one."""
    unit, stage, n = key.rsplit("/", 2)
    return unit, stage, int(n)


@dataclass(frozen=True, slots=True)
class Request:
    """One model call. `key` (`call_key`) is stable across runs: the journal is indexed by it."""

    key: str
    role: Role
    stage: str
    messages: tuple[dict, ...]
    sampling: Sampling
    # Larger = closer to done; the scheduler serves high-progress requests first.
    progress: int = 0
    # What the step's decode format and parser were built from (the offered types, the number of check lines):
    # the step reads its answer with the same values. Engines never look at it.
    args: Mapping[str, Any] = field(default_factory=dict, compare=False)
    # The call's sampling seed, from the run's seed and the call key (`Flow.ask`): engines that take one are sent it,
    # so the same call is sampled the same way in a rerun. Not part of the digest: the run's seed is in its
    # fingerprint.
    seed: int | None = field(default=None, compare=False)

    @property
    def unit(self) -> str:
        return split_key(self.key)[0]

    @property
    def n(self) -> int:
        """0 for the initial stages, the round for round stages, the level for merge/respond."""
        return split_key(self.key)[2]


def digest(request: Request, model: str) -> str:
    """What was asked, in 16 hex digits: the model that answers, the messages and the decoding settings. The journal
    keeps it with each answer, and a resume reuses an answer only for the same digest: an edited document, a changed
    prompt or step, an upgrade that asks otherwise, all ask again."""
    return hashlib.blake2b(orjson.dumps((model, request.messages, request.sampling)), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Refusal:
    """An engine's final no to one request (HTTP 400/413/422, a prompt over the context). Journaled like a
    completion: the call is finished, and a resume never sends it again."""

    reason: str


@dataclass(frozen=True, slots=True)
class Completion:
    text: str  # the answer, never a reasoning model's thinking
    finish_reason: str  # "stop" | "length" | ...
    prompt_tokens: int = 0
    output_tokens: int = 0  # thinking included
    cached_tokens: int = 0
    model: str = field(default="", compare=False)
    reasoning: str = ""  # the thinking that came before the answer (journaled, shown by trace; no step reads it)
    reasoning_tokens: int = 0  # of output_tokens, those of the thinking

    @property
    def cut_while_thinking(self) -> bool:
        """The token budget ran out before the answer began."""
        return self.finish_reason == "length" and bool(self.reasoning) and not self.text.strip()


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_thinking(text: str) -> tuple[str, str]:
    """(thinking, answer) of a model's output that may open with a `<think>` block (a reasoning model behind a server
    with no reasoning parser, or in process): the answer is what follows the first `</think>`, as vLLM's reasoning
    parsers read it, so an answer that mentions the tag stays whole. An output that opens a block and never closes it
    (cut while thinking) has no answer."""
    end = text.find(THINK_CLOSE)
    if end >= 0:
        thinking = text[:end].strip()
        return thinking.removeprefix(THINK_OPEN).strip(), text[end + len(THINK_CLOSE):].strip()
    stripped = text.lstrip()
    if stripped.startswith(THINK_OPEN):
        return stripped[len(THINK_OPEN):].strip(), ""
    return "", text


def thinking_share(output_tokens: int, thinking: str, answer: str) -> int:
    """Of `output_tokens`, those of the thinking, where no engine counted them: its share of the characters."""
    if not thinking:
        return 0
    return output_tokens if not answer else round(output_tokens * len(thinking) / (len(thinking) + len(answer)))
