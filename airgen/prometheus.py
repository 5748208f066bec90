"""The run's counters for Prometheus, on 127.0.0.1: read from `Metrics.snapshot()` at scrape time, nothing on the hot
path."""
from __future__ import annotations

from airgen.metrics import STALLED_S, Metrics


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
