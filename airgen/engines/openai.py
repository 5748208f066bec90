"""Any OpenAI-compatible chat server over HTTP: `vllm serve`, SGLang, llama.cpp's server, hosted providers."""
from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import email.utils
import json
import os
import random
import time
import urllib.parse
import uuid
from typing import Any

import aiohttp
from asyncio_throttle import Throttler

from airgen.method.calls import Completion, Request, split_thinking, thinking_share
from airgen.config import ModelConfig, RunConfig
from airgen.console import say
from airgen.engines import CallFailed, RequestRejected, ServerDown, base_url, dialects

# Backoff between attempts: doubling from `backoff_s`, capped, half of it random so that clients spread out.
_BACKOFF_CAP_S = 30.0
# A server that stopped answering is asked a one-token request this often while its outage lasts.
_POLL_S = 2.0
# A Retry-After longer than this is a server asking to be left alone, not a pause to sit through.
_RETRY_AFTER_CAP_S = 300.0
_RETRYABLE_STATUS = frozenset({408, 429})
# X-Request-Id is a UUID made from the call key: servers that validate the header as a UUID (llama-cpp-python's
# answers 400 to anything else) accept it, and the same call always has the same id in a server's log.
_REQUEST_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://airgen/call")


class HTTPEngineError(RuntimeError):
    """The server could not be reached, or kept failing through every retry, or answered nonsense."""


class HTTPRequestRejected(RequestRejected, ValueError):
    """The server refused this request as invalid (400, 413, 422) while it answers others; retrying cannot help,
    the sample drops."""

    def __init__(self, url: str, status: int, message: str) -> None:
        super().__init__(f"{url} refused the request (HTTP {status}): {message}")
        self.url, self.status, self.message = url, status, message


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None, kind: str = "") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind or message.split(":")[0]  # the fault's kind, for the counts: "HTTP 500", "timeout", ...


