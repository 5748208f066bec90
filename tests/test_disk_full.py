"""A full disk is one line, wherever it fills: on a real filesystem that fills (a small tmpfs, where the test may
mount one), and under each file airgen writes (the full disk injected at that file alone). The line goes to the
terminal the command was started from, never a traceback; nothing torn is left; once there is space, the same
command finishes with exactly a clean run's records."""
from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.runs import airgen, command, documents, lines, records, run

DOCS = 30


def assert_one_full_line(done: subprocess.CompletedProcess, where: Path, file: str | None = None) -> str:
    assert done.returncode == 1, done.stderr[-3000:]
    terminal = done.stdout + done.stderr
    assert "Traceback" not in terminal and "Errno" not in terminal, terminal[-3000:]
    said = [line for line in done.stderr.splitlines() if "is full" in line]
    assert len(said) == 1 and said[0].startswith("airgen: ") and f"the disk holding {where}" in said[0], terminal
    if file is not None:
        assert f"(writing {where}/{file}" in said[0] or f"/{file})" in said[0], said[0]
    return said[0]


def inputs(tmp_path: Path) -> Path:
    """Documents and one line that is no JSON: a run writes rejected.jsonl too."""
    docs = documents(tmp_path / "docs.jsonl", DOCS)
    with open(docs, "ab") as f:
        f.write(b'{"text": broken json\n')
    return docs


# -- under each file, injected ----------------------------------------------------------------------------------

EVERY_FILE = ["journal.jsonl:40", "records.jsonl:5", "rejected.jsonl", "dropped_levels.jsonl:2", "pairs.jsonl:5",
              "metrics.jsonl", "run.json"]
ALL_OUTPUTS = ("--set", "flow.preference_pairs=true")  # with SCRIPTED_ENGINE=drops: every output file is written


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> tuple[Path, list[tuple]]:
    folder = tmp_path_factory.mktemp("clean")
    docs = inputs(folder)
    out = folder / "out"
    done = run(command(docs, out, *ALL_OUTPUTS), SCRIPTED_ENGINE="drops")
    assert done.returncode == 0, done.stderr[-2000:]
    for name in ("rejected.jsonl", "dropped_levels.jsonl", "pairs.jsonl"):
        assert lines(out / name), name  # each file the cases fill is written by this run
    return docs, records(out)


@pytest.mark.parametrize("full", EVERY_FILE)
def test_a_disk_full_under_each_file_of_a_run_is_one_line_and_resumes(tmp_path, clean, full):
    docs, reference = clean
    out = tmp_path / "out"
    name = full.split(":")[0]
    done = run(command(docs, out, *ALL_OUTPUTS), SCRIPTED_ENGINE="drops", SCRIPTED_DISK_FULL=full)
    said = assert_one_full_line(done, out, name)
    assert "run the same command again to resume" in said
    for log in out.glob("*.jsonl"):  # whole lines only: a write the disk cut short was taken back
        assert log.read_bytes() == b"" or log.read_bytes().endswith(b"\n"), log
    done = run(command(docs, out, *ALL_OUTPUTS), SCRIPTED_ENGINE="drops")
    assert done.returncode == 0, done.stderr[-2000:]
    assert records(out) == reference


def test_a_full_engine_log_is_one_line_on_the_terminal(tmp_path, clean):
    """fd 2 points at OUT/engine.log while a run goes on: a full disk there must not swallow the run's last words.
    The log here is /dev/full, on which every write fails with ENOSPC."""
    docs, reference = clean
    out = tmp_path / "out"
    assert run(command(docs, out, *ALL_OUTPUTS, "--limit", "3"), SCRIPTED_ENGINE="drops").returncode == 0
    (out / "engine.log").unlink()
    (out / "engine.log").symlink_to("/dev/full")
    done = run(command(docs, out, *ALL_OUTPUTS), SCRIPTED_ENGINE="chatty")  # engine chatter at start
    assert_one_full_line(done, out)
    # An engine failure while the log is full: its one line still reaches the terminal, the traceback is dropped.
    done = run(command(docs, out, *ALL_OUTPUTS), SCRIPTED_ENGINE="failing")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    stopped = [line for line in done.stderr.splitlines() if line.startswith("airgen: the run stopped")]
    assert len(stopped) == 1 and "the engine core died" in stopped[0], done.stderr
    (out / "engine.log").unlink()
    done = run(command(docs, out, *ALL_OUTPUTS), SCRIPTED_ENGINE="drops")
    assert done.returncode == 0, done.stderr[-2000:]
    assert records(out) == reference


@pytest.fixture(scope="module")
def finished(tmp_path_factory, clean) -> Path:
    docs, _ = clean
    out = tmp_path_factory.mktemp("finished") / "out"
    assert run(command(docs, out, *ALL_OUTPUTS), SCRIPTED_ENGINE="drops").returncode == 0
    return out


