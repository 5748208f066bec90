"""SIGKILL at random moments, then resume, again and again: for `airgen run` against a loopback server and for
`airgen select` on the bundled embedding model. Nothing lost, nothing twice, no torn line, no finished call sent
again, and the same output as a run that was never killed."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.faultserver import FaultServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = 30
KILLS = 20


def strict_lines(path: Path) -> list[dict]:
    """Every line of a finished output file; a torn line fails the test."""
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


def journal_lines(out: Path) -> int:
    path = out / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


def journal_keys(out: Path) -> set[str]:
    path = out / "journal.jsonl"
    keys = set()
    if path.exists():
        for raw in path.read_bytes().splitlines():
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:  # the line a kill tore; the resume cuts it
                continue
            if "k" in event:
                keys.add(event["k"])
    return keys


def start(url: str, docs: Path, out: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "airgen", "run", str(docs), "--out", str(out), "--guidance-url", url,
           "--student-url", url, "--rounds", "3", "--no-progress", "--max-in-flight", "8",
           "--set", "guidance.window=4", "--set", "student.window=4"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def records_of(out: Path) -> dict[tuple[str, int], tuple[str, str]]:
    return {(r["meta"]["doc_id"], r["meta"]["level"]): (r["instruction"], r["output"])
            for r in strict_lines(out / "records.jsonl")}


def test_run_survives_twenty_kills_anywhere(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(DOCS)) + b'{"text": 5}\n')
    with FaultServer(latency_s=0.01) as server:
        began = time.monotonic()
        proc = start(server.url, docs, tmp_path / "whole")
        assert proc.wait(120) == 0, proc.stderr.read().decode()[-2000:]
        whole_s = time.monotonic() - began
        expected = records_of(tmp_path / "whole")
        del server.received[:]

        total = journal_lines(tmp_path / "whole")
        out = tmp_path / "out"
        rng = random.Random(7)
        in_flight_at_kills = resent = mid_run = 0
        for kill in range(KILLS):
            journaled = journal_lines(out)
            proc = start(server.url, docs, out)
            if kill % 5 == 0:  # during start-up and admission, before or as the first calls go out
                deadline = time.monotonic() + rng.uniform(0.1, 1.0)
                while time.monotonic() < deadline and journal_lines(out) == journaled and proc.poll() is None:
                    time.sleep(0.005)
            else:  # mid-run: once the journal has grown by a random share of what is left
                target = journal_lines(out) + rng.randint(1, max(1, (total - journal_lines(out)) // 3))
                deadline = time.monotonic() + 2 * whole_s + 10
                while journal_lines(out) < target and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.005)
            assert proc.poll() is None, "the run ended before its kill"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            mid_run += journaled < journal_lines(out) < total  # this process did some of the work, not all of it
            finished = journal_keys(out)
            before = set(server.keys())
            mark = len(server.received)
            in_flight_at_kills += len(before - finished)
            # What the next processes send: never a call the journal had finished at this kill.
            server.marks = getattr(server, "marks", []) + [(mark, finished, before - finished)]
        proc = start(server.url, docs, out)
        assert proc.wait(120) == 0, proc.stderr.read().decode()[-2000:]
        received = server.keys()
        for mark, finished, flying in server.marks:
            later = set(received[mark:])
            assert not later & finished, "a call the journal had finished was sent again"
            resent += len(later & flying)

    assert records_of(out) == expected
    records = strict_lines(out / "records.jsonl")
    assert len(records) == len({(r["meta"]["doc_id"], r["meta"]["level"]) for r in records})
    rejected = strict_lines(out / "rejected.jsonl")
    assert [r["reason"] for r in rejected] == ["bad_type"]
    assert {r["meta"]["doc_id"] for r in records} | {r["unit"] for r in rejected} == \
        {f"d{i:02d}" for i in range(DOCS)} | {rejected[0]["unit"]}
    strict_lines(out / "dropped_levels.jsonl")
    events = strict_lines(out / "journal.jsonl")  # the last run cut any torn line
    keys = Counter(e["k"] for e in events if "k" in e)
    assert max(keys.values()) == 1
    assert resent <= in_flight_at_kills
    # The kills landed in the middle of the work: a journal partly written, calls out at the moment of the kill.
    assert mid_run >= KILLS - KILLS // 5 and in_flight_at_kills > 0
    print(f"\n{KILLS} kills ({mid_run} mid-run): {in_flight_at_kills} calls in flight at the kills, {resent} of them "
          f"sent again; {len(received)} calls in all for {sum(keys.values())} journaled")


@pytest.mark.slow
def test_select_survives_kills_during_embedding_and_sampling(tmp_path):
    pytest.importorskip("sentence_transformers")
    docs = tmp_path / "docs.jsonl"
    words = "river forest harbor market school engine garden winter summer music".split()
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": " ".join(
        random.Random(i).choices(words, k=60)) + f" item {i}"}) + b"\n" for i in range(400)))

    def select(out: Path) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "airgen", "select", str(docs), "--out", str(out), "--n", "200",
               "--device", "cpu", "--no-dedup"]
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})

    began = time.monotonic()
    proc = select(tmp_path / "whole")
    assert proc.wait(600) == 0, proc.stderr.read().decode()[-2000:]
    whole_s = time.monotonic() - began
    out = tmp_path / "out"
    rng = random.Random(3)
    alive = 0
    for _ in range(3):  # each start loads torch and the model: a few kills spread over the run
        proc = select(out)
        time.sleep(rng.uniform(0.3 * whole_s, 0.9 * whole_s))
        alive += proc.poll() is None  # a resumed select has less to do and may be done before its kill
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert alive >= 1  # the first start has the whole job: its kill lands mid-run
    proc = select(out)
    assert proc.wait(600) == 0, proc.stderr.read().decode()[-2000:]
    for name in ("manifest.jsonl", "selected.jsonl", "rejected.jsonl"):
        assert strict_lines(out / name) == strict_lines(tmp_path / "whole" / name), name
    import numpy as np

    assert np.array_equal(np.load(out / "embeddings.npy"), np.load(tmp_path / "whole" / "embeddings.npy"))
