"""`airgen bench` accounting on scripted engines: same tokens in every mode, real barriers, measured ratios."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
from pathlib import Path

import orjson
import pytest

from airgen import cli

from airgen.runtime import bench
from airgen import config as C
from airgen.method.calls import Completion, Request
from airgen.air.recipe import RECIPE as AIR
from airgen.air.script import MethodScript
from airgen.crab.script import CrabScript
from airgen.engines.scripted import ScriptedEngine
from airgen.method.prompts import PromptSet

DOCS = 16


class Recorder:
    """A scripted engine that honours ignore_eos (exactly max_tokens out) and logs when each request starts/ends."""

    def __init__(self, prompts: PromptSet, events: list[tuple[str, Request]], latency):
        self.script = MethodScript(prompts, fail=1.0)
        self.events = events
        self.engine = ScriptedEngine(self.respond, latency=latency)
        self.name = "recorder"

    def respond(self, request: Request) -> str | Completion:
        if request.sampling.ignore_eos:
            return Completion("x " * request.sampling.max_tokens, "length",
                              sum(len(m["content"].split()) for m in request.messages), request.sampling.max_tokens)
        return self.script(request)

    async def generate(self, request: Request) -> Completion:
        self.events.append(("start", request))
        try:
            return await self.engine.generate(request)
        finally:
            self.events.append(("end", request))

    async def close(self) -> None:
        return None


class Resettable(Recorder):
    """A Recorder whose prefix cache can be dropped; each reset is logged among the calls."""

    async def reset_prefix_cache(self) -> bool:
        self.events.append(("reset", None))
        return True


@pytest.fixture()
def data(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 10}) + b"\n"
                              for i in range(DOCS)))
    return path


def slow_first_doc(request: Request) -> float:
    live = ":" not in request.key  # replayed requests name their mode: "raw:d00/..."
    return 0.1 if live and request.key.startswith("d00/") else 0.001


async def run_bench(prompts, data: Path, out: Path, sweep=None, latency=slow_first_doc, engine_class=Recorder,
                    repeat=1):
    events: list[tuple[str, Request]] = []
    engine = engine_class(prompts, events, latency)
    started = []

    async def start_engines(guidance, student, outage_s=None):
        await asyncio.sleep(0.05)  # a model load, measured once
        started.append(1)
        return {"guidance": engine, "student": engine}

    async def close_engines(engines):
        return None

    config = C.load(overrides={"flow": {"rounds": 3}, "run": {"progress": False}})
    result = await bench.bench(config, prompts, out, [data], sweep or {}, start_engines, close_engines, repeat)
    return result, events, started


def modes_of(events, mode: str):
    return [(kind, r) for kind, r in events if r.key.startswith(f"{mode}:")]


async def test_every_mode_makes_the_same_calls_and_tokens(prompts, data, tmp_path):
    result, events, started = await run_bench(prompts, data, tmp_path / "b")
    modes = result["modes"]
    assert started == [1] and result["documents"] == DOCS
    airgen = modes["airgen"]
    assert airgen["calls"] == sum(1 for kind, r in events if kind == "end" and ":" not in r.key)
    for name in ("raw", "stage-barrier", "stage-barrier+reloads"):
        m = modes[name]
        assert m["calls"] == airgen["calls"]
        assert m["output_tokens"] == airgen["output_tokens"] == m["recorded_output_tokens"]
        assert m["prompt_tokens"] == airgen["prompt_tokens"]
        for role in ("guidance", "student"):
            assert m["roles"][role]["output_tokens"] == airgen["roles"][role]["output_tokens"]
    # The journal holds every call airgen made; the replay rebuilt all of them through the flow.
    journal_lines = [orjson.loads(x) for x in (tmp_path / "b" / "run" / "journal.jsonl").read_bytes().splitlines()]
    assert sum(1 for e in journal_lines if "k" in e) == airgen["calls"]
    assert airgen["goodput"]["by_outcome"]["records"]["samples"] == DOCS


async def test_stage_barrier_really_waits_and_airgen_does_not(prompts, data, tmp_path):
    result, events, _ = await run_bench(prompts, data, tmp_path / "b")
    barrier = modes_of(events, "barrier")
    batches = result["modes"]["stage-barrier"]["batches"]
    assert sum(b["requests"] for b in batches) == len(barrier) // 2
    position = 0
    for batch in batches:
        chunk = barrier[position:position + 2 * batch["requests"]]
        position += 2 * batch["requests"]
        # Every request of a batch starts before any ends, and all end before the next batch starts.
        assert [kind for kind, _ in chunk] == ["start"] * batch["requests"] + ["end"] * batch["requests"]
        assert {r.stage for _, r in chunk} == {batch["stage"]}
    keys = [(b["stage"], b["n"]) for b in batches]
    assert len(keys) == len(set(keys)) and keys[0] == ("back_translate", 0)
    # airgen: the slow document is still at an early stage while others have moved on.
    live = [(kind, r) for kind, r in events if ":" not in r.key]
    first_d00_end = max(i for i, (kind, r) in enumerate(live) if kind == "end" and r.key == "d00/back_translate/0")
    assert any(r.stage == "answer" for _, r in live[:first_d00_end])


async def test_ratios_and_reloads_come_from_the_measured_numbers(prompts, data, tmp_path):
    result, _, _ = await run_bench(prompts, data, tmp_path / "b")
    modes = result["modes"]
    for name in ("raw", "stage-barrier", "stage-barrier+reloads"):
        assert result["ratios"][f"airgen/{name}"] == pytest.approx(
            modes["airgen"]["output_tokens"] / modes["airgen"]["wall_s"] / (modes[name]["output_tokens"]
                                                                            / modes[name]["wall_s"]))
    barrier, reloads = modes["stage-barrier"], modes["stage-barrier+reloads"]
    assert result["load_s_per_model"] == result["engines_start_s"] >= 0.05  # one engine serves both roles
    assert reloads["loads"] == len(barrier["batches"])
    assert reloads["wall_s"] == pytest.approx(barrier["wall_s"] + reloads["loads"] * result["load_s_per_model"])
    for mode in modes.values():
        assert mode["requests_per_s"] == pytest.approx(mode["calls"] / mode["wall_s"])
        assert 0 < mode["engines"]["guidance+student"]["busy_share"] <= 1.0
    assert "airgen/raw" in bench.table(result)


async def test_each_mode_starts_with_a_cold_prefix_cache_where_the_engine_can_drop_it(prompts, data, tmp_path):
    result, events, _ = await run_bench(prompts, data, tmp_path / "b", engine_class=Resettable)
    # airgen on the fresh engine, a reset, all of raw, a reset, all of the stage-barrier schedule.
    assert mode_runs(events) == ["airgen", "reset", "raw", "reset", "barrier"]
    assert all(m["cold_cache"] for m in result["modes"].values())
    assert "warning" not in bench.table(result)

    result, _, _ = await run_bench(prompts, data, tmp_path / "c")
    assert result["modes"]["airgen"]["cold_cache"] and not result["modes"]["raw"]["cold_cache"]
    warnings = [line for line in bench.table(result).splitlines() if "prefix cache" in line]
    assert [w.split()[1] for w in warnings] == ["raw", "stage-barrier"]


def mode_runs(events) -> list[str]:
    """The modes in the order they ran, with the prefix-cache resets between them."""
    kinds = ["reset" if kind == "reset" else r.key.split(":")[0] if ":" in r.key else "airgen"
             for kind, r in events]
    return [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]


class Drifting(Resettable):
    """A Resettable whose answers grow by a word each time the same call is asked again, so that every airgen round
    records different output tokens."""

    def __init__(self, prompts, events, latency):
        super().__init__(prompts, events, latency)
        self.asked: dict[str, int] = {}

    def respond(self, request: Request) -> str | Completion:
        out = super().respond(request)
        if request.sampling.ignore_eos or request.stage not in ("answer", "respond"):
            return out
        self.asked[request.key] = self.asked.get(request.key, -1) + 1
        return out + " more" * self.asked[request.key]


async def test_repeated_rounds_replay_their_own_calls_and_report_medians(prompts, data, tmp_path):
    result, events, started = await run_bench(prompts, data, tmp_path / "b", engine_class=Drifting, repeat=3)
    assert started == [1]  # one engine start for all rounds
    orders = [r["order"] for r in result["rounds"]]
    assert orders == [["airgen", "raw", "stage-barrier"], ["airgen", "stage-barrier", "raw"],
                      ["airgen", "raw", "stage-barrier"]]
    assert mode_runs(events) == [k for order in orders for name in order
                                 for k in ("reset", {"stage-barrier": "barrier"}.get(name, name))][1:]
    # Every round ran the whole method afresh into its own folder, and its replays made the same calls and tokens.
    tokens = []
    for i, r in enumerate(result["rounds"], 1):
        folder = tmp_path / "b" / ("run" if i == 1 else f"run-{i}")
        journal_calls = [e for e in map(orjson.loads, (folder / "journal.jsonl").read_bytes().splitlines()) if "k" in e]
        airgen = r["modes"]["airgen"]
        assert len(journal_calls) == airgen["calls"] and (folder / "records.jsonl").read_bytes()
        for name in ("raw", "stage-barrier"):
            assert r["modes"][name]["output_tokens"] == airgen["output_tokens"] == sum(e["o"] for e in journal_calls)
            assert r["modes"][name]["calls"] == airgen["calls"]
        assert all(m["cold_cache"] for m in r["modes"].values())
        tokens.append(airgen["output_tokens"])
    assert len(set(tokens)) == 3  # the rounds' recordings differ, so a replay of another round's would not match
    # The rows come from the round with the median airgen/raw; each ratio is the median of the rounds', with range.
    middle = sorted(result["rounds"], key=lambda r: r["ratios"]["airgen/raw"])[1]
    assert result["modes"] == middle["modes"] and result["rounds"][result["median_round"] - 1] == middle
    for name, value in result["ratios"].items():
        per_round = sorted(r["ratios"][name] for r in result["rounds"])
        assert value == per_round[1] and result["ratio_range"][name] == [per_round[0], per_round[2]]
    text = bench.table(result)
    assert "round 2 (airgen, stage-barrier, raw): airgen/raw" in text
    assert f"rows: round {result['median_round']} of 3" in text
    lo, hi = result["ratio_range"]["airgen/raw"]
    assert f"airgen/raw {result['ratios']['airgen/raw']:.2f}x [{lo:.2f}-{hi:.2f}]" in text


async def test_repeat_must_be_positive(prompts, data, tmp_path):
    with pytest.raises(C.ConfigError, match="--repeat"):
        await run_bench(prompts, data, tmp_path / "b", repeat=0)
    assert not (tmp_path / "b").exists()


async def test_an_interrupted_airgen_mode_stops_the_bench(prompts, data, tmp_path):
    calls = []

    def interrupt_at_the_tenth_call(request: Request) -> float:
        calls.append(request)
        if len(calls) == 10:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the run's handler stops the scheduler
        return 0.01

    with pytest.raises(bench.Interrupted):
        await run_bench(prompts, data, tmp_path / "b", latency=interrupt_at_the_tenth_call)
    assert 10 <= len(calls) < 100 and all(":" not in r.key for r in calls)  # no replay mode ran
    assert not (tmp_path / "b" / "bench.json").exists()


async def test_sweep_runs_airgen_per_setting(prompts, data, tmp_path):
    # Calls long enough (10 ms) that waiting on one at a time, not airgen's own handling, sets the pace.
    result, _, _ = await run_bench(prompts, data, tmp_path / "b", {"max_in_flight": [1, 8], "window": [2]},
                                   latency=lambda r: 0.01)
    assert [(p["setting"], p["value"]) for p in result["sweep"]] == [("max_in_flight", 1), ("max_in_flight", 8),
                                                                      ("window", 2)]
    # One sample at a time cannot keep the engine as busy as eight.
    one, eight = result["sweep"][0], result["sweep"][1]
    assert eight["requests_per_s"] > one["requests_per_s"]


def test_command_writes_json_and_png(prompts, data, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    events: list = []
    engine = Recorder(prompts, events, lambda r: 0.0)

    async def start_engines(guidance, student, outage_s=None):
        return {"guidance": engine, "student": engine}

    async def close_engines(engines):
        return None

    monkeypatch.setattr("airgen.runtime.runner.start_engines", start_engines)
    monkeypatch.setattr("airgen.runtime.runner.close_engines", close_engines)
    out = tmp_path / "b"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["bench", str(data), "--out", str(out), "--guidance-url", "http://127.0.0.1:9", "--student-url",
            "http://127.0.0.1:9", "--rounds", "2", "--repeat", "2", "--prometheus", str(port)]
    assert cli.main(args) == 0  # two rounds behind one endpoint (each round used to open its own: Errno 98)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # and it is closed with the bench
    result = orjson.loads((out / "bench.json").read_bytes())
    assert set(result["modes"]) == {"airgen", "raw", "stage-barrier", "stage-barrier+reloads"}
    assert [r["order"][1] for r in result["rounds"]] == ["raw", "stage-barrier"]
    # Two rounds: the low median, a ratio that was measured.
    assert result["ratios"]["airgen/raw"] == min(r["ratios"]["airgen/raw"] for r in result["rounds"])
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(args) == 2  # a used folder is refused, not mixed


@pytest.mark.parametrize("flag", [["--layout", "auto"], ["--ray"], ["--workers", "2"], ["--no-progress"]])
def test_bench_refuses_the_flags_it_does_not_honour(data, tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", str(data), "--out", str(tmp_path / "b"), *flag])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments" in err and flag[0] in err
    assert not (tmp_path / "b").exists()


def test_barrier_order_follows_the_method():
    def req(key: str) -> Request:
        return Request(key, "guidance", key.split("/")[1], (), None)  # type: ignore[arg-type]

    order = ["d/back_translate/0", "d/score/0", "d/refine/0", "d/answer/1", "d/propose/1", "d/answer_with/1",
             "d/check/1", "d/propose/2", "d/dedup/2", "d/answer_with/2", "d/check/2", "d/merge/1", "d/respond/1",
             "d/merge/2", "d/respond/2"]
    keys = [AIR.barrier(req(k)) for k in order]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


class CrabRecorder(Recorder):
    def __init__(self, prompts, events, latency):
        super().__init__(prompts, events, latency)
        self.script = CrabScript()


async def test_the_bench_runs_a_crab_recipe(tmp_path):
    from airgen.crab.recipe import RECIPE as CRAB
    from airgen.crab.steps import STAGES

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(b"".join(orjson.dumps({"id": f"p{i}", "instruction": f"Question {i}?",
                                             "output": f"Answer {i}. It explains the steps and reasons. " * 3})
                               + b"\n" for i in range(10)))
    events: list = []
    engine = CrabRecorder(None, events, lambda r: 0.001)
    asked: list = []

    async def start_engines(guidance, student, outage_s=None):
        asked.append(student)
        return {"guidance": engine}

    async def close_engines(engines):
        return None

    config = C.load(overrides={"recipe": "crab", "run": {"progress": False}})
    result = await bench.bench(config, CRAB.prompts(), tmp_path / "b", [pairs], {}, start_engines, close_engines)
    assert asked == [None] and result["documents"] == 10  # no student engine for a guidance-only recipe
    modes = result["modes"]
    for name in ("raw", "stage-barrier"):
        assert modes[name]["calls"] == modes["airgen"]["calls"]
        assert modes[name]["output_tokens"] == modes["airgen"]["output_tokens"]
    # The authors' schedule: every pair's refinement, then each proposal, then every check, one batch each.
    assert [b["stage"] for b in modes["stage-barrier"]["batches"]] == list(STAGES)
