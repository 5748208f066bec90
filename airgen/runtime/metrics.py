"""What a run did and where the engines' time went.

- Counters: calls and tokens per role and stage, samples by outcome, records by split (AIR: level_K).
- Goodput: every token is charged to its sample; when the sample ends, its tokens move to "records" or to the stage
  it was rejected at, so the final summary says how much of the engines' work produced records.
- Engine time: each engine's wall time is split into busy (>= 1 request outstanding) and idle, and idle by cause:
  `airgen` (samples exist but all wait on our own work: parsing, journaling, admission), `other_model` (samples wait
  on the other engine) and `no_samples` (nothing admitted yet, or the input is exhausted). A scheduler regression
  shows up as idle `airgen` seconds and as `handling_s`, the time our own code spent per completion.
- `snapshot()` is the machine-readable state (one `metrics.jsonl` line). What reads it lives beside this module:
  `panel` (the live display and its rates), `prometheus` (the scrape endpoint), `summary` (the end-of-run text).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from airgen.method.calls import Completion, Request

RECORDS = "records"
STALLED_S = 60.0  # a call out longer than this counts as stalled in the panel


@dataclass(slots=True)
class RoleCounters:
    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0  # of output_tokens, a reasoning model's thinking
    cut_while_thinking: int = 0  # answers whose token budget ran out before the answer began


@dataclass(slots=True)
class Spend:
    """Tokens spent on a group of finished samples."""

    samples: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass(slots=True)
class EngineTime:
    """One engine's wall time, split by what it was doing."""

    outstanding: int = 0
    busy_s: float = 0.0
    # Integral of outstanding requests over time: load_s / busy_s is the mean batch the engine was offered.
    load_s: float = 0.0
    idle_s: dict[str, float] = field(default_factory=lambda: {"airgen": 0.0, "other_model": 0.0, "no_samples": 0.0})


