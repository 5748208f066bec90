"""Counters of a run: calls and tokens per role and stage, samples by outcome, and a progress line."""
from __future__ import annotations

import collections
import sys
import time
from dataclasses import dataclass, field

from airgen.calls import Completion, Request


@dataclass
class RoleCounters:
    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Metrics:
    started: float = field(default_factory=time.monotonic)
    total: int | None = None  # documents expected, when known (for the ETA)
    roles: dict[str, RoleCounters] = field(default_factory=lambda: collections.defaultdict(RoleCounters))
    calls_by_stage: collections.Counter = field(default_factory=collections.Counter)
    in_flight_by_stage: collections.Counter = field(default_factory=collections.Counter)
    # Funnel: how far samples got. "records" counts samples with >= 1 record; levels counts records by level.
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    dropped_at: collections.Counter = field(default_factory=collections.Counter)
    records_by_level: collections.Counter = field(default_factory=collections.Counter)
    resumed: int = 0  # units already finished before this run started
    replayed_calls: int = 0

    def call_started(self, request: Request) -> None:
        self.in_flight_by_stage[request.stage] += 1

    def call_finished(self, request: Request, completion: Completion | None) -> None:
        self.in_flight_by_stage[request.stage] -= 1
        if completion is None:
            return
        role = self.roles[request.role]
        role.calls += 1
        role.prompt_tokens += completion.prompt_tokens
        role.output_tokens += completion.output_tokens
        role.cached_tokens += completion.cached_tokens
        self.calls_by_stage[request.stage] += 1

    def finished(self, outcome: str, stage: str | None = None, levels: list[int] | None = None) -> None:
        self.outcomes[outcome] += 1
        if stage is not None:
            self.dropped_at[stage] += 1
        for level in levels or ():
            self.records_by_level[level] += 1

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        tps = " ".join(
            f"{role} {c.prompt_tokens / elapsed:,.0f}/{c.output_tokens / elapsed:,.0f} tok/s"
            for role, c in sorted(self.roles.items())
        )
        flight = " ".join(f"{s}:{n}" for s, n in self.in_flight_by_stage.items() if n)
        eta = ""
        if self.total:
            rate = self.done / elapsed
            left = self.total - self.done - self.resumed
            eta = f" eta {left / rate:,.0f}s" if rate > 0 else ""
        return (f"[{elapsed:,.0f}s] done {self.outcomes['records']} dropped {self.done - self.outcomes['records']}"
                f"{f'/{self.total}' if self.total else ''} | in flight {flight or '-'} | prompt/output {tps or '-'}{eta}")

    def funnel(self) -> str:
        lines = ["funnel:"]
        lines.append(f"  finished this run   {self.done}" + (f" (+{self.resumed} before)" if self.resumed else ""))
        for outcome, n in sorted(self.outcomes.items()):
            lines.append(f"  {outcome:<19} {n}")
        for stage, n in self.dropped_at.most_common():
            lines.append(f"    dropped at {stage:<8} {n}")
        for level in sorted(self.records_by_level):
            lines.append(f"  records at level {level:<2} {self.records_by_level[level]}")
        elapsed = time.monotonic() - self.started
        for role, c in sorted(self.roles.items()):
            hit = c.cached_tokens / c.prompt_tokens if c.prompt_tokens else 0.0
            lines.append(
                f"  {role:<8} {c.calls} calls, {c.prompt_tokens} prompt + {c.output_tokens} output tokens, "
                f"{c.output_tokens / max(elapsed, 1e-9):,.1f} output tok/s, prefix-cache hit {hit:.0%}"
            )
        if self.replayed_calls:
            lines.append(f"  calls replayed from the journal: {self.replayed_calls}")
        return "\n".join(lines)


def print_line(text: str) -> None:
    stream = sys.stderr
    if stream.isatty():
        stream.write("\r\x1b[2K" + text)
    else:
        stream.write(text + "\n")
    stream.flush()
