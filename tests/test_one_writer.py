"""One writer per run folder: a second `airgen run` on the same --out is refused at once and names the holder; a
holder that died is taken over; readers (report, export, trace) work on a folder a run is writing and say so."""
from __future__ import annotations

import os
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from airgen.store import lock
from tests.runs import airgen, command, documents, lines, records, run, start

DOCS = 40
SLOW = {"SCRIPTED_LATENCY_S": "0.3"}  # a run that lasts several seconds


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    return documents(tmp_path_factory.mktemp("docs") / "docs.jsonl", DOCS)


@pytest.fixture(scope="module")
def clean(docs, tmp_path_factory) -> list[tuple]:
    out = tmp_path_factory.mktemp("clean") / "out"
    done = run(command(docs, out))
    assert done.returncode == 0, done.stderr[-2000:]
    return records(out)


def wait_for_calls(out: Path, n: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = out / "journal.jsonl"
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"{out}: fewer than {n} calls journaled in {timeout} s")


def assert_each_record_once(out: Path, clean: list[tuple]) -> None:
    assert records(out) == clean
    keys = [(r["meta"]["doc_id"], r["meta"]["level"]) for r in lines(out / "records.jsonl")]
    assert not [k for k, n in Counter(keys).items() if n > 1]


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path, docs, clean):
    out = tmp_path / "out"
    first = start(command(docs, out), **SLOW)
    wait_for_calls(out, 5, first)
    began = time.monotonic()
    second = run(command(docs, out))
    assert time.monotonic() - began < 10
    assert second.returncode == 2
    said = second.stderr.strip().splitlines()
    assert len(said) == 1, second.stderr
    assert "is being written by another airgen" in said[0]
    assert f"pid {first.pid} on {socket.gethostname()}" in said[0] and "`airgen run " in said[0], said[0]
    assert first.wait(120) == 0, first.communicate()
    assert_each_record_once(out, clean)
    assert not (out / lock.LOCK).exists()  # released with the run


def test_two_writers_started_together_make_one_run(tmp_path, docs, clean):
    out = tmp_path / "out"
    procs = [start(command(docs, out)) for _ in range(2)]
    codes = sorted(p.wait(120) for p in procs)
    assert codes == [0, 2], [p.communicate() for p in procs]
    assert_each_record_once(out, clean)


def test_a_holder_killed_with_sigkill_is_taken_over(tmp_path, docs, clean):
    out = tmp_path / "out"
    first = start(command(docs, out), **SLOW)
    wait_for_calls(out, 20, first)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert lock.holder(out) is None  # its process is gone: nobody writes the folder
    done = run(command(docs, out))
    assert done.returncode == 0, done.stderr[-2000:]
    took = [line for line in done.stderr.splitlines() if "took over" in line]
    assert len(took) == 1 and f"pid {first.pid}" in took[0] and "its process is gone" in took[0], done.stderr
    assert_each_record_once(out, clean)


def test_readers_work_on_a_folder_being_written_and_say_how_far_it_is(tmp_path, docs):
    out = tmp_path / "out"
    # Four documents at a time: the run lasts a minute, through every reader.
    writer = start(command(docs, out, "--set", "run.metrics_every_s=0.2", "--max-in-flight", "4"), **SLOW)
    try:
        wait_for_calls(out, 30, writer)
        time.sleep(0.5)  # a metrics line with samples finished
        unit = lines(out / "journal.jsonl")[0]["s"]
        for args in (["report", str(out)], ["export", str(out), "--to", str(tmp_path / "export")],
                     ["trace", str(out), unit]):
            done = run(airgen(*args))
            assert writer.poll() is None, "the run ended before the readers did: make it longer"
            assert done.returncode == 0, (args, done.stderr[-2000:])
            note = [line for line in done.stderr.splitlines() if "is being written now" in line]
            assert len(note) == 1 and f"pid {writer.pid}" in note[0], (args, done.stderr)
            assert "finished" in note[0] and "in flight" in note[0]
    finally:
        writer.wait(120)
    assert writer.returncode == 0
    done = run(airgen("report", str(out)))
    assert done.returncode == 0 and "is being written" not in done.stderr


def test_readers_leave_a_half_written_last_line_alone(tmp_path, docs):
    """A reader must not cut what looks torn: the writer may be in the middle of writing it."""
    out = tmp_path / "out"
    assert run(command(docs, out, "--limit", "6")).returncode == 0
    for name in ("journal.jsonl", "records.jsonl", "rejected.jsonl", "metrics.jsonl"):
        with open(out / name, "ab") as f:
            f.write(b'{"s": "d07", "k": "d07/ans')
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with lock.hold(out, "a run being written"):
        for args in (["report", str(out)], ["export", str(out), "--to", str(tmp_path / "export")],
                     ["trace", str(out), "d01"]):
            done = run(airgen(*args))
            assert done.returncode == 0, (args, done.stderr[-2000:])
            assert "Traceback" not in done.stderr
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name in before}
    assert {k: v for k, v in after.items() if k != lock.LOCK} == {k: v for k, v in before.items() if k != lock.LOCK}


def test_the_folder_lock_names_its_holder_and_takes_over_a_lapsed_lease(tmp_path):
    out = tmp_path / "run"
    said: list[str] = []
    with lock.hold(out, "airgen run docs.jsonl", said.append) as held:
        found = lock.holder(out)
        assert found is not None and found.pid == os.getpid() and found.command == "airgen run docs.jsonl"
        with pytest.raises(lock.Locked, match=f"pid {os.getpid()} on {socket.gethostname()}"):
            with lock.hold(out, "again"):
                pass
        assert held.took_over is None and not said
    assert not out.exists()  # made by the lock, left empty: removed with it

    out.mkdir()
    path = out / lock.LOCK

    def elsewhere(age_s: float) -> None:  # a holder on another node, as a filesystem without shared locks shows it
        now = time.time()
        path.write_bytes(orjson.dumps({"pid": 4242, "host": "node-7", "since": now - 3600, "command": "airgen run x",
                                       "renewed": now - age_s}))

    elsewhere(5)
    assert lock.holder(out).host == "node-7"
    with pytest.raises(lock.Locked, match="node-7.*lease renewed 5 s ago"):
        with lock.hold(out, "mine"):
            pass
    elsewhere(lock.LEASE_S + 30)
    assert lock.holder(out) is None
    with lock.hold(out, "mine", said.append) as held:
        assert held.took_over.host == "node-7"
    assert len(said) == 1 and "pid 4242 on node-7" in said[0] and "its lease was last renewed" in said[0]
    assert out.exists()  # not made by this lock: kept


def test_the_lease_is_renewed_while_the_lock_is_held(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "RENEW_S", 0.05)
    with lock.hold(tmp_path, "airgen run"):
        first = lock.holder(tmp_path).renewed
        time.sleep(0.3)
        assert lock.holder(tmp_path).renewed > first


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    with lock.hold(tmp_path / "run", "airgen run"):
        child = os.fork()
        if child == 0:  # an engine process forked by the run, outliving it
            time.sleep(3)
            os._exit(0)
    try:
        with lock.hold(tmp_path / "run", "next"):
            pass
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_new_run_folder_of_a_refused_command_is_not_left_behind(tmp_path):
    out = tmp_path / "out"
    done = run(command(tmp_path / "missing.jsonl", out))
    assert done.returncode == 2 and "input not found" in done.stderr
    assert not out.exists()
