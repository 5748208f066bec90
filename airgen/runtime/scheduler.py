"""Drives thousands of samples through the flow at once, on one event loop.

- No stage barriers: the requests a completion unlocks are queued the moment it returns (a sample may have several
  calls in flight: see the flow).
- Each engine has a window of outstanding requests (continuous batching stays fed, memory stays bounded); requests
  beyond it wait in a priority queue where the sample closest to done goes first, which keeps in-flight state small
  and puts one document's calls close together in time (prefix-cache hits).
- Units are admitted from a stream (the recipe's `read`) while fewer than `max_in_flight` samples are active and,
  with a deadline, while a new sample would end before it (`deadline`); at the deadline the run stops as on Ctrl-C.
- Every completion and refusal is journaled before the flow sees it; a finished sample's lines are written before
  its done marker. Resume replays the journal through the same flow, so nothing finished is asked again.
- A call the engine could not get answered (`CallFailed`: every try failed while the server answers others) is no
  sample's fate: it is asked once more after everything queued before it; failing again, its sample is set aside,
  unjournaled and unfinished, the run goes on without it, and the next run asks the call again (its answers so far
  are journaled and replayed).
"""
from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from airgen.method.calls import Completion, Refusal, Request, Role, digest
from airgen.method.rows import Rejection, unit_name
from airgen.engines import CallFailed, Engine, RequestRejected, identity
from airgen.method.flow import Done, Flow, Next, Unit, replay
from airgen.store.journal import Journal, Replay
from airgen.runtime.deadline import Deadline, Estimate
from airgen.runtime.metrics import Metrics
from airgen.store.sink import Sink


class EngineFailed(RuntimeError):
    """An engine failed (not one request): the run stops; rerunning resumes from the journal."""


@dataclass(eq=False)  # by identity: lanes gather in a set to be pumped once each
class Lane:
    """One engine's queue and window (roles served by the same engine share one lane)."""

    engine: Engine
    window: int
    name: str = ""  # the roles it serves, e.g. "guidance+student"
    outstanding: int = 0
    queue: list = field(default_factory=list)


