"""Engines answer `Request`s. One protocol; the scheduler knows nothing else about them."""
from __future__ import annotations

from typing import Protocol

from airgen.calls import Completion, Request


class Engine(Protocol):
    name: str  # the model's name, written into each record's meta

    async def generate(self, request: Request) -> Completion: ...

    async def close(self) -> None: ...


class RequestRejected(Exception):
    """The engine refused this one request for good (e.g. prompt longer than the context): the sample drops with
    this reason. Any other exception from `generate` means the engine itself failed and stops the run."""
