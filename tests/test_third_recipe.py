"""The recipe contract holds: a recipe defined in this file alone, registered at run time, goes through `airgen run`,
a kill -9 and its resume, `airgen report`, `airgen export`, `airgen bench` and `airgen run --ray`, with no edit
anywhere else. Run as a script, this file is `airgen` with the recipe registered and a scripted engine.

The recipe, "titles": each note (JSONL `id`, `note`) gets a title drafted by the guidance model, then a polished
title; one record per note, split "titled". Its settings section is `titles` (`--set titles.words=N`).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from airgen.method import recipes
from airgen.method.calls import Request, split_key
from airgen.config import Sampling, check
from airgen.method.flow import Done, Fault, Flow, Rejected, Unit, record
from airgen.method.recipe import Recipe
from airgen.method.rows import Rejection, admit, content_id, jsonl_objects
from airgen.method.step import Reject, Step

ROOT = Path(__file__).resolve().parent.parent
NOTES = 30

DRAFT, POLISH = "draft_title", "polish_title"


@dataclass(frozen=True)
class TitlesConfig(Sampling):
    max_tokens: int = 64
    words: int = 8  # a polished title has at most this many words

    def validate(self, where: str = "titles") -> None:
        super().validate(where)
        check(self.words >= 1, "titles.words must be >= 1")


@dataclass(frozen=True, slots=True)
class Note:
    id: str
    note: str
    source: str


@dataclass(slots=True)
class NoteSample(Unit):
    note: str
    draft: str = ""


def _short(title: str, c: TitlesConfig, args) -> str:
    if len(title.split()) > c.words:
        raise Reject(f"title of {len(title.split())} words, over titles.words={c.words}")
    return title


STEPS = {DRAFT: Step(DRAFT, "guidance"), POLISH: Step(POLISH, "guidance", accept=_short)}


class TitlesFlow(Flow):
    def __init__(self, config, prompts, seed=0):
        super().__init__(config, prompts, seed)
        self.steps = STEPS
        self.on = {DRAFT: self._on_draft, POLISH: self._on_polish}

    def sample(self, note: Note) -> NoteSample:
        return NoteSample(note.id, note.note, source=note.source)

    def begin(self, s: NoteSample):
        return [self.ask(s, DRAFT, 0, {"text": f"Title this note: {s.note}"})]

    def _on_draft(self, s, request, value):
        if isinstance(value, Fault):
            return Rejected(DRAFT, value.reason)
        s.draft = value
        return [self.ask(s, POLISH, 0, {"text": f"Polish this title: {value}"})]

    def _on_polish(self, s, request, value):
        if isinstance(value, Fault):
            return Rejected(POLISH, value.reason)
        s.draft = value  # the title kept
        return []

    def finish(self, s: NoteSample):
        return Done([record(f"Write a title for: {s.note}", s.draft, {"doc_id": s.doc_id, "split": "titled",
                                                                       "draft_words": len(s.draft.split())})], [])


def read_notes(inputs, limit):
    def notes():
        for path in inputs:
            for item in jsonl_objects(Path(path)):
                if isinstance(item, Rejection):
                    yield item
                elif not isinstance(item[1].get("note"), str):
                    yield Rejection(None, item[0], "missing_field", "note")
                else:
                    note = item[1]["note"]
                    yield Note(str(item[1].get("id") or content_id(note)), note, item[0])
    return admit(notes(), limit)


def answer(request: Request) -> str:
    unit = split_key(request.key)[0]
    if request.stage == DRAFT:
        return f"A first title for {unit}"
    # Every seventh note's polished title is too long: a rejection at polish_title.
    return "A long polished title that runs on well past any limit" if unit.endswith("7") else f"Notes on {unit}"


class TitlesRecipe(Recipe):
    name = "titles"
    title = "TITLES"
    unit = "note"
    reads = "notes (JSONL: note + optional id)"
    roles = ("guidance",)
    section = "titles"
    settings = TitlesConfig
    stages = (DRAFT, POLISH)
    presets = {"tiny": {"max_tokens": 32}}

    def all_steps(self):
        return tuple(STEPS.values())

    def flow(self, settings, prompts, seed):
        return TitlesFlow(settings, prompts, seed)

    def read(self, inputs, limit):
        return read_notes(inputs, limit)

    def default_input(self):
        raise NotImplementedError("the titles recipe has no bundled notes")

    def blank(self, unit_id):
        return Note(unit_id, "", "")

    def script(self, **knobs):
        return answer


RECIPE = recipes.register(TitlesRecipe())


# -- as a script: airgen with this recipe and a scripted engine ---------------------------------------------------

async def start_engines(guidance, student=None, outage_s=None):
    from airgen.engines.scripted import ScriptedEngine, answers

    most = float(os.environ.get("SCRIPTED_LATENCY_S", 0.002))
    return {"guidance": ScriptedEngine(answers(), latency=lambda r: random.random() * most)}


if __name__ == "__main__":
    from airgen.runtime import runner
    from airgen.cli import main

    runner.start_engines = start_engines
    sys.exit(main(sys.argv[1:]))


# -- the tests ----------------------------------------------------------------------------------------------------

def titles(*argv: str, latency: float = 0.002) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                         "SCRIPTED_LATENCY_S": str(latency),
                                                         "RAY_AUTH_MODE": "disabled"})


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    return err.decode()


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def outputs(out: Path):
    return (sorted((r["meta"]["doc_id"], r["instruction"], r["output"]) for r in lines(out / "records.jsonl")),
            sorted((r["unit"], r["stage"], r["reason"]) for r in lines(out / "rejected.jsonl")))


@pytest.fixture()
def notes(tmp_path) -> Path:
    path = tmp_path / "notes.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"n{i:02d}", "note": f"note {i} on a subject"}) + b"\n"
                              for i in range(NOTES)) + b'{"text": "no note"}\n')
    return path


RUN = ("run", "--recipe", "titles", "--guidance-url", "http://127.0.0.1:9", "--no-progress")


def test_a_recipe_in_one_file_runs_resumes_reports_and_exports(tmp_path, notes, capsys):
    from airgen import cli

    whole = tmp_path / "whole"
    err = finish(titles(*RUN, str(notes), "--out", str(whole)))
    records, rejected = outputs(whole)
    sevens = [f"n{i:02d}" for i in range(NOTES) if str(i).endswith("7")]
    assert len(records) == NOTES - len(sevens) and "note" in err
    assert [u for u, stage, _ in rejected if stage == POLISH] == sevens
    assert [reason for _, stage, reason in rejected if stage == "read"] == ["missing_field"]
    info = json.loads((whole / "run.json").read_text())
    assert info["settings"]["recipe"] == "titles" and info["settings"]["titles"]["words"] == 8

    # Killed mid-run, then resumed: the uninterrupted run's outputs, no call asked twice.
    out = tmp_path / "out"
    proc = titles(*RUN, str(notes), "--out", str(out), latency=0.2)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not (out / "journal.jsonl").exists()
                                           or (out / "journal.jsonl").read_bytes().count(b"\n") < 10):
        time.sleep(0.01)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    journaled = (out / "journal.jsonl").read_bytes().count(b"\n")
    assert 10 <= journaled < (whole / "journal.jsonl").read_bytes().count(b"\n")
    finish(titles(*RUN, "--out", str(out)))
    assert outputs(out) == outputs(whole)
    keys = Counter(e["k"] for e in lines(out / "journal.jsonl") if "k" in e)
    assert max(keys.values()) == 1 and len(keys) == 2 * NOTES  # every note: a draft and a polish

    # Another setting of the recipe's own section is another run: the resume is refused.
    proc = titles(*RUN, "--out", str(out), "--set", "titles.words=3")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "titles.words: 8 -> 3" in err.decode()

    # Report and export read the recipe back from the registry, in this process.
    assert cli.main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"(titles): {len(records)} records (titled {len(records)})" in text and "titled" in text
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["title"] == "TITLES" and dict(summary["funnel"])["read as notes"] == NOTES
    assert "TITLES run" in (out / "report" / "report.html").read_text()
    to = tmp_path / "export"
    assert cli.main(["export", str(out), "--to", str(to), "--format", "messages"]) == 0
    rows = [json.loads(x) for x in (to / "data" / "titled.jsonl").read_text().splitlines()]
    assert sorted(r["meta"]["doc_id"] for r in rows) == sorted(d for d, _, _ in records)
    assert "made with TITLES" in (to / "README.md").read_text()
    assert rows[0]["meta"]["draft_words"] >= 1 and "constraints" not in rows[0]["meta"]  # its own record shape
    for option in (["--levels", "1"], ["--min-constraints", "1"], ["--constraint-set", "failed"]):
        assert cli.main(["export", str(out), "--to", str(tmp_path / "e2"), *option]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not options of a titles run (its splits: titled)" in err
    assert cli.main(["export", str(out), "--to", str(tmp_path / "e3"), "--format", "dpo"]) == 2
    assert "a titles run makes no preference pairs" in capsys.readouterr().err
    assert cli.main(["trace", str(out), records[0][0]]) == 0
    assert "polish_title" in capsys.readouterr().out


def test_a_recipe_in_one_file_benches_and_runs_on_ray(tmp_path, notes):
    pytest.importorskip("ray")
    bench = tmp_path / "bench"
    finish(titles("bench", "--recipe", "titles", str(notes), "--out", str(bench), "--guidance-url",
                  "http://127.0.0.1:9"))
    result = json.loads((bench / "bench.json").read_text())
    modes = result["rounds"][0]["modes"] if "rounds" in result else result["modes"]
    assert modes["raw"]["calls"] == modes["airgen"]["calls"] == 2 * NOTES
    assert [b["stage"] for b in modes["stage-barrier"]["batches"]] == [DRAFT, POLISH]

    one = tmp_path / "one"
    finish(titles(*RUN, str(notes), "--out", str(one)))
    ray = tmp_path / "ray"
    err = finish(titles(*RUN, str(notes), "--out", str(ray), "--ray", "--workers", "2"))
    assert "2 Ray workers" in err and outputs(ray) == outputs(one)
