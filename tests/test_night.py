"""What a real night brings, against a real process and an OpenAI-compatible test server: a server down for a minute,
a resume against the same model on another port, a model that loops at the end of every answer, a parser that
raises, a document edited under its id and a step changed between two runs, and the order in which the run's files
reach the disk."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson
import pytest

from tests.faultserver import FaultServer
from tests.runs import ROOT, command, documents, lines, records, run, start
from tests.test_faults import airgen, by_doc

DOCS = 20


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    return documents(tmp_path_factory.mktemp("docs") / "docs.jsonl", DOCS)


@pytest.fixture(scope="module")
def clean(docs, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("clean") / "out"
    with FaultServer() as server:
        assert airgen(server.url, docs, out).returncode == 0
    return by_doc(out)


def journaled(out: Path) -> int:
    path = out / "journal.jsonl"
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.slow
def test_a_server_down_for_a_minute_is_waited_out_and_the_run_finishes_by_itself(tmp_path, docs, clean):
    out = tmp_path / "out"
    server = FaultServer(latency_s=0.05).__enter__()
    port = server.port
    proc = subprocess.Popen([sys.executable, "-m", "airgen", "run", str(docs), "--out", str(out), "--guidance-url",
                             server.url, "--student-url", server.url, "--rounds", "2", "--no-progress",
                             "--max-in-flight", "4", "--set=guidance.backoff_s=0.2", "--set=student.backoff_s=0.2"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while journaled(out) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        server.__exit__(None, None, None)  # down, with calls in flight
        down_at = journaled(out)
        time.sleep(60)
        assert proc.poll() is None, proc.communicate()  # still waiting for it
        with FaultServer(port=port, latency_s=0.05):  # back on the same port
            _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert 30 <= down_at < journaled(out)
    gone = [line for line in err.splitlines() if "answers nothing" in line]
    back = [line for line in err.splitlines() if "answers again after" in line]
    assert len(gone) == 1 and "for up to 900 s (run.outage_s)" in gone[0], err
    # Declared once the retries ran out (seconds after it went), over once it answered again.
    assert len(back) == 1 and int(back[0].split("after ")[1].split(" s")[0].replace(",", "")) >= 40, err
    assert by_doc(out) == clean and not lines(out / "rejected.jsonl")


def test_a_resume_reaches_the_same_model_on_another_port(tmp_path, docs, clean):
    out = tmp_path / "out"
    with FaultServer(latency_s=0.05) as first:
        proc = subprocess.Popen([sys.executable, "-m", "airgen", "run", str(docs), "--out", str(out), "--guidance-url",
                                 first.url, "--student-url", first.url, "--rounds", "2", "--no-progress",
                                 "--max-in-flight", "4"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        deadline = time.monotonic() + 60
        while journaled(out) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with FaultServer() as second:  # restarted elsewhere: another port, the same model
        assert second.port != first.port
        done = airgen(second.url, docs, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert by_doc(out) == clean
    stored = orjson.loads((out / "run.json").read_bytes())
    assert stored["settings"]["models"] == {"guidance": "scripted", "student": "scripted"}
    assert "127.0.0.1" not in orjson.dumps(stored["settings"]).decode()  # the fingerprint names no URL


def test_another_model_on_resume_is_refused_and_no_setting_shows_as_changed_unless_it_is(tmp_path, docs):
    out = tmp_path / "out"
    with FaultServer() as server:
        assert airgen(server.url, docs, out, "--limit", "2").returncode == 0
        done = airgen(server.url, docs, out, "--limit", "2", "--guidance-model", "another")
    assert done.returncode == 2
    assert "models.guidance: 'scripted' -> 'another'" in done.stderr
    assert "merged_words" not in done.stderr  # equal values, once shown as [3, 150] -> (3, 150)


@pytest.mark.parametrize("run_of", ["*", "_", "-", "#", " ", "\n"])
def test_a_model_that_loops_at_the_end_of_every_answer_does_not_stop_the_run(tmp_path, run_of):
    docs = documents(tmp_path / "docs.jsonl", 4)
    out = tmp_path / "out"
    with FaultServer(suffix=run_of * 100_000) as server:
        done = airgen(server.url, docs, out, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    finished = len(by_doc(out)) + len(lines(out / "rejected.jsonl"))
    assert finished == 4  # each document made records or a recorded rejection
    assert all(r["reason"] for r in lines(out / "rejected.jsonl"))


def test_a_parser_that_raises_rejects_its_sample_and_the_run_and_its_resume_finish(tmp_path):
    docs = documents(tmp_path / "docs.jsonl", 10)
    out = tmp_path / "out"
    done = run(command(docs, out), SCRIPTED_PARSER_RAISES="d03")
    assert done.returncode == 0, done.stderr[-3000:]
    rejected = lines(out / "rejected.jsonl")
    assert [(r["id"], r["stage"]) for r in rejected] == [("d03", "back_translate")]
    assert "could not be read (IndexError: list index out of range)" in rejected[0]["reason"]
    assert len({r[0] for r in records(out)}) == 9
    before = (out / "records.jsonl").read_bytes()
    again = run(command(docs, out), SCRIPTED_PARSER_RAISES="d03")  # a resume of a finished run
    assert again.returncode == 0 and (out / "records.jsonl").read_bytes() == before


def asked_again(stderr: str) -> int:
    line = next(x for x in stderr.splitlines() if "answers from the journal" in x)
    return int(line.split("replayed, ")[1].split(" asked again")[0])


def test_an_edited_document_and_a_changed_step_are_asked_again_and_counted(tmp_path):
    docs = documents(tmp_path / "docs.jsonl", 10)
    out = tmp_path / "out"
    stopped = run(command(docs, out), SCRIPTED_ENGINE="failing")  # the engine dies after 30 calls
    assert stopped.returncode == 1
    journal = lines(out / "journal.jsonl")
    open_units = {e["s"] for e in journal if "s" in e} - {e["done"] for e in journal if "done" in e}
    edited = sorted(open_units)[0]
    rows = [orjson.loads(x) for x in docs.read_bytes().splitlines()]
    for row in rows:
        if row["id"] == edited:
            row["text"] = "an edited text about another topic entirely " * 10
    docs.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    done = run(command(docs, out))
    assert done.returncode == 0, done.stderr[-3000:]
    ours = [e for e in journal if e.get("s") == edited]
    assert ours and asked_again(done.stderr) >= len(ours), done.stderr
    assert "the request changed since it was answered" in done.stderr
    keys = [e["k"] for e in lines(out / "journal.jsonl") if e.get("s") == edited]
    assert len(keys) > len(set(keys))  # its calls were asked again, each journaled anew

    out = tmp_path / "changed"
    assert run(command(docs, out), SCRIPTED_ENGINE="failing").returncode == 1
    refines = [e for e in lines(out / "journal.jsonl") if "/refine/" in e.get("k", "")]
    unfinished = {e["s"] for e in refines} - {e["done"] for e in lines(out / "journal.jsonl") if "done" in e}
    done = run(command(docs, out), SCRIPTED_CHANGED_STEP="refine")
    assert done.returncode == 0, done.stderr[-3000:]
    assert asked_again(done.stderr) >= len(unfinished) > 0


def test_sigterm_stops_the_run_and_a_second_one_ends_the_process_when_the_stop_hangs(tmp_path):
    docs = documents(tmp_path / "docs.jsonl", 5)
    out = tmp_path / "out"
    proc = start(command(docs, out), SCRIPTED_ENGINE="stuck")  # its calls never let go, even when cancelled
    deadline = time.monotonic() + 60
    while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert proc.poll() is None  # the stop waits on the calls it cancelled
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and time.monotonic() - began < 5
    assert "airgen: stopped at once (a second signal)" in err and "Traceback" not in err


def test_a_done_marker_reaches_the_disk_only_after_its_lines(tmp_path, monkeypatch):
    """Every write and fsync of a real run, in order: each done marker is written after an fsync of the output
    files that follows the unit's lines, so a power loss can lose a marker, never the lines it vouches for."""
    from airgen.store import files

    events: list[tuple[str, str, bytes]] = []
    lock = threading.Lock()
    real_write, real_fsync = files.write_all, os.fsync

    def name(fd: int) -> str:
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))

    def write_all(fd, data):
        with lock:
            events.append(("write", name(fd), bytes(data)))
        real_write(fd, data)

    def fsync(fd):
        with lock:
            events.append(("fsync", name(fd), b""))
        real_fsync(fd)

    monkeypatch.setattr(files, "write_all", write_all)
    monkeypatch.setattr(files.os, "fsync", fsync)
    docs = documents(tmp_path / "docs.jsonl", 30)
    from airgen import cli
    from tests import scripted_cli  # noqa: F401 - its scripted engines

    out = tmp_path / "out"
    assert cli.main([*command(docs, out)[2:], "--set", "run.metrics_every_s=0.2"]) == 0
    written_at: dict[str, int] = {}  # unit -> index of the write that held its output lines
    synced_at: dict[str, int] = {}  # output file -> index of its latest fsync
    markers = 0
    for i, (what, file, data) in enumerate(events):
        if what == "fsync":
            synced_at[file] = i
        elif file == "records.jsonl":
            for line in data.splitlines():
                written_at[orjson.loads(line)["meta"]["doc_id"]] = i
        elif file == "journal.jsonl":
            for line in data.splitlines():
                unit = orjson.loads(line).get("done")
                if unit is not None:
                    markers += 1
                    assert synced_at.get("records.jsonl", -1) > written_at[unit], unit
    assert markers == 30
