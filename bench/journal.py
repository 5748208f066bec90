"""What the group commit costs: calls journaled per second through the run's own journal and sink, with the done
markers committed once a second (what a run does: output lines fsynced, then the markers, then the journal), after
every unit (an fsync pair per unit: durable at once), and only at the end (no fsync until close: what a run did before
the group commit, when a power loss could leave a marker on disk without its lines).

    python bench/journal.py [--units 20000] [--calls 10] [--folder DIR]

Each unit journals `--calls` answers of about 1.5 KB (an answer and its metadata) and writes two records; the folder
should be on the disk a run would use (default: a temporary folder).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from airgen.store import journal

from airgen.store import sink
from airgen.method.calls import Completion

ANSWER = Completion("a model's answer of a few hundred words " * 35, "stop", 900, 320, 512, "model")


def one(folder: Path, units: int, calls: int, every_s: float | None) -> float:
    """Calls journaled per second with a commit every `every_s` seconds (0: after each unit; None: at close)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    outputs = sink.Sink(folder, set(), {"models": {}})
    log = journal.Journal(folder / "journal.jsonl", durable_first=outputs.sync)
    started = last = time.perf_counter()
    for u in range(units):
        unit = f"doc{u:07d}"
        for c in range(calls):
            log.call(unit, f"{unit}/answer/{c}", ANSWER, 1200, "0123456789abcdef")
        outputs.records([{"instruction": "An instruction", "output": ANSWER.text, "meta": {"doc_id": unit}}
                         for _ in range(2)])
        log.done(unit)
        now = time.perf_counter()
        if every_s is not None and now - last >= every_s:
            log.commit()
            last = now
    log.close()
    outputs.close()
    return units * calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--units", type=int, default=20000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--folder", type=Path)
    args = parser.parse_args()
    root = Path(args.folder or tempfile.mkdtemp(prefix="airgen-journal-"))
    modes = {"markers at close only (no fsync)": None, "group commit, 1 s": 1.0, "fsync after every unit": 0.0}
    rates = {name: one(root / "run", args.units, args.calls, every) for name, every in modes.items()}
    shutil.rmtree(root / "run", ignore_errors=True)
    base = rates["markers at close only (no fsync)"]
    print(f"{args.units:,} units x {args.calls} calls, {root}")
    for name, rate in rates.items():
        print(f"  {name:<34} {rate:>10,.0f} calls/s   {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
