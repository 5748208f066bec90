"""How long `airgen trace` takes on a big run folder: the first trace of the folder (it indexes the journal) and the
ones after it (they read the index and the document's own lines).

The folder is made without engines: each document goes through AIR's flow with its scripted answers (5 rounds,
every check failed, so every document makes 5 levels: about 30 calls), and the calls are journaled as a run journals
them, free-text answers about 1.7 KB long. `python bench/trace.py --docs 20000` makes a 660k-call folder.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airgen import config as C, journal, run, sink, trace  # noqa: E402
from airgen.air.recipe import RECIPE  # noqa: E402
from airgen.air.steps import FREE_TEXT_STAGES  # noqa: E402
from airgen.calls import Completion  # noqa: E402
from airgen.corpus import Document  # noqa: E402
from airgen.flow import Done  # noqa: E402

TEXT = ("A long human-written article about gardening in small urban spaces, with advice on soil, light, water, "
        "containers and the plants that do well on a balcony. ") * 6


def make_folder(out: Path, docs: int) -> int:
    data = out.parent / "docs.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"id": f"d{i:06d}", "text": f"{i} {TEXT}"}) + b"\n" for i in range(docs)))
    config = C.load(overrides={"flow": {"rounds": 5}, "run": {"progress": False}})
    prompts = RECIPE.prompts()
    run.prepare(out, [data], config, prompts)
    flow = RECIPE.flow(config.settings, prompts, config.seed)
    script = RECIPE.script(fail=1.0)
    log, records = journal.Journal(out / "journal.jsonl"), sink.Sink(out, set(), {})
    calls = 0
    for i in range(docs):
        sample = flow.sample(Document(f"d{i:06d}", f"{i} {TEXT}", f"{data}:{i + 1}"))
        todo = flow.start(sample)
        while isinstance(todo, list) and todo:
            request = todo.pop(0)
            answer = script(request)
            if request.stage in FREE_TEXT_STAGES:  # answers of a real model's length: the journal's bulk
                answer = f"{answer} {TEXT}{TEXT}"
            completion = Completion(answer, "stop", 900, len(answer.split()), 512, "scripted")
            log.call(sample.doc_id, request.key, completion, random.randint(200, 4000))
            calls += 1
            step = flow.advance(sample, request.key, completion)
            if isinstance(step, list):
                todo.extend(step)
            else:
                if isinstance(step, Done):
                    records.records(step.records)
                log.done(sample.doc_id)
                break
    log.close()
    records.close()
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--traces", type=int, default=5, help="traces after the first, of random documents")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.perf_counter()
        calls = make_folder(out, args.docs)
        made = time.perf_counter() - started
        size = (out / "journal.jsonl").stat().st_size
        print(f"folder: {args.docs} documents, {calls} calls, journal {size / 2**20:.0f} MiB (made in {made:.0f} s)")
        rng = random.Random(0)
        first = f"d{rng.randrange(args.docs):06d}"
        started = time.perf_counter()
        story = trace.trace(out, first)
        took = time.perf_counter() - started
        print(f"first trace (indexes the journal): {took:.2f} s, {len(story.calls)} calls, ended: "
              f"{trace.ending(story)}")
        times = []
        for _ in range(args.traces):
            unit = f"d{rng.randrange(args.docs):06d}"
            started = time.perf_counter()
            story = trace.trace(out, unit)
            trace.text(story)
            times.append(time.perf_counter() - started)
        print(f"later traces: {', '.join(f'{t:.2f}' for t in times)} s (median {sorted(times)[len(times) // 2]:.2f} "
              f"s), index {(out / trace.INDEX).stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