class OpenAIEngine:
    """An `Engine` over POST /v1/chat/completions. Build it with `await OpenAIEngine.start(config)`.

    A fault is never a refusal: only a 4xx that names the request (400, 413, 422) is the request's own. Any other
    failure is retried; a request no try could get answered while the server answers a one-token request is given
    up (`CallFailed`: its sample is set aside for the next run); a server that answers nothing at all is waited out
    for `outage_s` (`alone`), or its calls go to the other replicas (`ServerDown`).

    A request times out only when the server made no progress for `timeout_s`: while it answers other requests,
    a long or queued one waits its turn; once it answers nothing, a one-token request says whether it is busy (the
    request waits on, at most `max_retries` times) or hung (the request is asked again)."""

    def __init__(self, config: ModelConfig, base_url: str, session: aiohttp.ClientSession,
                 outage_s: float = RunConfig.outage_s, alone: bool = True) -> None:
        self.name = config.model or ""
        self.dialect = config.dialect  # "auto" until the server says who it is
        self._config = config
        self._base_url = base_url
        self._url = f"{base_url}/v1/chat/completions"
        self._session = session
        self._window = asyncio.Semaphore(config.window)
        self._throttler = _throttler(config.requests_per_second)
        # What the run shows: each fault by kind, the retries it cost, and the requests given up on.
        self.faults: collections.Counter = collections.Counter()
        self._refusals = _Refusals(self, min(config.refusal_window, config.window))
        self._loop = asyncio.get_running_loop()
        self._answered_at = self._loop.time()  # when the server last answered anything: its progress
        self._probing: asyncio.Future | None = None  # the one-token request out now, shared by all who ask
        self.outage = _Outage(self, outage_s, alone)
        self._short = aiohttp.ClientTimeout(total=config.timeout_s)  # the small requests: a model list, a reset

    @classmethod
    async def start(cls, config: ModelConfig, outage_s: float = RunConfig.outage_s,
                    alone: bool = True) -> "OpenAIEngine":
        if not config.url:
            raise HTTPEngineError("an HTTP engine needs the server's url")
        headers = {}
        api_key = _api_key(config)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        session = aiohttp.ClientSession(
            # Two connections beyond the window: a one-token probe never waits behind the requests it judges.
            connector=aiohttp.TCPConnector(limit=config.window + 2),
            # No limit on a whole request (a long answer from a busy server takes what it takes: see `_post`);
            # connecting, and the small requests, have one.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.timeout_s),
            headers=headers,
        )
        engine = cls(config, base_url(config.url), session, outage_s, alone)
        if not engine.name or engine.dialect == "auto":
            try:
                await engine._identify()
            except BaseException:
                await session.close()
                raise
        return engine

    @property
    def about(self) -> str:
        """The server as a run's start names it: where, which model, how formats reach it."""
        return f"{self._base_url} (model {self.name or 'default'}; formats sent as {self.dialect})"

    @property
    def identity(self) -> str:
        """The model as the server names it: what a run's fingerprint holds (not the URL, which may change)."""
        return self.name

    async def generate(self, request: Request) -> Completion:
        body = self._body(request)
        window = self._refusals.ticket()
        while True:  # once more after each outage the request met
            tries, timeouts, last, retry_after = 0, 0, "", None
            outages = self.outage.count
            while tries <= self._config.max_retries and timeouts <= self._config.timeout_retries:
                if tries:
                    self.faults["retries"] += 1
                    await asyncio.sleep(_delay(tries, retry_after, self._config.backoff_s))
                await self.outage.passed()
                tries += 1
                try:
                    with self._refusals.sending():
                        payload = await self._post(body, request.key)
                    completion = _completion(payload, self.name)
                except _Retryable as e:  # also a 200 whose body is garbage: a proxy's hiccup, asked again
                    self.faults[e.kind] += 1
                    last, retry_after = str(e), e.retry_after
                    timeouts += e.kind == "timeout"
                    continue
                except HTTPRequestRejected as e:
                    raise await self._refusals.verdict(window, e) from None
                self._refusals.answered(window)
                return dataclasses.replace(completion, text=dialects.answer(self.dialect, request.sampling,
                                                                           completion.text))
            # Every try failed. A server that answers a one-token request now is well: this request is the
            # problem (a prompt that crashes it), given up for this run. Answers to others during the retries prove
            # nothing: they may have come just before the server went.
            if self.outage.count > outages:
                continue  # an outage came and went during these tries: they prove nothing of this request
            if await self._answers_probe():
                self.faults["gave up"] += 1
                self._refusals.answered(window)
                raise CallFailed(f"gave up after {tries} tries while the server answers other requests; last: {last}")
            await self.outage.begin(last)

    async def reset_prefix_cache(self) -> bool:
        """Ask the server to drop its prefix cache. vLLM serves POST /reset_prefix_cache only when started with
        VLLM_SERVER_DEV_MODE=1; any other answer is False (the bench then says its modes did not start cold)."""
        try:
            async with self._session.post(f"{self._base_url}/reset_prefix_cache", timeout=self._short) as response:
                return response.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def close(self) -> None:
        self.outage.cancel()
        await self._session.close()

    async def _post(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        """One try, in the window: timed out only when the server made no progress for `timeout_s` and a one-token
        request says it is hung, or after `max_retries` such checks found it busy with everything but this."""
        async with self._window:
            await self._throttler.acquire()
            exchange = asyncio.ensure_future(self._exchange(body, key))
            sent, busy = self._loop.time(), 0
            try:
                while True:
                    quiet_until = max(sent, self._answered_at) + self._config.timeout_s
                    done, _ = await asyncio.wait((exchange,), timeout=max(0.0, quiet_until - self._loop.time()))
                    if done:
                        return exchange.result()
                    if self._loop.time() < max(sent, self._answered_at) + self._config.timeout_s:
                        continue  # the server answered something meanwhile: it makes progress
                    if busy < self._config.max_retries and await self._answers_probe():
                        busy += 1  # it answers a one-token request: busy with long answers, not hung
                        continue
                    raise _Retryable(f"no answer within timeout_s = {self._config.timeout_s} s while the server "
                                     "answered nothing else", kind="timeout")
            finally:
                exchange.cancel()

    async def _exchange(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            async with self._session.post(self._url, json=body, headers=call_headers(key)) as response:
                self._answered_at = self._loop.time()
                return await _read(response)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as e:
            raise _Retryable(f"{type(e).__name__}: {e}", kind="connection") from e

    async def _identify(self) -> None:
        """The model's name (the first one the server lists, unless set) and, for `auto`, the server's dialect:
        what its model list says, else what only llama.cpp's servers answer, else none."""
        needed = not self.name
        entry: dict[str, Any] = {}
        url = f"{self._base_url}/v1/models"
        try:
            async with self._session.get(url, timeout=self._short) as response:
                listing = await _read(response)
            entry = listing["data"][0]
            self.name = self.name or str(entry["id"])
        except (_Retryable, aiohttp.ClientError, asyncio.TimeoutError, HTTPEngineError, HTTPRequestRejected) as e:
            if needed:
                raise HTTPEngineError(f"cannot list the models at {url}: {e}") from e
        except (KeyError, IndexError, TypeError, AttributeError):
            if needed:
                raise HTTPEngineError(f"{url} lists no model; name one with model = ...") from None
            entry = {}
        if self.dialect == "auto":
            said = dialects.from_listing(entry) if isinstance(entry, dict) else None
            if said is None and dialects.is_llamacpp(await self._get_json("/props"),
                                                     await self._get_json("/openapi.json")):
                said = "llamacpp"
            self.dialect = said or "none"

    async def _get_json(self, path: str) -> Any:
        """The JSON a GET of `path` answers, or None for anything else."""
        try:
            async with self._session.get(f"{self._base_url}{path}", timeout=self._short) as response:
                if response.status != 200:
                    return None
                return await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def probe(self) -> None:
        """Ask for one token of a one-word prompt, outside the window: does the server answer at all? Raises
        HTTPRequestRejected or HTTPEngineError when it does not."""
        body = {"model": self.name, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 1}
        try:
            _completion(await asyncio.wait_for(self._exchange(body, "airgen/probe/0"), self._config.timeout_s),
                        self.name)
        except _Retryable as e:
            raise HTTPEngineError(f"{self._url} does not answer a one-token request: {e}") from None
        except asyncio.TimeoutError:
            raise HTTPEngineError(f"{self._url} does not answer a one-token request within timeout_s = "
                                  f"{self._config.timeout_s} s") from None

    async def _answers_probe(self) -> bool:
        """Whether the server answers a one-token request now; callers at the same moment share one."""
        if self._probing is None or self._probing.done():
            self._probing = asyncio.ensure_future(self._probe_answered())
        return await asyncio.shield(self._probing)

    async def _probe_answered(self) -> bool:
        try:
            await self.probe()
        except (HTTPEngineError, HTTPRequestRejected):
            return False
        return True

    def _body(self, request: Request) -> dict[str, Any]:
        sampling = request.sampling
        body: dict[str, Any] = {
            "model": self.name,
            "messages": list(request.messages),
            "max_tokens": sampling.max_tokens + self._config.think_budget,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if request.seed is not None:
            body["seed"] = request.seed
        if self._config.reasoning != "auto" and self.dialect in ("vllm", "sglang", "llamacpp"):
            # The chat template's switch, which these servers pass on to it (OpenAI's API takes no such field).
            body["chat_template_kwargs"] = {"enable_thinking": self._config.reasoning == "on"}
        body.update(dialects.fields(self.dialect, sampling))
        return body


class _Outage:
    """A server that answers nothing, not even a one-token request: polled every `_POLL_S` until it answers again,
    for up to `outage_s`, with one line on the terminal when it goes and one when it is back. A lone engine's
    requests wait for it; a replica's raise `ServerDown` at once, so that its calls go to the other replicas (which
    wait on `back()` when every replica is down). Past `outage_s` the engine fails: the run stops, to be resumed."""

    def __init__(self, engine: OpenAIEngine, limit_s: float, alone: bool):
        self._engine, self._limit_s, self._alone = engine, limit_s, alone
        self._poll: asyncio.Future | None = None
        self.count = 0  # outages so far

    @property
    def down(self) -> bool:
        return self._poll is not None and not self._poll.done()

    async def passed(self) -> None:
        """Return once no outage is on (raise ServerDown for a replica while one is)."""
        if self._poll is None:
            return
        if self.down and not self._alone:
            raise ServerDown(self._engine.about)
        await asyncio.shield(self._poll)  # HTTPEngineError: it never came back

    async def back(self) -> None:
        if self._poll is not None:
            await asyncio.shield(self._poll)

    def cancel(self) -> None:
        """Stop polling (the engine closes)."""
        if self.down:
            self._poll.cancel()

    async def begin(self, fault: str) -> None:
        """The server answered nothing, not even a one-token request: an outage (one, however many requests saw
        it), then as `passed`."""
        if not self.down:
            self.count += 1
            self._poll = asyncio.ensure_future(self._wait(fault))
        await self.passed()

    async def _wait(self, fault: str) -> None:
        engine, loop = self._engine, asyncio.get_running_loop()
        began = loop.time()
        where = "waiting for it" if self._alone else "its calls go to the other replicas meanwhile"
        say(f"airgen: {engine._url} answers nothing ({fault}); {where}, for up to {self._limit_s:,.0f} s "
            "(run.outage_s)")
        engine.faults["outages"] += 1
        while loop.time() - began < self._limit_s:
            await asyncio.sleep(min(_POLL_S, max(0.0, self._limit_s - (loop.time() - began))))
            if await engine._answers_probe():
                say(f"airgen: {engine._url} answers again after {loop.time() - began:,.0f} s")
                return
        raise HTTPEngineError(f"{engine._url} answered nothing for {self._limit_s:,.0f} s (run.outage_s); "
                              f"the last fault: {fault}")


def call_headers(key: str) -> dict[str, str]:
    """The call key in a header of airgen's own (percent-encoded: a unit id may hold any character), and a UUID made
    from it as the request id."""
    return {"X-Airgen-Call": urllib.parse.quote(key, safe="/:#@"),
            "X-Request-Id": str(uuid.uuid5(_REQUEST_IDS, key))}


class _Refusals:
    """Tells a refused request from a refusing server, so that one bad setting cannot burn a corpus.

    Refusals (HTTP 400, 413, 422) are judged in windows of `size` requests in the order they were sent. A refusal
    is held, unjournaled, until its window is settled (each of its requests answered or refused): a window more
    than half refused means the server refuses (a wrong model name, a header it dislikes, a context limit set too
    small), and every held refusal stops the run instead; otherwise its refusals are the requests' own (one prompt
    over the context) and end their samples. A window that cannot fill (the run's last requests, or held refusals
    taking every slot) is judged once nothing else is out at the server: a one-token request is sent, and a server
    that refuses that too refuses everything.
    """

    def __init__(self, engine: OpenAIEngine, size: int) -> None:
        self._engine = engine
        self._size = size
        self._sent = 0  # requests numbered in the order they were sent
        self._settled: collections.Counter = collections.Counter()  # window -> requests answered or refused
        self._refused: collections.Counter = collections.Counter()  # window -> requests refused
        self._last: dict[int, HTTPRequestRejected] = {}  # window -> its latest refusal, for the message
        self._cleared: set[int] = set()  # windows with refusals, judged the requests' own
        self._in_flight = 0  # requests out at the server (held refusals are not)
        self._held = 0
        self._news = asyncio.Event()  # set (and replaced) when something a held refusal waits on changes
        self._probe: asyncio.Task | None = None
        self._systemic: str | None = None

    def ticket(self) -> int:
        """The window of a request about to be sent."""
        self._sent += 1
        return (self._sent - 1) // self._size

    @contextlib.contextmanager
    def sending(self):
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            self._notify()

    def answered(self, window: int) -> None:
        self._settle(window)
        self._notify()

    async def verdict(self, window: int, refusal: HTTPRequestRejected) -> Exception:
        """`refusal`, once its window shows the server answers; HTTPEngineError if the server refuses."""
        self._refused[window] += 1
        self._last[window] = refusal
        self._settle(window)
        self._held += 1
        try:
            while True:
                if self._systemic is not None:
                    return HTTPEngineError(self._systemic)
                if window in self._cleared:
                    return refusal
                if self._in_flight == 0 and (self._probe is None or self._probe.done()):
                    self._probe = asyncio.ensure_future(self._ask_probe(refusal))
                await self._news.wait()
        finally:
            self._held -= 1

    def _settle(self, window: int) -> None:
        self._settled[window] += 1
        if self._settled[window] < self._size:
            return
        del self._settled[window]  # a settled window is forgotten, but for the verdict its refusals wait on
        refused = self._refused.pop(window, 0)
        if not refused:
            return
        last = self._last.pop(window)
        if refused * 2 > self._size and self._systemic is None:
            self._systemic = (f"{last.url} refused {refused} of {self._size} requests in a row; the last: HTTP "
                              f"{last.status}: {last.message}")
        self._cleared.add(window)
        self._notify()

    async def _ask_probe(self, refusal: HTTPRequestRejected) -> None:
        try:
            await self._engine.probe()
        except (HTTPRequestRejected, HTTPEngineError) as e:
            if self._systemic is None:
                self._systemic = (f"{refusal.url} refuses every request, even a one-token one; the last: HTTP "
                                  f"{refusal.status}: {refusal.message} (the one-token request: {e})")
        else:
            self._cleared.update(self._refused)  # the server answers: the refusals so far are the requests' own
        self._notify()

    def _notify(self) -> None:
        if self._held:
            self._news.set()
            self._news = asyncio.Event()


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
        raise HTTPRequestRejected(str(response.url), status, message)
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
    if retry_after is not None:  # spread out: every waiting call would come back at the same instant
        return retry_after * random.uniform(1.0, 1.25) + random.uniform(0, base_s)
    ceiling = min(_BACKOFF_CAP_S, base_s * 2 ** (attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def _completion(payload: dict[str, Any], model: str) -> Completion:
    try:
        choice = payload["choices"][0]
        message = choice["message"]
        text = message.get("content") or ""
        # A server with a reasoning parser gives the thinking apart (vLLM: `reasoning_content`, later `reasoning`);
        # one without leaves it inline, in a `<think>` block.
        apart = message.get("reasoning_content") or message.get("reasoning") or ""
    except (KeyError, IndexError, TypeError, AttributeError):
        raise _Retryable(f"an answer without choices[0].message: {str(payload)[:300]}", kind="no choices") from None
    inline, text = split_thinking(str(text))
    thinking = "\n\n".join(t for t in (str(apart).strip(), inline) if t)
    usage = payload.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    output = int(usage.get("completion_tokens") or 0)
    counted = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    return Completion(
        text=text,
        finish_reason=choice.get("finish_reason") or "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        output_tokens=output,
        cached_tokens=int(details.get("cached_tokens") or 0),
        model=str(payload.get("model") or model),
        reasoning=thinking,
        reasoning_tokens=int(counted) if counted else thinking_share(output, thinking, text),
    )
