"""Preference pairs from the judge's own verdicts (`flow.preference_pairs`): made exactly where the check of the
student's answer to a level's merged instruction finds a failed constraint; journaled and resumed like every call;
exported as TRL and LlamaFactory preference data, and trained on for real by TRL's DPOTrainer; TRL's SFTTrainer on
the prompt-completion export trains on the completion alone."""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from airgen.air.flow import AirFlow, Sample
from airgen.air.settings import FlowConfig
from airgen.method.calls import split_key
from airgen.method.flow import Done
from tests.conftest import completion, drive, script
from tests.faultserver import FaultServer

ROOT = Path(__file__).resolve().parent.parent
DOC = "A long human-written article about gardening in small urban spaces. " * 8


def scores(*values: int):
    return lambda request: "\n\n".join(f"criterion {i}\t{values[min(i, len(values) - 1)]}"
                                       for i in range(request.args["count"]))


def run(prompts, overrides: dict, pick=None, **settings):
    flow = AirFlow(FlowConfig(**settings), prompts, 0)
    return drive(flow, Sample("d1", DOC), script(prompts, overrides, fail=1.0), pick)


def test_a_pair_exactly_where_the_check_of_the_students_answer_fails(prompts):
    student = "A short answer that ignores most of what was asked."
    overrides = {"pair_answer": student, "pair_check/1": scores(1), "pair_check/2": scores(3, 3),
                 "pair_check/3": scores(3, 0, 3)}
    step, requests = run(prompts, overrides, rounds=3, constraint_set="all", preference_pairs=True)
    assert isinstance(step, Done) and [r["meta"]["level"] for r in step.records] == [1, 2, 3]
    assert [r["meta"]["pair"] for r in step.records] == ["made", "the student met every constraint", "made"]
    assert [p["meta"]["level"] for p in step.pairs] == [1, 3]
    for pair in step.pairs:
        record = step.records[pair["meta"]["level"] - 1]
        assert (pair["prompt"], pair["chosen"], pair["rejected"]) == (record["instruction"], record["output"], student)
        assert [c["text"] for c in pair["meta"]["constraints"]] == record["meta"]["merged_constraints"]
    failed = step.pairs[1]["meta"]["failed_constraints"]
    assert [(c["text"], c["score"]) for c in failed] == [(step.records[2]["meta"]["merged_constraints"][1], 0)]
    # Two calls per level: the student's answer (beside the final answer) and its check.
    stages = [r.stage for r in requests]
    assert stages.count("pair_answer") == stages.count("pair_check") == 3
    assert [r.role for r in requests if r.stage == "pair_answer"] == ["student"] * 3
    plain, asked = run(prompts, overrides, rounds=3, constraint_set="all")
    assert not plain.pairs and not {"pair_answer", "pair_check"} & {r.stage for r in asked}
    assert "pair" not in plain.records[0]["meta"]


def test_pairs_do_not_depend_on_the_order_answers_come_back(prompts):
    overrides = {"pair_check": scores(0, 3)}
    first, _ = run(prompts, overrides, rounds=3, preference_pairs=True)
    for seed in range(5):
        rng = random.Random(seed)
        again, _ = run(prompts, overrides, lambda todo: rng.randrange(len(todo)), rounds=3, preference_pairs=True)
        assert again == first


def test_an_unusable_student_answer_makes_no_pair_and_says_why(prompts):
    overrides = {"pair_answer/1": completion("An answer cut off before its end", "length"),
                 "pair_check/2": lambda r: "no scores at all"}
    step, _ = run(prompts, overrides, rounds=2, constraint_set="all", preference_pairs=True)
    assert not step.pairs
    outcomes = [r["meta"]["pair"] for r in step.records]
    assert "cut at max_tokens" in outcomes[0] and outcomes[1].startswith("the check of the student's answer")


# -- a real run: the fault server's scripted answers, the export, the trainers --------------------------------------

