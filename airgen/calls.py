"""The data that crosses between the flow, the scheduler and the engines."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Role = Literal["guidance", "student"]
ROLES: tuple[Role, ...] = ("guidance", "student")


@dataclass(frozen=True, slots=True)
class Sampling:
    """Decoding settings of one call; `regex`/`choice` constrain the output where the engine can."""

    max_tokens: int
    temperature: float = 0.2
    top_p: float = 0.9
    regex: str | None = None
    choice: tuple[str, ...] | None = None
    repetition_penalty: float = 1.0
    # Benchmarks replay recorded output lengths: generate exactly max_tokens, ignoring end-of-sequence.
    ignore_eos: bool = False


@dataclass(frozen=True, slots=True)
class Request:
    """One model call. `key` (doc_id/stage/round) is stable across runs: the journal is indexed by it."""

    key: str
    role: Role
    stage: str
    messages: tuple[dict, ...]
    sampling: Sampling
    # Larger = closer to done; the scheduler serves high-progress requests first.
    progress: int = 0

    @property
    def n(self) -> int:
        """The key's last part: 0 for the initial stages, the round for round stages, the level for merge/respond."""
        return int(self.key.rsplit("/", 1)[1])


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | ...
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    model: str = field(default="", compare=False)
