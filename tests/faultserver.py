"""A fault-injecting OpenAI-compatible server for tests: answers every step of every registered recipe well-formed
(their scripted answers, `airgen.engines.scripted.answers`, so records come fast with no model) and injects faults
at a set rate.

It runs on 127.0.0.1 on a free port in a thread of its own, so a test can point an `airgen run` subprocess at it.
Whether a try faults is drawn from (seed, call key, try number), so a rerun meets the same faults. Every try is
logged (`received`: call key, try number, fault or None), so a test can count calls sent twice. It can also refuse
like a misconfigured server: every request (`refuse_status`, with `refuse_body`), or one unit's (`refuse_unit`).
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import random
import re
import threading
import time
import urllib.parse
from typing import Any

from aiohttp import web

from airgen.method.calls import Request, split_key
from airgen.engines.scripted import answers

# Faults a client should retry until the answer comes; `length` is a well-formed answer cut at max_tokens.
RETRYABLE = ("429", "500", "503", "hang", "reset", "not_json", "empty_choices", "error_object")
KINDS = RETRYABLE + ("length", "trickle")
# The kind of each fault as airgen's HTTP engine counts it.
CLIENT_KIND = {"429": "HTTP 429", "500": "HTTP 500", "503": "HTTP 503", "hang": "timeout", "reset": "connection",
               "not_json": "not JSON", "empty_choices": "no choices", "error_object": "error object"}
_TYPE_LINE = re.compile(r"^- ([^:\n]+):", re.M)


class FaultServer:
    def __init__(self, rate: float = 0.0, kinds: tuple[str, ...] = RETRYABLE, seed: int = 0,
                 latency_s: float = 0.002, hang_s: float = 2.0, api_key: str | None = None,
                 poison: str | None = None, owned_by: str = "vllm", port: int = 0, chatty: frozenset = frozenset(),
                 refuse_status: int | None = None, refuse_body: str = "", refuse_unit: str | None = None,
                 air: dict | None = None, fault_probes: bool = True, suffix: str = "", think: str | None = None):
        self.rate, self.kinds, self.seed = rate, kinds, seed
        self.latency_s, self.hang_s, self.api_key, self.poison, self.owned_by = latency_s, hang_s, api_key, poison, owned_by
        self.received: list[tuple[str, int, str | None]] = []
        self.bodies: list[dict[str, Any]] = []
        self.injected: collections.Counter = collections.Counter()
        self.auth_seen: set[str] = set()
        self._tries: collections.Counter = collections.Counter()
        self._lock = threading.Lock()
        self._script = answers(air=air or {"fail": 1.0})  # AIR's scripted answers: `fail` is the checks' fail rate
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = port  # 0: a free one
        self.chatty = chatty  # stages answered in loose prose, as a model with no decode-time format does
        self.refuse_status, self.refuse_body, self.refuse_unit = refuse_status, refuse_body, refuse_unit
        self.refused = 0
        # False: a one-token request is answered at once, as a busy server that batches requests answers it.
        self.fault_probes = fault_probes
        self.suffix = suffix  # appended to every answer, as a model that loops at the end of its answer writes
        # A reasoning model: "inline" (a `<think>` block before each answer, no reasoning parser), "field" (the
        # thinking in `reasoning_content`, a server with one), "cut" (max_tokens spent thinking: no answer).
        self.think = think

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FaultServer":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault server did not start")
        return self

    def __exit__(self, *exc) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def keys(self) -> list[str]:
        with self._lock:
            return [key for key, _, _ in self.received]

    # -- serving -------------------------------------------------------------------------------------------------------

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "scripted", "owned_by": self.owned_by}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.auth_seen.add(request.headers.get("Authorization", ""))
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        body = await request.json()
        key = urllib.parse.unquote(request.headers.get("X-Airgen-Call", ""))
        if self.refuse_status is not None or (self.refuse_unit is not None and split_key(key)[0] == self.refuse_unit):
            with self._lock:
                self.refused += 1
            if self.refuse_status is not None:
                return web.Response(status=self.refuse_status, text=self.refuse_body)
            return web.json_response({"error": {"message": "prompt too long for this server"}}, status=400)
        with self._lock:
            attempt = self._tries[key]
            self._tries[key] += 1
            fault = self._fault(key, attempt)
            self.received.append((key, attempt, fault))
            self.bodies.append(body)
            if fault:
                self.injected[fault] += 1
        await asyncio.sleep(self.latency_s)
        if fault in ("429", "500", "503"):
            headers = {"Retry-After": "0"} if fault == "429" else {}
            return web.json_response({"error": {"message": f"injected {fault}"}}, status=int(fault), headers=headers)
        if fault == "hang":
            await asyncio.sleep(self.hang_s)
        if fault == "not_json":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        if fault == "empty_choices":
            return web.json_response({"choices": [], "model": "scripted"})
        if fault == "error_object":
            return web.json_response({"error": {"message": "the model is overloaded"}})
        payload = json.dumps(self._answer(key, body, "length" if fault == "length" else "stop")).encode()
        if fault == "reset":
            response = web.StreamResponse(headers={"Content-Type": "application/json",
                                                   "Content-Length": str(len(payload))})
            await response.prepare(request)
            await response.write(payload[: len(payload) // 2])
            request.transport.close()
            return response
        if fault == "trickle":
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for i in range(0, len(payload), 64):
                await response.write(payload[i:i + 64])
                await asyncio.sleep(0.01)
            await response.write_eof()
            return response
        return web.Response(body=payload, content_type="application/json")

    def _fault(self, key: str, attempt: int) -> str | None:
        if self.poison is not None and split_key(key)[0] == self.poison:
            return "500"
        if not self.fault_probes and split_key(key)[1] == "probe":
            return None
        rng = random.Random(hashlib.blake2b(f"{self.seed}/{key}/{attempt}".encode(), digest_size=8).digest())
        return rng.choice(self.kinds) if rng.random() < self.rate else None

    def _answer(self, key: str, body: dict[str, Any], finish: str) -> dict[str, Any]:
        unit, stage, n = split_key(key)
        text = body["messages"][-1]["content"]
        args: dict[str, Any] = {}
        if stage == "propose":
            args["allowed"] = _TYPE_LINE.findall(text.split("#Constraint types#")[-1])
        elif stage in ("check", "pair_check"):
            criteria = text.split("[Criteria]")[-1].split("\nOutput format:")[0]
            args["count"] = sum(1 for line in criteria.splitlines() if line.strip())
        request = Request(key, "guidance", stage, tuple(body["messages"]), None, args=args)  # type: ignore[arg-type]
        answer = "Hi." if stage == "probe" else self._script(request)
        if stage in self.chatty:
            answer = "Sure! Here is what I think about it, in a few friendly words."
        if stage != "probe":
            answer += self.suffix
        prompt = sum(len(m["content"].split()) for m in body["messages"])
        message: dict[str, Any] = {"role": "assistant", "content": answer}
        thinking = f"Let me think about {stage} for {unit}. First, the request asks for something specific. " * 3
        if self.think and stage != "probe":
            if self.think == "field":
                message["reasoning_content"] = thinking
            elif self.think == "inline":
                message["content"] = f"<think>\n{thinking}\n</think>\n\n{answer}"
            else:  # "cut"
                message["content"], finish = f"<think>\n{thinking}", "length"
        usage = {"prompt_tokens": prompt, "completion_tokens": len(message["content"].split()) + (
            len(thinking.split()) if "reasoning_content" in message else 0), "total_tokens": prompt}
        return {"model": "scripted", "created": int(time.time()),
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}
