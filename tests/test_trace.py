"""`airgen trace OUT ID`: one document's calls in order, replayed through the flow, and how it ended; for finished,
rejected, killed and unreadable documents, and quickly on a folder it has indexed."""
from __future__ import annotations

import orjson
import pytest

from airgen import cli

from airgen.read import view

from airgen.read import trace
from airgen.method.calls import split_key
from airgen.read.report import write_report
from tests.test_report import make_run


def journal_keys(out, unit: str) -> list[str]:
    return [e["k"] for e in map(orjson.loads, (out / "journal.jsonl").read_bytes().splitlines())
            if e.get("s") == unit]


async def test_a_documents_calls_in_order_and_its_records(prompts, tmp_path, capsys):
    out = await make_run(prompts, tmp_path)
    story = trace.trace(out, "d05")
    assert [c.request.key for c in story.calls] == journal_keys(out, "d05")  # every call, in the journal's order
    assert [split_key(c.request.key)[1] for c in story.calls[:2]] == ["back_translate", "score"]
    assert "document 5 about a topic" in story.calls[0].request.messages[-1]["content"]  # the prompt as sent
    assert all(c.made.startswith(("accepted:", "fault:")) for c in story.calls)
    assert trace.ending(story) == "3 records (level_1, level_2, level_3)"
    assert cli.main(["trace", str(out), "d05"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("\n[") == len(story.calls) and "ended: 3 records" in shown
    assert "prompt + " in shown and "answer: " in shown


async def test_rejections_drops_and_unknown_ids_each_say_so(prompts, tmp_path, capsys):
    out = await make_run(prompts, tmp_path)
    assert trace.ending(trace.trace(out, "d00")).startswith("rejected at score: score 2/5 below threshold 4")
    dropped = trace.trace(out, "d03")  # its level-2 merge was unreadable
    assert "level 2 dropped at merge" in trace.ending(dropped)
    assert trace.ending(trace.trace(out, "@" + str(tmp_path / "docs.jsonl") + ":13")).startswith(
        "rejected when read: bad_json")
    assert cli.main(["trace", str(out), "d99"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no document 'd99' among the 14" in err


async def test_a_killed_run_gives_the_part_that_happened(prompts, tmp_path):
    out = await make_run(prompts, tmp_path, stop_after=60)
    finished = {e["done"] for e in map(orjson.loads, (out / "journal.jsonl").read_bytes().splitlines()) if "done" in e}
    started = {e["s"] for e in map(orjson.loads, (out / "journal.jsonl").read_bytes().splitlines()) if "s" in e}
    unit = sorted(started - finished)[0]
    story = trace.trace(out, unit)
    assert story.ending is None and story.waiting
    assert trace.ending(story).startswith("not finished:") and "rerun it to finish" in trace.ending(story)
    assert [c.request.key for c in story.calls] == journal_keys(out, unit)


async def test_the_index_is_built_once_and_grows_with_the_journal(prompts, tmp_path):
    out = await make_run(prompts, tmp_path)
    index = view.index(out)
    assert index.size == (out / "journal.jsonl").stat().st_size and (out / view.INDEX).is_file()
    calls = len(index.spans("d05"))
    assert calls == len(journal_keys(out, "d05")) + 1  # its calls and its done marker
    with open(out / "journal.jsonl", "ab") as f:  # more journal, as a resumed run writes
        f.write(orjson.dumps({"s": "d05", "k": "d05/extra/9", "t": "x", "f": "stop", "p": 1, "o": 1, "c": 0}) + b"\n")
        f.write(b'{"s": "d05", "k": "torn')  # and a torn line, still being written: left for later
    grown = view.index(out)
    assert len(grown.spans("d05")) == calls + 1 and len(grown.spans("d04")) == len(index.spans("d04"))
    assert grown.size < (out / "journal.jsonl").stat().st_size
    assert view.index(out).size == grown.size  # read from the file, nothing new to add


async def test_the_reports_examples_link_to_their_documents_story(prompts, tmp_path):
    out = await make_run(prompts, tmp_path)
    folder, _ = write_report(out)
    page = (folder / "report.html").read_text()
    linked = sorted((folder / "trace").iterdir())
    assert linked and all(f'href="trace/{p.name}"' in page for p in linked)
    assert "How it ended" in linked[0].read_text()


@pytest.mark.parametrize("unit", ["d05"])
async def test_html_goes_to_the_reports_trace_folder(prompts, tmp_path, capsys, unit):
    out = await make_run(prompts, tmp_path)
    assert cli.main(["trace", str(out), unit, "--html"]) == 0
    path = out / "report" / "trace" / trace.page_name(unit)
    assert str(path) in capsys.readouterr().out and "<h1>air d05</h1>" in path.read_text()
