"""Several engines of one model as one: a role's replicas (one `vllm serve` per GPU, or in-process engines on their
own devices).

A unit's calls stay on the replica that took its first call, so its shared prompt prefix is in that replica's cache;
a new unit goes to the replica with the fewest requests outstanding. A replica whose server stops answering
(`ServerDown`) gets no calls while it is polled, and its calls in flight are asked again of the others; when every
replica is down, calls wait for the first one back (up to the engines' outage limit). A replica that fails for good
(not one request: the engine itself) is dropped. A request one replica gave up on (`CallFailed`) is asked of each
other live replica before it fails. The journal, which only sees the answer, holds each call once.
"""
from __future__ import annotations

import asyncio
import collections
from collections import OrderedDict
from typing import Sequence

from airgen.method.calls import Completion, Request
from airgen.engines import CallFailed, Engine, RequestRejected, ServerDown

# Units remembered for stickiness: far more than are in flight at once (run.max_in_flight is 4096 by default).
_STICKY = 65536


class NoReplicaLeft(RuntimeError):
    """Every replica of the role failed; the last failure is the cause."""


class Replicas:
    def __init__(self, engines: Sequence[Engine]):
        self.engines = list(engines)
        self.name = self.engines[0].name
        self.about = f"{len(self.engines)} replicas: " + "; ".join(e.about for e in self.engines)
        self.outstanding = [0] * len(self.engines)
        self._live = set(range(len(self.engines)))
        self._home: OrderedDict[str, int] = OrderedDict()  # unit -> its replica
        # Faults of every replica in one count (what the run shows), and the replicas lost.
        self.faults: collections.Counter = collections.Counter()
        for engine in self.engines:
            if hasattr(engine, "faults"):
                engine.faults = self.faults

    @property
    def identity(self) -> str:
        return getattr(self.engines[0], "identity", self.name)

    async def generate(self, request: Request) -> Completion:
        gave_up: set[int] = set()  # replicas that gave this request up
        while True:
            i = await self._replica(request.unit, gave_up)
            self.outstanding[i] += 1
            try:
                return await self.engines[i].generate(request)
            except RequestRejected:
                raise  # this request's own problem: another replica would refuse it too
            except CallFailed:
                gave_up.add(i)
                if not self._live - gave_up:
                    raise
            except ServerDown:
                continue  # polled now: `_replica` passes it by until it is back
            except Exception as e:  # noqa: BLE001 - the replica failed: drop it, ask another
                self._lose(i, e)
            finally:
                self.outstanding[i] -= 1

    async def reset_prefix_cache(self) -> bool:
        return all([await e.reset_prefix_cache() for e in self.engines])  # type: ignore[attr-defined]

    async def close(self) -> None:
        failure = None
        for engine in self.engines:
            try:
                await engine.close()
            except Exception as e:  # noqa: BLE001 - the others must still close
                failure = failure or e
        if failure is not None:
            raise failure

    def _up(self, i: int) -> bool:
        outage = getattr(self.engines[i], "outage", None)
        return outage is None or not outage.down

    async def _replica(self, unit: str, passed: set[int]) -> int:
        """The unit's replica: its home while that is live and up, else the least busy live one that is up (and
        has not given this request up); with every live replica down, the first one back."""
        while True:
            left = self._live - passed
            if not left:
                raise CallFailed(f"every replica of {self.name} gave this request up")
            candidates = [i for i in sorted(left) if self._up(i)]
            if candidates:
                break
            backs = {asyncio.ensure_future(self.engines[i].outage.back()): i for i in left}  # type: ignore[attr-defined]
            done, pending = await asyncio.wait(backs, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()  # the poll itself goes on (shielded)
            for task in done:
                if task.exception() is not None:  # it never came back: as every other failure of a replica
                    self._lose(backs[task], task.exception())
        home = self._home.get(unit)
        if home in candidates:
            self._home.move_to_end(unit)
            return home
        choice = min(candidates, key=lambda i: self.outstanding[i])
        if home is None or home not in self._live:
            self._home[unit] = choice
            if len(self._home) > _STICKY:
                self._home.popitem(last=False)
        return choice

    def _lose(self, i: int, error: BaseException) -> None:
        if i in self._live:
            self._live.discard(i)
            self.faults["replica lost"] += 1
        if not self._live:
            raise NoReplicaLeft(f"every replica of {self.name} failed; the last: {error}") from error
