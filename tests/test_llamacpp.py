"""A real llama.cpp server: llama-cpp-python's `python -m llama_cpp.server` serving the bundled SmolLM2 GGUF.

Its build compiles llama.cpp (about 10 minutes on 2 cores), so it lives in a venv of its own: `make llamacpp`
builds it (the suite's `make test` does), or AIRGEN_LLAMACPP_PYTHON names a Python that has it. Without one the tests
skip, saying how to get it.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from airgen.air.recipe import RECIPE as AIR
from airgen.method.calls import split_key
from airgen.engines.openai import call_headers
from airgen.engines.models import embedded_gguf

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.llamacpp


def tiny_format(stage: str, answer: str) -> str:
    """The format the tiny preset holds `stage` to (free-text lines capped), whatever types were offered."""
    from airgen.air import steps
    from airgen.air.prompt_data import types

    names = [t.name for t in types(AIR.prompts())]
    return steps.shorten({"score": steps.SCORE_REGEX, "propose": steps.propose_regex(names, none=False),
                          "dedup": "|".join(steps.DUPLICATE_CHOICES),
                          "check": steps.check_lines_regex(max(1, answer.count("\t")))}[stage])


def server_python() -> str | None:
    python = os.environ.get("AIRGEN_LLAMACPP_PYTHON") or str(ROOT / ".venv-llamacpp" / "bin" / "python")
    if not Path(python).exists():
        return None
    done = subprocess.run([python, "-c", "import llama_cpp.server"], capture_output=True)
    return python if done.returncode == 0 else None


@pytest.fixture(scope="module")
def llamacpp(tmp_path_factory):
    python = server_python()
    if python is None:
        pytest.skip("no llama.cpp server: `make llamacpp` builds one into .venv-llamacpp")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "4096"], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/v1/models", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"the llama.cpp server did not come up: {log}"
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def chat(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    body = json.dumps({"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", body,
                                     {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_the_server_refuses_a_request_id_that_is_no_uuid_and_takes_airgens(llamacpp):
    assert chat(llamacpp, {"X-Request-Id": "doc/back_translate/0"}) == (400, b"")
    status, body = chat(llamacpp, call_headers("doc/back_translate/0"))
    assert status == 200 and json.loads(body)["choices"][0]["message"]["content"]


def test_airgen_runs_on_the_server_with_its_formats_enforced(llamacpp, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "airgen", "run", "--preset", "tiny", "--limit", "3", "--out", str(out),
           "--guidance-url", llamacpp, "--student-url", llamacpp, "--no-progress"]
    started = time.monotonic()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    took = time.monotonic() - started
    print(done.stderr[-4000:], f"\n({took:.0f} s)")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "formats sent as llamacpp" in done.stderr  # auto knew the server by what it answers
    records = [orjson.loads(x) for x in (out / "records.jsonl").read_bytes().splitlines()]
    assert records
    answers: dict[str, list[str]] = {}
    for event in map(orjson.loads, (out / "journal.jsonl").read_bytes().splitlines()):
        if "k" in event:
            answers.setdefault(split_key(event["k"])[1], []).append(event["t"])
    # The fixed-format steps, held to their grammars: every answer has its format (what the 135M model writes
    # inside a format, a one-word constraint say, is the step's rules' business and counted in the funnel).
    for stage in ("score", "propose", "dedup", "check"):
        assert answers.get(stage), f"no {stage} call"
        broken = [a for a in answers[stage] if not re.fullmatch(tiny_format(stage, a), a)]
        assert not broken, (stage, broken)
    print({stage: len(a) for stage, a in answers.items()})
