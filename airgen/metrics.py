"""What a run did and where the engines' time went.

- Counters: calls and tokens per role and stage, samples by outcome, records by split (AIR: level-K).
- Goodput: every token is charged to its sample; when the sample ends, its tokens move to "records" or to the stage
  it was rejected at, so the final summary says how much of the engines' work produced records.
- Engine time: each engine's wall time is split into busy (>= 1 request outstanding) and idle, and idle by cause:
  `airgen` (samples exist but all wait on our own work: parsing, journaling, admission), `other_model` (samples wait
  on the other engine) and `no_samples` (nothing admitted yet, or the input is exhausted). A scheduler regression
  shows up as idle `airgen` seconds and as `handling_s`, the time our own code spent per completion.
- Live: `snapshot()` is the machine-readable state (one `metrics.jsonl` line); `Rates` turns successive snapshots
  into tokens/s over a sliding window; `Progress` renders them (rich on a terminal, a plain line in a log).
"""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

from airgen import console
from airgen.calls import Completion, Request
from airgen.sink import split_order

RECORDS = "records"
STALLED_S = 60.0  # a call out longer than this counts as stalled in the panel


@dataclass(slots=True)
class RoleCounters:
    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0


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
    started: float = field(default_factory=time.monotonic)
    total: int | None = None  # documents expected, when known (for the ETA)
    roles: dict[str, RoleCounters] = field(default_factory=lambda: collections.defaultdict(RoleCounters))
    calls_by_stage: collections.Counter = field(default_factory=collections.Counter)
    in_flight_by_stage: collections.Counter = field(default_factory=collections.Counter)
    # Funnel: how far samples got. "records" counts samples with >= 1 record; splits counts records by split.
    outcomes: collections.Counter = field(default_factory=collections.Counter)
    rejected_at: collections.Counter = field(default_factory=collections.Counter)
    records_by_split: collections.Counter = field(default_factory=collections.Counter)
    resumed: int = 0  # units already finished before this run started
    replayed_calls: int = 0
    # Goodput: "records" or the stage a sample was rejected at -> tokens its calls used in this run.
    spend: dict[str, Spend] = field(default_factory=lambda: collections.defaultdict(Spend))
    engines: dict[str, EngineTime] = field(default_factory=dict)
    # Engine name -> its fault counts (by kind, "retries", "gave up"), kept by the engine itself (HTTP engines).
    faults: dict[str, collections.Counter] = field(default_factory=dict)
    # Stage -> answers its step rejected, kept by the flow (`Recipe.faults`).
    step_faults: collections.Counter = field(default_factory=collections.Counter)
    _started: dict[str, float] = field(default_factory=dict)  # call key -> when it went out
    _last_answer: float = field(default_factory=time.monotonic)  # when a call last came back answered
    handling_s: float = 0.0  # our own work after each completion: journal, flow, sink, dispatch
    handled: int = 0
    active: int = 0  # samples in flight (kept by the scheduler)
    _open: dict[str, list[int]] = field(default_factory=dict)  # sample id -> [prompt, output] tokens so far
    _clock: float = field(default_factory=time.perf_counter)

    # -- events from the scheduler (hot path: keep them cheap) ----------------------------------------------------

    def call_started(self, request: Request) -> None:
        self.in_flight_by_stage[request.stage] += 1
        self._started[request.key] = time.monotonic()

    def call_finished(self, sample_id: str, request: Request, completion: Completion | None) -> None:
        self.in_flight_by_stage[request.stage] -= 1
        self._started.pop(request.key, None)
        if completion is None:
            return
        self._last_answer = time.monotonic()
        role = self.roles[request.role]
        role.calls += 1
        role.prompt_tokens += completion.prompt_tokens
        role.output_tokens += completion.output_tokens
        role.cached_tokens += completion.cached_tokens
        self.calls_by_stage[request.stage] += 1
        spent = self._open.get(sample_id)
        if spent is None:
            self._open[sample_id] = [completion.prompt_tokens, completion.output_tokens]
        else:
            spent[0] += completion.prompt_tokens
            spent[1] += completion.output_tokens

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

    def engine_load(self, engine: str, delta: int, samples_active: bool) -> None:
        """An engine's outstanding requests change by `delta`: charge the time since the last change first."""
        self.settle(samples_active)
        t = self.engines.get(engine)
        if t is None:
            t = self.engines[engine] = EngineTime()
        t.outstanding += delta

    def settle(self, samples_active: bool) -> None:
        """Charge each engine's time since the last change to busy or to the cause of its idleness."""
        now = time.perf_counter()
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
        return max(time.monotonic() - self.started, 1e-9)

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
                        "resumed": self.resumed, "total": self.total, "in_flight": self.active},
            "in_flight_by_stage": {s: n for s, n in self.in_flight_by_stage.items() if n},
            "rejected_at": dict(self.rejected_at),
            "roles": {role: {"calls": c.calls, "prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
                             "cached_tokens": c.cached_tokens} for role, c in sorted(self.roles.items())},
            "engines": self.engine_time(),
            "faults": {name: dict(c) for name, c in self.faults.items() if c},
            "unusable_answers": dict(self.step_faults),
            "stalled": self.stalled(),
            "handling_us_per_call": round(1e6 * self.handling_s / self.handled, 1) if self.handled else None,
        }

    def stalled(self, over_s: float = STALLED_S) -> dict[str, Any]:
        """Calls out for longer than `over_s` while no call has come back for as long: a server that accepts calls
        and does not answer shows here first (a slow engine that still answers, such as a CPU one under a big batch,
        does not)."""
        now = time.monotonic()
        if now - self._last_answer <= over_s:
            return {"over_s": over_s, "calls": 0, "oldest_s": None}
        ages = [now - t for t in self._started.values() if now - t > over_s]
        return {"over_s": over_s, "calls": len(ages), "oldest_s": round(max(ages), 1) if ages else None}

    def funnel(self) -> str:
        lines = ["funnel:"]
        lines.append(f"  finished this run   {self.done}" + (f" (+{self.resumed} before)" if self.resumed else ""))
        for outcome, n in sorted(self.outcomes.items()):
            lines.append(f"  {outcome:<19} {n}")
        width = max(map(len, self.rejected_at), default=0)
        for stage, n in self.rejected_at.most_common():
            lines.append(f"    rejected at {stage:<{width}} {n}")
        for split in sorted(self.records_by_split, key=split_order):
            lines.append(f"  records {split:<11} {self.records_by_split[split]}")
        elapsed = self.elapsed
        for role, c in sorted(self.roles.items()):
            hit = c.cached_tokens / c.prompt_tokens if c.prompt_tokens else 0.0
            lines.append(
                f"  {role:<8} {c.calls} calls, {c.prompt_tokens} prompt + {c.output_tokens} output tokens, "
                f"{c.output_tokens / elapsed:,.1f} output tok/s, prefix-cache hit {hit:.0%}"
            )
        if self.replayed_calls:
            lines.append(f"  calls replayed from the journal: {self.replayed_calls}")
        if self.step_faults:
            lines.append("  answers a step could not use: " + ", ".join(
                f"{stage} {n} of {self.calls_by_stage[stage]}" for stage, n in self.step_faults.most_common()))
            if any(n >= 10 and n > self.calls_by_stage[stage] / 2 for stage, n in self.step_faults.items()):
                lines.append("    over half of a step's answers: does the server ignore decode-time formats? "
                             "see --guidance-dialect / --student-dialect")
        for name, c in self.faults.items():
            if c:
                kinds = ", ".join(f"{k} {n}" for k, n in c.most_common() if k not in ("retries", "gave up"))
                lines.append(f"  {name} faults: {kinds or 'none'}; retries {c['retries']}, gave up {c['gave up']}")
        good = self.goodput()
        if good["share"] is not None:
            lines.append(f"goodput: {good['share']:.0%} of this run's tokens went to samples with records")
            width = max(map(len, good["by_outcome"]))
            for name, g in good["by_outcome"].items():
                lines.append(f"  {name:<{width}} {g['samples']:>7} samples {g['prompt_tokens']:>11} prompt "
                             f"{g['output_tokens']:>10} output tokens")
        if self.engines:
            lines.append(f"engine time over {elapsed:,.1f}s (idle: airgen = samples waited on our own work):")
            for name, t in self.engine_time().items():
                idle = ", ".join(f"{k} {v:,.2f}s" for k, v in t["idle_s"].items())
                lines.append(f"  {name:<16} busy {t['busy_share']:.0%} (mean {t['mean_outstanding']} requests "
                             f"outstanding); idle {idle}")
        if self.handled:
            lines.append(f"  airgen handling: {1e6 * self.handling_s / self.handled:,.1f} us per completion, "
                         f"{self.handling_s:,.2f}s in all")
        return "\n".join(lines)


