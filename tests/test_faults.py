"""`airgen run` in a real process against a server that fails in every way a server or proxy does."""
from __future__ import annotations

import collections
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from airgen.store import journal
from tests.faultserver import CLIENT_KIND, RETRYABLE, FaultServer

ROOT = Path(__file__).resolve().parent.parent
DOCS = 20


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


@pytest.fixture()
def docs(tmp_path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(DOCS)))
    return path


def airgen(url: str, docs: Path, out: Path, *extra: str, env: dict | None = None, timeout: float = 300):
    settings = [f"--set={role}.{k}" for role in ("guidance", "student")
                for k in ("backoff_s=0.01", "timeout_s=2.0", "window=16")]
    cmd = [sys.executable, "-m", "airgen", "run", str(docs), "--out", str(out), "--guidance-url", url,
           "--student-url", url, "--rounds", "2", "--no-progress", *settings, *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def by_doc(out: Path) -> dict[str, list[dict]]:
    records = collections.defaultdict(list)
    for r in lines(out / "records.jsonl"):
        records[r["meta"]["doc_id"]].append({k: r[k] for k in ("instruction", "output")} | {"level": r["meta"]["level"]})
    return dict(records)


def test_twenty_percent_mixed_faults_complete_with_the_same_records_and_every_fault_counted(tmp_path, docs):
    with FaultServer() as clean:
        assert airgen(clean.url, docs, tmp_path / "clean").returncode == 0
    with FaultServer(rate=0.2, kinds=RETRYABLE + ("trickle",), seed=3, hang_s=2.5) as server:
        done = airgen(server.url, docs, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert by_doc(tmp_path / "out") == by_doc(tmp_path / "clean")
    assert all(server.injected[k] for k in RETRYABLE), server.injected  # every kind was met
    faults = lines(tmp_path / "out" / "metrics.jsonl")[-1]["faults"]["guidance+student"]
    expected = collections.Counter({CLIENT_KIND[k]: n for k, n in server.injected.items()
                                    if k in CLIENT_KIND and k != "hang"})
    # A held answer is waited for while the server answers others: it times out only when the server went quiet.
    timeouts = faults.pop("timeout", 0)
    assert timeouts <= server.injected["hang"]
    assert {k: v for k, v in faults.items() if k not in ("retries", "gave up")} == dict(expected)
    assert faults["retries"] == sum(expected.values()) + timeouts and faults.get("gave up", 0) == 0
    assert "retries" in done.stderr and "faults:" in done.stderr
    # Each try the server saw is one the client made: a first try per call, one per retry, and the one-token
    # requests that asked a quiet server whether it was busy or hung.
    calls = sum(1 for e in lines(tmp_path / "out" / "journal.jsonl") if "k" in e)
    probes = sum(1 for key, _, _ in server.received if key.endswith("/probe/0"))
    assert len(server.received) == calls + faults["retries"] + probes


@pytest.mark.slow
def test_a_busy_server_holding_half_its_requests_past_timeout_s_loses_nothing(tmp_path, docs):
    """Half the answers come after 3 s, timeout_s is 1 s: they are waited for (the server answers others, or a
    one-token request, meanwhile), never written as a document's fate."""
    with FaultServer() as clean:
        assert airgen(clean.url, docs, tmp_path / "clean").returncode == 0
    with FaultServer(rate=0.5, kinds=("hang",), hang_s=3.0, seed=5, fault_probes=False) as server:
        done = airgen(server.url, docs, tmp_path / "out", "--set=guidance.timeout_s=1", "--set=student.timeout_s=1")
    assert done.returncode == 0, done.stderr[-3000:]
    assert by_doc(tmp_path / "out") == by_doc(tmp_path / "clean")
    assert not lines(tmp_path / "out" / "rejected.jsonl")
    assert server.injected["hang"] > 10


def stopped_then_resumed(done, server: FaultServer, says: str, docs: Path, out: Path) -> None:
    """The run stopped in one line naming the server and what it did; once the server is well again (the same
    port), the same command finishes every document."""
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    stopped = [line for line in done.stderr.splitlines() if line.startswith("airgen: the run stopped")]
    assert len(stopped) == 1 and server.url in stopped[0] and says in stopped[0], done.stderr[-2000:]
    assert "run the same command again to resume" in done.stderr
    journal.load(out / "journal.jsonl")  # intact
    with FaultServer(port=server.port) as healed:
        done = airgen(healed.url, docs, out)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(by_doc(out)) == DOCS and not lines(out / "rejected.jsonl")


@pytest.mark.parametrize("kind, says", [("500", "HTTP 500"), ("hang", "no answer within timeout_s")])
def test_a_server_failing_every_call_stops_the_run_in_one_clear_line(tmp_path, docs, kind, says):
    """Once run.outage_s is over: until then the run waits for the server to come back."""
    out = tmp_path / "out"
    with FaultServer(rate=1.0, kinds=(kind,), hang_s=2.5) as server:
        done = airgen(server.url, docs, out, "--set=run.outage_s=3", timeout=120)
    assert "answers nothing" in done.stderr and "for up to 3 s (run.outage_s)" in done.stderr
    stopped_then_resumed(done, server, says, docs, out)


def test_a_request_that_always_fails_is_set_aside_for_the_next_run(tmp_path, docs):
    """The server answers everything but d07's requests (500 every time): a fault, not d07's fate. The others
    finish; d07 is set aside, unjournaled, with the reason on the terminal; the next run asks it again."""
    with FaultServer() as clean:
        assert airgen(clean.url, docs, tmp_path / "clean").returncode == 0
    out = tmp_path / "out"
    with FaultServer(poison="d07") as server:
        done = airgen(server.url, docs, out)
    assert done.returncode == 1, done.stderr[-3000:]
    said = [line for line in done.stderr.splitlines() if "set aside" in line and line.startswith("airgen:")]
    assert len(said) == 1 and "d07: gave up after 7 tries" in said[0] and "HTTP 500" in said[0], done.stderr
    assert not lines(out / "rejected.jsonl")
    assert not any(e.get("s") == "d07" and "r" in e for e in lines(out / "journal.jsonl"))
    assert set(by_doc(out)) == {f"d{i:02d}" for i in range(DOCS)} - {"d07"}
    with FaultServer(port=server.port) as healed:
        done = airgen(healed.url, docs, out)
    assert done.returncode == 0, done.stderr[-3000:]
    assert by_doc(out) == by_doc(tmp_path / "clean")
    assert {key.split("/")[0] for key, _, _ in healed.received} == {"d07"}  # only what was not finished


@pytest.mark.parametrize("status, body, says", [
    (400, "", "HTTP 400: (empty body)"),  # llama-cpp-python's answer to an X-Request-Id it does not like
    (401, '{"error": {"message": "invalid api key"}}', "HTTP 401): invalid api key"),
    (403, "<html>Forbidden by the proxy</html>", "HTTP 403): <html>Forbidden by the proxy</html>"),
])
def test_a_server_refusing_everything_stops_the_run_and_journals_none_of_it(tmp_path, docs, status, body, says):
    out = tmp_path / "out"
    with FaultServer(refuse_status=status, refuse_body=body) as server:
        done = airgen(server.url, docs, out, timeout=120)
    assert server.refused >= 1
    events = lines(out / "journal.jsonl")
    assert not any("r" in e or "done" in e for e in events)  # no refusal, no rejected document on record
    stopped_then_resumed(done, server, says, docs, out)


def test_one_documents_refused_requests_reject_it_and_the_run_goes_on(tmp_path, docs):
    with FaultServer(refuse_unit="d03") as server:
        done = airgen(server.url, docs, tmp_path / "out")
    assert done.returncode == 0, done.stderr[-3000:]
    rejected = lines(tmp_path / "out" / "rejected.jsonl")
    assert [(r["id"], r["stage"]) for r in rejected] == [("d03", "back_translate")]
    assert "engine refused the request" in rejected[0]["reason"] and "prompt too long" in rejected[0]["reason"]
    assert set(by_doc(tmp_path / "out")) == {f"d{i:02d}" for i in range(DOCS)} - {"d03"}
    assert server.refused == 1  # refused once, journaled: never asked again


def test_a_cut_answer_is_a_recorded_fault_not_a_retry(tmp_path, docs):
    with FaultServer(rate=0.3, kinds=("length",), seed=1) as server:
        done = airgen(server.url, docs, tmp_path / "out")
    assert done.returncode == 0
    assert len(server.received) == sum(1 for e in lines(tmp_path / "out" / "journal.jsonl") if "k" in e)
    reasons = [r["reason"] for r in lines(tmp_path / "out" / "rejected.jsonl")] + \
        [d["reason"] for d in lines(tmp_path / "out" / "dropped_levels.jsonl")]
    assert reasons and all("cut at max_tokens" in r or "round" in r or "level" in r for r in reasons)
    read = len(by_doc(tmp_path / "out")) + len(lines(tmp_path / "out" / "rejected.jsonl"))
    assert read == DOCS


def test_the_api_key_is_sent_and_never_written(tmp_path, docs):
    secret = "sk-test-0123456789abcdef-SECRET"
    with FaultServer(api_key=secret, rate=0.2, kinds=("500",)) as server:
        done = airgen(server.url, docs, tmp_path / "out", "--api-key-env", "MY_KEY", env={"MY_KEY": secret})
    assert done.returncode == 0, done.stderr[-2000:]
    assert server.auth_seen == {f"Bearer {secret}"}
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    assert secret not in done.stdout + done.stderr
    with FaultServer(api_key=secret) as server:  # a wrong key: one clear line, and the key is not in it
        done = airgen(server.url, docs, tmp_path / "wrong", env={"OPENAI_API_KEY": "sk-wrong-key"})
    assert done.returncode == 1 and "HTTP 401" in done.stderr and "sk-wrong-key" not in done.stderr


def test_a_server_that_ignores_formats_shows_in_the_summary(tmp_path, docs):
    with FaultServer(owned_by="llamacpp", chatty=frozenset({"score"})) as server:
        done = airgen(server.url, docs, tmp_path / "out")
    assert done.returncode == 0
    scores = [body for (key, _, _), body in zip(server.received, server.bodies) if "/score/" in key]
    assert len(scores) == DOCS and all(b["grammar"].startswith("root ::= ") for b in scores)  # GBNF for llama.cpp
    assert f"answers a step could not use: score {DOCS} of {DOCS}" in done.stderr
    assert "ignore decode-time formats" in done.stderr
    assert lines(tmp_path / "out" / "metrics.jsonl")[-1]["unusable_answers"] == {"score": DOCS}
    assert {r["stage"] for r in lines(tmp_path / "out" / "rejected.jsonl")} == {"score"}