@dataclass
class Metrics:
    started: float = field(default_factory=time.perf_counter)
    total: int | None = None  # documents expected, when known (for the ETA)
    roles: dict[str, RoleCounters] = field(default_factory=lambda: collections.defaultdict(RoleCounters))
    calls_by_stage: collections.Counter = field(default_factory=collections.Counter)
    in_flight_by_stage: collections.Counter = field(default_factory=collections.Counter)
    # Funnel: how far samples got. "records" counts samples with >= 1 record; splits counts records by split.
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    rejected_at: collections.Counter = field(default_factory=collections.Counter)
    records_by_split: collections.Counter = field(default_factory=collections.Counter)
    resumed: int = 0  # units already finished before this run started
    # Units set aside for the next run (a call no try got answered while the server answers others) -> why.
    set_aside: dict[str, str] = field(default_factory=dict)
    replayed_calls: int = 0  # journaled answers reused
    # Journaled answers not reused, by why (their request changed): asked again.
    asked_again: collections.Counter = field(default_factory=collections.Counter)
    # Goodput: "records" or the stage a sample was rejected at -> tokens its calls used in this run.
    spend: dict[str, Spend] = field(default_factory=lambda: collections.defaultdict(Spend))
    engines: dict[str, EngineTime] = field(default_factory=dict)
    # Engine name -> its fault counts (by kind, "retries", "gave up"), kept by the engine itself (HTTP engines).
    faults: dict[str, collections.Counter] = field(default_factory=dict)
    # Stage -> answers its step rejected, kept by the flow (`Flow.faults`).
    step_faults: collections.Counter = field(default_factory=collections.Counter)
    # role -> the engine's known peak output tokens/s (the setting `peak_tokens_per_s`): shares of it are shown.
    peaks: dict[str, float] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)  # call key -> when it went out
    _last_answer: float = field(default_factory=time.perf_counter)  # when a call last came back answered
    handling_s: float = 0.0  # our own work after each completion: journal, flow, sink, dispatch
    handled: int = 0
    active: int = 0  # samples in flight (kept by the scheduler)
    _open: dict[str, list[int]] = field(default_factory=dict)  # sample id -> [prompt, output] tokens so far
    _clock: float = field(default_factory=time.perf_counter)

    # -- events from the scheduler (hot path: keep them cheap) ----------------------------------------------------
    # Every time is time.perf_counter(); the hot-path events take the caller's reading of it (`now`), so that one
    # call costs the scheduler one clock read when it goes out (per batch sent) and one when it comes back.

    def call_started(self, request: Request, now: float) -> None:
        self.in_flight_by_stage[request.stage] += 1
        self._started[request.key] = now

    def call_finished(self, sample_id: str, request: Request, completion: Completion | None, now: float) -> float:
        """Count a call that came back at `now`; returns how long it was out."""
        self.in_flight_by_stage[request.stage] -= 1
        took = now - self._started.pop(request.key, now)
        if completion is None:
            return took
        self._last_answer = now
        role = self.roles[request.role]
        role.calls += 1
        role.prompt_tokens += completion.prompt_tokens
        role.output_tokens += completion.output_tokens
        role.cached_tokens += completion.cached_tokens
        role.reasoning_tokens += completion.reasoning_tokens
        role.cut_while_thinking += completion.cut_while_thinking
        self.calls_by_stage[request.stage] += 1
        spent = self._open.get(sample_id)
        if spent is None:
            self._open[sample_id] = [completion.prompt_tokens, completion.output_tokens]
        else:
            spent[0] += completion.prompt_tokens
            spent[1] += completion.output_tokens
        return took

    def finished(self, outcome: str, stage: str | None = None, splits: list[str] | None = None,
                 sample_id: str | None = None) -> None:
        self.outcomes[outcome] += 1
        if stage is not None:
            self.rejected_at[stage] += 1
        for split in splits or ():
            self.records_by_split[split] += 1
        spend = self.spend[RECORDS if outcome == RECORDS else f"rejected at {stage}"]
        spend.samples += 1
        prompt, output = self._open.pop(sample_id, (0, 0)) if sample_id is not None else (0, 0)
        spend.prompt_tokens += prompt
        spend.output_tokens += output

    def engine_load(self, engine: str, delta: int, samples_active: bool, now: float | None = None) -> None:
        """An engine's outstanding requests change by `delta`: charge the time since the last change first."""
        self.settle(samples_active, now)
        t = self.engines.get(engine)
        if t is None:
            t = self.engines[engine] = EngineTime()
        t.outstanding += delta

    def settle(self, samples_active: bool, now: float | None = None) -> None:
        """Charge each engine's time since the last change to busy or to the cause of its idleness."""
        now = time.perf_counter() if now is None else now
        elapsed = now - self._clock
        self._clock = now
        if elapsed <= 0.0:
            return
        any_busy = False
        for t in self.engines.values():
            if t.outstanding:
                any_busy = True
                t.busy_s += elapsed
                t.load_s += t.outstanding * elapsed
        for t in self.engines.values():
            if not t.outstanding:
                why = "other_model" if any_busy else "airgen" if samples_active else "no_samples"
                t.idle_s[why] += elapsed

    # -- reading --------------------------------------------------------------------------------------------------

    @property
    def done(self) -> int:
        return sum(self.outcomes.values())

    @property
    def elapsed(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    def goodput(self) -> dict[str, Any]:
        """Tokens on samples with records vs rejected ones (by stage) vs still unfinished."""
        groups = {name: {"samples": s.samples, "prompt_tokens": s.prompt_tokens, "output_tokens": s.output_tokens}
                  for name, s in sorted(self.spend.items())}
        if self._open:
            groups["unfinished"] = {"samples": len(self._open),
                                    "prompt_tokens": sum(p for p, _ in self._open.values()),
                                    "output_tokens": sum(o for _, o in self._open.values())}
        total = sum(g["prompt_tokens"] + g["output_tokens"] for g in groups.values())
        useful = groups.get(RECORDS, {}).get("prompt_tokens", 0) + groups.get(RECORDS, {}).get("output_tokens", 0)
        return {"share": useful / total if total else None, "by_outcome": groups}

    def engine_time(self) -> dict[str, Any]:
        wall = self.elapsed
        return {name: {"busy_s": round(t.busy_s, 3), "busy_share": round(t.busy_s / wall, 4),
                       "mean_outstanding": round(t.load_s / t.busy_s, 2) if t.busy_s else 0.0,
                       "idle_s": {k: round(v, 3) for k, v in t.idle_s.items()}}
                for name, t in self.engines.items()}

    def snapshot(self) -> dict[str, Any]:
        """The run's state now: one metrics.jsonl line."""
        return {
            "time": time.time(),
            "elapsed_s": round(self.elapsed, 3),
            "samples": {"records": self.outcomes[RECORDS], "rejected": self.done - self.outcomes[RECORDS],
                        "resumed": self.resumed, "total": self.total, "in_flight": self.active,
                        "set_aside": len(self.set_aside)},
            "in_flight_by_stage": {s: n for s, n in self.in_flight_by_stage.items() if n},
            "rejected_at": dict(self.rejected_at),
            "roles": {role: {"calls": c.calls, "prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
                             "cached_tokens": c.cached_tokens, "reasoning_tokens": c.reasoning_tokens,
                             "cut_while_thinking": c.cut_while_thinking} for role, c in sorted(self.roles.items())},
            "engines": self.engine_time(),
            "faults": {name: dict(c) for name, c in self.faults.items() if c},
            "unusable_answers": dict(self.step_faults),
            "journal": {"reused": self.replayed_calls, "asked_again": dict(self.asked_again)},
            "peaks": dict(self.peaks),
            "stalled": self.stalled(),
            "handling_us_per_call": round(1e6 * self.handling_s / self.handled, 1) if self.handled else None,
        }

    def stalled(self, over_s: float = STALLED_S) -> dict[str, Any]:
        """Calls out for longer than `over_s` while no call has come back for as long: a server that accepts calls
        and does not answer shows here first (a slow engine that still answers, such as a CPU one under a big batch,
        does not)."""
        now = time.perf_counter()
        if now - self._last_answer <= over_s:
            return {"over_s": over_s, "calls": 0, "oldest_s": None}
        ages = [now - t for t in self._started.values() if now - t > over_s]
        return {"over_s": over_s, "calls": len(ages), "oldest_s": round(max(ages), 1) if ages else None}