class Rates:
    """Tokens/s per role and samples/s over a sliding window of snapshots."""

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self._points: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()

    def add(self, snap: dict[str, Any]) -> dict[str, Any]:
        t = snap["elapsed_s"]
        self._points.append((t, snap))
        while len(self._points) > 2 and t - self._points[1][0] >= self.window_s:
            self._points.popleft()
        t0, first = self._points[0]
        dt = t - t0
        rates: dict[str, Any] = {"window_s": round(dt, 3), "roles": {}, "samples_per_s": None}
        if dt <= 0:
            return rates
        for role, c in snap["roles"].items():
            before = first["roles"].get(role, {})
            prompt = c["prompt_tokens"] - before.get("prompt_tokens", 0)
            cached = c["cached_tokens"] - before.get("cached_tokens", 0)
            rates["roles"][role] = {
                "prompt_tok_s": round(prompt / dt, 1),
                "output_tok_s": round((c["output_tokens"] - before.get("output_tokens", 0)) / dt, 1),
                "cache_hit": round(cached / prompt, 4) if prompt else None,
            }
        finished = lambda s: s["samples"]["records"] + s["samples"]["rejected"]  # noqa: E731
        rates["samples_per_s"] = round((finished(snap) - finished(first)) / dt, 3)
        return rates


