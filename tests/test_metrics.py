"""Run metrics: goodput by outcome, engine idle time by cause, sliding-window rates, metrics.jsonl."""
from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from airgen import config as C
from airgen.store import journal
from airgen.runtime import runner
from airgen.store import sink
from airgen.air.flow import AirFlow
from airgen.method.calls import Completion, Request
from airgen.air.settings import FlowConfig
from airgen.method.corpus import Document
from airgen.air.script import MethodScript
from airgen.engines.scripted import ScriptedEngine
from airgen.runtime.metrics import Metrics
from airgen.runtime.deadline import Deadline, Estimate
from airgen.runtime.panel import Rates
from airgen.runtime.summary import funnel, numbers
from airgen.runtime.scheduler import Scheduler


def docs(n: int):
    for i in range(n):
        yield Document(f"doc{i:04d}", f"document number {i} " * 20, f"mem:{i}")


def scheduler(out: Path, flow: AirFlow, engines, *, window=64, max_in_flight=4096) -> Scheduler:
    replay = journal.load(out / "journal.jsonl")
    return Scheduler(flow, engines, {"guidance": window, "student": window}, journal.Journal(out / "journal.jsonl"),
                     sink.Sink(out, replay.finished, {"models": {}}), Metrics(), replay, max_in_flight)


def journal_tokens(out: Path) -> dict[str, int]:
    """Prompt + output tokens per sample, read back from the journal."""
    spent: dict[str, int] = defaultdict(int)
    for line in (out / "journal.jsonl").read_bytes().splitlines():
        event = orjson.loads(line)
        if "k" in event:
            spent[event["s"]] += event["p"] + event["o"]
    return spent


async def test_goodput_splits_tokens_by_outcome_and_drop_stage(prompts, tmp_path):
    script = MethodScript(prompts, fail=1.0)

    def respond(request):
        # Odd documents score below the threshold and drop at the score stage.
        if request.stage == "score" and int(request.key[3:7]) % 2:
            return "Score: 2/5"
        return script(request)

    engine = ScriptedEngine(respond, latency=lambda r: 0.0005)
    s = scheduler(tmp_path, AirFlow(FlowConfig(rounds=2), prompts), {"guidance": engine, "student": engine})
    await s.run(docs(40))
    s.journal.close()
    s.sink.close()
    spent = journal_tokens(tmp_path)
    good = s.metrics.goodput()["by_outcome"]
    assert set(good) == {"records", "rejected at score"}
    assert good["records"]["samples"] == 20 and good["rejected at score"]["samples"] == 20
    for bucket, parity in (("records", 0), ("rejected at score", 1)):
        expected = sum(n for doc, n in spent.items() if int(doc[3:]) % 2 == parity)
        assert good[bucket]["prompt_tokens"] + good[bucket]["output_tokens"] == expected
    total = sum(spent.values())
    assert s.metrics.goodput()["share"] == pytest.approx(
        (good["records"]["prompt_tokens"] + good["records"]["output_tokens"]) / total)
    assert "rejected at score" in funnel(numbers(s.metrics)) and "goodput:" in funnel(numbers(s.metrics))


async def test_idle_time_counts_our_own_work(prompts, tmp_path):
    flow = AirFlow(FlowConfig(rounds=1), prompts)
    advance = flow.advance

    def slow_advance(sample, key, completion):
        time.sleep(0.003)  # our own work between two calls: the engine has nothing to do meanwhile
        return advance(sample, key, completion)

    flow.advance = slow_advance
    engine = ScriptedEngine(MethodScript(prompts, fail=1.0), latency=lambda r: 0.002)
    s = scheduler(tmp_path, flow, {"guidance": engine, "student": engine}, window=1, max_in_flight=1)
    start = time.perf_counter()
    await s.run(docs(5))
    wall = time.perf_counter() - start
    calls = len(engine.calls)
    t = s.metrics.engines["guidance+student"]
    assert t.idle_s["airgen"] >= 0.9 * calls * 0.003
    assert t.busy_s >= 0.9 * calls * 0.002
    assert t.idle_s["other_model"] == 0.0
    assert t.busy_s + sum(t.idle_s.values()) == pytest.approx(wall, rel=0.05)
    assert s.metrics.handling_s >= calls * 0.003 and s.metrics.handled == calls
    assert t.load_s / t.busy_s == pytest.approx(1.0)  # window 1: exactly one request at the engine when busy


