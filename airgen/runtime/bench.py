"""`airgen bench`: the same documents three ways on the same engines, to see where the engines' time goes.

1. airgen: the method as `airgen run` runs it (scheduler, no stage barriers), into DIR/run.
2. raw: every request that run made, rebuilt by replaying its journal through the pure flow, submitted all at once
   with the recorded output lengths (ignore_eos, no decode-time constraints): the engines' ceiling on this token mix.
3. stage-barrier: the authors' schedule on the same recorded requests: every sample finishes a stage before any
   starts the next, one batch per (stage, round), in the method's order (initial stages, rounds, levels). Reported
   without reloads and with one model load per batch, as the authors' per-stage scripts do (the load time is the
   engines' start time measured once, divided by the number of engines).

Every mode is measured by the same counters (`Metrics`), so tokens, busy share and cache hits compare directly.
With `repeat` > 1 the bench runs that many rounds, so that drift on a shared machine shows as a range instead of
landing on one mode: each round runs airgen afresh (DIR/run, DIR/run-2, ...) and replays that round's own calls,
raw and stage-barrier in alternating order, so every ratio still compares the same requests and tokens. The table
shows the round with the median airgen/raw, each round's ratios, and each ratio's median over the rounds with its
range.
Writes DIR/bench.json and DIR/bench.png and prints one table.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import statistics
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson

from airgen.store import journal

from airgen.method import recipes

from airgen.runtime import runner
from airgen.method.calls import Completion, Request, Role
from airgen.config import Config, ConfigError
from airgen.method.rows import Rejection
from airgen.engines import Engine
from airgen.store.files import atomic_binary, atomic_write
from airgen.runtime.metrics import Metrics
from airgen.runtime.prometheus import Endpoint
from airgen.method.prompts import PromptSet
from airgen.method.flow import replay

BENCH_JSON = "bench.json"
BENCH_PNG = "bench.png"

Call = tuple[Request, Completion]


# -- rebuilding the requests of a finished run ---------------------------------------------------------------------

def recorded_calls(config: Config, prompts: PromptSet, out: Path, inputs: list[Path]) -> list[list[Call]]:
    """Each sample's (request, completion) pairs in the stage-barrier order, rebuilt by replaying the run's journal
    through the flow."""
    done = journal.load_all(out / runner.JOURNAL)
    recipe = recipes.of(config)
    flow = recipe.flow(config.settings, prompts, config.seed)
    samples = []
    for doc in recipe.read(inputs, config.run.limit):
        if isinstance(doc, Rejection):
            continue
        sample, calls = flow.sample(doc), []

        def answer(request: Request) -> Completion | None:
            completion = done.get(request.key)
            if completion is not None:
                calls.append((request, completion))
            return completion

        replay(flow, sample, flow.start(sample), answer)
        if calls:
            samples.append(sorted(calls, key=lambda call: recipe.barrier(call[0])))
    return samples


def replay_request(request: Request, completion: Completion, mode: str) -> Request:
    """The same prompt and sampling, asked for exactly the recorded number of output tokens (no decode-time
    constraint: a forced length could not meet one). Its key names the mode in its unit ("raw:DOC/stage/n"), so
    that it stays a call key and an engine never mistakes it for the live call."""
    return dataclasses.replace(request, key=f"{mode}:{request.key}", sampling=dataclasses.replace(
        request.sampling, max_tokens=max(completion.output_tokens, 1), regex=None, choice=None, schema=None,
        ignore_eos=True))


# -- measuring ---------------------------------------------------------------------------------------------------

class Metered:
    """An engine seen through the same counters the scheduler keeps."""

    def __init__(self, engine: Engine, name: str, metrics: Metrics):
        self.engine, self.name, self.metrics = engine, name, metrics

    async def generate(self, request: Request) -> Completion:
        now = time.perf_counter()
        self.metrics.call_started(request, now)
        self.metrics.engine_load(self.name, 1, True, now)
        completion = None
        try:
            completion = await self.engine.generate(request)
            return completion
        finally:
            now = time.perf_counter()
            self.metrics.engine_load(self.name, -1, True, now)
            self.metrics.call_finished(request.unit, request, completion, now)


def engine_names(engines: dict[Role, Engine]) -> dict[Role, str]:
    """Roles served by one engine share its name, e.g. "guidance+student" (as the scheduler names its lanes)."""
    by_id: dict[int, list[str]] = {}
    for role, engine in engines.items():
        by_id.setdefault(id(engine), []).append(role)
    return {role: "+".join(by_id[id(engine)]) for role, engine in engines.items()}


def metered(engines: dict[Role, Engine], metrics: Metrics) -> dict[Role, Metered]:
    names = engine_names(engines)
    for name in set(names.values()):
        metrics.engine_load(name, 0, False)
    return {role: Metered(engine, names[role], metrics) for role, engine in engines.items()}


def summary(metrics: Metrics, wall_s: float) -> dict[str, Any]:
    """One mode's figures, computed from its counters."""
    metrics.settle(False)
    roles = {}
    for role, c in sorted(metrics.roles.items()):
        roles[role] = {"calls": c.calls, "prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
                       "cached_tokens": c.cached_tokens, "prompt_tok_s": c.prompt_tokens / wall_s,
                       "output_tok_s": c.output_tokens / wall_s,
                       "cache_hit": c.cached_tokens / c.prompt_tokens if c.prompt_tokens else None}
    calls = sum(r["calls"] for r in roles.values())
    output = sum(r["output_tokens"] for r in roles.values())
    return {"wall_s": wall_s, "calls": calls, "requests_per_s": calls / wall_s,
            "prompt_tokens": sum(r["prompt_tokens"] for r in roles.values()), "output_tokens": output,
            "output_tok_s": output / wall_s, "roles": roles,
            "engines": {name: {"busy_share": t.busy_s / wall_s, "busy_s": t.busy_s,
                               "mean_outstanding": t.load_s / t.busy_s if t.busy_s else 0.0,
                               "idle_s": dict(t.idle_s)} for name, t in metrics.engines.items()}}