class Scheduler:
    def __init__(self, flow: Flow, engines: dict[Role, Engine], windows: dict[Role, int], journal: Journal,
                 sink: Sink, metrics: Metrics, replay: Replay, max_in_flight: int,
                 deadline: Deadline | None = None):
        self.flow = flow
        self.journal = journal
        self.sink = sink
        self.metrics = metrics
        self.replay = replay
        self.max_in_flight = max_in_flight
        lanes: dict[int, Lane] = {}
        self._lanes: dict[str, Lane] = {}
        # What names each role's model in the digest of every request (`calls.digest`): as run.json names it.
        self._models = {role: identity(engine) for role, engine in engines.items()}
        for role, engine in engines.items():
            lane = lanes.setdefault(id(engine), Lane(engine, 0))
            lane.window = max(lane.window, windows[role])
            lane.name = f"{lane.name}+{role}" if lane.name else role
            self._lanes[role] = lane
        metrics.step_faults = flow.faults
        for lane in lanes.values():
            metrics.engine_load(lane.name, 0, False)
            faults = getattr(lane.engine, "faults", None)
            if faults is not None:
                metrics.faults[lane.name] = faults
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None  # set by run(); tasks are created on it directly
        self._tasks: set[asyncio.Task] = set()
        self._active = 0
        self._units: Iterator[Any] = iter(())  # the recipe's units (documents, pairs, ...) and Rejections
        self._exhausted = False
        self._finished = asyncio.Event()
        self._error: BaseException | None = None
        self.stopped_by: str | None = None  # "interrupted" (Ctrl-C, SIGTERM) or "deadline"
        self.deadline = deadline
        self.estimate = Estimate()
        self._admitted: dict[str, float] = {}  # sample in flight -> when it was admitted (oldest first)
        self.aside: dict[str, str] = {}  # unit -> why it was set aside for the next run
        self._given_up: set[str] = set()  # call keys given up once in this run: asked once more, last

    @property
    def active(self) -> int:
        return self._active

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupted"

    @property
    def closed(self) -> bool:
        """Admission closed by the deadline: the samples not begun are left for the next run."""
        return self.deadline is not None and self.deadline.closed_at is not None

    async def run(self, units: Iterable[Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._units = iter(units)
        timer = None if self.deadline is None else self._loop.call_at(
            self._loop.time() + self.deadline.left_s(time.monotonic()), self.stop, "deadline")
        try:
            self._admit()  # replays journaled answers: a failure there stops the run like any other
            await self._finished.wait()
        finally:
            if timer is not None:
                timer.cancel()
            await self._cancel_all()
        self.metrics.settle(self._active > 0)
        if self._error is not None:
            raise self._error

    def stop(self, why: str = "interrupted") -> None:
        """Ctrl-C (or the deadline): stop at once; calls in flight are cancelled (and asked again on resume),
        nothing else is lost."""
        if not self._finished.is_set():
            self.stopped_by = self.stopped_by or why
        self._finished.set()

    # -- admission ----------------------------------------------------------------------------------------------

    def _admit(self) -> None:
        while (not self._exhausted and self._active < self.max_in_flight and not self._finished.is_set()
               and self._in_time()):
            unit = next(self._units, None)
            if unit is None:
                self._exhausted = True
            elif isinstance(unit, Rejection):
                self._reject_input(unit)
            else:
                self._start(unit)
        if (self._exhausted or self.closed) and self._active == 0:
            self._finished.set()

    def _in_time(self) -> bool:
        """Whether a sample admitted now would end before the deadline (always, without one)."""
        if self.deadline is None:
            return True
        now = time.monotonic()
        oldest = now - next(iter(self._admitted.values())) if self._admitted else None
        return self.deadline.admits(self.estimate, oldest, now)

    def _reject_input(self, rejection: Rejection) -> None:
        unit = unit_name(rejection)
        if unit in self.replay.finished:
            self.metrics.resumed += 1
            return
        self.sink.rejected(unit, rejection.id, rejection.source, "read", rejection.rule, rejection.value)
        self.journal.done(unit)
        self.metrics.finished("rejected", "read")

    def _start(self, doc: Any) -> None:
        if doc.id in self.replay.finished:
            self.metrics.resumed += 1
            return
        sample = self.flow.sample(doc)
        self._active += 1
        self.metrics.active = self._active
        # Replay: the journal answers every call it already holds, through the same pure flow.
        journaled = self.replay.answers.pop(doc.id, {})
        step = replay(self.flow, sample, self.flow.start(sample), lambda request: self._replayed(request, journaled))
        if journaled:  # answers the flow did not reach again: they follow one whose request changed
            self.metrics.asked_again["they follow an answer asked again"] += len(journaled)
        lanes = self._handle(sample, step)
        if lanes is not None:  # not finished from the journal alone: its time is measured from here
            self._admitted[doc.id] = time.monotonic()
        for lane in lanes or ():
            self._pump(lane)

    def _replayed(self, request: Request, journaled: dict) -> Completion | Refusal | None:
        """The journal's answer to `request`, if it answered this very request (its digest): a document edited under
        its id, a prompt or a step changed since, ask again."""
        known = journaled.pop(request.key, None)
        if known is None:
            return None
        answer, asked = known
        if asked is not None and asked != self._digest(request):
            self.metrics.asked_again["the request changed since it was answered"] += 1
            return None
        self.metrics.replayed_calls += 1
        return answer

    def _digest(self, request: Request) -> str:
        return digest(request, self._models[request.role])

    # -- calls ----------------------------------------------------------------------------------------------------

    def _handle(self, sample: Unit, step: Next) -> set[Lane] | None:
        """Queue the requests `step` unlocks (returning their lanes, to be pumped once each), or end the sample."""
        if isinstance(step, list):
            lanes = set()
            for request in step:
                lane = self._lanes[request.role]
                heapq.heappush(lane.queue, (-request.progress, next(self._seq), sample, request))
                lanes.add(lane)
            return lanes
        if isinstance(step, Done):
            self.sink.records(step.records)
            self.sink.pairs(step.pairs)
            self.sink.dropped_levels(sample.doc_id, step.dropped)
            self.metrics.finished("records", splits=[r["meta"]["split"] for r in step.records],
                                  sample_id=sample.doc_id)
        else:
            self.sink.rejected(sample.doc_id, sample.doc_id, sample.source, step.stage, step.reason, step.value)
            self.sink.dropped_levels(sample.doc_id, step.dropped)
            self.metrics.finished("rejected", step.stage, sample_id=sample.doc_id)
        self.journal.done(sample.doc_id)
        self._active -= 1
        self.metrics.active = self._active
        admitted = self._admitted.pop(sample.doc_id, None)
        if admitted is not None:
            now = time.monotonic()
            self.estimate.finished(now - admitted, now)
        return None

    def _set_aside(self, sample: Unit, reason: str) -> None:
        """The sample waits for the next run: its calls in flight are journaled as they come back, its queued ones
        are never sent, and no line of it is written."""
        if sample.doc_id in self.aside:
            return
        self.aside[sample.doc_id] = reason
        self._admitted.pop(sample.doc_id, None)
        self._active -= 1
        self.metrics.active = self._active
        self.metrics.set_aside[sample.doc_id] = reason

    def _pump(self, lane: Lane) -> None:
        if lane.outstanding >= lane.window or not lane.queue:
            return
        now = time.perf_counter()
        sent = 0
        while lane.outstanding < lane.window and lane.queue:
            _, _, sample, request = heapq.heappop(lane.queue)
            if sample.doc_id in self.aside:
                continue
            lane.outstanding += 1
            sent += 1
            self.metrics.call_started(request, now)
            task = self._loop.create_task(self._call(lane, sample, request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self.metrics.engine_load(lane.name, sent, True, now)

    async def _call(self, lane: Lane, sample: Unit, request: Request) -> None:
        completion: Completion | None = None
        refusal = failure = ""
        try:
            completion = await lane.engine.generate(request)
        except RequestRejected as e:
            refusal = str(e)
        except CallFailed as e:
            failure = str(e)
        except Exception as e:  # noqa: BLE001 - any other failure is the engine's: stop the run, resume later
            failed = EngineFailed(str(e))
            failed.__cause__ = e
            self.fail(failed)
            return
        finally:
            # One clock read for the call's end: the engine's load, the call's counters and our handling's start.
            start = time.perf_counter()
            lane.outstanding -= 1
            self.metrics.engine_load(lane.name, -1, True, start)
            took = self.metrics.call_finished(sample.doc_id, request, completion, start)
        # Our own work between the engine's answer and the sample's next request: the scheduler's cost per call.
        try:
            ms = round(1000 * took)
            step: Next = []
            if failure and request.key not in self._given_up:
                self._given_up.add(request.key)
                heapq.heappush(lane.queue, (1, next(self._seq), sample, request))  # after all that waits (<= 0)
            elif failure:
                self._set_aside(sample, failure)
            elif completion is not None:
                self.journal.call(sample.doc_id, request.key, completion, ms, self._digest(request))
                if sample.doc_id not in self.aside:
                    step = self.flow.advance(sample, request.key, completion)
            else:
                self.journal.refused(sample.doc_id, request.key, refusal, ms, self._digest(request))
                if sample.doc_id not in self.aside:
                    step = self.flow.refused(sample, request.key, refusal)
            if self._finished.is_set():
                return
            lanes = self._handle(sample, step) or set()
            lanes.add(lane)  # the slot this call freed
            for touched in lanes:
                self._pump(touched)
            self._admit()
        except Exception as e:  # noqa: BLE001 - a full disk or a bug: stop the run (it resumes) rather than hang
            self.fail(e)
            return
        self.metrics.handling_s += time.perf_counter() - start
        self.metrics.handled += 1

    def fail(self, error: BaseException) -> None:
        """Stop the run on `error` (the first one wins); `run` raises it once the calls in flight are cancelled."""
        if self._error is None:
            self._error = error
        self._finished.set()

    async def _cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
