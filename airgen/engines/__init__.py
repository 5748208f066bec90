"""Engines answer `Request`s. One protocol; the scheduler knows nothing else about them. In this folder: in-process
vLLM (`vllm`), OpenAI-compatible servers (`openai`, `dialects`), scripted answers (`scripted`), starting them
(`build`), their placement on a node's GPUs and replicas (`placement`, `replicas`), the bundled model
(`models`) and `airgen plan` (`plan`).

May import `method`, `config`, `console` and `store`; never the run loop, the read side or a recipe folder."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from airgen.method.calls import Completion, Request
from airgen.config import ModelConfig

EMBEDDED = "embedded:SmolLM2-135M-Instruct"


class Engine(Protocol):
    name: str  # the model's name, written into each record's meta
    about: str  # what the run's first lines say of it (where it runs, how formats reach it)

    async def generate(self, request: Request) -> Completion: ...

    async def close(self) -> None: ...


def base_url(url: str) -> str:
    """The server's root: the url without a trailing slash or /v1."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def model_identity(config: ModelConfig) -> str:
    """What names a model, however its url or path is spelled: the server's root and model name, or the resolved
    folder. Two roles with one identity share one engine; a resume must name the same identities."""
    if config.url:
        return f"{'+'.join(sorted(base_url(u) for u in config.urls))}#{config.model or 'default'}"
    if config.path:
        return str(Path(config.path).expanduser().resolve())
    return EMBEDDED


def identity(engine: Engine) -> str:
    """The model an engine serves, as a run's fingerprint holds it: a server's own name for it (its /v1/models id),
    an in-process engine's resolved folder; never the URL it is reached at."""
    return getattr(engine, "identity", engine.name)


class RequestRejected(Exception):
    """The engine refused this one request for good (e.g. prompt longer than the context): the sample drops with
    this reason. Any other exception from `generate` but `CallFailed` means the engine itself failed and stops the
    run."""


class CallFailed(Exception):
    """The engine could not answer this one request, though it answers others (a prompt that crashes the server,
    say): a fault, not the request's refusal and not its sample's fate. The sample is set aside unjournaled, and the
    next run asks it again."""


class ServerDown(Exception):
    """A replica's server stopped answering: its calls go to the other replicas while it is polled."""
