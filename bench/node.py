"""The AIR flow on a modelled 8-GPU node: today's layout of two in-process models against `airgen plan`'s, side by
side in one run: records/s, calls/s, output tokens/s per role, and each GPU's idle share.

Every engine (a replica) answers with the method's well-formed text (`MethodScript`) after the time a batching GPU
engine would take: with b requests running, it makes `peak * b / (b + half)` output tokens/s, shared by them. A
replica's peak is its GPUs' (`plan.per_gpu`: the published figures it is fitted on are named there; for an H200 and
a 70B/8B pair, about 2,060 and 6,290 output tok/s per GPU), times the share of each GPU it has: an engine on a GPU
another engine also uses gets half of it, and a tensor-parallel replica runs at the pace of its most shared GPU.
Each call makes the output tokens of its stage (`TOKENS`, chosen so that a sample through 5 rounds makes the
paper's 4,800: 40% the student's). Time runs `--speed` times faster than the node's; figures are in node seconds.

Left out, as in the planner: prefill, KV-cache limits on the batch, TP's communication cost.

    python bench/node.py [--docs 200] [--gpus 8] [--memory 141] [--guidance-params 70] [--student-params 8]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airgen import config as C  # noqa: E402

from airgen.store import journal

from airgen.engines import plan

from airgen.runtime import runner

from airgen.store import sink
from airgen.air.recipe import RECIPE as AIR  # noqa: E402
from airgen.air.script import MethodScript  # noqa: E402
from airgen.method.calls import Completion, Request  # noqa: E402
from airgen.engines.replicas import Replicas  # noqa: E402
from airgen.runtime.metrics import Metrics  # noqa: E402
from airgen.runtime.scheduler import Scheduler  # noqa: E402

# Output tokens of one call, by stage: a sample through 5 rounds makes about 4,800 (the paper's Table 4), 1,920 of
# them the student's (an answer a round, and round 1's).
TOKENS = {"back_translate": 25, "score": 60, "refine": 350, "reference": 280, "answer": 320, "propose": 100,
          "dedup": 15, "answer_with": 320, "check": 25, "merge": 80, "respond": 280}
HALF = 32.0  # the batch at which an engine makes half its peak


class Clock:
    """Node time: real time times `speed`, and each GPU's busy time (any engine on it with a call running)."""

    def __init__(self, speed: float, gpus: int):
        self.speed, self.start = speed, time.perf_counter()
        self.running = [0] * gpus
        self.busy = [0.0] * gpus
        self._since = [0.0] * gpus

    def now(self) -> float:
        return (time.perf_counter() - self.start) * self.speed

    def change(self, gpus: tuple[int, ...], by: int) -> None:
        t = self.now()
        for g in gpus:
            if self.running[g] and by < 0 and self.running[g] + by == 0:
                self.busy[g] += t - self._since[g]
            if not self.running[g] and by > 0:
                self._since[g] = t
            self.running[g] += by


class ModelledEngine:
    def __init__(self, name: str, gpus: tuple[int, ...], peak: float, clock: Clock):
        self.name, self.about, self.gpus, self.peak, self.clock = name, name, gpus, peak, clock
        self.running = 0
        self.script = MethodScript(AIR.prompts(), fail=1.0)

    async def generate(self, request: Request) -> Completion:
        tokens = TOKENS[request.stage]
        self.running += 1
        self.clock.change(self.gpus, +1)
        try:
            per_sequence = self.peak / (self.running + HALF)  # peak * b / (b + half), shared by b
            await asyncio.sleep(tokens / per_sequence / self.clock.speed)
        finally:
            self.running -= 1
            self.clock.change(self.gpus, -1)
        return Completion(self.script(request), "stop", 0, tokens, 0, self.name)

    async def close(self) -> None:
        return None


def engines_for(layout: dict[str, list[tuple[int, ...]]], models: dict[str, plan.Model], clock: Clock):
    """Each role's replicas (device groups) as modelled engines, each at its GPUs' peak and its share of them."""
    users: dict[int, int] = defaultdict(int)
    for groups in layout.values():
        for group in groups:
            for g in group:
                users[g] += 1
    engines = {}
    for role, groups in layout.items():
        replicas = [ModelledEngine(role, group, len(group) * plan.per_gpu(models[role]) / max(users[g] for g in group),
                                   clock) for group in groups]
        engines[role] = replicas[0] if len(replicas) == 1 else Replicas(replicas)
    return engines