async def _timed(work: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await work()
    return time.perf_counter() - start, result


async def run_raw(engines: dict[Role, Engine], samples: list[list[Call]]) -> dict[str, Any]:
    metrics = Metrics()
    meters = metered(engines, metrics)
    calls = [call for sample in samples for call in sample]
    wall, _ = await _timed(lambda: asyncio.gather(
        *(meters[r.role].generate(replay_request(r, c, "raw")) for r, c in calls)))
    return {**summary(metrics, wall), "recorded_output_tokens": recorded_tokens(samples)}


async def run_stage_barrier(engines: dict[Role, Engine], samples: list[list[Call]],
                            barrier_key: Callable[[Request], tuple[int, ...]]) -> dict[str, Any]:
    """One batch per `barrier_key` (`Recipe.barrier`; AIR: stage and round) over all samples, in its order; a batch
    starts only when the one before it has finished. A batch's `n` is the round or level its calls share, else
    None (CRAB's checks: one per constraint)."""
    metrics = Metrics()
    meters = metered(engines, metrics)
    pending = [list(reversed(sample)) for sample in samples]  # each sample's next call at the end
    batches: list[dict[str, Any]] = []

    async def all_batches() -> None:
        while any(pending):
            key = min(barrier_key(calls[-1][0]) for calls in pending if calls)
            batch = []  # every sample's calls of this batch (CRAB: all of a pair's checks)
            for calls in pending:
                while calls and barrier_key(calls[-1][0]) == key:
                    batch.append(calls.pop())
            first = batch[0][0]
            started = time.perf_counter()
            await asyncio.gather(*(meters[r.role].generate(replay_request(r, c, "barrier")) for r, c in batch))
            ns = {r.n for r, _ in batch}
            batches.append({"stage": first.stage, "n": ns.pop() if len(ns) == 1 else None, "role": first.role,
                            "requests": len(batch),
                            "start_s": started, "end_s": time.perf_counter()})

    start = time.perf_counter()
    wall, _ = await _timed(all_batches)
    for b in batches:
        b["start_s"], b["end_s"] = b["start_s"] - start, b["end_s"] - start
    return {**summary(metrics, wall), "recorded_output_tokens": recorded_tokens(samples), "batches": batches}


def recorded_tokens(samples: list[list[Call]]) -> int:
    """What a replay must generate; an engine that ignores `ignore_eos` generates less (the table says so)."""
    return sum(max(c.output_tokens, 1) for sample in samples for _, c in sample)


def with_reloads(barrier: dict[str, Any], load_s: float) -> dict[str, Any]:
    """The stage-barrier figures plus one model load per batch (the authors' scripts load a model per stage)."""
    loads = len(barrier["batches"])
    wall = barrier["wall_s"] + loads * load_s
    roles = {role: {**r, "prompt_tok_s": r["prompt_tokens"] / wall, "output_tok_s": r["output_tokens"] / wall}
             for role, r in barrier["roles"].items()}
    return {**{k: v for k, v in barrier.items() if k != "batches"}, "wall_s": wall, "roles": roles,
            "requests_per_s": barrier["calls"] / wall, "output_tok_s": barrier["output_tokens"] / wall,
            "loads": loads, "load_s": load_s,
            "engines": {name: {**e, "busy_share": e["busy_s"] / wall} for name, e in barrier["engines"].items()}}


def ratios(modes: dict[str, dict[str, Any]]) -> dict[str, float]:
    """airgen's output tokens/s over each other mode's, from the measured figures."""
    ours = modes["airgen"]["output_tok_s"]
    return {f"airgen/{name}": ours / m["output_tok_s"] for name, m in modes.items()
            if name != "airgen" and m["output_tok_s"] > 0}


# -- the command ----------------------------------------------------------------------------------------------------

class Interrupted(Exception):
    """Ctrl-C or SIGTERM during the airgen mode: the later modes would measure a partial run, so the bench stops."""


async def run_airgen(config: Config, prompts: PromptSet, out: Path, inputs: list[Path],
                     engines: dict[Role, Engine], endpoint: Endpoint | None = None) -> dict[str, Any]:
    runner.settle_models(out, runner.models(engines))
    wall, scheduler = await _timed(lambda: runner.generate(config, out, inputs, prompts, engines, endpoint=endpoint))
    if scheduler.interrupted:
        raise Interrupted(f"interrupted during the airgen mode ({out})")
    return {**summary(scheduler.metrics, wall), "goodput": scheduler.metrics.goodput(),
            "handling_us_per_call": 1e6 * scheduler.metrics.handling_s / max(scheduler.metrics.handled, 1)}


async def _reset_caches(engines: dict[Role, Engine]) -> bool:
    """Drop every engine's prefix cache so that a mode does not hit the prompts of the one before; False where an
    engine cannot (the table then warns that the later modes ran warm)."""
    cold = True
    for engine in {id(e): e for e in engines.values()}.values():
        reset = getattr(engine, "reset_prefix_cache", None)
        cold = bool(reset is not None and await reset()) and cold
    return cold


MODES = ("airgen", "raw", "stage-barrier")


def replay_order(i: int) -> tuple[str, ...]:
    """Round i's order of the two replays, alternated so that neither always runs right after airgen."""
    return ("raw", "stage-barrier") if i % 2 == 0 else ("stage-barrier", "raw")


async def bench(config: Config, prompts: PromptSet, out: Path, inputs: list[Path], sweep: dict[str, list[int]],
                start_engines: Callable, close_engines: Callable, repeat: int = 1) -> dict[str, Any]:
    if repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {repeat}")
    run_dir = out / "run"
    if run_dir.exists():
        raise ConfigError(f"{run_dir} exists: give airgen bench a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    inputs = runner.prepare(run_dir, inputs, config, prompts)
    start = time.perf_counter()
    recipe = recipes.of(config)
    engines = await start_engines(*config.models(), outage_s=config.run.outage_s)
    start_s = time.perf_counter() - start
    load_s = start_s / len({id(e) for e in engines.values()})
    replays = {"raw": run_raw, "stage-barrier": functools.partial(run_stage_barrier, barrier_key=recipe.barrier)}
    rounds: list[dict[str, Any]] = []
    # One endpoint for the whole bench: it shows each airgen run in turn.
    endpoint = Endpoint(config.run.prometheus_port) if config.run.prometheus_port is not None else None
    try:
        for i in range(repeat):
            airgen_dir = run_dir if i == 0 else out / f"run-{i + 1}"
            if i:
                runner.prepare(airgen_dir, inputs, config, prompts)
            cold = await _reset_caches(engines) if i else True  # the first round starts on fresh engines
            modes = {"airgen": {**await run_airgen(config, prompts, airgen_dir, inputs, engines, endpoint),
                                "cold_cache": cold}}
            samples = recorded_calls(config, prompts, airgen_dir, inputs)
            for name in replay_order(i):
                cold = await _reset_caches(engines)
                modes[name] = {**await replays[name](engines, samples), "cold_cache": cold}
            modes = {name: modes[name] for name in MODES}
            modes["stage-barrier+reloads"] = with_reloads(modes["stage-barrier"], load_s)
            rounds.append({"order": ["airgen", *replay_order(i)], "modes": modes, "ratios": ratios(modes)})
        points = await run_sweep(config, prompts, out, inputs, engines, sweep, endpoint)
    finally:
        if endpoint is not None:
            endpoint.close()
        await close_engines(engines)
    return {"engines_start_s": start_s, "load_s_per_model": load_s,
            "engines": {role: engine.name for role, engine in engines.items()},
            "documents": len(samples), **medians(rounds), "rounds": rounds, "sweep": points}


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median airgen/raw stands for the bench, so that the table's rows all come from one set of
    requests; each ratio is its median over the rounds, with its range. Low medians, so that with an even number of
    rounds every figure is still one that was measured."""
    ranked = sorted(range(len(rounds)), key=lambda i: rounds[i]["ratios"].get("airgen/raw", 0.0))
    middle = ranked[(len(ranked) - 1) // 2]
    by_ratio = {name: [r["ratios"][name] for r in rounds] for name in rounds[0]["ratios"]}
    return {"median_round": middle + 1, "modes": rounds[middle]["modes"],
            "ratios": {name: statistics.median_low(v) for name, v in by_ratio.items()},
            "ratio_range": {name: [min(v), max(v)] for name, v in by_ratio.items()}}


async def run_sweep(config: Config, prompts: PromptSet, out: Path, inputs: list[Path], engines: dict[Role, Engine],
                    sweep: dict[str, list[int]], endpoint: Endpoint | None = None) -> list[dict[str, Any]]:
    """airgen again with one setting changed at a time: the in-flight cap, then both engines' windows."""
    points = []
    for setting, values in sweep.items():
        for value in values:
            if setting == "max_in_flight":
                changed = dataclasses.replace(config, run=dataclasses.replace(config.run, max_in_flight=value))
            else:
                changed = dataclasses.replace(config, guidance=dataclasses.replace(config.guidance, window=value),
                                              student=dataclasses.replace(config.student, window=value))
            point_dir = out / f"sweep-{setting}-{value}"
            runner.prepare(point_dir, inputs, changed, prompts)
            await _reset_caches(engines)
            result = await run_airgen(changed, prompts, point_dir, inputs, engines, endpoint)
            points.append({"setting": setting, "value": value, "output_tok_s": result["output_tok_s"],
                           "requests_per_s": result["requests_per_s"], "wall_s": result["wall_s"]})
    return points


def table(result: dict[str, Any]) -> str:
    modes = result["modes"]
    roles = sorted({role for m in modes.values() for role in m["roles"]})
    head = f"{'mode':<22} {'wall s':>8} {'req/s':>7}"
    for role in roles:
        head += f" {role + ' p/o tok/s':>24}"
    head += f" {'busy':>11} {'in flight':>10} {'cache hit':>10}"
    lines = [head]
    for name, m in modes.items():
        row = f"{name:<22} {m['wall_s']:>8.1f} {m['requests_per_s']:>7.2f}"
        for role in roles:
            r = m["roles"].get(role)
            tps = f"{r['prompt_tok_s']:,.0f}/{r['output_tok_s']:,.1f}" if r else "-"
            row += f" {tps:>24}"
        busy = "/".join(f"{e['busy_share']:.0%}" for e in m["engines"].values())
        outstanding = "/".join(f"{e['mean_outstanding']:.1f}" for e in m["engines"].values())
        prompt = sum(r["prompt_tokens"] for r in m["roles"].values())
        cached = sum(r["cached_tokens"] for r in m["roles"].values())
        hit = f"{cached / prompt:.0%}" if prompt else "-"
        row += f" {busy:>11} {outstanding:>10} {hit:>10}"
        lines.append(row)
    lines.append("(in flight: requests outstanding at each engine, averaged over its busy time)")
    ours, raw = _mean_outstanding(modes["airgen"]), _mean_outstanding(modes.get("raw", {}))
    if raw and ours < raw / 2 and result["ratios"].get("airgen/raw", 1.0) < 1.0:
        lines.append(f"note: airgen kept {ours:.1f} requests in flight against raw's {raw:.1f}: a sample has only a "
                     f"few calls in flight at once, so with this few documents the engine batch stays small; "
                     f"--limit N with N above the engine's batch size measures the scheduler, not the corpus size")
    if "loads" in modes.get("stage-barrier+reloads", {}):
        reload = modes["stage-barrier+reloads"]
        lines.append(f"(+reloads: {reload['loads']} batches x {reload['load_s']:.1f}s, one model load per stage batch; "
                     f"load time = engines' start time measured once / engines)")
    rounds = result["rounds"]
    if len(rounds) > 1:
        lines.append(f"(rows: round {result['median_round']} of {len(rounds)}, the one with the median airgen/raw; "
                     f"ratios: each one's median over the rounds, its range in brackets)")
        for i, r in enumerate(rounds, 1):
            lines.append(f"round {i} ({', '.join(r['order'])}): " +
                         "  ".join(f"{name} {value:.2f}x" for name, value in r["ratios"].items()))
    spread = {name: f" [{lo:.2f}-{hi:.2f}]" if len(rounds) > 1 else ""
              for name, (lo, hi) in result["ratio_range"].items()}
    lines.append("  ".join(f"{name} {value:.2f}x{spread[name]}" for name, value in result["ratios"].items()) +
                 "   (output tokens/s)")
    for name, m in modes.items():
        if not m.get("cold_cache", True) and "loads" not in m:
            lines.append(f"warning: {name} started with the prefix cache of the modes before it (the engine could "
                         f"not reset it): its cache hits and tokens/s are flattered")
        if "recorded_output_tokens" in m and m["output_tokens"] != m["recorded_output_tokens"]:
            lines.append(f"warning: {name} generated {m['output_tokens']} output tokens, the run recorded "
                         f"{m['recorded_output_tokens']}: the engine did not honour ignore_eos, ratios are off")
    for p in result["sweep"]:
        lines.append(f"sweep {p['setting']}={p['value']}: {p['output_tok_s']:,.1f} output tok/s, "
                     f"{p['requests_per_s']:.2f} req/s")
    return "\n".join(lines)


def _mean_outstanding(mode: dict[str, Any]) -> float:
    return sum(e["mean_outstanding"] for e in mode.get("engines", {}).values())


def plot(result: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError('bench.png needs matplotlib: pip install "airgen[plots]"') from None
    settings = sorted({p["setting"] for p in result["sweep"]})
    fig, axes = plt.subplots(1, 1 + len(settings), figsize=(5 * (1 + len(settings)), 4), squeeze=False)
    ax = axes[0][0]
    names = list(result["modes"])
    shown = [result["modes"][n]["output_tok_s"] for n in names]  # the median round's
    spread = [[r["modes"][n]["output_tok_s"] for r in result["rounds"]] for n in names]
    ax.bar(names, shown, color="tab:blue", yerr=[[m - min(v) for m, v in zip(shown, spread)],
                                                [max(v) - m for m, v in zip(shown, spread)]], capsize=4)
    ax.set_ylabel("output tokens/s")
    rounds = len(result["rounds"])
    ax.set_title("same requests, three schedules" + (
        f"\nround {result['median_round']} (median airgen/raw), range of {rounds} rounds" if rounds > 1 else ""))
    ax.tick_params(axis="x", labelrotation=20)
    for ax, setting in zip(axes[0][1:], settings):
        points = [p for p in result["sweep"] if p["setting"] == setting]
        ax.plot([p["value"] for p in points], [p["output_tok_s"] for p in points], marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(setting)
        ax.set_ylabel("output tokens/s")
        ax.set_title(f"airgen vs {setting}")
    fig.tight_layout()
    with atomic_binary(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def write(result: dict[str, Any], out: Path) -> str:
    """DIR/bench.json and DIR/bench.png; returns the table."""
    atomic_write(out / BENCH_JSON, orjson.dumps(result, option=orjson.OPT_INDENT_2))
    plot(result, out / BENCH_PNG)
    return f"{table(result)}\n{out / BENCH_JSON}, {out / BENCH_PNG}"
