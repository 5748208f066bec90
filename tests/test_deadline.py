"""A run that ends by a deadline (`run.until`, `run.max_hours`): no sample begun once the estimate says it would end
after the deadline, what is out cancelled at it, the journal resumed by the same command to a clean run's records,
and what was left said in the summary, status.json and the report."""
from __future__ import annotations

import datetime as dt
import sys
import time

import orjson
import pytest

from airgen.air.flow import AirFlow
from airgen.air.script import MethodScript
from airgen.air.settings import FlowConfig
from airgen.config import ConfigError, parse_until
from airgen.engines.scripted import ScriptedEngine
from airgen.method.corpus import Document
from airgen.runtime.deadline import Deadline
from tests.runs import command, documents, records, run
from tests.test_metrics import scheduler

DOCS = 30


def test_until_is_the_next_such_time():
    evening = dt.datetime(2026, 12, 6, 22, 0).astimezone()
    assert parse_until("06:30", evening) == dt.datetime(2026, 12, 7, 6, 30).astimezone()
    assert parse_until("23:15", evening) == dt.datetime(2026, 12, 6, 23, 15).astimezone()
    assert parse_until("2026-12-07T05:00:00+00:00", evening).timestamp() == dt.datetime(
        2026, 12, 7, 5, 0, tzinfo=dt.timezone.utc).timestamp()
    for bad, why in (("24:00", "no time of day"), ("six thirty", "neither"), ("2026-12-06T21:00", "already past")):
        with pytest.raises(ConfigError, match=why):
            parse_until(bad, evening)


async def test_no_sample_begins_once_it_would_end_after_the_deadline(prompts, tmp_path):
    began: dict[str, float] = {}

    def respond(request, script=MethodScript(prompts, fail=1.0)):
        began.setdefault(request.unit, time.monotonic())
        return script(request)

    engine = ScriptedEngine(respond, latency=lambda r: 0.05)
    docs = [Document(f"d{i:02d}", f"document {i} about a topic " * 12, "test") for i in range(DOCS)]
    s = scheduler(tmp_path, AirFlow(FlowConfig(rounds=2), prompts), {"guidance": engine, "student": engine},
                  max_in_flight=2)
    s.deadline = Deadline(time.time() + 2.0)
    start = time.monotonic()
    await s.run(docs)
    took = time.monotonic() - start
    closed = s.deadline.closed_at
    assert s.closed and closed is not None and s.estimate.sample_s is not None
    # Every sample began before admission closed, and one that began would end, by the estimate, in time.
    assert max(began.values()) <= closed and len(began) < DOCS
    assert closed + s.estimate.sample_s >= s.deadline.mono - 1e-6
    # In flight samples finished, or were cancelled at the deadline: the run is over by it.
    assert took <= 2.0 + 0.3
    finished = s.metrics.done
    assert finished + s.active == len(began) and finished >= 1


def test_a_night_that_ends_resumes_to_a_clean_runs_records(tmp_path):
    docs = documents(tmp_path / "docs.jsonl", DOCS)
    clean = tmp_path / "clean"
    assert run(command(docs, clean)).returncode == 0
    out = tmp_path / "night"
    until = (dt.datetime.now() + dt.timedelta(seconds=5)).isoformat(timespec="milliseconds")
    started = time.time()
    done = run(command(docs, out, "--until", until, "--max-in-flight", "2"), SCRIPTED_LATENCY_S="0.4")
    took = time.time() - started
    assert done.returncode == 0, done.stderr[-2000:]
    assert took < 5 + 4, took  # the deadline, then the closing of the engines and files
    status = orjson.loads((out / "status.json").read_bytes())
    assert status["state"] == "stopped" and status["why"] == "deadline" and status["admitting"] is False
    left = status["samples"]["left"]
    assert 0 < left < DOCS and status["samples"]["finished"] == DOCS - left and status["deadline"]
    said = [line for line in done.stderr.splitlines() if line.startswith("airgen: deadline")]
    assert len(said) == 1 and f"{left} left" in said[0] and "the same command continues" in said[0]
    report = run([sys.executable, "-m", "airgen", "report", str(out)])
    assert report.returncode == 0 and f"{left} left" in report.stdout
    # The next night: the same command (no deadline now) finishes with exactly a clean run's records.
    done = run(command(docs, out))
    assert done.returncode == 0, done.stderr[-2000:]
    assert records(out) == records(clean)
    assert orjson.loads((out / "status.json").read_bytes())["state"] == "finished"


def test_max_hours_is_a_deadline_from_the_start(tmp_path):
    docs = documents(tmp_path / "docs.jsonl", DOCS)
    out = tmp_path / "run"
    done = run(command(docs, out, "--max-hours", str(2 / 3600), "--max-in-flight", "2"), SCRIPTED_LATENCY_S="0.4")
    assert done.returncode == 0, done.stderr[-2000:]
    status = orjson.loads((out / "status.json").read_bytes())
    assert status["why"] == "deadline" and status["samples"]["left"] > 0