async def one(name: str, layout: dict[str, list[tuple[int, ...]]], models, args, docs: Path, folder: Path) -> dict:
    clock = Clock(args.speed, args.gpus)
    config = C.load(overrides={"flow": {"rounds": 5}, "run": {"progress": False}})
    prompts = AIR.prompts()
    out = folder / name
    inputs = runner.prepare(out, [docs], config, prompts)
    engines = engines_for(layout, models, clock)
    windows = {role: 512 * (len(e.engines) if isinstance(e, Replicas) else 1) for role, e in engines.items()}
    scheduler = Scheduler(AIR.flow(config.settings, prompts, config.seed), engines, windows,
                          journal.Journal(out / "journal.jsonl"), sink.Sink(out, set(), {}), Metrics(),
                          journal.load(out / "journal.jsonl"), config.run.max_in_flight)
    await scheduler.run(AIR.read(inputs, None))
    elapsed = clock.now()
    snap = scheduler.metrics.snapshot()
    return {"layout": name, "records_per_s": sum(scheduler.metrics.records_by_split.values()) / elapsed,
            "calls_per_s": sum(r["calls"] for r in snap["roles"].values()) / elapsed,
            "tok_s": {r: snap["roles"].get(r, {}).get("output_tokens", 0) / elapsed for r in ("guidance", "student")},
            "idle": [1 - b / elapsed for b in clock.busy]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--memory", type=float, default=141.0, help="GiB per GPU (an H200)")
    parser.add_argument("--guidance-params", type=float, default=70.0)
    parser.add_argument("--student-params", type=float, default=8.0)
    parser.add_argument("--guidance-tp", type=int, default=4, help="today's layout: the guidance model's TP")
    parser.add_argument("--speed", type=float, default=40.0, help="node seconds per real second")
    args = parser.parse_args()
    models = {"guidance": plan.Model(f"{args.guidance_params:g}B", args.guidance_params),
              "student": plan.Model(f"{args.student_params:g}B", args.student_params)}
    planned = plan.plan(args.gpus, args.memory, models["guidance"], models["student"], AIR.token_mix)
    layouts = {
        # Today: both models start on the same devices, the guidance at the TP asked, the student on GPU 0.
        "today's": {"guidance": [tuple(range(args.guidance_tp))], "student": [(0,)]},
        "planned": {role: [r.devices[i:i + r.tensor_parallel_size]
                           for i in range(0, len(r.devices), r.tensor_parallel_size)]
                    for role, r in planned.roles.items()},
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        docs = folder / "docs.jsonl"
        docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i:05d}", "text": f"document {i} about a topic " * 12})
                                  + b"\n" for i in range(args.docs)))
        rows = [asyncio.run(one(name, layout, models, args, docs, folder)) for name, layout in layouts.items()]
    print(f"{args.docs} documents, 5 rounds, on {args.gpus} GPUs of {args.memory:g} GiB; guidance "
          f"{models['guidance'].name}, student {models['student'].name}")
    for name, layout in layouts.items():
        print(f"  {name:<8} " + "; ".join(f"{role} on {layout[role]}" for role in layout))
    print(f"{'layout':<9} {'records/s':>9} {'calls/s':>8} {'guidance tok/s':>15} {'student tok/s':>14}  idle share per GPU "
          f"{' '.join(str(g) for g in range(args.gpus))}")
    for r in rows:
        print(f"{r['layout']:<9} {r['records_per_s']:>9.2f} {r['calls_per_s']:>8.1f} {r['tok_s']['guidance']:>15,.0f} "
              f"{r['tok_s']['student']:>14,.0f}  {' '.join(f'{i:.0%}' for i in r['idle'])}")
    print(f"planned / today's: {rows[1]['records_per_s'] / rows[0]['records_per_s']:.2f}x records/s "
          f"(the planner expected {planned.samples_per_s * 3600:,.0f} samples/hour)")


if __name__ == "__main__":
    main()
