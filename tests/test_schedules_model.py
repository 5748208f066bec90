"""bench/schedules.py's engine model: the curve's fit, continuous batching as processor sharing with prefill first,
max_seqs, and virtual time (an hour of engine work in milliseconds)."""
from __future__ import annotations

import asyncio
import time

import pytest

from airgen.method.calls import Request, Sampling
from bench.schedules import Curve, ModelEngine, run_virtual


def request(key: str, max_tokens: int = 4096, ignore_eos: bool = False) -> Request:
    return Request(f"{key}/answer/0", "student", "answer", ({"role": "user", "content": "x"},),
                   Sampling(max_tokens=max_tokens, ignore_eos=ignore_eos))


def engine(curve: Curve, prefill: float = 1e12, max_seqs: int = 256, tokens: dict | None = None) -> ModelEngine:
    tokens = tokens or {}
    return ModelEngine("m", curve, prefill, max_seqs,
                       lambda r: ("text", "stop", *tokens.get(r.unit, (0, 0, 100))))


def test_the_curve_is_recovered_from_its_points():
    true = Curve(350.0, 12.0)
    fitted = Curve.fit([(n, true.rate(n)) for n in (1, 4, 16, 64, 128)])
    assert fitted.peak == pytest.approx(350.0, rel=0.01) and fitted.half == pytest.approx(12.0, rel=0.01)


def finish_times(e: ModelEngine, requests: list[tuple[float, Request]]) -> dict[str, float]:
    async def one(at: float, r: Request) -> tuple[str, float]:
        await asyncio.sleep(at)
        await e.generate(r)
        return r.unit, asyncio.get_running_loop().time()

    async def everything():
        return dict(await asyncio.gather(*(one(at, r) for at, r in requests)))

    return run_virtual(everything())


def test_requests_share_the_batch_rate_and_prefill_goes_first():
    curve = Curve(300.0, 2.0)
    alone = finish_times(engine(curve), [(0, request("a"))])
    assert alone["a"] == pytest.approx(100 / curve.rate(1))  # 100 tokens at T(1)
    both = finish_times(engine(curve), [(0, request("a")), (0, request("b"))])
    assert both["a"] == pytest.approx(200 / curve.rate(2)) == pytest.approx(both["b"])
    # b arrives halfway through a's decoding: a runs alone, then both share T(2) until a ends, then b alone.
    half = 50 / curve.rate(1)
    late = finish_times(engine(curve), [(0, request("a")), (half, request("b"))])
    a_end = half + 50 / (curve.rate(2) / 2)
    assert late["a"] == pytest.approx(a_end)
    assert late["b"] == pytest.approx(a_end + 50 / curve.rate(1))
    # 1,000 uncached prompt tokens at 500 tokens/s: 2 s of prefill before the first token.
    prefilled = finish_times(engine(curve, prefill=500.0, tokens={"a": (1200, 200, 100)}), [(0, request("a"))])
    assert prefilled["a"] == pytest.approx(2.0 + 100 / curve.rate(1))


def test_long_contexts_slow_each_step():
    """Each step costs (half + n) / peak plus per_context for every context token: a request's own prompt and the
    tokens it has made so far."""
    curve = Curve(300.0, 2.0, per_context=1e-5)
    ends = finish_times(engine(curve, tokens={"a": (2000, 2000, 400)}), [(0, request("a"))])
    steps = 400 * (curve.half + 1) / curve.peak + curve.per_context * (400 * 2000 + 400 ** 2 / 2)
    assert ends["a"] == pytest.approx(steps, rel=0.01)
    assert ends["a"] > 1.5 * 400 / Curve(300.0, 2.0).rate(1)


def test_max_seqs_queues_the_rest_and_max_tokens_cuts():
    curve = Curve(300.0, 2.0)
    ends = finish_times(engine(curve, max_seqs=1), [(0, request("a")), (0, request("b"))])
    assert ends["b"] == pytest.approx(2 * ends["a"])
    cut = finish_times(engine(curve), [(0, request("a", max_tokens=10))])
    assert cut["a"] == pytest.approx(10 / curve.rate(1))
    forced = finish_times(engine(curve, tokens={"a": (0, 0, 5)}), [(0, request("a", max_tokens=40, ignore_eos=True))])
    assert forced["a"] == pytest.approx(40 / curve.rate(1))  # a replay makes its recorded length


def test_an_hour_of_engine_time_takes_no_time():
    started = time.perf_counter()
    curve = Curve(1.0, 0.0001)  # one token a second
    ends = finish_times(engine(curve, tokens={"a": (0, 0, 3600)}), [(0, request("a"))])
    assert ends["a"] == pytest.approx(3600.0, rel=1e-3) and time.perf_counter() - started < 5


def test_the_five_schedules_replay_a_runs_calls_on_the_model(tmp_path):
    """A run's journal (scripted engines here, a real bench's in use) answered on the model: the airgen run takes the
    journal's path, and every schedule makes the same calls and tokens."""
    import orjson

    from airgen import config as C
    from bench.schedules import copies, cpu_engines, from_journal, schedules
    from tests.runs import command, documents, run

    real = tmp_path / "real"
    docs = documents(tmp_path / "docs.jsonl", 6)
    assert run(command(docs, real / "run")).returncode == 0
    settings = orjson.loads((real / "run" / "run.json").read_bytes())["settings"]
    config = C.load(overrides={"flow": settings["flow"], "seed": settings["seed"],
                               "run": {"progress": False, "metrics_every_s": 600.0}})
    source = [orjson.loads(line) for line in docs.read_bytes().splitlines()]
    make = cpu_engines(Curve(400.0, 16.0, 1.5e-6, 1e-8), 3000.0, 256, from_journal(real))
    result = run_virtual(schedules(config, tmp_path / "model", copies(source, 12, tmp_path / "twice.jsonl"), make,
                                   {"guidance": 30.0, "student": 30.0}))
    journaled = sum(1 for line in (real / "run" / "journal.jsonl").read_bytes().splitlines() if b'"k"' in line)
    modes = result["modes"]
    assert result["documents"] == 12 and modes["airgen"]["calls"] == 2 * journaled
    assert {m["output_tokens"] for m in modes.values()} == {modes["airgen"]["output_tokens"]}
    assert modes["stage-barrier+reloads"]["wall_s"] > modes["stage-barrier"]["wall_s"] + 30.0
    assert set(result["ratios"]) == {f"airgen/{m}" for m in modes if m != "airgen"}
