"""The run's counters for Prometheus, on 127.0.0.1: read from a metrics snapshot at scrape time, nothing on the hot
path. One endpoint per process: a bench's rounds (and a Ray driver's shards) are shown through it in turn."""
from __future__ import annotations

from typing import Any, Callable

from airgen.runtime.metrics import STALLED_S

Snapshot = Callable[[], dict[str, Any]]


class Endpoint:
    """http://127.0.0.1:PORT/metrics, serving whatever snapshot `watch` last named (nothing before)."""

    def __init__(self, port: int):
        from prometheus_client import CollectorRegistry, start_http_server

        self._source: Snapshot | None = None
        registry = CollectorRegistry()
        registry.register(self)
        self._server, self._thread = start_http_server(port, addr="127.0.0.1", registry=registry)

    def watch(self, source: Snapshot) -> None:
        self._source = source

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self._source is None:
            return
        snap = self._source()
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
        for stage, n in snap.get("in_flight_by_stage", {}).items():
            flight.add_metric([stage], n)
        busy = CounterMetricFamily("airgen_engine_busy_seconds", "engine time with requests", labels=["engine"])
        idle = CounterMetricFamily("airgen_engine_idle_seconds", "engine idle time by cause",
                                   labels=["engine", "cause"])
        for name, t in snap.get("engines", {}).items():
            busy.add_metric([name], t["busy_s"])
            for cause, v in t["idle_s"].items():
                idle.add_metric([name, cause], v)
        faults = CounterMetricFamily("airgen_engine_faults", "engine faults by kind, retries and give-ups",
                                     labels=["engine", "kind"])
        for name, counts in snap.get("faults", {}).items():
            for kind, n in counts.items():
                faults.add_metric([name, kind], n)
        stalled = GaugeMetricFamily("airgen_calls_stalled", f"calls out longer than {STALLED_S:.0f} s")
        stalled.add_metric([], snap.get("stalled", {}).get("calls", 0))
        yield from (tokens, calls, samples, flight, busy, idle, faults, stalled)
