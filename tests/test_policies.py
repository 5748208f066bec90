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

from airgen.runtime import bench

from airgen.method import corpus

from airgen.store import files

from airgen.store import journal

from airgen.runtime import runner

from airgen.method import rows

from airgen.store import sink
from airgen.air.flow import AirFlow
from airgen.air.recipe import RECIPE as AIR
from airgen.air.steps import ALL_STEPS, INITIAL_STAGES, LEVEL_STAGES, ROUND_STAGES, STAGES
from airgen.method.calls import Completion, Request, Sampling, call_key, split_key
from airgen.config import ModelConfig, load
from airgen.crab import pairs
from airgen.engines import model_identity
from airgen.engines.scripted import ScriptedEngine
from airgen.runtime.metrics import Metrics
from airgen.store.folder import JOURNAL, METRICS
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
    runner.prepare(tmp_path / "out", [data], before, prompts)
    assert runner.prepare(tmp_path / "out", [], after, prompts) == [data.resolve()]


def test_admission_limits_and_dedupes_in_one_place(tmp_path, monkeypatch):
    data = tmp_path / "docs.jsonl"
    data.write_text('{"id": "a", "text": "x"}\nnot json\n{"id": "a", "text": "y"}\n{"id": "b", "text": "z"}\n')
    pair_data = tmp_path / "pairs.jsonl"
    pair_data.write_text('{"id": "a", "instruction": "x", "output": "y"}\nnot json\n'
                         '{"id": "a", "instruction": "x", "output": "z"}\n{"id": "b", "instruction": "x", "output": "w"}\n')
    for admitted, path in ((corpus.admitted, data), (pairs.admitted_pairs, pair_data)):
        units = list(admitted([path], limit=3))
        assert [type(u).__name__ == "Rejection" for u in units] == [False, True, True]  # rejections count
        assert units[2].rule == "duplicate_id" and f"{path.name}:1" in units[2].value
        assert [u.id for u in admitted([path]) if not isinstance(u, rows.Rejection)] == ["a", "b"]
    # Both readers admit through the one rule: change it and both change.
    seen = []
    monkeypatch.setattr(rows, "first_ids", lambda units: seen.append("called") or iter(units))
    assert len(list(corpus.admitted([data]))) == len(list(pairs.admitted_pairs([pair_data]))) == 4
    assert seen == ["called", "called"]


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
    assert list(AirFlow(load().settings, None).on) == list(STAGES)  # the transition table reads in the method's order
    keys = [AIR.barrier(Request(call_key("d", stage, 1), "guidance", stage, (), None)) for stage in STAGES]
    assert [k[0] for k in keys] == [0] * len(INITIAL_STAGES) + [1] * len(ROUND_STAGES) + [2] * len(LEVEL_STAGES)


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "run.json"
    files.atomic_write(path, b"old")
    with pytest.raises(RuntimeError):
        with files.atomic_text(path) as f:
            f.write("half of the new")
            raise RuntimeError("killed")
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]


def _one_run(tmp_path, prompts, docs: int = 2) -> Path:
    """`runner.generate` over `docs` documents on a scripted engine, into tmp_path/out (made by `runner.prepare`)."""
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(f'{{"id": "d{i}", "text": "a document about topic {i}"}}\n' for i in range(docs)))
    config = load(overrides={"flow": {"rounds": 1}, "run": {"progress": False}})
    out = tmp_path / "out"
    inputs = runner.prepare(out, [data], config, prompts)
    engine = ScriptedEngine(AIR.script(fail=1.0))
    asyncio.run(runner.generate(config, out, inputs, prompts, {"guidance": engine, "student": engine}))
    return out


@pytest.mark.parametrize("name", [JOURNAL, sink.RECORDS, METRICS])
def test_every_log_a_run_writes_cuts_a_torn_last_line(tmp_path, prompts, name):
    """Each of the run's logs, as the run itself opens it (journal, sink, metrics), cuts a torn last line and
    appends whole lines after what was whole."""
    first = _one_run(tmp_path, prompts, docs=1)
    path = first / name
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"s": "d9", "k": ')  # a write cut by a kill
    asyncio.run(runner.generate(load(overrides={"flow": {"rounds": 1}, "run": {"progress": False}}), first,
                             [tmp_path / "docs.jsonl"], prompts,
                             {"guidance": ScriptedEngine(AIR.script()), "student": ScriptedEngine(AIR.script())}))
    after = path.read_bytes()
    assert after.startswith(whole) and after.endswith(b"\n")
    assert all(orjson.loads(x) for x in after.splitlines())


def test_the_run_writes_every_log_through_the_shared_log(tmp_path, prompts, monkeypatch):
    """journal.jsonl, records.jsonl and metrics.jsonl of a run all go through AppendLog,
    the one writer that cuts torn lines and writes whole ones."""
    written: dict[str, int] = {}
    real = files.AppendLog.write

    def write(self, *items):
        written[Path(self.path).name] = written.get(Path(self.path).name, 0) + len(items)
        return real(self, *items)

    monkeypatch.setattr(files.AppendLog, "write", write)
    out = _one_run(tmp_path, prompts)
    for name in (JOURNAL, sink.RECORDS, METRICS):
        assert written.get(name, 0) == (out / name).read_bytes().count(b"\n") > 0, name
    replay = journal.load(out / JOURNAL)
    assert replay.finished == {"d0", "d1"}


@pytest.mark.parametrize("gpu", [True, False])
def test_devices_resolve_in_one_place(monkeypatch, gpu):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if gpu else "cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu")
    if gpu:
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_a_run_on_servers_never_imports_torch():
    code = ("import sys; import airgen.cli, airgen.runtime.runner, airgen.runtime.bench, airgen.engines.build, airgen.engines.openai; "
            "bad = [m for m in ('torch', 'vllm', 'transformers', 'numpy') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]"


def test_rejected_lines_share_one_schema(tmp_path, prompts):
    from airgen.store import sink

    s = sink.Sink(tmp_path, set(), {})
    s.rejected("@in:2", None, "in:2", "read", "bad_json", "Expecting value")
    s.rejected("d1", "d1", "in:3", "score", "score 2/5 below threshold 4")
    s.close()
    lines = [orjson.loads(x) for x in (tmp_path / sink.REJECTED).read_bytes().splitlines()]
    assert [list(line)[1:] for line in lines] == [list(sink.REJECTION_FIELDS)] * 2
