"""A run folder read back at any size: seconds and peak RSS of `airgen report`, `airgen export`, a resume of the
finished run and `airgen trace` (its first call, which indexes the journal, and a later one), on folders of 100k, 1M
and 3M journaled calls.

    python bench/readback.py [--calls 100000,1000000,3000000] [--folder DIR] [--keep]

Each folder is written without a model, straight through the run's own journal and sink: AIR's flow with its
scripted answers (5 rounds; every 10th document scored too low and rejected), free-text answers about 1.7 KB long,
each call journaled with its digest as a run journals it. Each command then runs in a process of its own; its peak
RSS is the kernel's count for that process. The goal: memory flat (within 1.3x from the smallest folder to the
largest, and under 400 MiB) and time linear in the calls.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from airgen import config as C

from airgen.store import journal

from airgen.runtime import runner

from airgen.store import sink
from airgen.air.recipe import RECIPE
from airgen.air.steps import FREE_TEXT_STAGES
from airgen.method.calls import Completion, digest
from airgen.method.corpus import Document
from airgen.method.flow import Done

TEXT = ("A long human-written article about gardening in small urban spaces, with advice on soil, light, water, "
        "containers and the plants that do well on a balcony. ") * 6
SETTINGS = {"flow": {"rounds": 5}, "run": {"progress": False}}
MODELS = {"guidance": "scripted", "student": "scripted"}


def make_folder(out: Path, calls: int) -> tuple[Path, int, str]:
    """A finished run folder of about `calls` journaled calls; returns (its input, the calls, a unit's id)."""
    data = out.parent / "docs.jsonl"
    config = C.load(overrides=SETTINGS)
    prompts = RECIPE.prompts()
    flow = RECIPE.flow(config.settings, prompts, config.seed)
    good, low = RECIPE.script(fail=1.0), RECIPE.script(fail=1.0, score=2)
    made, n = 0, 0
    with open(data, "wb") as docs:
        docs.write(b"")
    runner.prepare(out, [data], config, prompts, shard=True)
    runner.settle_models(out, MODELS)
    outputs = sink.Sink(out, set(), {"models": MODELS, "prompts": prompts.fingerprint})
    log = journal.Journal(out / "journal.jsonl", durable_first=outputs.sync)
    with open(data, "ab") as docs:
        while made < calls:
            doc = Document(f"d{n:07d}", f"{n} {TEXT}", f"{data}:{n + 1}")
            docs.write(orjson.dumps({"id": doc.id, "text": doc.text}) + b"\n")
            script = low if n % 10 == 9 else good
            sample = flow.sample(doc)
            todo = flow.start(sample)
            while isinstance(todo, list) and todo:
                request = todo.pop(0)
                answer = script(request)
                if request.stage in FREE_TEXT_STAGES:  # answers of a real model's length: the journal's bulk
                    answer = f"{answer} {TEXT}{TEXT}"
                completion = Completion(answer, "stop", 900, len(answer.split()), 512, "scripted")
                log.call(sample.doc_id, request.key, completion, 1200, digest(request, MODELS[request.role]))
                made += 1
                step = flow.advance(sample, request.key, completion)
                if isinstance(step, list):
                    todo.extend(step)
                elif isinstance(step, Done):
                    outputs.records(step.records)
                    outputs.dropped_levels(sample.doc_id, step.dropped)
                    log.done(sample.doc_id)
                else:
                    outputs.rejected(sample.doc_id, sample.doc_id, sample.source, step.stage, step.reason)
                    outputs.dropped_levels(sample.doc_id, step.dropped)
                    log.done(sample.doc_id)
            n += 1
            if n % 2000 == 0:
                log.commit()
    log.close()
    outputs.close()
    return data, made, "d0000000"


RESUME = """
import sys, uvloop
from pathlib import Path
from airgen import config as C
from airgen.method import recipes
from airgen.runtime import runner
from airgen.engines.scripted import ScriptedEngine, answers
out, data = Path(sys.argv[1]), Path(sys.argv[2])
config = C.load(overrides={"flow": {"rounds": 5}, "run": {"progress": False}})
prompts = recipes.of(config).prompts()
inputs = runner.prepare(out, [data], config, prompts)
engine = ScriptedEngine(answers(air={"fail": 1.0}), name="scripted")
engines = {"guidance": engine, "student": engine}
runner.settle_models(out, runner.models(engines))
scheduler = uvloop.run(runner.generate(config, out, inputs, prompts, engines))
assert scheduler.metrics.done == 0, "the folder was not finished"
"""


def measure(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one command, in a process of its own."""
    began = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="100000,1000000,3000000")
    parser.add_argument("--folder", type=Path, help="where the folders go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the folders")
    args = parser.parse_args()
    root = Path(args.folder or tempfile.mkdtemp(prefix="airgen-readback-"))
    airgen = [sys.executable, "-m", "airgen"]
    rows = []
    for calls in (int(c) for c in args.calls.split(",")):
        out = root / f"run-{calls}" / "out"
        shutil.rmtree(out.parent, ignore_errors=True)
        out.parent.mkdir(parents=True)
        began = time.perf_counter()
        data, made, unit = make_folder(out, calls)
        made_s = time.perf_counter() - began
        (out / "trace.index").unlink(missing_ok=True)
        figures = {
            "report": measure([*airgen, "report", str(out)]),
            "export": measure([*airgen, "export", str(out), "--to", str(out.parent / "export")]),
            "resume": measure([sys.executable, "-c", RESUME, str(out), str(data)]),
            "trace, first": measure([*airgen, "trace", str(out), unit]),
            "trace, later": measure([*airgen, "trace", str(out), f"d{made // 40:07d}"]),
        }
        size = sum(p.stat().st_size for p in out.iterdir() if p.is_file()) / 2**20
        rows.append((made, size, made_s, figures))
        print(f"{made:,} calls ({size:,.0f} MiB folder, written in {made_s:.0f} s): " + "; ".join(
            f"{name} {s:.1f} s {rss:,.0f} MiB" for name, (s, rss) in figures.items()), flush=True)
        if not args.keep:
            shutil.rmtree(out.parent)
    names = list(rows[0][3])
    print(f"\n{'calls':>11}" + "".join(f"  {name:>22}" for name in names))
    for made, _, _, figures in rows:
        print(f"{made:>11,}" + "".join(f"  {s:>8.1f} s {rss:>7,.0f} MiB" for s, rss in figures.values()))
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(f"{last[0] / first[0]:.0f}x the calls: " + ", ".join(
            f"{name} {last[3][name][0] / first[3][name][0]:.1f}x the time, {last[3][name][1] / first[3][name][1]:.2f}x "
            f"the memory" for name in names))


if __name__ == "__main__":
    main()
