"""`airgen run --ray` across 1, 2, 4, 8 workers on a local Ray, with a modelled GPU engine per worker: records/s,
output tokens/s, and the driver's own time per record, side by side in one run.

Each worker's engine answers the method's calls with well-formed text (`MethodScript`) after the time a batching
GPU engine would take: an engine with b requests running produces `peak * b / (b + half)` output tokens/s in all
(the saturating curve `bench/engine.py` measures on a real engine), shared among them, and each request also waits
`ttft_s` for its prompt. One worker = one engine, so a perfect scale-out doubles records/s with the workers; the
driver (polling the shards' metrics, merging their files) should cost the same per record whatever their number.

    python bench/scaleout.py [--workers 1,2,4,8] [--docs 400] [--peak 4000] [--half 32]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from airgen import config as C

from airgen.runtime import cluster

from airgen.runtime import runner
from airgen.air.recipe import RECIPE as AIR
from airgen.method.calls import Completion, Request
from airgen.air.script import MethodScript
from airgen.store.folder import last_line


class ModelledEngine:
    """A batching engine's timing with scripted answers: the output tokens of a call take their share of the
    engine's throughput at the batch it runs in."""

    def __init__(self, peak: float, half: float, ttft_s: float, tokens: int):
        self.name, self.peak, self.half, self.ttft_s, self.tokens = "modelled", peak, half, ttft_s, tokens
        self.running = 0
        self.script = MethodScript(AIR.prompts(), fail=1.0)

    async def generate(self, request: Request) -> Completion:
        self.running += 1
        try:
            per_sequence = self.peak / (self.running + self.half)  # peak * b / (b + half), shared by b
            await asyncio.sleep(self.ttft_s + self.tokens / per_sequence)
        finally:
            self.running -= 1
        text = self.script(request)
        return Completion(text, "stop", sum(len(m["content"].split()) for m in request.messages), self.tokens, 0,
                          self.name)

    async def close(self) -> None:
        return None


def engines_factory(peak: float, half: float, ttft_s: float, tokens: int):
    async def start_engines(guidance, student=None, outage_s=None):
        engine = ModelledEngine(peak, half, ttft_s, tokens)
        return {"guidance": engine, "student": engine}
    return start_engines


def one(workers: int, docs: Path, folder: Path, args) -> dict:
    out = folder / f"w{workers}"
    config = C.load(overrides={"flow": {"rounds": 2}, "run": {"progress": False, "metrics_every_s": 1.0},
                               "guidance": {"url": "http://modelled"}, "student": {"url": "http://modelled"}})
    prompts = AIR.prompts()
    inputs = runner.prepare(out, [docs], config, prompts)
    wall, cpu = time.perf_counter(), time.process_time()
    cluster.execute(config, out, inputs, prompts, None, workers,
                    engines_factory(args.peak, args.half, args.ttft, args.tokens))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    records, _, _ = runner.count_outputs(out)
    calls = sum(1 for x in (out / runner.JOURNAL).read_bytes().splitlines() if b'"k"' in x)
    # The workers' own time (their metrics' elapsed): the wall time less Ray's start and the actors' creation.
    busy = max(last_line(cluster.shard_dir(out, k) / runner.METRICS)["elapsed_s"] for k in range(workers))
    return {"workers": workers, "wall_s": wall, "run_s": busy, "records": records, "calls": calls,
            "records_per_s": records / busy, "output_tok_s": calls * args.tokens / busy,
            "driver_cpu_ms_per_record": 1000 * cpu / max(records, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--peak", type=float, default=4000.0, help="one engine's output tokens/s at a large batch")
    parser.add_argument("--half", type=float, default=32.0, help="the batch at which it makes half of that")
    parser.add_argument("--ttft", type=float, default=0.02, help="seconds before a call's first token")
    parser.add_argument("--tokens", type=int, default=16, help="output tokens per call")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    folder = Path(tempfile.mkdtemp(prefix="airgen-scaleout-"))
    docs = folder / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i:05d}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(args.docs)))
    rows = []
    try:
        for n in [int(v) for v in args.workers.split(",")]:
            rows.append(one(n, docs, folder, args))
            print(f"workers {n}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = rows[0]
    print(f"{args.docs} documents, 2 rounds; engine per worker: peak {args.peak:,.0f} output tok/s, half at batch "
          f"{args.half:.0f}, {args.tokens} tokens a call; {os.cpu_count()} CPUs")
    print(f"{'workers':>7} {'wall s':>7} {'run s':>6} {'records':>8} {'records/s':>10} {'output tok/s':>13} "
          f"{'speed-up':>9} {'driver ms/record':>17}")
    for r in rows:
        print(f"{r['workers']:>7} {r['wall_s']:>7.1f} {r['run_s']:>6.1f} {r['records']:>8} {r['records_per_s']:>10.1f} "
              f"{r['output_tok_s']:>13,.0f} {r['records_per_s'] / base['records_per_s']:>8.2f}x "
              f"{r['driver_cpu_ms_per_record']:>17.2f}")
    print("run s: the workers' own time (wall less Ray's start); records/s and tokens/s over it; driver ms/record: "
          "the driver process's CPU time, Ray's start included")
    print(f"driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