def eta_s(snap: dict[str, Any], rates: dict[str, Any]) -> float | None:
    samples = snap["samples"]
    if not samples["total"] or not rates.get("samples_per_s"):
        return None
    left = samples["total"] - samples["records"] - samples["rejected"] - samples["resumed"]
    return max(left, 0) / rates["samples_per_s"]


def progress_line(snap: dict[str, Any], rates: dict[str, Any]) -> str:
    s = snap["samples"]
    total = f"/{s['total']}" if s["total"] else ""
    flight = " ".join(f"{stage}:{n}" for stage, n in snap["in_flight_by_stage"].items()) or "-"
    tps = " ".join(f"{role} {r['prompt_tok_s']:,.0f}/{r['output_tok_s']:,.0f} tok/s"
                   + (f" hit {r['cache_hit']:.0%}" if r["cache_hit"] is not None else "")
                   for role, r in rates["roles"].items()) or "-"
    eta = eta_s(snap, rates)
    return (f"[{snap['elapsed_s']:,.0f}s] done {s['records']} rejected {s['rejected']}{total} | in flight {flight} | "
            f"prompt/output {tps}" + (f" | eta {eta:,.0f}s" if eta is not None else "") + _trouble(snap))


def _trouble(snap: dict[str, Any]) -> str:
    """Retries and stalled calls, where there are any."""
    parts = [f"{name} retries {c.get('retries', 0)} gave up {c.get('gave up', 0)}" for name, c in snap["faults"].items()]
    stalled = snap["stalled"]
    if stalled["calls"]:
        parts.append(f"stalled {stalled['calls']} calls > {stalled['over_s']:.0f}s (oldest {stalled['oldest_s']:,.0f}s)")
    return "".join(f" | {p}" for p in parts)