async def test_idle_time_waiting_on_the_other_model(prompts, tmp_path):
    guidance = ScriptedEngine(MethodScript(prompts, fail=1.0), latency=lambda r: 0.0005)
    student = ScriptedEngine(MethodScript(prompts, fail=1.0), latency=lambda r: 0.01)
    s = scheduler(tmp_path, AirFlow(FlowConfig(rounds=2), prompts), {"guidance": guidance, "student": student},
                  max_in_flight=1)
    await s.run(docs(3))
    g, st = s.metrics.engines["guidance"], s.metrics.engines["student"]
    # One sample at a time: while the student answers, the guidance engine waits on it.
    # The guidance waits (on the other model) only while the student is busy, and for most of that time.
    assert g.idle_s["other_model"] <= st.busy_s + 1e-9
    assert g.idle_s["other_model"] >= 0.5 * len(student.calls) * 0.01
    # Guidance calls also run beside the student's answers (refinement, reference, checks), so the student's wait is
    # the guidance's busy time less that overlap, and the overlap is the student's busy time the guidance did not wait.
    both_busy = st.busy_s - g.idle_s["other_model"]
    assert both_busy > 0
    assert st.idle_s["other_model"] == pytest.approx(g.busy_s - both_busy, rel=1e-6, abs=1e-9)


def snap(t: float, output: int, prompt: int, cached: int, done: int, total: int | None = 100) -> dict:
    return {"elapsed_s": t, "samples": {"records": done, "rejected": 0, "resumed": 0, "total": total},
            "roles": {"guidance": {"prompt_tokens": prompt, "output_tokens": output, "cached_tokens": cached}}}


def test_rates_use_a_sliding_window():
    rates = Rates(window_s=10.0)
    rates.add(snap(0, 0, 0, 0, 0))
    rates.add(snap(5, 1000, 5000, 0, 5))
    r = rates.add(snap(10, 1500, 10000, 2500, 10))
    assert r["window_s"] == 10 and r["roles"]["guidance"]["output_tok_s"] == 150.0
    assert r["roles"]["guidance"]["cache_hit"] == 0.25
    # 20 s later the first two points have left the window: the rate is the recent one only.
    r = rates.add(snap(20, 1600, 11000, 2500, 30))
    assert r["window_s"] == 10 and r["roles"]["guidance"]["output_tok_s"] == 10.0


