"""airgen from Python: `airgen.run`, `arun` inside a running loop, `load`, resume, `Run`'s records, summary,
dataset and report, status.json, and settings checked as the command line checks them. The engines are scripted
here (in process, as tests/scripted_cli.py does for a real command); tests/test_readme.py runs the README's example
on the bundled model."""
from __future__ import annotations

import asyncio
import random
import subprocess
import sys

import orjson
import pytest

import airgen
from airgen.engines.scripted import ScriptedEngine, answers
from tests.runs import airgen as airgen_command, command, documents, env, lines, records, ROOT

URL = "http://127.0.0.1:9"  # never asked: the scripted engines answer
SCRIPTED = dict(guidance=URL, student=URL, settings={"flow": {"rounds": 2}})


@pytest.fixture
def scripted(monkeypatch):
    """Scripted engines in place of the servers; each call notes the loop it ran on."""
    loops = set()
    answer = answers(air={"fail": 1.0})

    def respond(request):
        loops.add(id(asyncio.get_running_loop()))
        return answer(request)

    async def start_engines(guidance, student=None, outage_s=None):
        engine = ScriptedEngine(respond, latency=lambda r: random.random() * 0.01)
        return {"guidance": engine} | ({"student": engine} if student is not None else {})

    monkeypatch.setattr("airgen.runtime.runner.start_engines", start_engines)
    return loops


