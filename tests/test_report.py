"""`airgen report` and `airgen export` on run folders made by scripted engines: finished, killed, empty, not a run."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess

import orjson
import pytest

from airgen import cli

from airgen.runtime import runner
from airgen import config as C
from airgen.air.script import MethodScript
from airgen.engines.scripted import ScriptedEngine
from airgen.read.report import figures, write_report
from airgen.store.folder import stream


def records(out) -> list[dict]:
    return list(stream(out / "records.jsonl"))

DOCS = 12


def make_docs(tmp_path, n=DOCS):
    data = tmp_path / "docs.jsonl"
    lines = [orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12}) for i in range(n)]
    data.write_bytes(b"\n".join([*lines, b"not json", lines[0]]) + b"\n")  # one unreadable line, one repeated id
    return data


async def make_run(prompts, tmp_path, *, score=5, fail=1.0, rounds=3, constraint_set="failed", stop_after=None,
                   preset=None):
    data = make_docs(tmp_path)
    config = C.load(overrides={"flow": {"rounds": rounds, "constraint_set": constraint_set},
                               "run": {"progress": False}}, preset=preset)
    out = tmp_path / "run"
    inputs = runner.prepare(out, [data], config, prompts)
    script = MethodScript(prompts, fail=fail, score=score)
    # Documents d00..d02 score 2/5 and are rejected at the score step; d03's merge of level 2 is unreadable.
    def respond(request):
        if request.stage == "score" and request.unit in ("d00", "d01", "d02"):
            return "A question that needs a document.\nScore: 2/5"
        if request.key == "d03/merge/2":
            return " "
        if request.stage == "merge":  # longer at each level, as a real merge of more constraints is
            return f"Write a guide about {request.unit} that " + " and ".join(f"keeps rule {j}" for j in range(request.n))
        return script(request)

    engine = ScriptedEngine(respond, latency=lambda r: 0.002)
    engines = {"guidance": engine, "student": engine}
    runner.settle_models(out, runner.models(engines))  # as `airgen run` does: each answer's digest is checkable
    task = asyncio.create_task(runner.generate(config, out, inputs, prompts, engines))
    if stop_after is not None:
        while len(engine.calls) < stop_after:
            await asyncio.sleep(0.005)
        task.cancel()  # stopped mid-run: the calls in flight are lost, the journal holds the rest
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        await task
    return out


async def test_report_of_a_finished_run_holds_the_papers_views(prompts, tmp_path, capsys):
    out = await make_run(prompts, tmp_path)
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    folder = out / "report"
    f = json.loads((folder / "summary.json").read_text())
    funnel = dict(f["funnel"])
    assert funnel["documents read by the run"] == DOCS + 2 and funnel["read as documents"] == DOCS
    assert funnel["instruction kept (score >= 4)"] == DOCS - 3
    assert [funnel[f"finished round {r}"] for r in (1, 2, 3)] == [DOCS - 3] * 3
    assert funnel["records at level 2"] == DOCS - 4 and funnel["documents with records"] == DOCS - 3
    assert sum(sum(c.values()) for c in f["constraint_types"].values()) == 3 * (DOCS - 3)
    assert f["judge"]["failed_share_by_round"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert f["judge"]["rounds_end"] == {"completed 3 rounds": DOCS - 3}
    assert [k["count"] for k in f["rejected"]["score"]] == [3]
    assert sorted(k["reason"] for k in f["rejected"]["read"]) == ["bad_json", "duplicate_id"]
    assert f["dropped_levels"]["merge"][0]["example"]["id"] == "d03"
    assert f["throughput"]["goodput"] < 1 and f["throughput"]["output_tokens"] > 0
    trigrams = f["mean_unique_trigrams"]
    assert trigrams["1"] < trigrams["2"] < trigrams["3"]
    level3 = [r["instruction"].lower().split() for r in records(out) if r["meta"]["level"] == 3]
    assert trigrams["3"] == sum(len({tuple(w[i:i + 3]) for i in range(len(w) - 2)}) for w in level3) / len(level3)
    for name in ("funnel", "constraint_types", "lengths", "trigrams", "judge"):
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "report.html").read_text()
    assert page.count("<table>") >= 8 and 'src="funnel.png"' in page
    assert "records at level 3" in text and "report.html" in text
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: other  # SET THIS") and "size_categories:\n- n<1K" in card
    assert "- config_name: level_3\n  data_files: data/level_3.jsonl" in card and "- synthetic" in card


async def test_report_of_a_killed_run_shows_how_far_it_got(prompts, tmp_path):
    out = await make_run(prompts, tmp_path, stop_after=40)
    folder, text = write_report(out)
    f = json.loads((folder / "summary.json").read_text())
    assert f["in_flight"] > 0 and "still in flight" in text
    assert any("not finished" in note for note in f["limits"])
    assert dict(f["funnel"])["instruction kept (score >= 4)"] > 0


@pytest.mark.parametrize("make", ["empty", "not a run", "missing"])
def test_report_and_export_refuse_what_is_not_a_run(tmp_path, capsys, make):
    folder = tmp_path / "x"
    if make != "missing":
        folder.mkdir()
    if make == "not a run":
        (folder / "notes.txt").write_text("hello")
    for argv in (["report", str(folder)], ["export", str(folder), "--to", str(tmp_path / "e")]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "not" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_of_a_run_that_made_nothing_yet(prompts, tmp_path, capsys):
    out = tmp_path / "run"
    runner.prepare(out, [make_docs(tmp_path)], C.load(overrides={"run": {"progress": False}}), prompts)
    assert cli.main(["report", str(out)]) == 0
    assert "no records yet" in capsys.readouterr().out
    assert (out / "report" / "report.html").exists() and (out / "report" / "README.md").exists()
    assert cli.main(["export", str(out), "--to", str(tmp_path / "e")]) == 2
    assert "no records yet" in capsys.readouterr().err


@pytest.mark.parametrize("fmt, columns", [
    ("alpaca", {"id", "instruction", "input", "output", "meta"}),
    ("sharegpt", {"id", "conversations", "meta"}),
    ("messages", {"id", "messages", "meta"}),
])
async def test_exports_load_in_datasets_and_llamafactory(prompts, tmp_path, fmt, columns, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    out = await make_run(prompts, tmp_path)
    to = tmp_path / "export"
    assert cli.main(["export", str(out), "--to", str(to), "--format", fmt]) == 0
    made = records(out)
    for level in (1, 2, 3):
        want = sum(1 for r in made if r["meta"]["level"] == level)
        file = str(to / "data" / f"level_{level}.jsonl")
        ds = datasets.load_dataset("json", data_files=file, split="train")
        assert set(ds.column_names) == columns and len(ds) == want
        # A split named after the level, in the json loader and through the card's configs.
        assert len(datasets.load_dataset("json", data_files={f"level_{level}": file})[f"level_{level}"]) == want
        assert len(datasets.load_dataset(str(to), f"level_{level}", split="train")) == want
        assert len(datasets.load_dataset(str(to), split=f"level_{level}")) == want
    # No config: every level, each its own split (the default config `all`).
    assert {k: len(v) for k, v in datasets.load_dataset(str(to)).items()} == {
        f"level_{k}": sum(1 for r in made if r["meta"]["level"] == k) for k in (1, 2, 3)}
    info = json.loads((to / "dataset_info.json").read_text())
    entry = info["export_level_2"]
    assert entry["file_name"] == "data/level_2.jsonl"
    row = json.loads((to / "data" / "level_2.jsonl").read_text().splitlines()[0])
    # The card's fields are the line's: each constraint with its round, type, check score and verdict.
    assert set(row["meta"]["constraints"][0]) == {"round", "type", "text", "failed", "score", "merged", "check",
                                                  "holds"}
    if fmt == "alpaca":
        assert entry["columns"] == {"prompt": "instruction", "query": "input", "response": "output"}
        assert "formatting" not in entry and all(row[c] is not None for c in entry["columns"].values())
    else:
        tags, messages = entry["tags"], row[entry["columns"]["messages"]]
        assert entry["formatting"] == "sharegpt"
        assert [m[tags["role_tag"]] for m in messages] == [tags["user_tag"], tags["assistant_tag"]]
        assert all(m[tags["content_tag"]].strip() for m in messages)
    card = (to / "README.md").read_text()
    assert card.count("config_name: level_") == 3 and "config_name: all" in card
    from huggingface_hub import DatasetCard

    assert [c["config_name"] for c in DatasetCard(card).data.to_dict()["configs"]] == [
        "all", "level_1", "level_2", "level_3"]


async def test_the_report_names_the_preset_and_what_differs_from_the_authors_code(prompts, tmp_path):
    (tmp_path / "default").mkdir()
    (tmp_path / "authors").mkdir()
    out = await make_run(prompts, tmp_path / "default", rounds=5, constraint_set="failed")
    _, text = write_report(out)
    assert "preset: none; unlike the authors' code: " in text and "flow.structured = True (theirs False)" in text
    assert "flow.constraint_set = 'failed' (theirs 'all')" in text
    theirs = await make_run(prompts, tmp_path / "authors", rounds=5, constraint_set="all", preset="authors")
    _, text = write_report(theirs)
    assert "preset: authors; every method setting as in the authors' code" in text
    card = (theirs / "report" / "README.md").read_text()
    assert "- preset: authors" in card and "differ from the authors' code" not in card


async def test_export_filters(prompts, tmp_path, capsys):
    out = await make_run(prompts, tmp_path)
    to = tmp_path / "e"
    assert cli.main(["export", str(out), "--to", str(to), "--levels", "1,3", "--min-constraints", "3"]) == 0
    assert sorted(p.name for p in (to / "data").iterdir()) == ["level_3.jsonl"]  # level 1 has one constraint
    assert cli.main(["export", str(out), "--to", str(tmp_path / "f"), "--levels", "7"]) == 2
    assert "no records at level 7" in capsys.readouterr().err
    # The exported file holds exactly the run's level-3 records with 3 or more constraints, as the run wrote them.
    level3 = {r["meta"]["doc_id"]: r for r in records(out) if r["meta"]["level"] == 3}
    rows = [json.loads(x) for x in (to / "data" / "level_3.jsonl").read_text().splitlines()]
    assert rows and {row["id"] for row in rows} == {
        f"{d}#level_3" for d, r in level3.items() if len(r["meta"]["constraints"]) >= 3}
    for row in rows:
        record = level3[row["meta"]["doc_id"]]
        assert (row["instruction"], row["output"]) == (record["instruction"], record["output"])
        assert row["meta"]["constraints"] == record["meta"]["constraints"]


async def test_export_dedupes_identical_instructions(prompts, tmp_path):
    out = await make_run(prompts, tmp_path)
    records = (out / "records.jsonl").read_bytes().splitlines()
    same = [orjson.loads(x) for x in records]
    for r in same:
        if r["meta"]["level"] == 1:
            r["instruction"] = "Write one identical instruction."
    (out / "records.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in same))
    assert cli.main(["export", str(out), "--to", str(tmp_path / "a")]) == 0
    assert len((tmp_path / "a" / "data" / "level_1.jsonl").read_text().splitlines()) == 1
    assert cli.main(["export", str(out), "--to", str(tmp_path / "b"), "--keep-duplicates"]) == 0
    assert len((tmp_path / "b" / "data" / "level_1.jsonl").read_text().splitlines()) == DOCS - 3


async def test_constraint_set_failed_needs_a_checked_run(prompts, tmp_path, capsys):
    out = await make_run(prompts, tmp_path, constraint_set="all")
    assert cli.main(["export", str(out), "--to", str(tmp_path / "e"), "--constraint-set", "failed"]) == 2
    assert "skipped the check step" in capsys.readouterr().err
    assert figures(out)["judge"]["failed_share_by_round"] == {}


async def test_the_page_renders_in_headless_chromium(prompts, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    out = await make_run(prompts, tmp_path)
    folder, _ = write_report(out)
    shot = tmp_path / "page.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,2000", (folder / "report.html").as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000  # more than a blank page
