"""The scheduler's own cost: calls/s against a zero-latency engine on one core, and memory with samples in flight.

Speed, best of `--repeat` runs, journal and output files written to a temporary folder as in a real run:
- scheduler: a stub flow (constant requests, `--calls` per sample) and an engine that returns a prebuilt completion,
  so the time is the scheduler's: queues, tasks, journal, sink, metrics (target >= 20,000 calls/s);
- method: the real AIR flow (prompt building, parsing) answered by MethodScript, i.e. `airgen run` minus the model.
Memory (`--memory`): peak RSS of a fresh process running the AIR flow with 1,000 .. 10,000 samples in flight at once
(every sample admitted, every request outstanding at a slow scripted engine) (target <= 2 GB at 10,000).

    python bench/scheduler.py [--samples 20000] [--calls 30] [--repeat 3]
    python bench/scheduler.py --memory [--in-flight 1000,2500,5000,10000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import uvloop

from airgen.store import journal

from airgen.store import sink
from airgen.method.calls import Completion, Request, Sampling
from airgen.air.settings import FlowConfig
from airgen.method.corpus import Document
from airgen.air.script import MethodScript
from airgen.air.flow import AirFlow, Sample
from airgen.air.recipe import RECIPE as AIR
from airgen.runtime.metrics import Metrics
from airgen.method.prompts import PromptSet
from airgen.method.flow import Done
from airgen.runtime.scheduler import Scheduler

STAGES = ("back_translate", "answer", "check", "merge")


class StubFlow:
    """`calls` constant requests per sample, alternating roles, then one record."""

    def __init__(self, calls: int):
        self.calls = calls
        self.faults: Counter = Counter()  # answers a step could not use: none here
        self._messages = ({"role": "user", "content": "a fixed prompt of a few words"},)
        self._sampling = Sampling(max_tokens=64)

    def sample(self, doc: Document) -> Sample:
        return Sample(doc.id, doc.text, source=doc.source)

    def start(self, sample: Sample) -> list[Request]:
        return [self._request(sample)]

    def advance(self, sample: Sample, key: str, completion: Completion):
        sample.calls += 1
        if sample.calls == self.calls:
            return Done([{"instruction": "i", "input": "", "output": completion.text,
                          "meta": {"doc_id": sample.doc_id, "split": "level_1", "level": 1}}], [])
        return [self._request(sample)]

    def _request(self, sample: Sample) -> Request:
        n = sample.calls
        return Request(f"{sample.doc_id}/{STAGES[n % 4]}/{n}", "student" if n % 2 else "guidance", STAGES[n % 4],
                       self._messages, self._sampling, n)


class InstantEngine:
    """Answers at once (the coroutine never suspends) from a responder; counts calls."""

    name = "instant"

    def __init__(self, respond, latency_s: float = 0.0):
        self._respond = respond
        self._latency_s = latency_s
        self.calls = 0

    async def generate(self, request: Request) -> Completion:
        self.calls += 1
        if self._latency_s:
            await asyncio.sleep(random.random() * self._latency_s)
        return self._respond(request)

    async def close(self) -> None:
        return None


def method_responder(prompts: PromptSet):
    script = MethodScript(prompts)

    def respond(request: Request) -> Completion:
        text = script(request)
        return Completion(text, "stop", 200, 20, 0, "instant")

    return respond


def documents(n: int):
    for i in range(n):
        yield Document(f"doc{i:07d}", f"document {i}: a short article about one topic. " * 40, f"mem:{i}")


async def one_run(flow, engine: InstantEngine, samples: int, max_in_flight: int, window: int,
                  docs: list[Document] | None = None) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        replay = journal.load(out / "journal.jsonl")
        the_journal = journal.Journal(out / "journal.jsonl")
        the_sink = sink.Sink(out, replay.finished, {"models": {}})
        scheduler = Scheduler(flow, {"guidance": engine, "student": engine},
                              {"guidance": window, "student": window}, the_journal, the_sink, Metrics(), replay,
                              max_in_flight)
        start = time.perf_counter()
        before = engine.calls
        await scheduler.run(iter(docs) if docs is not None else documents(samples))
        wall = time.perf_counter() - start
        the_journal.close()
        the_sink.close()
    return wall, engine.calls - before


def best_of(repeat: int, make, samples: int, max_in_flight: int, window: int) -> tuple[float, int]:
    runs = []
    for _ in range(repeat):
        flow, engine = make()
        runs.append(uvloop.run(one_run(flow, engine, samples, max_in_flight, window)))
    return min(runs)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def memory_child(in_flight: int) -> None:
    """Run `in_flight` samples, all admitted at once, through the AIR flow; print the peak RSS in MiB."""
    prompts = AIR.prompts()
    before = peak_rss_mb()
    # Latency makes every sample wait at the engine, so all of them hold state at the same time.
    engine = InstantEngine(method_responder(prompts), latency_s=0.5)
    uvloop.run(one_run(AirFlow(FlowConfig(), prompts), engine, in_flight, in_flight, in_flight))
    print(f"{in_flight} {before:.1f} {peak_rss_mb():.1f} {engine.calls}")


def memory(sizes: list[int]) -> None:
    print(f"{'in flight':>10} {'RSS at start MiB':>17} {'peak RSS MiB':>13} {'MiB per 1k samples':>19}")
    base = None
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], check=True, capture_output=True,
                             text=True).stdout.split()
        start, peak = float(out[1]), float(out[2])
        base = base or (n, peak)
        growth = (peak - base[1]) / (n - base[0]) * 1000 if n != base[0] else float("nan")
        print(f"{n:>10} {start:>17.1f} {peak:>13.1f} {growth:>19.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=30, help="calls per sample of the stub flow")
    parser.add_argument("--method-samples", type=int, default=3000, help="samples through the real AIR flow")
    parser.add_argument("--max-in-flight", type=int, default=4096)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", type=int, default=-1, help="pin the process to this core (default: no pinning)")
    parser.add_argument("--memory", action="store_true", help="peak RSS with many samples in flight")
    parser.add_argument("--in-flight", default="1000,2500,5000,10000", help="--memory: samples in flight")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return 0
    if args.memory:
        memory([int(n) for n in args.in_flight.split(",")])
        return 0
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    prompts = AIR.prompts()
    completion = Completion("a fixed answer of several words", "stop", 200, 20, 0, "instant")
    wall, calls = best_of(args.repeat, lambda: (StubFlow(args.calls), InstantEngine(lambda r: completion)),
                          args.samples, args.max_in_flight, args.window)
    print(f"scheduler (stub flow, instant engine): {calls} calls in {wall:.2f}s = {calls / wall:,.0f} calls/s "
          f"({1e6 * wall / calls:.1f} us per call)")
    wall, calls = best_of(args.repeat, lambda: (AirFlow(FlowConfig(), prompts), InstantEngine(method_responder(prompts))),
                          args.method_samples, args.max_in_flight, args.window)
    print(f"method (AIR flow + MethodScript, instant engine): {calls} calls in {wall:.2f}s = {calls / wall:,.0f} "
          f"calls/s ({1e6 * wall / calls:.1f} us per call)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