class Progress:
    """Live display: a rich panel on a terminal, a plain line every `log_every_s` otherwise."""

    def __init__(self, log_every_s: float = 30.0):
        self._live = None
        self._log_every_s = log_every_s
        self._last_log = float("-inf")
        self._stream = console.stream()
        if self._stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self._stream), refresh_per_second=2, transient=False)
            self._live.start()

    def update(self, snap: dict[str, Any], rates: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(_panel(snap, rates))
        elif snap["elapsed_s"] - self._last_log >= self._log_every_s:
            self._last_log = snap["elapsed_s"]
            print(progress_line(snap, rates), file=self._stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


def _panel(snap: dict[str, Any], rates: dict[str, Any]):
    from rich.table import Table

    s = snap["samples"]
    eta = eta_s(snap, rates)
    title = (f"{snap['elapsed_s']:,.0f}s  records {s['records']}  rejected {s['rejected']}"
             + (f" of {s['total']}" if s["total"] else "") + (f"  resumed {s['resumed']}" if s["resumed"] else "")
             + (f"  eta {eta:,.0f}s" if eta is not None else "") + _trouble(snap))
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("", "in flight", "rejected", "prompt tok/s", "output tok/s", "cache hit", "busy"):
        table.add_column(column, justify="left" if not column else "right")
    for stage, n in snap["in_flight_by_stage"].items():
        table.add_row(stage, str(n), str(snap["rejected_at"].get(stage, 0)), "", "", "", "")
    for stage, n in snap["rejected_at"].items():
        if stage not in snap["in_flight_by_stage"]:
            table.add_row(stage, "0", str(n), "", "", "", "")
    busy = {name: t["busy_share"] for name, t in snap["engines"].items()}
    for role, r in rates["roles"].items():
        share = next((f"{v:.0%}" for name, v in busy.items() if role in name.split("+")), "")
        table.add_row(f"[bold]{role}", "", "", f"{r['prompt_tok_s']:,.0f}", f"{r['output_tok_s']:,.0f}",
                      f"{r['cache_hit']:.0%}" if r["cache_hit"] is not None else "-", share)
    return table


def serve_prometheus(metrics: Metrics, port: int):
    """Expose the counters on http://127.0.0.1:PORT/metrics; read at scrape time, nothing on the hot path. Returns
    the server (its `shutdown()` stops it); each call has a registry of its own."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            snap = metrics.snapshot()
            tokens = CounterMetricFamily("airgen_tokens", "tokens by role and kind", labels=["role", "kind"])
            calls = CounterMetricFamily("airgen_calls", "finished calls by role", labels=["role"])
            for role, c in snap["roles"].items():
                calls.add_metric([role], c["calls"])
                for kind in ("prompt", "output", "cached"):
                    tokens.add_metric([role, kind], c[f"{kind}_tokens"])
            samples = CounterMetricFamily("airgen_samples", "finished samples by outcome", labels=["outcome"])
            for outcome in ("records", "rejected"):
                samples.add_metric([outcome], snap["samples"][outcome])
            flight = GaugeMetricFamily("airgen_in_flight", "calls in flight by stage", labels=["stage"])
            for stage, n in snap["in_flight_by_stage"].items():
                flight.add_metric([stage], n)
            busy = CounterMetricFamily("airgen_engine_busy_seconds", "engine time with requests", labels=["engine"])
            idle = CounterMetricFamily("airgen_engine_idle_seconds", "engine idle time by cause",
                                       labels=["engine", "cause"])
            for name, t in snap["engines"].items():
                busy.add_metric([name], t["busy_s"])
                for cause, v in t["idle_s"].items():
                    idle.add_metric([name, cause], v)
            faults = CounterMetricFamily("airgen_engine_faults", "engine faults by kind, retries and give-ups",
                                         labels=["engine", "kind"])
            for name, counts in snap["faults"].items():
                for kind, n in counts.items():
                    faults.add_metric([name, kind], n)
            stalled = GaugeMetricFamily("airgen_calls_stalled", f"calls out longer than {STALLED_S:.0f} s")
            stalled.add_metric([], snap["stalled"]["calls"])
            yield from (tokens, calls, samples, flight, busy, idle, faults, stalled)

    registry = CollectorRegistry()
    registry.register(Collector())
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    return server
