"""Engines answer `Request`s. One protocol; the scheduler knows nothing else about them."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from airgen.calls import Completion, Request
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


class RequestRejected(Exception):
    """The engine refused this one request for good (e.g. prompt longer than the context): the sample drops with
    this reason. Any other exception from `generate` means the engine itself failed and stops the run."""
