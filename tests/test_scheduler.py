"""The scheduler over scripted engines: thousands of samples, no barriers, caps respected, clean stop and resume."""
from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path

import orjson
import pytest

from airgen.store import journal

from airgen.store import sink
from airgen.air.settings import FlowConfig
from airgen.method.corpus import Document
from airgen.method.rows import Rejection, first_ids
from airgen.engines import RequestRejected
from airgen.air.script import MethodScript
from airgen.engines.scripted import ScriptedEngine
from airgen.air.flow import AirFlow
from airgen.runtime.metrics import Metrics
from airgen.runtime.scheduler import EngineFailed, Scheduler


def docs(n: int, start: int = 0):
    for i in range(start, start + n):
        yield Document(f"doc{i:05d}", f"document number {i} " * 20, f"mem:{i}")


def build(out: Path, prompts, engines, *, max_in_flight=4096, windows=None, rounds=2, **script_knobs):
    replay = journal.load(out / "journal.jsonl")
    the_journal = journal.Journal(out / "journal.jsonl")
    the_sink = sink.Sink(out, replay.finished, {"models": {}})
    scheduler = Scheduler(AirFlow(FlowConfig(rounds=rounds), prompts), engines,
                          windows or {"guidance": 64, "student": 64}, the_journal, the_sink, Metrics(), replay,
                          max_in_flight)
    return scheduler, the_journal, the_sink


