"""Any OpenAI-compatible chat server over HTTP: `vllm serve`, SGLang, llama.cpp's server, hosted providers."""
from __future__ import annotations

import asyncio
import collections
import email.utils
import json
import os
import random
import time
from typing import Any

import aiohttp
from asyncio_throttle import Throttler

from airgen.calls import Completion, Request
from airgen.config import ModelConfig
from airgen.engines import RequestRejected, base_url, dialects

# Backoff between attempts: doubling from `backoff_s`, capped, half of it random so that clients spread out.
_BACKOFF_CAP_S = 30.0
# A Retry-After longer than this is a server asking to be left alone, not a pause to sit through.
_RETRY_AFTER_CAP_S = 300.0
_RETRYABLE_STATUS = frozenset({408, 429})


class HTTPEngineError(RuntimeError):
    """The server could not be reached, or kept failing through every retry, or answered nonsense."""


class HTTPRequestRejected(RequestRejected, ValueError):
    """The server refused this request as invalid (400, 413, 422); retrying cannot help, the sample drops."""


class HTTPGaveUp(RequestRejected, RuntimeError):
    """One request failed every try while the server answered others: that request, not the server, is the
    problem (a prompt that crashes it, say). Its sample is rejected with the reason; the run goes on."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind or message.split(":")[0]  # the fault's kind, for the counts: "HTTP 500", "timeout", ...


class OpenAIEngine:
    """An `Engine` over POST /v1/chat/completions. Build it with `await OpenAIEngine.start(config)`."""

    def __init__(self, config: ModelConfig, base_url: str, session: aiohttp.ClientSession) -> None:
        self.name = config.model or ""
        self.dialect = config.dialect  # "auto" until the server says who it is
        self._config = config
        self._base_url = base_url
        self._session = session
        self._window = asyncio.Semaphore(config.window)
        self._throttler = _throttler(config.requests_per_second)
        # What the run shows: each fault by kind, the retries it cost, and the requests given up on.
        self.faults: collections.Counter = collections.Counter()
        self._answered = 0  # successful answers so far: tells a sick request from a sick server

    @classmethod
    async def start(cls, config: ModelConfig) -> "OpenAIEngine":
        if not config.url:
            raise HTTPEngineError("an HTTP engine needs the server's url")
        headers = {}
        api_key = _api_key(config)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.window),
            timeout=aiohttp.ClientTimeout(total=config.timeout_s),
            headers=headers,
        )
        engine = cls(config, base_url(config.url), session)
        if not engine.name or engine.dialect == "auto":
            try:
                listed, owner = await engine._first_model(needed=not engine.name)
            except BaseException:
                await session.close()
                raise
            engine.name = engine.name or listed
            if engine.dialect == "auto":
                engine.dialect = dialects.detect(owner)
        return engine

    async def generate(self, request: Request) -> Completion:
        body = self._body(request)
        url = f"{self._base_url}/v1/chat/completions"
        last, retry_after, timeouts = "", None, 0
        answered_before = self._answered
        tries = 0
        while True:
            if tries:
                self.faults["retries"] += 1
                await asyncio.sleep(_delay(tries, retry_after, self._config.backoff_s))
            tries += 1
            try:
                completion = _completion(await self._post(url, body, request.key), self.name)
            except _Retryable as e:  # also a 200 whose body is garbage: a proxy's hiccup, asked again
                self.faults[e.kind] += 1
                last, retry_after = str(e), e.retry_after
                timeouts += e.kind == "timeout"
                # A server that holds calls without answering is retried less: each try costs timeout_s.
                if tries > self._config.max_retries or timeouts > self._config.timeout_retries:
                    break
                continue
            self._answered += 1
            return completion
        self.faults["gave up"] += 1
        if self._answered > answered_before:
            raise HTTPGaveUp(f"gave up after {tries} tries while the server answered other requests; last: {last}")
        raise HTTPEngineError(f"{url} answered nothing for {tries} tries of one request: {last}")

    async def reset_prefix_cache(self) -> bool:
        """Ask the server to drop its prefix cache. vLLM serves POST /reset_prefix_cache only when started with
        VLLM_SERVER_DEV_MODE=1; any other answer is False (the bench then says its modes did not start cold)."""
        try:
            async with self._session.post(f"{self._base_url}/reset_prefix_cache") as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        await self._session.close()

    async def _post(self, url: str, body: dict[str, Any], key: str) -> dict[str, Any]:
        async with self._window:
            await self._throttler.acquire()
            try:
                # The call key as the request id: vLLM's logs and a server's access log name the same call as the
                # journal does.
                async with self._session.post(url, json=body, headers={"X-Request-Id": key}) as response:
                    return await _read(response)
            except asyncio.TimeoutError as e:
                raise _Retryable(f"no answer within timeout_s = {self._config.timeout_s} s", kind="timeout") from e
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
                raise _Retryable(f"{type(e).__name__}: {e}", kind="connection") from e

    async def _first_model(self, needed: bool) -> tuple[str, str]:
        """(the first model the server lists, who owns it); with `needed` False a server without a listing is
        fine (its dialect is then none)."""
        url = f"{self._base_url}/v1/models"
        try:
            async with self._session.get(url) as response:
                listing = await _read(response)
            first = listing["data"][0]
            return str(first["id"]), str(first.get("owned_by") or "")
        except (_Retryable, aiohttp.ClientError, asyncio.TimeoutError, HTTPEngineError) as e:
            if needed:
                raise HTTPEngineError(f"cannot list the models at {url}: {e}") from e
        except (KeyError, IndexError, TypeError, AttributeError):
            if needed:
                raise HTTPEngineError(f"{url} lists no model; name one with model = ...") from None
        return "", ""

    def _body(self, request: Request) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.name,
            "messages": list(request.messages),
            "max_tokens": sampling.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        body.update(dialects.fields(self.dialect, sampling))
        return body


def _api_key(config: ModelConfig) -> str | None:
    if config.api_key_file:
        try:
            with open(config.api_key_file, encoding="utf-8") as f:
                return f.readline().strip() or None
        except OSError as e:
            raise HTTPEngineError(f"cannot read the API key file {config.api_key_file}: {e.strerror}") from None
    return os.environ.get(config.api_key_env) if config.api_key_env else None


def _throttler(requests_per_second: float | None) -> Any:
    if requests_per_second is None:
        return _Unthrottled()
    # n requests per n/rps seconds: the asked rate, also below 1 request per second.
    burst = max(1, int(requests_per_second))
    return Throttler(rate_limit=burst, period=burst / requests_per_second)


class _Unthrottled:
    async def acquire(self) -> None:
        return None


async def _read(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """The JSON body of a 2xx answer; raises `_Retryable` or `HTTPRequestRejected` for the others."""
    status = response.status
    if status < 300:
        try:
            payload = await response.json(content_type=None)
        except ValueError:
            raise _Retryable(f"HTTP {status} with a body that is not JSON", kind="not JSON") from None
        if isinstance(payload, dict) and payload.get("error") and not payload.get("choices"):
            raise _Retryable(f"HTTP {status} with an error: {_server_message(json.dumps(payload))}",
                             kind="error object")
        return payload
    message = _server_message(await response.text())
    if status in _RETRYABLE_STATUS or status >= 500:
        raise _Retryable(f"HTTP {status}: {message}", _retry_after(response.headers.get("Retry-After")))
    if status in (400, 413, 422):
        raise HTTPRequestRejected(f"{response.url} refused the request (HTTP {status}): {message}")
    # 401, 403, 404, ...: the server or our settings are wrong, not this one request: the run stops.
    raise HTTPEngineError(f"{response.url} refused the request (HTTP {status}): {message}")


def _server_message(text: str) -> str:
    """The `error.message` of an OpenAI-style error body, else the body itself (shortened)."""
    try:
        error = json.loads(text).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)
    except (ValueError, AttributeError):
        pass
    return text.strip()[:500] or "(empty body)"


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds; it may be a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _RETRY_AFTER_CAP_S)


def _delay(attempt: int, retry_after: float | None, base_s: float) -> float:
    if retry_after is not None:
        return retry_after
    ceiling = min(_BACKOFF_CAP_S, base_s * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _completion(payload: dict[str, Any], model: str) -> Completion:
    try:
        choice = payload["choices"][0]
        text = choice["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable(f"an answer without choices[0].message: {str(payload)[:300]}", kind="no choices") from None
    usage = payload.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return Completion(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
        model=str(payload.get("model") or model),
    )
