"""When the night ends: a run's deadline (`run.until`, `run.max_hours`) and the one estimate that both the deadline
and the ETA read.

The estimate measures samples as they finish: how long one takes from its admission to its end (the 90th
percentile of the latest ones, as the run's load makes them), and how many finish per second. A new sample is
admitted while it would end before the deadline; once one would not, admission closes for the rest of the run, the
samples in flight finish, and at the deadline whatever is still out is cancelled as Ctrl-C cancels it.
"""
from __future__ import annotations

import collections
import datetime as dt
import time

from airgen.config import RunConfig, parse_until

SAMPLES = 256  # the latest finished samples the time of one is measured on
WINDOW_S = 60.0  # samples per second: over the latest minute


def deadline_of(run: RunConfig, started: float | None = None) -> float | None:
    """The run's deadline as a `time.time()`: the earlier of `run.until` and `run.max_hours` from `started` (now);
    None when neither is set."""
    started = time.time() if started is None else started
    ends = []
    if run.until:
        ends.append(parse_until(run.until).timestamp())
    if run.max_hours is not None:
        ends.append(started + run.max_hours * 3600)
    return min(ends) if ends else None


class Estimate:
    """What a sample takes and how fast samples finish, measured on this run's samples as they end."""

    def __init__(self) -> None:
        self._took: collections.deque[float] = collections.deque(maxlen=SAMPLES)
        self._ends: collections.deque[float] = collections.deque()
        self._since = time.monotonic()
        self._count = 0
        self.sample_s: float | None = None  # the 90th percentile of the latest samples' times, once one has ended

    def finished(self, took_s: float, now: float) -> None:
        self._took.append(took_s)
        self._ends.append(now)
        self._count += 1
        ordered = sorted(self._took)
        self.sample_s = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]

    def per_s(self, now: float) -> float | None:
        """Samples finished per second over the latest minute (or since the run began, when shorter); over the
        whole run when none ended in the latest minute (samples that take minutes end in bursts)."""
        while self._ends and now - self._ends[0] > WINDOW_S:
            self._ends.popleft()
        span = min(WINDOW_S, now - self._since)
        if self._ends and span > 0:
            return len(self._ends) / span
        return self._count / (now - self._since) if self._count and now > self._since else None

    def eta_s(self, left: int, now: float) -> float | None:
        rate = self.per_s(now)
        return left / rate if rate else None


class Deadline:
    """Admission against a deadline (a `time.time()`), read on the monotonic clock the scheduler keeps."""

    def __init__(self, at: float):
        self.at = at
        self.mono = time.monotonic() + (at - time.time())
        self.closed_at: float | None = None  # when admission closed (monotonic), once it has

    def admits(self, estimate: Estimate, oldest_s: float | None, now: float) -> bool:
        """Whether a sample admitted `now` would end before the deadline. Until one has ended, the oldest sample in
        flight has taken at least its age: that is the estimate then."""
        if self.closed_at is not None:
            return False
        need = estimate.sample_s if estimate.sample_s is not None else (oldest_s or 0.0)
        if now + need < self.mono:
            return True
        self.closed_at = now
        return False

    def left_s(self, now: float) -> float:
        return self.mono - now

    def iso(self) -> str:
        return dt.datetime.fromtimestamp(self.at).astimezone().isoformat(timespec="seconds")