def read(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def shared_engine(prompts, latency=None, **knobs):
    engine = ScriptedEngine(MethodScript(prompts, fail=1.0, **knobs), latency=latency)
    return engine, {"guidance": engine, "student": engine}


async def test_thousands_of_samples_caps_respected(prompts, tmp_path):
    rng = random.Random(0)
    engine, engines = shared_engine(prompts, latency=lambda r: rng.random() * 0.002)
    scheduler, j, s = build(tmp_path, prompts, engines, max_in_flight=300, windows={"guidance": 50, "student": 50})
    peak = 0
    respond = engine._respond

    def watch(request):
        nonlocal peak
        peak = max(peak, scheduler.active)
        return respond(request)

    engine._respond = watch
    await scheduler.run(docs(2000))
    j.close()
    s.close()
    records = read(tmp_path / "records.jsonl")
    assert len(records) == 2000 * 2
    assert Counter(r["meta"]["doc_id"] for r in records) == {f"doc{i:05d}": 2 for i in range(2000)}
    assert peak <= 300 and engine.peak_outstanding <= 50
    assert engine.peak_outstanding == 50  # the window was kept full


async def test_two_engines_have_their_own_windows(prompts, tmp_path):
    guidance = ScriptedEngine(MethodScript(prompts, fail=1.0), latency=lambda r: 0.001)
    student = ScriptedEngine(MethodScript(prompts, fail=1.0), latency=lambda r: 0.001)
    scheduler, j, s = build(tmp_path, prompts, {"guidance": guidance, "student": student},
                            windows={"guidance": 20, "student": 5})
    await scheduler.run(docs(200))
    j.close()
    s.close()
    assert {r.role for r in guidance.calls} == {"guidance"} and {r.role for r in student.calls} == {"student"}
    assert guidance.peak_outstanding == 20 and student.peak_outstanding == 5
    assert len(read(tmp_path / "records.jsonl")) == 400


async def test_no_stage_barrier(prompts, tmp_path):
    """doc00000's first call is slow (5 s, several times what the other 299 documents take on a slow machine).
    Without stage barriers every other document goes through every stage and finishes while doc00000 is still
    waiting for that answer; a schedule that makes each stage wait for every document (the authors' per-stage
    batches) could not finish any document before that answer is back."""
    engine, engines = shared_engine(
        prompts, latency=lambda r: 5.0 if r.key.startswith("doc00000/back_translate") else 0.0005)
    scheduler, j, s = build(tmp_path, prompts, engines)
    finished_before: set[str] = set()  # units whose records were written before doc00000's first answer came
    respond = engine._respond

    def watch(request):
        if request.key.startswith("doc00000/back_translate"):
            finished_before.update(r["meta"]["doc_id"] for r in read(tmp_path / "records.jsonl"))
        return respond(request)

    engine._respond = watch
    await scheduler.run(docs(300))
    j.close()
    s.close()
    assert len(finished_before) == 299 and "doc00000" not in finished_before
    events = read(tmp_path / "journal.jsonl")
    first_slow = next(i for i, e in enumerate(events) if e.get("s") == "doc00000")
    stages_before = {e["k"].split("/")[1] for e in events[:first_slow] if "k" in e}
    assert {"back_translate", "check", "merge", "respond"} <= stages_before


async def test_bad_input_and_duplicate_ids_are_recorded(prompts, tmp_path):
    engine, engines = shared_engine(prompts)

    def units():
        yield from docs(3)
        yield Rejection(None, "in.jsonl:4", "bad_json", "Expecting value")
        yield Document("doc00001", "the same id again " * 10, "in.jsonl:5")

    scheduler, j, s = build(tmp_path, prompts, engines)
    await scheduler.run(first_ids(units()))
    j.close()
    s.close()
    rejected = read(tmp_path / "rejected.jsonl")
    assert [(r["source"], r["reason"]) for r in rejected] == [
        ("in.jsonl:4", "bad_json"), ("in.jsonl:5", "duplicate_id")]
    assert len({r["meta"]["doc_id"] for r in read(tmp_path / "records.jsonl")}) == 3


async def test_stop_leaves_consistent_journal_and_resume_finishes(prompts, tmp_path):
    engine, engines = shared_engine(prompts, latency=lambda r: random.random() * 0.003)
    scheduler, j, s = build(tmp_path, prompts, engines, max_in_flight=100)
    task = asyncio.ensure_future(scheduler.run(docs(500)))
    # Stop part-way: once some samples are done (however slow the machine), long before all are.
    while sum(scheduler.metrics.outcomes.values()) < 20 and not task.done():
        await asyncio.sleep(0.005)
    scheduler.stop()
    await task
    j.close()
    s.close()
    assert scheduler.interrupted
    first = read(tmp_path / "records.jsonl")
    done = {e["done"] for e in read(tmp_path / "journal.jsonl") if "done" in e}
    assert 0 < len(done) < 500
    assert {r["meta"]["doc_id"] for r in first} == done
    calls_before = len(engine.calls)

    engine2, engines2 = shared_engine(prompts)
    scheduler, j, s = build(tmp_path, prompts, engines2)
    await scheduler.run(docs(500))
    j.close()
    s.close()
    records = read(tmp_path / "records.jsonl")
    assert Counter(r["meta"]["doc_id"] for r in records) == {f"doc{i:05d}": 2 for i in range(500)}
    call_keys = [e["k"] for e in read(tmp_path / "journal.jsonl") if "k" in e]
    assert len(call_keys) == len(set(call_keys)), "a finished call was asked again"
    assert scheduler.metrics.replayed_calls > 0 and calls_before > 0


async def test_engine_failure_stops_the_run(prompts, tmp_path):
    def respond(request):
        if request.key == "doc00002/refine/0":
            raise ConnectionError("server went away")
        return MethodScript(prompts, fail=1.0)(request)

    engine = ScriptedEngine(respond)
    scheduler, j, s = build(tmp_path, prompts, {"guidance": engine, "student": engine})
    with pytest.raises(EngineFailed, match="server went away"):
        await scheduler.run(docs(5))
    j.close()
    s.close()


async def test_an_error_in_our_own_handling_stops_the_run(prompts, tmp_path):
    engine, engines = shared_engine(prompts)
    scheduler, j, s = build(tmp_path, prompts, engines)
    advance = scheduler.flow.advance

    def broken(sample, key, completion):
        if key == "doc00003/score/0":
            raise OSError("No space left on device")
        return advance(sample, key, completion)

    scheduler.flow.advance = broken
    with pytest.raises(OSError, match="No space left"):
        await asyncio.wait_for(scheduler.run(docs(10)), 30)
    j.close()
    s.close()


@pytest.mark.parametrize("refused, latency, also_asked", [
    # The refinement goes out with round 1's answer: the sample ends once that call is back too.
    ("doc00001/refine/0", None, "doc00001/answer/1"),
    # Round 1's check goes out with round 2's proposal: the sample ends once that call is back too.
    ("doc00001/check/1", lambda r: 0.02 if r.stage == "propose" else 0.001, "doc00001/propose/2"),
])
async def test_refused_request_drops_only_its_sample(prompts, tmp_path, refused, latency, also_asked):
    def respond(request):
        if request.key == refused:
            raise RequestRejected("prompt longer than the context")
        return MethodScript(prompts, fail=1.0)(request)

    engine = ScriptedEngine(respond, latency=latency)
    scheduler, j, s = build(tmp_path, prompts, {"guidance": engine, "student": engine})
    await scheduler.run(docs(3))
    j.close()
    s.close()
    rejected = read(tmp_path / "rejected.jsonl")
    assert [(r["id"], r["stage"]) for r in rejected] == [("doc00001", refused.split("/")[1])]
    assert "prompt longer than the context" in rejected[0]["reason"]
    assert also_asked in [r.key for r in engine.calls]
    done = [e["done"] for e in read(tmp_path / "journal.jsonl") if "done" in e]
    assert sorted(done) == ["doc00000", "doc00001", "doc00002"]
    assert {r["meta"]["doc_id"] for r in read(tmp_path / "records.jsonl")} == {"doc00000", "doc00002"}


async def test_the_sample_closest_to_done_goes_first(prompts, tmp_path):
    engine, engines = shared_engine(prompts, latency=lambda r: 0.0005)
    scheduler, j, s = build(tmp_path, prompts, engines, windows={"guidance": 1, "student": 1})
    lane = scheduler._lanes["guidance"]
    served, finished = [], []
    respond = engine._respond

    def watch(request):
        # At the moment a request is served, nothing waiting is closer to done (the heap holds -progress).
        served.append((request.progress, -lane.queue[0][0] if lane.queue else None))
        if request.stage == "respond":
            finished.append(request.unit)
        return respond(request)

    engine._respond = watch
    await scheduler.run(docs(6))
    j.close()
    s.close()
    assert all(waiting is None or progress >= waiting for progress, waiting in served)
    assert any(waiting is not None for _, waiting in served)
    # Started samples are finished before new ones take the engine: the first document is done first.
    assert finished[0] == "doc00000" and len(set(finished)) == 6


async def test_a_refused_request_is_journaled_and_never_sent_again(prompts, tmp_path):
    """Killed after a refusal but before its sample ended (round 2's proposal still in flight), the resumed run
    rejects the sample with the refusal, without asking the engine again."""
    refused, hung = "doc00001/check/1", "doc00001/propose/2"
    first_done = asyncio.Event()

    async def never():
        await asyncio.Event().wait()

    def respond(request):
        if request.key == refused:
            raise RequestRejected("prompt longer than the context")
        return MethodScript(prompts, fail=1.0)(request)

    class Hanging(ScriptedEngine):
        async def generate(self, request):
            if request.key == hung:
                first_done.set()
                await never()
            return await super().generate(request)

    engine = Hanging(respond)
    scheduler, j, s = build(tmp_path, prompts, {"guidance": engine, "student": engine})
    task = asyncio.create_task(scheduler.run(docs(2)))
    await asyncio.wait_for(first_done.wait(), 30)
    await asyncio.sleep(0.2)  # the refusal came back before the proposal went out; let it be handled
    scheduler.stop()  # the kill: calls in flight are cancelled
    await task
    j.close()
    s.close()

    again = ScriptedEngine(MethodScript(prompts, fail=1.0))
    scheduler, j, s = build(tmp_path, prompts, {"guidance": again, "student": again})
    await scheduler.run(docs(2))
    j.close()
    s.close()
    assert refused not in [r.key for r in again.calls] and hung in [r.key for r in again.calls]
    rejected = read(tmp_path / "rejected.jsonl")
    assert [(r["id"], r["stage"]) for r in rejected] == [("doc00001", "check")]
    assert "prompt longer than the context" in rejected[0]["reason"]
