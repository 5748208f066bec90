"""Checked constraints through a whole run: `airgen run` against a real HTTP server whose judge writes constraints
code can check (some of which the final answers meet), then the records, the report, the card, `export --checked`,
`export --format rlvr`, and TRL's GRPOTrainer rewarded by `airgen.checks.reward` on that export; and a CRAB run,
whose rules carry their own checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airgen import checks
from airgen.air.script import CHECKABLE
from tests.faultserver import FaultServer
from tests.runs import documents, lines, pairs_jsonl

ROOT = Path(__file__).resolve().parent.parent
# What the scripted final answer does with each constraint of CHECKABLE (see its comment).
MEETS = dict(zip(CHECKABLE, (True, True, True, False, False, False)))


def airgen(*args: str, script: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    head = [str(ROOT / "tests" / "scripted_cli.py")] if script else ["-m", "airgen"]
    return subprocess.run([sys.executable, *head, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})




@pytest.fixture(scope="module")
def checked_run(tmp_path_factory):
    """C' (the constraints the student failed) merged, the student failing half: every level has constraints found
    but not merged, whose check a record carries without a verdict."""
    tmp = tmp_path_factory.mktemp("checked")
    out = tmp / "out"
    with FaultServer(air={"fail": 0.5, "checkable": True}) as server:
        done = airgen("run", str(documents(tmp / "docs.jsonl", 30)), "--out", str(out), "--guidance-url",
                      server.url, "--student-url", server.url, "--rounds", "3", "--no-progress", "--set",
                      "flow.constraint_set=failed")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_each_record_says_which_constraints_its_answer_provably_meets(checked_run):
    records = lines(checked_run / "records.jsonl")
    assert len(records) > 20
    unmerged = 0
    for r in records:
        meta = r["meta"]
        asked = [c for c in meta["constraints"] if c["merged"]]
        assert [c["text"] for c in asked] == meta["merged_constraints"]
        for c in meta["constraints"]:
            check = checks.Check.of(c["check"])
            assert check == checks.parse(c["text"])  # the judge's text, read in code
            if c["merged"]:
                assert c["holds"] is check.holds(r["output"]) is MEETS[c["text"]]
            else:
                assert c["holds"] is None  # the answer was not asked to meet it
                unmerged += 1
        assert meta["checks"] == {"checkable": len(asked), "met": sum(MEETS[c["text"]] for c in asked),
                                  "asked": [c["check"] for c in asked]}
    assert unmerged > 0


def test_the_report_and_the_card_show_the_checks(checked_run, tmp_path):
    done = airgen("report", str(checked_run))
    assert done.returncode == 0, done.stderr
    records = lines(checked_run / "records.jsonl")
    f = json.loads((checked_run / "report" / "summary.json").read_text())["checks"]
    asked = sum(len(r["meta"]["merged_constraints"]) for r in records)
    met = sum(r["meta"]["checks"]["met"] for r in records)
    assert (f["asked"], f["checkable"], f["met"]) == (asked, asked, met) and 0 < met < asked
    levels = {r["meta"]["level"] for r in records}
    assert set(f["by_group"]) == {f"level {k}" for k in levels}
    for k in levels:
        at = [r for r in records if r["meta"]["level"] == k]
        group = f["by_group"][f"level {k}"]
        assert group["met"] == sum(r["meta"]["checks"]["met"] for r in at)
        assert group["met_share"] == pytest.approx(group["met"] / group["checkable"])
    assert sum(v["asked"] for v in f["by_type"].values()) == asked
    assert (checked_run / "report" / "checks.png").stat().st_size > 0
    page = (checked_run / "report" / "report.html").read_text()
    line = f"the answers meet {met} of them"
    assert "Checked constraints" in page and line in done.stdout
    to = tmp_path / "sft"
    assert airgen("export", str(checked_run), "--to", str(to)).returncode == 0
    assert line in (to / "README.md").read_text()


def test_export_checked_keeps_only_records_that_meet_every_check(checked_run, tmp_path):
    records = lines(checked_run / "records.jsonl")
    failing = sum(r["meta"]["checks"]["met"] < r["meta"]["checks"]["checkable"] for r in records)
    to = tmp_path / "checked"
    done = airgen("export", str(checked_run), "--to", str(to), "--format", "messages", "--checked",
                  "--keep-duplicates")
    assert done.returncode == 0, done.stderr
    assert f"--checked left out {failing} records whose answer misses a checkable constraint" in done.stdout
    kept = [row for path in sorted((to / "data").glob("*.jsonl")) for row in lines(path)]
    assert 0 < len(kept) == len(records) - failing
    by_id = {f"{r['meta']['doc_id']}#{r['meta']['split']}": r for r in records}
    for row in kept:
        record = by_id[row["id"]]
        assert all(checks.Check.of(c).holds(row["messages"][-1]["content"]) for c in record["meta"]["checks"]["asked"])


@pytest.fixture(scope="module")
def rlvr(checked_run, tmp_path_factory):
    to = tmp_path_factory.mktemp("rlvr") / "rlvr"
    done = airgen("export", str(checked_run), "--to", str(to), "--format", "rlvr")
    assert done.returncode == 0, done.stderr
    return to, done.stdout


def test_the_rlvr_export_is_prompts_checks_and_references(checked_run, rlvr):
    to, said = rlvr
    records = {f"{r['meta']['doc_id']}#{r['meta']['split']}": r for r in lines(checked_run / "records.jsonl")}
    rows = [row for path in sorted((to / "data").glob("*.jsonl")) for row in lines(path)]
    assert rows and "0 records with no checkable constraint have no row" in said
    for row in rows:
        record = records[row["id"]]
        assert row["prompt"] == [{"role": "user", "content": record["instruction"]}]
        assert row["reference"] == record["output"] and row["checks"] == record["meta"]["checks"]["asked"]
        met = record["meta"]["checks"]
        assert checks.reward(row["reference"], row["checks"]) == met["met"] / met["checkable"]
    assert not (to / "dataset_info.json").exists()
    card = (to / "README.md").read_text()
    assert "## RLVR rows" in card and "airgen.checks.reward" in card


@pytest.mark.slow
def test_grpo_trains_on_the_rlvr_export_rewarded_by_airgens_checks(rlvr):
    pytest.importorskip("trl")
    to, _ = rlvr
    trained = subprocess.run([sys.executable, str(ROOT / "tests" / "trainers.py"), "grpo", str(to)], cwd=ROOT,
                             capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = json.loads(trained.stdout.strip().splitlines()[-1])
    print("GRPOTrainer on the rlvr export:", {k: v for k, v in result.items() if k != "checks"})
    assert result["rows"] > 0 and result["checks"] and all("kind" in c for c in result["checks"])
    # Two steps, each a batch of 2 completions scored by airgen's reward (a share of checks met), and logged by TRL.
    assert len(result["rewards"]) == 4 and all(0.0 <= r <= 1.0 for r in result["rewards"])
    assert len(result["logged_rewards"]) == 2


def test_a_run_whose_judge_writes_nothing_checkable_says_so(tmp_path):
    out = tmp_path / "out"
    with FaultServer() as server:  # the scripted judge's constraints: "follow the ... rule number N throughout"
        done = airgen("run", str(documents(tmp_path / "docs.jsonl", 6)), "--out", str(out), "--guidance-url",
                      server.url, "--student-url", server.url, "--rounds", "2", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(r["meta"]["checks"]["checkable"] == 0 for r in lines(out / "records.jsonl"))
    report = airgen("report", str(out))
    assert "checked constraints: 0 of" in report.stdout and "checkable in code (0%)" in report.stdout
    to = tmp_path / "rlvr"
    done = airgen("export", str(out), "--to", str(to), "--format", "rlvr")
    assert done.returncode == 2 and "the filters keep no record" in done.stderr


def test_crab_rules_carry_their_own_checks(tmp_path):
    out = tmp_path / "out"
    done = airgen("run", "--recipe", "crab", str(pairs_jsonl(tmp_path / "pairs.jsonl", 40)), "--out", str(out),
                  "--guidance-url", "http://127.0.0.1:9", "--no-progress", script="scripted")
    assert done.returncode == 0, done.stderr[-3000:]
    records = lines(out / "records.jsonl")
    forward = [r for r in records if r["meta"]["kind"] == "forward"]
    assert forward and len(forward) < len(records)
    rule_checks = 0
    for r in records:
        for c in r["meta"]["constraints"]:
            if c["source"] == "rule":
                assert c["check"] is not None  # every rule is checkable: it was built in code
                rule_checks += 1
            if r["meta"]["kind"] == "reverse":
                assert c["holds"] is None  # a reverse record answers with an instruction
            elif c["check"] is not None:
                assert c["holds"] is checks.Check.of(c["check"]).holds(r["output"])
    # The rules kept were verified on the response they came from; their checks agree.
    for r in forward:
        assert all(c["holds"] for c in r["meta"]["constraints"] if c["source"] == "rule")
    assert rule_checks > 0
    report = airgen("report", str(out))
    assert report.returncode == 0, report.stderr
    f = json.loads((out / "report" / "summary.json").read_text())["checks"]
    assert "rule" in f["by_group"] and set(f["by_group"]) <= {"rule", "global", "local"}
    assert f["by_group"]["rule"]["checkable_share"] == 1.0
    assert f["checkable"] == sum(r["meta"]["checks"]["checkable"] for r in forward)
    assert (out / "report" / "checks.png").exists()
