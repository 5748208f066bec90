"""CRAB through the whole machinery: pair readers, `airgen run --recipe crab` in a real process (killed and resumed),
an AIR run folder as input, and the report and export of a CRAB run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from airgen import cli
from airgen.method.rows import CorpusError, Rejection
from airgen.crab.pairs import Pair, bundled_pairs, read_pairs
from tests.runs import pairs_jsonl

ROOT = Path(__file__).resolve().parent.parent


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def airgen(out: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "tests" / "scripted_cli.py"), "run", *args, "--out", str(out),
           "--guidance-url", "http://127.0.0.1:9", "--no-progress", "--max-in-flight", "32"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    return err.decode()


def test_pairs_in_every_form_and_what_is_not_a_pair(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [
        {"id": "a", "instruction": "Explain it.", "input": "The input text.", "output": "An answer."},
        {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi?"},
                      {"role": "assistant", "content": "Hello."}]},
        {"id": 7, "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]},
        {"id": "b", "instruction": "No answer."},
        {"id": "c", "messages": [{"role": "user", "content": "Alone."}]},
        {"id": "d", "instruction": "Typed.", "output": ["a", "list"]},
        {"id": "e", "instruction": " ", "output": "x"},
        {"id": "a", "instruction": "Same id.", "output": "Other text."},
        {"id": True, "instruction": "x", "output": "y"},
    ]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b"{broken\n\xff\xfe\n")
    from airgen.crab.pairs import admitted_pairs

    units = list(admitted_pairs([path]))
    pairs = [u for u in units if isinstance(u, Pair)]
    assert [(p.id, p.instruction, p.response) for p in pairs[:3]] == [
        ("a", "Explain it.\n\nThe input text.", "An answer."), (pairs[1].id, "Hi?", "Hello."), ("7", "Q", "A")]
    reasons = [(u.id, u.rule) for u in units if isinstance(u, Rejection)]
    assert reasons == [("b", "missing_field"), ("c", "not_a_pair"), ("d", "bad_type"), ("e", "empty"),
                       ("a", "duplicate_id"), (None, "bad_type"), (None, "bad_json"), (None, "not_utf8")]
    assert len(units) == len(rows) + 2  # every line is a pair or a rejection
    with pytest.raises(CorpusError, match="not an airgen run folder"):
        read_pairs([tmp_path])
    (tmp_path / "x.txt").write_text("a document, not pairs")
    with pytest.raises(CorpusError, match="pairs come as"):
        read_pairs([tmp_path / "x.txt"])


def test_pairs_from_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"instruction": ["A?", "B?"], "output": ["a.", None]}), path)
    units = list(read_pairs([path]))
    assert isinstance(units[0], Pair) and units[0].response == "a." and units[1].rule == "bad_type"


def test_the_bundled_pairs_read_clean():
    units = list(read_pairs([bundled_pairs()]))
    assert len(units) == 12 and all(isinstance(u, Pair) for u in units)


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    path = pairs_jsonl(tmp_path / "pairs.jsonl", 150)
    with open(path, "ab") as f:
        f.write(b'{"instruction": "no output"}\n')
    return path


def test_crab_run_killed_twice_resumes_to_the_uninterrupted_records(tmp_path, pairs_file):
    whole = tmp_path / "whole"
    finish(airgen(whole, "--recipe", "crab", str(pairs_file)))
    out = tmp_path / "out"
    for target in (60, 600):  # early, and mid-way through the checks
        proc = airgen(out, "--recipe", "crab", str(pairs_file))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            path = out / "journal.jsonl"
            if path.exists() and path.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    err = finish(airgen(out, "--recipe", "crab", str(pairs_file)))
    assert "replayed" in err and "records from 150 pairs" in err
    records = {r["meta"]["doc_id"]: r for r in lines(out / "records.jsonl")}
    assert len(records) == len(lines(out / "records.jsonl")) == 150
    expected = {r["meta"]["doc_id"]: r for r in lines(whole / "records.jsonl")}
    assert records == expected
    events = lines(out / "journal.jsonl")
    keys = [e["k"] for e in events if "k" in e]
    assert len(keys) == len(set(keys)), "a journaled call was asked again"
    assert [r["stage"] for r in lines(out / "rejected.jsonl")] == ["read"]
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["settings"]["recipe"] == "crab" and set(run_info["settings"]["models"]) == {"guidance"}
    # A crab folder is not resumed as an AIR run.
    proc = airgen(out, str(pairs_file))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"other settings" in err


def test_report_and_export_of_a_crab_run(tmp_path, pairs_file, capsys):
    out = tmp_path / "out"
    finish(airgen(out, "--recipe", "crab", str(pairs_file)))
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    f = json.loads((out / "report" / "summary.json").read_text())
    funnel = dict(f["funnel"])
    assert funnel["pairs read by the run"] == 151 and funnel["read as pairs"] == 150
    assert funnel["records forward"] + funnel["records reverse"] == 150 == funnel["pairs with records"]
    kept = funnel["constraints kept"]
    removed = sum(n for label, n in f["funnel"] if "removed" in label)
    assert kept + removed == funnel["constraints built by rule"] + funnel["constraints proposed by the model"]
    assert "(crab)" in text and "judge" not in f
    for name in ("funnel", "constraint_types", "lengths"):
        assert (out / "report" / f"{name}.png").exists()
    to = tmp_path / "export"
    assert cli.main(["export", str(out), "--to", str(to), "--format", "messages"]) == 0
    assert sorted(p.name for p in (to / "data").iterdir()) == ["forward.jsonl", "reverse.jsonl"]
    row = orjson.loads((to / "data" / "forward.jsonl").read_bytes().splitlines()[0])
    assert row["id"].endswith("#forward") and row["messages"][0]["role"] == "user"
    card = (to / "README.md").read_text()
    assert "- config_name: forward\n  data_files: data/forward.jsonl" in card and "- crab" in card
    assert "CRAB" in card and "student" not in card
    assert cli.main(["export", str(out), "--to", str(tmp_path / "e2"), "--levels", "1"]) == 2
    assert "not options of a crab run" in capsys.readouterr().err


def test_an_air_run_folder_is_crabs_input(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(8)))
    air = tmp_path / "air"
    cmd = [sys.executable, str(ROOT / "tests" / "scripted_cli.py"), "run", str(docs), "--out", str(air),
           "--guidance-url", "http://127.0.0.1:9", "--student-url", "http://127.0.0.1:9", "--rounds", "2",
           "--no-progress"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    pairs = list(read_pairs([air]))
    assert [p.id for p in pairs] == [f"d{i}" for i in range(8)]
    assert all(p.instruction.startswith("Write a short practical guide") and p.response.startswith("Here is")
               for p in pairs)
    out = tmp_path / "crab"
    finish(airgen(out, "--recipe", "crab", str(air)))
    assert {r["meta"]["doc_id"] for r in lines(out / "records.jsonl")} == {f"d{i}" for i in range(8)}
    with pytest.raises(CorpusError, match="is a crab run"):
        list(read_pairs([out]))


def test_the_bench_command_runs_crab(tmp_path):
    """`airgen bench --recipe crab` in a real process: CRAB's own prompts, no student engine, its stages batched."""
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(b"".join(orjson.dumps({"id": f"p{i}", "instruction": f"Question {i}?",
                                             "output": f"Answer {i}. It explains the steps and reasons. " * 3})
                               + b"\n" for i in range(12)))
    out = tmp_path / "bench"
    cmd = [sys.executable, str(ROOT / "tests" / "scripted_cli.py"), "bench", "--recipe", "crab", str(pairs),
           "--out", str(out), "--guidance-url", "http://127.0.0.1:9"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert b"Traceback" not in done.stderr
    from airgen.crab.steps import STAGES

    result = json.loads((out / "bench.json").read_text())
    modes = result["rounds"][0]["modes"] if "rounds" in result else result["modes"]
    assert result["documents"] == 12 and modes["raw"]["calls"] == modes["airgen"]["calls"] > 12
    assert [b["stage"] for b in modes["stage-barrier"]["batches"]] == list(STAGES)
    assert "airgen/raw" in done.stdout.decode() + done.stderr.decode()  # the table the user reads
