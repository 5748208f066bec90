"""The scheduler's gain at a real corpus's scale: AIR's calls under five schedules on a modelled engine, the model
first calibrated on the real one.

The engine model:
- continuous batching: with n requests decoding an engine makes T(n) = peak * n / (n + half) output tokens/s,
  shared equally by them (processor sharing); at most `max_seqs` requests are in the engine, the rest wait in order;
- prefill: a request's uncached prompt tokens take prompt / prefill seconds of the engine, one request at a time,
  before it decodes; decoding waits meanwhile (vLLM's chunked prefill mixes the two in each step: the same engine
  time in aggregate);
- time is virtual (an event loop whose clock jumps to its next timer), so 10,000 documents take minutes of CPU;
  the schedules run the code `airgen bench` runs: airgen is `runner.generate` (the scheduler and the flow), the
  others replay the airgen run's recorded calls (`bench.run_raw`, `bench.run_stage_barrier`).

Two engines are modelled:
- `cpu`: the bundled model on this machine's vLLM (the CPU build), its curve and prefill fitted to
  `bench/engine.py`'s measures (--curve, --prefill); one engine serves both roles, as in `airgen bench`. Its calls
  are a real `airgen bench --limit 48` run's (--real DIR): every call answered as that run's journal answered it
  (text, prompt, cached and output tokens), so the flow takes the real run's path. Calibration: at 48 documents its
  airgen/raw and airgen/stage-barrier must land within 0.1 of what that bench measured (DIR/bench.json), or the
  model is not used to extrapolate. At N documents: the 48 copied under new ids (the same calls, N/48 times).
- `node`: `airgen plan`'s layout of a 70B guidance and an 8B student on 8 H200s, each replica at `plan.per_gpu`
  times its GPUs (half its peak at 32 requests, as bench/node.py), prefill at 10x its peak output rate (an
  assumption: prefill is compute-bound), at most 256 requests in an engine (vLLM's max_num_seqs). AIR's defaults
  (5 rounds), the method's scripted answers with every constraint failed (every round, every level); each call's
  output tokens drawn from a lognormal (sigma 0.8) whose mean is its stage's (bench/node.py's TOKENS: the paper's
  Table 4, 4,800 per sample), cut at the step's max_tokens; prompt tokens: the rendered prompt's characters / 4, no
  prefix-cache hit in any schedule (airgen, which keeps a document's calls together, would gain the most from one).

Schedules, the same calls: airgen; stage-barrier (the authors' order, one batch per stage and round); +reloads (one
model load per batch: the CPU engine's measured start, 100 s for the 70B and 30 s for the 8B); raw (every call at
once: the ceiling); per-document (datatrove-style: K documents at once, each its calls one after another in the
method's order; K = 512, airgen's window).

    python bench/schedules.py --real runs/bench48 [--sizes 48,500,2000,10000] [--engines cpu,node]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import math
import shutil
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airgen import config as C  # noqa: E402
from airgen.air.recipe import RECIPE as AIR  # noqa: E402
from airgen.engines import plan  # noqa: E402
from airgen.engines.replicas import Replicas  # noqa: E402
from airgen.method.calls import Completion, Request  # noqa: E402
from airgen.runtime import bench, runner  # noqa: E402
from airgen.store import journal  # noqa: E402
from bench.node import HALF, TOKENS  # noqa: E402

SIGMA = 0.8  # the lognormal's spread of a stage's output lengths
PER_DOCUMENT = 512  # documents at once in the per-document schedule
NODE_LOAD_S = {"guidance": 100.0, "student": 30.0}
NODE_MAX_SEQS = 256
NODE_PREFILL_X = 10.0
Answer = Callable[[Request], tuple[str, str, int, int, int]]  # text, finish, prompt, cached, output tokens


# -- time ---------------------------------------------------------------------------------------------------------

class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to its next timer whenever nothing is ready to run."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def _run_once(self) -> None:
        while self._scheduled and self._scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1
            heapq.heappop(self._scheduled)._scheduled = False
        if not self._ready and self._scheduled and self._scheduled[0]._when > self._now:
            self._now = self._scheduled[0]._when
        super()._run_once()


@contextlib.contextmanager
def virtual_time(loop: VirtualLoop):
    """Every clock airgen's code reads (perf_counter, monotonic) reads the loop's."""
    saved = time.perf_counter, time.monotonic
    time.perf_counter = time.monotonic = loop.time
    try:
        yield
    finally:
        time.perf_counter, time.monotonic = saved


def run_virtual(coroutine) -> Any:
    loop = VirtualLoop()
    try:
        with virtual_time(loop):
            return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# -- the engine -----------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Curve:
    peak: float  # output tokens/s as the batch grows without bound
    half: float  # the batch at which the engine makes half of it

    def rate(self, n: int) -> float:
        return self.peak * n / (n + self.half)

    @staticmethod
    def fit(points: list[tuple[int, float]]) -> "Curve":
        """Least squares of 1/T on 1/n (T = peak n / (n + half) is linear there: 1/T = 1/peak + half/peak / n)."""
        xs, ys = [1 / n for n, _ in points], [1 / t for _, t in points]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        peak = 1 / (my - slope * mx)
        return Curve(peak, slope * peak)


class ModelEngine:
    """One engine under the model (see the module's docstring)."""

    def __init__(self, name: str, curve: Curve, prefill_tok_s: float, max_seqs: int, answer: Answer):
        self.name = self.about = name
        self.curve, self.prefill_tok_s, self.max_seqs, self.answer = curve, prefill_tok_s, max_seqs, answer
        self._made = 0.0  # output tokens each decoding request has made so far: the same for all of them
        self._decoding: list = []  # (tokens made when it is done, seq, future)
        self._prefilling: deque = deque()  # [seconds of prefill left, output tokens, future]
        self._waiting: deque = deque()
        self._seq = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    async def generate(self, request: Request) -> Completion:
        text, finish, prompt, cached, output = self.answer(request)
        sampling = request.sampling
        output = sampling.max_tokens if sampling.ignore_eos else min(output, sampling.max_tokens)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._advance(loop.time())
        job = [(prompt - cached) / self.prefill_tok_s, output, done]
        if len(self._prefilling) + len(self._decoding) < self.max_seqs:
            self._prefilling.append(job)
        else:
            self._waiting.append(job)
        self._reschedule(loop)
        await done
        return Completion(text, finish, prompt, output, cached, self.name)

    def _advance(self, now: float) -> None:
        dt, self._last = now - self._last, now
        while dt > 1e-12:
            if self._prefilling:
                head = self._prefilling[0]
                if head[0] > dt:
                    head[0] -= dt
                    return
                dt -= head[0]
                self._prefilling.popleft()
                self._decode(head[1], head[2])
            elif self._decoding:
                per = self.curve.rate(len(self._decoding)) / len(self._decoding)
                step = (self._decoding[0][0] - self._made) / per
                if step > dt:
                    self._made += dt * per
                    return
                dt -= step
                self._made = self._decoding[0][0]
                self._finish_due()
            else:
                return

    def _decode(self, output: int, done: asyncio.Future) -> None:
        self._seq += 1
        heapq.heappush(self._decoding, (self._made + output, self._seq, done))
        self._finish_due()

    def _finish_due(self) -> None:
        while self._decoding and self._decoding[0][0] <= self._made + 1e-9:
            _, _, done = heapq.heappop(self._decoding)
            if not done.done():
                done.set_result(None)
        while self._waiting and len(self._prefilling) + len(self._decoding) < self.max_seqs:
            self._prefilling.append(self._waiting.popleft())

    def _reschedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._prefilling:
            wait = self._prefilling[0][0]
        elif self._decoding:
            per = self.curve.rate(len(self._decoding)) / len(self._decoding)
            wait = (self._decoding[0][0] - self._made) / per
        else:
            return
        self._timer = loop.call_at(loop.time() + max(wait, 0.0), self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        self._advance(loop.time())
        self._reschedule(loop)

    async def close(self) -> None:
        return None


# -- calls and their lengths ----------------------------------------------------------------------------------------

COPY = "~"  # a copied document's id: ORIGINAL~K


def from_journal(real: Path) -> Answer:
    """Every call answered as the real run's journal answered it; a copy's calls as its original's."""
    known = journal.load_all(real / "run" / "journal.jsonl")

    def answer(request: Request) -> tuple[str, str, int, int, int]:
        unit, stage, n = request.key.rsplit("/", 2)
        c = known[f"{unit.split(COPY)[0]}/{stage}/{n}"]
        return c.text, c.finish_reason, c.prompt_tokens, c.cached_tokens, c.output_tokens

    return answer


def drawn(prompts) -> Answer:
    """The method's scripted answers (every constraint failed), each with output tokens drawn from its stage's
    lognormal (mean: TOKENS), the same for a call key in every schedule."""
    from airgen.air.script import MethodScript

    script = MethodScript(prompts, fail=1.0)
    mu = {stage: math.log(mean) - SIGMA ** 2 / 2 for stage, mean in TOKENS.items()}

    def answer(request: Request) -> tuple[str, str, int, int, int]:
        u = int.from_bytes(hashlib.blake2b(request.key.encode(), digest_size=8).digest(), "big") / 2 ** 64
        z = _normal_quantile(min(max(u, 1e-12), 1 - 1e-12))
        tokens = max(1, round(math.exp(mu[request.stage] + SIGMA * z)))
        cut = tokens > request.sampling.max_tokens
        prompt = sum(len(m["content"]) for m in request.messages) // 4
        return script(request), "length" if cut else "stop", prompt, 0, min(tokens, request.sampling.max_tokens)

    return answer


def _normal_quantile(p: float) -> float:
    """The standard normal's quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155705379e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    if p < 0.02425:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / \
            ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1)
    if p > 1 - 0.02425:
        return -_normal_quantile(1 - p)
    q = p - 0.5
    r = q * q
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / \
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)


# -- the schedules --------------------------------------------------------------------------------------------------

async def per_document(engines, samples: list[list[bench.Call]], k: int) -> dict[str, Any]:
    """datatrove-style: k documents at once, each its calls one after another in the method's order."""
    metrics = bench.Metrics()
    meters = bench.metered(engines, metrics)
    gate = asyncio.Semaphore(k)

    async def rollout(sample: list[bench.Call]) -> None:
        async with gate:
            for r, c in sample:
                await meters[r.role].generate(bench.replay_request(r, c, "doc"))

    start = time.perf_counter()
    await asyncio.gather(*(rollout(s) for s in samples))
    return bench.summary(metrics, time.perf_counter() - start)


def reload_s(barrier: dict[str, Any], load: dict[str, float]) -> float:
    """The mean load per batch, each batch loading its role's model."""
    return sum(load[b["role"]] for b in barrier["batches"]) / len(barrier["batches"])


async def schedules(config: C.Config, folder: Path, docs: Path, make_engines: Callable[[], dict],
                    load: dict[str, float]) -> dict[str, Any]:
    """The five schedules on fresh engines each, the same calls (the airgen run's, recorded)."""
    prompts = AIR.prompts()
    out = folder / "run"
    inputs = runner.prepare(out, [docs], config, prompts)
    modes = {"airgen": await bench.run_airgen(config, prompts, out, inputs, make_engines())}
    samples = bench.recorded_calls(config, prompts, out, inputs)
    modes["stage-barrier"] = await bench.run_stage_barrier(make_engines(), samples, AIR.barrier)
    modes["stage-barrier+reloads"] = bench.with_reloads(modes["stage-barrier"],
                                                          reload_s(modes["stage-barrier"], load))
    modes["raw"] = await bench.run_raw(make_engines(), samples)
    modes["per-document"] = await per_document(make_engines(), samples, PER_DOCUMENT)
    return {"documents": len(samples), "calls": modes["raw"]["calls"], "modes": modes,
            "ratios": bench.ratios(modes)}


# -- the engines ------------------------------------------------------------------------------------------------------

def cpu_engines(curve: Curve, prefill: float, max_seqs: int, answer: Answer) -> Callable[[], dict]:
    def make() -> dict:
        engine = ModelEngine("cpu", curve, prefill, max_seqs, answer)
        return {"guidance": engine, "student": engine}
    return make


def node_engines(answer: Answer) -> tuple[Callable[[], dict], str]:
    models = {"guidance": plan.Model("70B", 70.0), "student": plan.Model("8B", 8.0)}
    p = plan.plan(8, 141.0, models["guidance"], models["student"], AIR.token_mix)

    def make() -> dict:
        engines = {}
        for role, r in p.roles.items():
            peak = plan.per_gpu(models[role]) * r.tensor_parallel_size
            replicas = [ModelEngine(f"{role}{i}", Curve(peak, HALF), NODE_PREFILL_X * peak, NODE_MAX_SEQS, answer)
                        for i in range(len(r.devices) // r.tensor_parallel_size)]
            engines[role] = replicas[0] if len(replicas) == 1 else Replicas(replicas)
        return engines

    about = "; ".join(f"{role} {models[role].name}: {len(r.devices) // r.tensor_parallel_size} x TP"
                      f"{r.tensor_parallel_size} at {plan.per_gpu(models[role]) * r.tensor_parallel_size:,.0f} tok/s"
                      for role, r in p.roles.items())
    return make, about


# -- inputs ------------------------------------------------------------------------------------------------------------

def copies(real_docs: list[dict], n: int, path: Path) -> Path:
    """n documents: the real run's, then copies of them under new ids (ORIGINAL~K)."""
    with open(path, "wb") as f:
        for i in range(n):
            doc = real_docs[i % len(real_docs)]
            k = i // len(real_docs)
            f.write(orjson.dumps({"id": doc["id"] if k == 0 else f"{doc['id']}{COPY}{k}", "text": doc["text"]})
                    + b"\n")
    return path


def real_documents(real: Path) -> list[dict]:
    """The documents the real bench's airgen run asked about (ids and texts), in the order it read them."""
    info = orjson.loads((real / "run" / "run.json").read_bytes())
    asked = {key.rsplit("/", 2)[0] for key in journal.load_all(real / "run" / "journal.jsonl")}
    docs = [d for d in AIR.read([Path(p) for p in info["inputs"]], None) if getattr(d, "id", None) in asked]
    return [{"id": d.id, "text": d.text} for d in docs]


# -- the table ----------------------------------------------------------------------------------------------------------

def rows(name: str, size: int, result: dict[str, Any]) -> list[str]:
    out = []
    for mode, m in result["modes"].items():
        engines = "  ".join(f"{e}: busy {t['busy_share']:.0%} batch {t['mean_outstanding']:.0f}"
                            for e, t in m["engines"].items())
        hours = m["wall_s"] * 10_000 / size / 3600
        ratio = "" if mode == "airgen" else f"{result['ratios'].get(f'airgen/{mode}', float('nan')):.2f}x"
        out.append(f"{name:<5} {size:>6} {mode:<22} {m['output_tok_s']:>10,.1f} {ratio:>8} {hours:>9,.1f}  {engines}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, required=True, help="a folder `airgen bench --limit 48` wrote (its run/ and "
                                                            "bench.json)")
    p.add_argument("--curve", default="1:10.4,8:62.1,128:159.3",
                   help="the CPU engine's measured output tok/s by requests in flight (bench/engine.py)")
    p.add_argument("--prefill", type=float, default=1500.0,
                   help="the CPU engine's measured prompt tok/s (bench/engine.py --prompt-words 1500 --tokens 1)")
    p.add_argument("--max-seqs", type=int, default=256, help="the CPU engine's max_num_seqs")
    p.add_argument("--sizes", default="48,500,2000,10000")
    p.add_argument("--engines", default="cpu,node")
    args = p.parse_args()
    curve = Curve.fit([(int(n), float(t)) for n, t in (pt.split(":") for pt in args.curve.split(","))])
    measured = orjson.loads((args.real / "bench.json").read_bytes())
    settings = orjson.loads((args.real / "run" / "run.json").read_bytes())["settings"]
    real_config = C.load(overrides={"flow": settings["flow"], "seed": settings["seed"],
                                    "run": {"progress": False, "metrics_every_s": 600.0}})
    sizes = [int(s) for s in args.sizes.split(",")]
    scratch = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        real_docs = real_documents(args.real)
        cpu = cpu_engines(curve, args.prefill, args.max_seqs, from_journal(args.real))
        load = {"guidance": measured["load_s_per_model"], "student": measured["load_s_per_model"]}
        print(f"cpu engine: T(n) = {curve.peak:,.1f} n / (n + {curve.half:.1f}) output tok/s (fitted on "
              f"{args.curve}), prefill {args.prefill:,.0f} prompt tok/s, max_seqs {args.max_seqs}")
        calib = run_virtual(schedules(real_config, scratch / "calibration", copies(
            real_docs, len(real_docs), scratch / "real.jsonl"), cpu, load))
        lines = []
        ok = True
        for ratio in ("airgen/raw", "airgen/stage-barrier"):
            model, real = calib["ratios"][ratio], measured["ratios"][ratio]
            ok = ok and abs(model - real) <= 0.1
            lines.append(f"{ratio} model {model:.2f} vs measured {real:.2f} (diff {model - real:+.2f})")
        print(f"calibration, {calib['documents']} documents, the real run's {calib['calls']} calls: "
              + "; ".join(lines) + ("; within 0.1" if ok else "; NOT within 0.1: the model is not used"))
        if not ok:
            sys.exit(1)
        head = (f"{'model':<5} {'docs':>6} {'schedule':<22} {'out tok/s':>10} {'airgen/x':>8} {'h/10k':>9}  "
                "engines: busy share, mean batch")
        table = [head]
        for name in args.engines.split(","):
            if name == "cpu":
                config, make, about, engine_load = real_config, cpu, "calibrated CPU engine, the real run's calls", load
            else:
                config = C.load(overrides={"flow": {"rounds": 5},
                                           "run": {"progress": False, "metrics_every_s": 600.0}})
                make, about = node_engines(drawn(AIR.prompts()))
                engine_load = NODE_LOAD_S
            print(f"{name}: {about}", flush=True)
            for size in sizes:
                started = time.time()
                folder = scratch / f"{name}-{size}"
                docs = copies(real_docs, size, scratch / f"docs-{name}-{size}.jsonl")
                result = run_virtual(schedules(config, folder, docs, make, engine_load))
                table += rows(name, size, result)
                print("\n".join(rows(name, size, result)) + f"   ({time.time() - started:,.0f} s to model)",
                      flush=True)
                shutil.rmtree(folder, ignore_errors=True)
        print("\n".join(table))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
