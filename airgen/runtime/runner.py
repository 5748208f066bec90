"""`airgen run`: one output folder per run; rerunning on it resumes.

OUT/run.json holds the run's fingerprint (method settings, seed, prompt set, models) and inputs; a resume with a
different fingerprint is refused, because its records would mix two configurations.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.metadata
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import orjson

from airgen.store import journal

from airgen.method import recipes

from airgen.store import sink
from airgen.method.calls import Role
from airgen.config import Config, ConfigError
from airgen.console import say
from airgen.method.rows import unit_name
from airgen.engines import Engine, identity
from airgen.engines.build import close_engines, start_engines
from airgen.engines.replicas import Replicas
from airgen.store.files import AppendLog, atomic_write
from airgen.runtime.metrics import Metrics
from airgen.runtime.panel import Progress, Rates
from airgen.runtime.prometheus import Endpoint
from airgen.runtime import status
from airgen.runtime.deadline import Deadline, deadline_of
from airgen.runtime.summary import funnel, numbers
from airgen.method.prompts import PromptSet
from airgen.store.lock import LOCK
from airgen.store.folder import INPUTS, JOURNAL, METRICS, RUN_FILE
from airgen.runtime.scheduler import Scheduler

DISPLAY_EVERY_S = 1.0
STOP_GRACE_S = 30.0


def default_out() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


def version() -> str:
    try:
        return importlib.metadata.version("airgen")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _settings(config: Config, prompts: PromptSet) -> dict[str, Any]:
    """What a resumed run must share with the run it continues, as run.json holds it (JSON: lists, not tuples), the
    models aside: they are known once the engines have answered (`settle_models`)."""
    return orjson.loads(orjson.dumps({**recipes.of(config).fingerprint(config.settings, config.seed),
                                      "prompts": prompts.fingerprint}))


def _fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _diff(old: dict[str, Any], new: dict[str, Any], where: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _diff(a, b, f"{where}{key}.")
        elif a != b:
            changes.append(f"{where}{key}: {a!r} -> {b!r}")
    return changes


def _refuse(out: Path, changes: list[str]) -> ConfigError:
    listed = "\n  ".join(changes)
    return ConfigError(f"{out} was made with other settings; resuming would mix them:\n  {listed}\n"
                       "Use the original settings, or a new --out folder.")


def refuse_foreign(out: Path) -> None:
    """A folder that holds files but no run is not made into one. A run.json half-written when a kill came is a
    .partial file: such a folder is still a new one; so is one that holds only the lock its writer took before
    reading it (and the rows `airgen.run` was given, as a file)."""
    if (out / RUN_FILE).exists() or not out.exists():
        return
    if any(not p.name.endswith(".partial") and p.name not in (LOCK, INPUTS) for p in out.iterdir()):
        raise ConfigError(f"{out} exists, is not empty and holds no {RUN_FILE}: not an airgen run folder")


def prepare(out: Path, inputs: list[Path], config: Config, prompts: PromptSet, shard: bool = False) -> list[Path]:
    """Create the run folder, or check that an existing one continues the same run (its models are checked once
    the engines answer: `settle_models`). Returns the inputs to read. A shard's folder (`shard`: one Ray worker's
    part of a run) may hold no unit at all."""
    settings = _settings(config, prompts)
    missing = [str(p) for p in inputs if not p.exists()]
    if missing:
        raise ConfigError(f"input not found: {', '.join(missing)}")
    run_file = out / RUN_FILE
    if run_file.exists():
        stored = orjson.loads(run_file.read_bytes())
        changes = _diff({k: v for k, v in stored["settings"].items() if k != "models"}, settings)
        if changes:
            raise _refuse(out, changes)
        stored_inputs = [Path(p) for p in stored["inputs"]]
        if inputs and [p.resolve() for p in inputs] != stored_inputs:
            raise ConfigError(f"{out} was made from {[str(p) for p in stored_inputs]}; give the same inputs or none")
        if stored.get("airgen") != version():
            say(f"airgen: {out} was begun by airgen {stored.get('airgen', 'before 0.2')}; this is {version()}: a "
                "journaled answer is used again only for the very request it answered")
        return stored_inputs
    refuse_foreign(out)
    recipe = recipes.of(config)
    resolved = [p.resolve() for p in inputs] if inputs else [recipe.default_input()]
    # Before the folder is made and any engine starts (a model load takes minutes): an input with nothing in it
    # is a mistake.
    if not shard and next(iter(recipe.read(resolved, config.run.limit)), None) is None:
        raise ConfigError(f"{', '.join(map(str, resolved))}: nothing to read (no {recipe.unit}, not even a line to "
                          "reject)" + (" with --limit 0" if config.run.limit == 0 else ""))
    out.mkdir(parents=True, exist_ok=True)
    settings["models"] = {}
    atomic_write(run_file, orjson.dumps({"fingerprint": _fingerprint(settings), "settings": settings,
                                         "inputs": [str(p) for p in resolved], "created": time.time(),
                                         "preset": config.preset, "airgen": version()}, option=orjson.OPT_INDENT_2))
    return resolved


def settle_models(out: Path, models: dict[str, str]) -> None:
    """The models the engines say they serve (their ids, not the URLs they were reached at): written into run.json
    the first time engines answer for this folder, compared on every resume after. A resume may reach the same
    models at other URLs, or through more replicas."""
    run_file = out / RUN_FILE
    stored = orjson.loads(run_file.read_bytes())
    known = stored["settings"].get("models") or {}
    if known:
        changes = _diff({"models": known}, {"models": models})
        if changes:
            raise _refuse(out, changes)
        return
    stored["settings"]["models"] = models
    stored["fingerprint"] = _fingerprint(stored["settings"])
    atomic_write(run_file, orjson.dumps(stored, option=orjson.OPT_INDENT_2))


def count_outputs(out: Path) -> tuple[int, int, int]:
    """(records, samples with records, rejected units), read back from the output files."""
    docs: set[str] = set()
    records = 0
    with open(out / sink.RECORDS, "rb") as f:
        for line in f:
            records += 1
            docs.add(orjson.loads(line)["meta"]["doc_id"])
    with open(out / sink.REJECTED, "rb") as f:
        rejected = sum(1 for _ in f)
    return records, len(docs), rejected


def models(engines: dict[Role, Engine]) -> dict[str, str]:
    """Each role's model as its engine names it."""
    return {role: identity(engine) for role, engine in engines.items()}


