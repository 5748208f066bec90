"""Several engines of one model as one: a role's replicas (one `vllm serve` per GPU, or in-process engines on their
own devices).

A unit's calls stay on the replica that took its first call, so its shared prompt prefix is in that replica's cache;
a new unit goes to the replica with the fewest requests outstanding. A replica that fails (not one refused request:
the engine itself) is dropped, its units move on, and each of its calls in flight is asked again of another
replica, so the run goes on and the journal, which only sees the answer, holds each call once. `drain(i)` sends no
new unit to replica i; its units finish where they are.
"""
from __future__ import annotations

import collections
from collections import OrderedDict
from typing import Sequence

from airgen.calls import Completion, Request
from airgen.engines import Engine, RequestRejected

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
        self.calls = [0] * len(self.engines)  # answered, per replica
        self._live = set(range(len(self.engines)))
        self._drained: set[int] = set()
        self._home: OrderedDict[str, int] = OrderedDict()  # unit -> its replica
        # Faults of every replica in one count (what the run shows), and the replicas lost.
        self.faults: collections.Counter = collections.Counter()
        for engine in self.engines:
            if hasattr(engine, "faults"):
                engine.faults = self.faults

    async def generate(self, request: Request) -> Completion:
        while True:
            i = self._replica(request.unit)
            self.outstanding[i] += 1
            try:
                completion = await self.engines[i].generate(request)
            except RequestRejected:
                raise  # this request's own problem: another replica would refuse it too
            except Exception as e:  # noqa: BLE001 - the replica failed: drop it, ask another
                self._lose(i, e)
                continue
            finally:
                self.outstanding[i] -= 1
            self.calls[i] += 1
            return completion

    def drain(self, i: int) -> None:
        self._drained.add(i)

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

    def _replica(self, unit: str) -> int:
        home = self._home.get(unit)
        if home is not None and home in self._live:
            self._home.move_to_end(unit)
            return home
        open_ = [i for i in sorted(self._live) if i not in self._drained] or sorted(self._live)
        if not open_:
            raise NoReplicaLeft(f"every replica of {self.name} failed")
        home = min(open_, key=lambda i: self.outstanding[i])
        self._home[unit] = home
        if len(self._home) > _STICKY:
            self._home.popitem(last=False)
        return home

    def _lose(self, i: int, error: BaseException) -> None:
        if i in self._live:
            self._live.discard(i)
            self.faults["replica lost"] += 1
        if not self._live:
            raise NoReplicaLeft(f"every replica of {self.name} failed; the last: {error}") from error