@pytest.mark.parametrize("full", ["summary.json", "report.html", "README.md", "funnel.png"])
def test_a_disk_full_under_the_report_is_one_line(finished, full):
    done = run(airgen("report", str(finished)), SCRIPTED_DISK_FULL=full)
    assert_one_full_line(done, finished, f"report/{full}")
    assert run(airgen("report", str(finished))).returncode == 0


@pytest.mark.parametrize("full", ["level_1.jsonl", "dataset_info.json", "README.md"])
def test_a_disk_full_under_an_export_is_one_line(finished, tmp_path, full):
    to = tmp_path / "export"
    done = run(airgen("export", str(finished), "--to", str(to)), SCRIPTED_DISK_FULL=full)
    assert_one_full_line(done, to)
    assert run(airgen("export", str(finished), "--to", str(to))).returncode == 0
    assert (to / "data" / "level_1.jsonl").exists()


@pytest.fixture(scope="module")
def embeddings(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("emb") / "e.npy"
    vectors = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
    np.save(path, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return path


@pytest.mark.parametrize("full", ["manifest.jsonl", "summary.json"])
def test_a_disk_full_under_a_selection_is_one_line(embeddings, tmp_path, full):
    out = tmp_path / "sel"
    done = run(airgen("select", "--embeddings", str(embeddings), "--n", "5", "--out", str(out)),
               SCRIPTED_DISK_FULL=full)
    assert_one_full_line(done, out, full)
    done = run(airgen("select", "--embeddings", str(embeddings), "--n", "5", "--out", str(out)))
    assert done.returncode == 0, done.stderr
    assert len(lines(out / "manifest.jsonl")) == 5


def test_a_disk_full_under_a_bench_is_one_line(tmp_path):
    docs = documents(tmp_path / "docs.jsonl", 4)
    out = tmp_path / "bench"
    bench = airgen("bench", str(docs), "--out", str(out), "--guidance-url", "http://127.0.0.1:9", "--student-url",
                   "http://127.0.0.1:9", "--rounds", "2")
    said = assert_one_full_line(run(bench, SCRIPTED_DISK_FULL="bench.json"), out, "bench.json")
    assert "a new --out folder" in said


# -- a real filesystem that fills ---------------------------------------------------------------------------------

@pytest.fixture()
def small_disk(tmp_path):
    """A 512 KiB tmpfs: a run of 300 documents needs about 1.4 MiB."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        pytest.skip(f"no tmpfs can be mounted here ({made.stderr.strip() or made.returncode}): the injected cases "
                    "above cover each file")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> None:
    """Take every byte left on the filesystem of `folder` (maybe none: not even a new file fits)."""
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as e:
        assert e.errno == errno.ENOSPC


def test_a_real_disk_that_fills_mid_run(small_disk, tmp_path):
    docs = documents(tmp_path / "docs.jsonl", 300)
    reference = tmp_path / "clean"
    assert run(command(docs, reference), SCRIPTED_ENGINE="chatty").returncode == 0
    out = small_disk / "out"
    # 16 documents at a time, so that records are written as the journal grows; fds 1 and 2 on the same disk.
    done = run(command(docs, out, "--max-in-flight", "16"), SCRIPTED_ENGINE="chatty")
    assert_one_full_line(done, out)
    assert b"chatter" in (out / "engine.log").read_bytes()
    started = len([e for e in lines(out / "journal.jsonl") if "k" in e])
    assert started > 100 and lines(out / "records.jsonl")  # it filled mid-run, not at the start

    fill(small_disk)  # readers that write (report, export, select) meet the full disk too
    assert_one_full_line(run(airgen("report", str(out))), out)
    assert_one_full_line(run(airgen("export", str(out), "--to", str(small_disk / "export"))),
                         small_disk / "export")
    embeddings = tmp_path / "e.npy"
    np.save(embeddings, np.eye(8, dtype=np.float32))
    assert_one_full_line(run(airgen("select", "--embeddings", str(embeddings), "--n", "3", "--out",
                                    str(small_disk / "sel"))), small_disk / "sel")

    (small_disk / "filler").unlink(missing_ok=True)
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    done = run(command(docs, out), SCRIPTED_ENGINE="chatty")
    assert done.returncode == 0, done.stderr[-2000:]
    assert records(out) == records(reference)
    calls = [e["k"] for e in lines(out / "journal.jsonl") if "k" in e]
    assert len(calls) == len(set(calls))  # no finished call asked again
    assert orjson.loads((out / "run.json").read_bytes())["fingerprint"]
    assert os.path.getsize(out / "records.jsonl") == os.path.getsize(reference / "records.jsonl")