def airgen(*args: str, timeout: float = 600):
    return subprocess.run([sys.executable, "-m", "airgen", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture(scope="module")
def paired_run(tmp_path_factory):
    """A run with pairs on, its check of the student failing half the constraints (the fault server's script)."""
    tmp = tmp_path_factory.mktemp("pairs")
    docs = tmp / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(24)))
    out = tmp / "out"
    with FaultServer(air={"fail": 0.5}) as server:
        done = airgen("run", str(docs), "--out", str(out), "--guidance-url", server.url, "--student-url", server.url,
                      "--rounds", "3", "--no-progress", "--set", "flow.preference_pairs=true")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_a_run_writes_pairs_exactly_where_its_journal_says_the_student_failed(paired_run):
    checks = {}
    for event in lines(paired_run / "journal.jsonl"):
        if "k" in event and split_key(event["k"])[1] == "pair_check":
            unit, _, level = split_key(event["k"])
            checks[(unit, level)] = [int(line.split("\t")[1]) for line in event["t"].split("\n\n")]
    records = {(r["meta"]["doc_id"], r["meta"]["level"]) for r in lines(paired_run / "records.jsonl")}
    expected = {key for key in records if min(checks[key]) < 3}
    pairs = lines(paired_run / "pairs.jsonl")
    assert 0 < len(expected) < len(records)  # some levels made a pair, some did not
    assert {(p["meta"]["doc_id"], p["meta"]["level"]) for p in pairs} == expected
    for pair in pairs:
        assert [c["score"] for c in pair["meta"]["constraints"]] == checks[(pair["meta"]["doc_id"],
                                                                             pair["meta"]["level"])]
    from airgen.read.report import figures

    f = figures(paired_run)
    funnel = dict(f["funnel"])
    assert funnel["levels that made a preference pair"] == len(pairs)
    assert funnel["levels whose student answer met every constraint (no pair)"] == len(records) - len(pairs)
    assert sum(f["pairs"]["failed_types"].values()) == sum(len(p["meta"]["failed_constraints"]) for p in pairs)


def test_the_dpo_export_is_what_trl_and_llamafactory_read(paired_run, tmp_path):
    to = tmp_path / "dpo"
    done = airgen("export", str(paired_run), "--to", str(to), "--format", "dpo", "--name", "garden pairs")
    assert done.returncode == 0, done.stderr
    info = json.loads((to / "dataset_info.json").read_text())
    entry = info["garden_pairs_level_1"]
    assert entry["ranking"] is True and entry["file_name"] == "data/level_1.jsonl"
    row = json.loads((to / "data" / "level_1.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in row["prompt"]] == ["user"]
    assert [m["role"] for m in row["chosen"]] == [m["role"] for m in row["rejected"]] == ["assistant"]
    assert all(row[c] is not None for c in entry["columns"].values())  # LlamaFactory's alpaca ranking columns
    assert row["chosen_response"] == row["chosen"][0]["content"] and row["instruction"] == row["prompt"][0]["content"]
    card = (to / "README.md").read_text()
    assert "## Pairs" in card and "config_name: level_1" in card
    pytest.importorskip("trl")
    trained = subprocess.run([sys.executable, str(ROOT / "tests" / "trainers.py"), "dpo", str(to)], cwd=ROOT,
                             capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    print("DPOTrainer on the dpo export:", result)
    assert result["conversational"] and len(result["losses"]) == 2 and all(loss > 0 for loss in result["losses"])


def test_trl_trains_on_the_completion_alone_with_the_prompt_completion_export(paired_run, tmp_path):
    pytest.importorskip("trl")
    to = tmp_path / "sft"
    assert airgen("export", str(paired_run), "--to", str(to), "--format", "prompt-completion").returncode == 0
    assert not (to / "dataset_info.json").exists()  # a layout LlamaFactory does not read
    trained = subprocess.run([sys.executable, str(ROOT / "tests" / "trainers.py"), "sft", str(to)], cwd=ROOT,
                             capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    print("SFTTrainer on the prompt-completion export:", result)
    assert 0 < result["completion_tokens"] < result["tokens"]  # the prompt's tokens carry no loss
    assert len(result["losses"]) == 3
