"""Policies that have one owner each: model identity, admission, call keys, stage order, atomic files, append-only
logs, device resolution. One test each, against the owner, plus its callers where they used to disagree."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from airgen import bench, corpus, files, journal, run
from airgen.air.flow import Flow
from airgen.air.steps import ALL_STEPS, INITIAL_STAGES, LEVEL_STAGES, ROUND_STAGES, STAGES, barrier_key
from airgen.calls import Completion, Request, Sampling, call_key, split_key
from airgen.config import ModelConfig, load
from airgen.corpus import Document
from airgen.engines import model_identity
from airgen.metrics import Metrics
from airgen_kernels import resolve_device

ROOT = Path(__file__).resolve().parent.parent


def test_model_identity_ignores_how_a_url_or_path_is_spelled(tmp_path, prompts):
    assert model_identity(ModelConfig(url="http://h:8000/v1/")) == model_identity(ModelConfig(url="http://h:8000"))
    assert model_identity(ModelConfig(url="http://h:8000", model="a")) != model_identity(ModelConfig(url="http://h:8000"))
    (tmp_path / "m").mkdir()
    assert model_identity(ModelConfig(path=str(tmp_path / "m"))) == model_identity(ModelConfig(path=f"{tmp_path}/./m/"))
    # The resume fingerprint uses the same identity: naming the server with /v1 after naming it without resumes.
    data = tmp_path / "docs.jsonl"
    data.write_text('{"text": "one two three"}\n')
    before = load(overrides={"guidance": {"url": "http://h:8000"}, "student": {"url": "http://h:8000"}})
    after = load(overrides={"guidance": {"url": "http://h:8000/v1"}, "student": {"url": "http://h:8000/v1/"}})
    run.prepare(tmp_path / "out", [data], before, prompts)
    assert run.prepare(tmp_path / "out", [], after, prompts) == [data.resolve()]


def test_admission_limits_and_dedupes_in_one_place(tmp_path):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"id": "a", "text": "x"}\nnot json\n{"id": "a", "text": "y"}\n{"id": "b", "text": "z"}\n')
    units = list(corpus.admitted([data], limit=3))
    assert [type(u).__name__ for u in units] == ["Document", "Rejection", "Rejection"]  # rejections count
    assert units[2].rule == "duplicate_id" and "docs.jsonl:1" in units[2].value
    assert [u.id for u in corpus.admitted([data]) if isinstance(u, Document)] == ["a", "b"]


def test_call_keys_split_at_the_last_two_slashes():
    key = call_key("data/part-1.jsonl:7", "check", 3)
    assert split_key(key) == ("data/part-1.jsonl:7", "check", 3)
    request = Request(key, "guidance", "check", (), Sampling(max_tokens=8))
    assert (request.unit, request.n) == ("data/part-1.jsonl:7", 3)
    # The bench charges a call to its own sample, also when the id holds a "/".
    metrics = Metrics()
    meter = bench.Metered(_Echo(), "guidance", metrics)
    asyncio.run(meter.generate(request))
    assert set(metrics._open) == {"data/part-1.jsonl:7"}


class _Echo:
    name = "echo"

    async def generate(self, request: Request) -> Completion:
        return Completion("ok", "stop", 3, 1)


def test_stage_order_has_one_home():
    assert STAGES == INITIAL_STAGES + ROUND_STAGES + LEVEL_STAGES and len(set(STAGES)) == len(STAGES)
    assert {s.name for s in ALL_STEPS} == set(STAGES)
    assert list(Flow(load().flow, None).on) == list(STAGES)  # the transition table reads in the method's order
    keys = [barrier_key(Request(call_key("d", stage, 1), "guidance", stage, (), None)) for stage in STAGES]
    assert [k[0] for k in keys] == [0] * len(INITIAL_STAGES) + [1] * len(ROUND_STAGES) + [2] * len(LEVEL_STAGES)


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "run.json"
    files.atomic_write(path, b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_text(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


@pytest.mark.parametrize("name", ["journal.jsonl", "records.jsonl", "metrics.jsonl"])
def test_every_log_cuts_a_torn_last_line_and_appends_whole_lines(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b'{"a": 1}\n{"b": ')  # a write cut by a kill
    log = files.AppendLog(path)
    log.write({"c": 3}, {"d": 4})
    log.close()
    assert [orjson.loads(x) for x in path.read_bytes().splitlines()] == [{"a": 1}, {"c": 3}, {"d": 4}]


def test_the_journal_and_the_run_write_through_the_shared_log(tmp_path):
    j = journal.Journal(tmp_path / "journal.jsonl")
    j.call("a/b/score/0", Completion("Score: 4/5", "stop", 5, 3))
    j.done("a/b")
    j.close()
    replay = journal.load(tmp_path / "journal.jsonl")
    assert replay.finished == {"a/b"} and replay.calls == 1
    assert orjson.loads((tmp_path / "journal.jsonl").read_bytes().splitlines()[0])["s"] == "a/b"


def test_devices_resolve_in_one_place():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_a_run_on_servers_never_imports_torch():
    code = ("import sys; import airgen.cli, airgen.run, airgen.bench, airgen.engines.build, airgen.engines.openai; "
            "bad = [m for m in ('torch', 'vllm', 'transformers', 'numpy') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def test_rejected_lines_share_one_schema(tmp_path, prompts):
    from airgen import sink

    s = sink.Sink(tmp_path, set(), {})
    s.rejected("@in:2", None, "in:2", "read", "bad_json", "Expecting value")
    s.rejected("d1", "d1", "in:3", "score", "score 2/5 below threshold 4")
    s.close()
    lines = [orjson.loads(x) for x in (tmp_path / sink.REJECTED).read_bytes().splitlines()]
    assert [list(line)[1:] for line in lines] == [list(sink.REJECTION_FIELDS)] * 2