def test_the_estimate_measures_samples_as_they_end(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("airgen.runtime.deadline.time.monotonic", lambda: clock[0])
    est = Estimate()
    assert est.sample_s is None and est.per_s(1000.0) is None and est.eta_s(70, 1000.0) is None
    clock[0] = 1010.0
    for i in range(10):  # ten samples end in the 10th second, having taken 1..10 s
        est.finished(float(i + 1), 1010.0)
    assert est.sample_s == 10.0  # the 90th percentile of 1..10
    assert est.per_s(1010.0) == pytest.approx(10 / 10)  # since the run began: 10 s
    assert est.eta_s(70, 1010.0) == pytest.approx(70.0)
    # A minute later those ends have left the window: the whole run's rate stands until the next one ends.
    assert est.per_s(1071.0) == pytest.approx(10 / 71)


def test_a_deadline_admits_what_would_end_before_it(monkeypatch):
    clock = [500.0]
    monkeypatch.setattr("airgen.runtime.deadline.time.monotonic", lambda: clock[0])
    monkeypatch.setattr("airgen.runtime.deadline.time.time", lambda: 1_000_000.0)
    d = Deadline(1_000_100.0)  # 100 s from now
    est = Estimate()
    # Before any sample ended, the oldest one in flight has taken at least its age.
    assert d.admits(est, 30.0, 500.0) and d.admits(est, None, 550.0)
    est.finished(40.0, 550.0)
    assert d.admits(est, 5.0, 559.0)  # 559 + 40 < 600
    assert not d.admits(est, 5.0, 561.0) and d.closed_at == 561.0
    assert not d.admits(Estimate(), None, 562.0)  # closed for the rest of the run
    assert d.left_s(590.0) == pytest.approx(10.0)


async def test_metrics_jsonl_written_during_a_run(prompts, tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": f"document {i} " * 12}) + b"\n"
                              for i in range(30)))
    config = C.load(overrides={"flow": {"rounds": 2}, "run": {"progress": False, "metrics_every_s": 0.2,
                                                               "max_in_flight": 4}})
    out = tmp_path / "run"
    inputs = runner.prepare(out, [data], config, prompts)
    engine = ScriptedEngine(MethodScript(prompts, fail=1.0), latency=lambda r: 0.01)
    s = await runner.generate(config, out, inputs, prompts, {"guidance": engine, "student": engine})
    lines = [orjson.loads(x) for x in (out / runner.METRICS).read_bytes().splitlines()]
    # Periodic lines while the run went on (not only the last one), each later than the one before.
    during = [line for line in lines[:-1] if 0 < line["samples"]["records"] < 30]
    assert len(during) >= 2 and all(a["elapsed_s"] < b["elapsed_s"] for a, b in zip(lines, lines[1:]))
    assert all(0.1 < b["elapsed_s"] - a["elapsed_s"] < 1.0 for a, b in zip(lines[:-2], lines[1:-1]))
    last = lines[-1]
    assert last["samples"]["records"] == 30 and last["samples"]["in_flight"] == 0
    assert last["roles"]["guidance"]["calls"] + last["roles"]["student"]["calls"] == len(engine.calls)
    assert last["roles"] == {role: {"calls": c.calls, "prompt_tokens": c.prompt_tokens,
                                    "output_tokens": c.output_tokens, "cached_tokens": c.cached_tokens,
                                    "reasoning_tokens": 0, "cut_while_thinking": 0}
                             for role, c in s.metrics.roles.items()}
    assert set(last["engines"]["guidance+student"]["idle_s"]) == {"airgen", "other_model", "no_samples"}


def test_funnel_drop_counts_line_up_whatever_the_stage_names():
    metrics = Metrics()
    metrics.rejected_at.update({"back_translate": 3, "propose": 1})
    lines = [line for line in funnel(numbers(metrics)).splitlines() if "rejected at" in line]
    assert len(lines) == 2 and len({line.rindex(" ") for line in lines}) == 1


def test_prometheus_endpoint_serves_the_counters():
    import socket
    import urllib.request

    from airgen.runtime.prometheus import Endpoint

    metrics = Metrics()
    metrics.call_started(Request("d/score/0", "guidance", "score", (), None), time.perf_counter())  # type: ignore
    metrics.call_finished("d", Request("d/score/0", "guidance", "score", (), None),  # type: ignore[arg-type]
                          Completion("Score: 4/5", "stop", 120, 7, 64), time.perf_counter())
    metrics.finished("records", splits=["level_1"], sample_id="d")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

    endpoint = Endpoint(port)
    try:
        assert "airgen_calls_total" not in scrape()  # nothing watched yet
        endpoint.watch(metrics.snapshot)
        body = scrape()
        endpoint.watch(Metrics().snapshot)  # the next round of a bench: the same endpoint shows it
        fresh = scrape()
    finally:
        endpoint.close()
    assert 'airgen_calls_total{role="guidance"} 1.0' in body
    assert 'airgen_tokens_total{kind="cached",role="guidance"} 64.0' in body
    assert 'airgen_samples_total{outcome="records"} 1.0' in body
    assert 'airgen_samples_total{outcome="records"} 0.0' in fresh
    Endpoint(port).close()  # closed means the port is free again


def test_stalled_calls_are_counted_only_while_nothing_comes_back(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    m = Metrics()
    slow, quick = (Request(f"d/{s}/0", "guidance", s, (), None) for s in ("refine", "score"))  # type: ignore[arg-type]
    m.call_started(slow, clock[0])
    m.call_started(quick, clock[0])
    clock[0] += 90
    m.call_finished("d", quick, Completion("ok", "stop", 1, 1), clock[0])
    clock[0] += 30
    assert m.stalled()["calls"] == 0  # 120 s out, but the engine answered 30 s ago: slow, not stalled
    clock[0] += 40
    assert m.stalled() == {"over_s": 60.0, "calls": 1, "oldest_s": 160.0}