def rows(n: int) -> list[dict]:
    return [{"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12} for i in range(n)]


def test_run_then_load_prints_nothing_and_reads_back(scripted, tmp_path, capfd, caplog):
    caplog.set_level("INFO", logger="airgen")
    out = tmp_path / "run"
    run = airgen.run(rows(6), out, **SCRIPTED)
    assert capfd.readouterr() == ("", "")  # nothing printed: airgen's lines went to its logger
    assert any("records from 6 documents" in r.getMessage() for r in caplog.records)
    assert (out / "inputs.jsonl").exists()
    loaded = airgen.load(out)
    assert loaded.state == run.state == "finished" and not loaded.running
    written = lines(out / "records.jsonl")
    assert list(loaded.records()) == written and written
    assert list(loaded.rejected()) == lines(out / "rejected.jsonl")
    s = loaded.summary
    assert s["records"] == len(written) and s["samples"]["finished"] == 6 and s["samples"]["left"] == 0
    assert s["finished"] == 6 and sum(s["records_by_split"].values()) == len(written)
    assert s["roles"]["guidance"]["calls"] > 0 and s["goodput"]["share"] > 0
    status = orjson.loads((out / "status.json").read_bytes())
    assert status["state"] == "finished" and status["why"] is None and status["records"] == len(written)
    assert loaded.report().exists()


def test_the_library_and_the_command_make_the_same_records(scripted, tmp_path):
    """Rows given as dicts, and the same rows as a file given to `airgen run`: the same records."""
    docs = documents(tmp_path / "docs.jsonl", 8)
    airgen.run(rows(8), tmp_path / "api", **SCRIPTED)
    done = subprocess.run(command(docs, tmp_path / "cli"), cwd=ROOT, capture_output=True, text=True, env=env(),
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert records(tmp_path / "api") == records(tmp_path / "cli")


def test_a_resume_through_the_api(scripted, tmp_path):
    out = tmp_path / "run"
    first = airgen.run(rows(10), out, **{**SCRIPTED, "settings": {"flow": {"rounds": 2}, "run": {"limit": 4}}})
    assert first.summary["samples"]["finished"] == 4
    again = airgen.run(rows(10), out, **SCRIPTED)  # the same rows: continued
    assert again.summary["resumed"] == 4 and again.summary["finished"] == 6
    airgen.run(rows(10), tmp_path / "clean", **SCRIPTED)
    assert records(out) == records(tmp_path / "clean")
    airgen.run(None, out, **SCRIPTED)  # no rows: the run's own
    with pytest.raises(airgen.ConfigError, match="other rows"):
        airgen.run(rows(11), out, **SCRIPTED)
    with pytest.raises(airgen.ConfigError, match="flow.rounds: 2 -> 3"):
        airgen.run(None, out, guidance=URL, student=URL, settings={"flow": {"rounds": 3}})


def test_a_bad_setting_is_the_command_lines_error(tmp_path):
    with pytest.raises(airgen.ConfigError) as caught:
        airgen.run(rows(2), tmp_path / "run", guidance=URL, settings={"run": {"limit": "abc"}})
    cli = subprocess.run(airgen_command("run", "--out", str(tmp_path / "cli"), "--guidance-url", URL,
                                        "--set", 'run.limit="abc"'),
                         cwd=ROOT, capture_output=True, text=True, env=env(), timeout=60)
    assert cli.returncode == 2 and cli.stderr.strip() == f"airgen: {caught.value}"
    assert not (tmp_path / "run").exists()
    for bad, match in (({"flow": {"roundz": 3}}, "roundz"), (3, "settings must be"),
                       ({"run": {"until": "25:00"}}, "no time of day")):
        with pytest.raises(airgen.ConfigError, match=match):
            airgen.run(rows(2), tmp_path / "run", guidance=URL, settings=bad)
    with pytest.raises(airgen.ConfigError, match="not a mix"):
        airgen.run([str(tmp_path / "a.jsonl"), {"text": "x"}], tmp_path / "run", guidance=URL)
    with pytest.raises(airgen.ConfigError, match="not an airgen run folder"):
        airgen.load(tmp_path)


def test_settings_from_a_toml_file_and_a_role_as_a_dict(scripted, tmp_path):
    toml = tmp_path / "night.toml"
    toml.write_text('[flow]\nrounds = 1\n[run]\nlimit = 3\n')
    run = airgen.run(rows(5), tmp_path / "run", guidance={"url": URL, "window": 8}, student=URL, settings=toml)
    assert run.summary["samples"]["finished"] == 3
    assert orjson.loads((tmp_path / "run" / "run.json").read_bytes())["settings"]["flow"]["rounds"] == 1


async def test_arun_on_the_running_loop_follows_the_records(scripted, tmp_path):
    import signal

    out = tmp_path / "run"
    handler = signal.getsignal(signal.SIGINT)
    run = airgen.arun(rows(12), out, **SCRIPTED)
    assert run.running
    await asyncio.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is handler  # the caller's own, while the run goes
    followed = [record async for record in run.records()]
    status_while = airgen.load(out).status  # written at the first tick, and at the end
    assert await run is run
    assert scripted == {id(asyncio.get_running_loop())}  # every call on this loop: no second one
    assert followed == lines(out / "records.jsonl") and followed
    assert status_while["state"] == "finished" and run.state == "finished"


async def test_following_a_run_another_process_writes(tmp_path):
    docs = documents(tmp_path / "docs.jsonl", 10)
    out = tmp_path / "run"
    proc = await asyncio.create_subprocess_exec(*command(docs, out), cwd=ROOT, env=env(SCRIPTED_LATENCY_S="0.1"),
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):  # until the folder is a run's
        if (out / "run.json").exists():
            break
        await asyncio.sleep(0.05)
    run = airgen.load(out)
    assert run.running and run.state in (None, "running")
    followed = [record async for record in run.records()]
    assert await proc.wait() == 0
    assert followed == lines(out / "records.jsonl") and followed
    assert run.state == "finished" and not run.running


def test_dataset_is_the_exports_dataset(scripted, tmp_path, capfd):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "run"
    run = airgen.run(rows(6), out, **SCRIPTED)
    run.dataset("messages")
    assert capfd.readouterr() == ("", "")
    for fmt in ("messages", "alpaca"):
        to = tmp_path / f"export-{fmt}"
        done = subprocess.run(airgen_command("export", str(out), "--to", str(to), "--format", fmt), cwd=ROOT,
                              capture_output=True, text=True, env=env(), timeout=120)
        assert done.returncode == 0, done.stderr
        # A cache of its own: datasets' default cache can hand back an earlier folder's rows of the same path and
        # size (the same records in another order).
        exported = datasets.load_dataset(str(to), cache_dir=str(tmp_path / f"cache-{fmt}"))
        mine = run.dataset(fmt)
        assert sorted(mine) == sorted(exported) and mine
        for split in exported:
            assert mine[split].to_list() == exported[split].to_list()
    every = run.dataset("alpaca", dedupe=False)
    assert sum(map(len, every.values())) == len(lines(out / "records.jsonl")) > sum(map(len, mine.values()))
    assert every.keys() == {"level_1", "level_2"}


def test_a_run_inside_a_running_loop_goes_on_a_thread(scripted, tmp_path):
    async def notebook_cell():
        return airgen.run(rows(3), tmp_path / "run", **SCRIPTED)

    run = asyncio.run(notebook_cell())
    assert run.state == "finished" and run.summary["samples"]["finished"] == 3


def test_public_names():
    assert set(airgen.__all__) >= {"run", "arun", "load", "Run", "ConfigError"}
    code = "import airgen, sys; print('torch' in sys.modules, 'vllm' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(),
                          check=True).stdout.split() == ["False", "False"]


# Ctrl-C as a terminal's Python has it: a shell that starts a job in the background starts it with SIGINT ignored.
LIBRARY_RUN = """
import signal, sys, tests.scripted_cli, airgen
signal.signal(signal.SIGINT, signal.default_int_handler)
airgen.run(sys.argv[1], sys.argv[2], guidance="{url}", student="{url}", settings={{"flow": {{"rounds": 2}}}},
           handle_signals=sys.argv[3] == "1")
print("returned")
"""


@pytest.mark.parametrize("handled", [False, True])
def test_ctrl_c_in_a_library_run_keeps_the_journal(tmp_path, handled):
    """Without handle_signals Ctrl-C is the caller's KeyboardInterrupt, raised once the run has stopped; with it,
    the run stops as on the command line and `run` returns. Either way the same call resumes to a clean run."""
    import signal
    import time

    docs = documents(tmp_path / "docs.jsonl", 20)
    out = tmp_path / "run"
    script = LIBRARY_RUN.format(url=URL)
    proc = subprocess.Popen([sys.executable, "-c", script, str(docs), str(out), "1" if handled else "0"], cwd=ROOT,
                            env=env(SCRIPTED_LATENCY_S="1.0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for _ in range(300):
        time.sleep(0.05)
        if (out / "journal.jsonl").exists() and (out / "journal.jsonl").stat().st_size:
            break
    assert proc.poll() is None  # calls of up to 1 s: the run is still going (about 10 s in all)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    if handled:
        assert proc.returncode == 0 and stdout.strip() == "returned", stderr[-2000:]
    else:
        # Python ends on an uncaught KeyboardInterrupt by the signal itself.
        assert proc.returncode == -signal.SIGINT and stderr.rstrip().endswith("KeyboardInterrupt") and not stdout
    status = orjson.loads((out / "status.json").read_bytes())
    assert status["state"] == "stopped" and status["why"] == ("interrupted" if handled else "cancelled")
    assert status["samples"]["left"] > 0
    done = subprocess.run([sys.executable, "-c", script, str(docs), str(out), "0"], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    clean = subprocess.run(command(docs, tmp_path / "clean"), cwd=ROOT, env=env(), capture_output=True, timeout=300)
    assert clean.returncode == 0 and records(out) == records(tmp_path / "clean")


def test_status_says_why_a_run_stopped(tmp_path):
    """An engine that dies: status.json ends `stopped`, `error`, with the error's line; `airgen.load` says so."""
    docs = documents(tmp_path / "docs.jsonl", 20)
    out = tmp_path / "run"
    done = subprocess.run(command(docs, out), cwd=ROOT, env=env(SCRIPTED_ENGINE="failing"), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    status = airgen.load(out).status
    assert status["state"] == "stopped" and status["why"] == "error"
    assert "the engine core died" in status["last_error"] and status["samples"]["left"] > 0