def shard_of(name: str, workers: int) -> int:
    """The worker a unit goes to: a stable hash of its name, so that its calls always reach the same worker's
    engines (and prefix cache) and the split does not depend on timing or on the order of the input."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") % workers


def say_engines(engines: dict[Role, Engine]) -> None:
    """Which engine answers each role, and how (a server's dialect)."""
    by_engine: dict[int, list[str]] = {}
    for role, engine in engines.items():
        by_engine.setdefault(id(engine), []).append(role)
    for roles in by_engine.values():
        say(f"airgen: {' and '.join(roles)}: {engines[roles[0]].about}")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def say_outputs(out: Path, unit: str) -> None:
    """The run's last line: what its output files hold."""
    records, with_records, rejected = count_outputs(out)
    say(f"{out}: {plural(records, 'record')} from {plural(with_records, unit)}; "
        f"{plural(rejected, unit)} rejected ({out / sink.REJECTED})")


async def execute(config: Config, out: Path, inputs: list[Path], prompts: PromptSet, layout: Any = None,
                  signals: bool = True) -> int:
    """The run on this process's engines; with `layout` (a `plan.Plan`), the summary says how close it came; with
    `signals`, Ctrl-C and SIGTERM stop it. Returns the command's exit code."""
    recipe = recipes.of(config)
    engines = await start_engines(*config.models(), outage_s=config.run.outage_s)
    say_engines(engines)
    endpoint = Endpoint(config.run.prometheus_port) if config.run.prometheus_port is not None else None
    try:
        settle_models(out, models(engines))
        scheduler = await generate(config, out, inputs, prompts, engines, endpoint=endpoint, signals=signals)
    finally:
        if endpoint is not None:
            endpoint.close()
        await close_engines(engines)
    say(funnel(numbers(scheduler.metrics)))
    if layout is not None:
        from airgen.engines.plan import compare

        say(compare(layout, scheduler.metrics.snapshot()))
    say_outputs(out, recipe.unit)
    if scheduler.interrupted:
        say(f"interrupted: calls in flight were cancelled; run the same command again to resume {out}")
        return 130
    if scheduler.deadline is not None and (scheduler.closed or scheduler.stopped_by == "deadline"):
        say(deadline_line(scheduler, recipe.unit))
    if scheduler.aside:
        unit, why = next(iter(scheduler.aside.items()))
        say(f"airgen: {plural(len(scheduler.aside), recipe.unit)} set aside, unfinished: a call failed every try "
            f"while its server answered others ({unit}: {why}); run the same command again to ask again")
        return 1
    return 0


async def generate(config: Config, out: Path, inputs: list[Path], prompts: PromptSet,
                   engines: dict[Role, Engine], shard: tuple[int, int] | None = None,
                   endpoint: Endpoint | None = None, signals: bool = True) -> Scheduler:
    """Run (or resume) the method over `inputs` into `out` on engines already started; with `shard` (k, n), only
    the units whose id hashes to k of n (`shard_of`), as one of n Ray workers.

    While it runs, OUT/metrics.jsonl gets a snapshot every few seconds (and a last one at the end), OUT/status.json
    is rewritten with it, the progress display is refreshed if enabled, and `endpoint` (the process's Prometheus
    endpoint, if any) serves its counters. With `signals`, Ctrl-C and SIGTERM stop the run (a Ray worker leaves its
    signals to Ray; a library caller keeps its own)."""
    recipe = recipes.of(config)
    replay = journal.load(out / JOURNAL)
    units = recipe.read(inputs, config.run.limit)
    if shard is not None:
        units = (u for u in units if shard_of(unit_name(u), shard[1]) == shard[0])
    metrics = Metrics(peaks={role: peak for role in engines if (peak := getattr(config, role).peak_tokens_per_s)})
    loop = asyncio.get_running_loop()
    handled = signals and shard is None
    deadline = deadline_of(config.run)
    # Every file opened here is closed however the run ends, each even when closing another one fails (a full disk).
    with contextlib.ExitStack() as files:
        the_sink = sink.Sink(out, replay.finished, {
            "models": {role: engine.name for role, engine in engines.items()}, "prompts": prompts.fingerprint})
        the_journal = journal.Journal(out / JOURNAL, durable_first=the_sink.sync)
        # Closed in this order (the stack unwinds backwards): the journal's last commit makes the sink durable first.
        files.callback(the_sink.close)
        files.callback(the_journal.close)
        scheduler = Scheduler(
            recipe.flow(config.settings, prompts, config.seed), engines,
            # A role's window is per engine: its replicas each take as many.
            {role: getattr(config, role).window * (len(e.engines) if isinstance(e, Replicas) else 1)
             for role, e in engines.items()},
            the_journal, the_sink, metrics, replay, config.run.max_in_flight,
            Deadline(deadline) if deadline is not None else None,
        )
        if shard is None:  # the ETA's denominator: the input counted beside the run, off the loop
            counting = loop.run_in_executor(None, _count, recipe, inputs, config.run.limit)
            counting.add_done_callback(
                lambda f: setattr(metrics, "total", None if f.cancelled() or f.exception() else f.result()))
        for sig in (signal.SIGINT, signal.SIGTERM) if handled else ():
            loop.add_signal_handler(sig, _stop_on_signal, scheduler)
            files.callback(loop.remove_signal_handler, sig)
        if endpoint is not None:
            endpoint.watch(metrics.snapshot)
        log = AppendLog(out / METRICS)
        files.callback(log.close)
        display = Progress() if config.run.progress else None
        if display is not None:
            files.callback(display.close)
        tick = _Tick(scheduler, out, log, display)
        observer = asyncio.create_task(_observe(tick, config.run.metrics_every_s))
        failure: BaseException | None = None
        try:
            tick(write=True)  # status.json says running from the start
            await scheduler.run(units)
        except BaseException as e:
            failure = e
            raise
        finally:
            observer.cancel()
            await asyncio.gather(observer, return_exceptions=True)
            if shard is None and not counting.done():  # the summary says what is left: the count is needed
                await asyncio.wait([counting])
            try:
                tick(write=True, end=_end_state(scheduler, failure))
            except OSError:
                if failure is None:  # a full disk at the end is the run's failure; after another, that one stands
                    raise
    return scheduler


def _count(recipe, inputs: list[Path], limit: int | None) -> int:
    return sum(1 for _ in recipe.read(inputs, limit))


def _end_state(scheduler: Scheduler, failure: BaseException | None) -> tuple[str, str | None, str | None]:
    """(state, why, last error) of a run that ended."""
    if isinstance(failure, asyncio.CancelledError):
        return "stopped", "cancelled", None
    if failure is not None:
        return "stopped", "error", " ".join(str(failure).split()) or type(failure).__name__
    if scheduler.stopped_by is not None:
        return "stopped", scheduler.stopped_by, None
    if scheduler.aside:
        return "stopped", "set aside", next(iter(scheduler.aside.values()))
    if scheduler.closed:
        return "stopped", "deadline", None
    return "finished", None, None


def deadline_line(scheduler: Scheduler, unit: str) -> str:
    """What a run stopped by its deadline made, what it left, and that the same command continues."""
    s = scheduler.metrics.snapshot()["samples"]
    left = status.left({**s, "total": scheduler.metrics.total})
    cancelled = scheduler.active if scheduler.stopped_by == "deadline" else 0
    return (f"airgen: deadline {scheduler.deadline.iso()}: {plural(s['records'] + s['rejected'], unit)} finished "
            f"this run ({s['records'] + s['rejected'] + s['resumed']} in all), "
            + (f"{left} left" if left is not None else "the rest left")
            + (f" ({cancelled} cancelled in flight, their answers so far kept)" if cancelled else "")
            + "; the same command continues where this one stopped")


# While a command that owns its process runs (`ends_process_on_second_signal`): the timers of stops in progress.
_hard_stops: list[threading.Timer] | None = None


@contextlib.contextmanager
def ends_process_on_second_signal() -> Iterator[None]:
    """For the command line, which owns its process: after Ctrl-C or SIGTERM, a second one, or a stop that takes
    over `STOP_GRACE_S` (an engine that does not close), ends the process at once, which the journal survives as it
    survives a kill. Outside it (airgen used as a library) a signal only stops the run."""
    global _hard_stops
    _hard_stops = []
    try:
        yield
    finally:
        for timer in _hard_stops:
            timer.cancel()
        _hard_stops = None


def _stop_on_signal(scheduler: Scheduler) -> None:
    """Ctrl-C or SIGTERM: stop, keeping the journal (and, for the command line, end the process if it comes again or
    the stop takes too long)."""
    if _hard_stops is not None:
        if scheduler.interrupted:
            _stop_now("a second signal")
        timer = threading.Timer(STOP_GRACE_S, _stop_now, (f"stopping took over {STOP_GRACE_S:.0f} s",))
        timer.daemon = True  # a process that ends in time is not held back by it
        timer.start()
        _hard_stops.append(timer)
    scheduler.stop()


def _stop_now(why: str) -> None:
    say(f"airgen: stopped at once ({why}); the journal keeps every finished call: run the same command again to "
        "resume")
    os._exit(130)


class _Tick:
    """One look at the run: the journal's group commit, a snapshot with its rates and estimate, the display, and,
    when due, a metrics.jsonl line and status.json."""

    def __init__(self, scheduler: Scheduler, out: Path, log: AppendLog, display: Progress | None):
        self.scheduler, self.out, self.log, self.display = scheduler, out, log, display
        self.rates = Rates()

    def __call__(self, write: bool, end: tuple[str, str | None, str | None] | None = None) -> None:
        scheduler = self.scheduler
        scheduler.journal.commit()  # about once a second: the group commit (`journal`)
        scheduler.metrics.settle(scheduler.active > 0)
        snap = scheduler.metrics.snapshot()
        snap["rates"] = self.rates.add(snap)
        snap["estimate"] = _estimate(scheduler, snap)
        if write:
            self.log.write(snap)
            state, why, error = end or ("running", None, None)
            status.write(self.out, status.document(snap, scheduler.sink.records_written,
                                                   numbers(scheduler.metrics), state, why, error))
        if self.display is not None:
            self.display.update(snap, snap["rates"])


def _estimate(scheduler: Scheduler, snap: dict[str, Any]) -> dict[str, Any]:
    """The one estimate the ETA and the deadline read (`deadline.Estimate`)."""
    now = time.monotonic()
    estimate, deadline = scheduler.estimate, scheduler.deadline
    per_s = estimate.per_s(now)
    left = status.left(snap["samples"])
    return {"samples_per_s": round(per_s, 4) if per_s else None,
            "sample_s": round(estimate.sample_s, 3) if estimate.sample_s is not None else None,
            "eta_s": round(eta, 1) if left is not None and (eta := estimate.eta_s(left, now)) is not None else None,
            "deadline": deadline.iso() if deadline is not None else None,
            "deadline_in_s": round(deadline.left_s(now), 1) if deadline is not None else None,
            "admitting": not scheduler.closed and scheduler.stopped_by is None}


async def _observe(tick: _Tick, every_s: float) -> None:
    """The display every second (or faster), a metrics.jsonl line and status.json every `every_s`; a failure to
    write them (a full disk) stops the run as any other would."""
    step, written = min(DISPLAY_EVERY_S, every_s), time.monotonic()
    try:
        while True:
            await asyncio.sleep(step)
            due = time.monotonic() - written >= every_s - step / 2
            if due:
                written = time.monotonic()
            tick(write=due)
    except Exception as e:  # noqa: BLE001 - the scheduler stops and raises it
        tick.scheduler.fail(e)
