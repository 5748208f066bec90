"""`airgen run --ray`: the same run on a Ray cluster, one worker (a Ray actor) per engine group.

Ray Data's LLM processor maps rows one way; a sample here goes back and forth between steps, so each worker runs
airgen's own scheduler over its shard instead. A document goes to worker `shard_of(id) % N`, so all its calls reach
the same engines (and prefix cache) and the split never depends on timing. Worker k journals into OUT/shards/K/, a
complete run folder of its own: OUT must be on a filesystem every node sees (one machine's disk for a local Ray,
NFS or a shared volume for a cluster). A worker that dies is started again by the driver, which says why, and resumes
its shard from the journal; one that dies more than `run.ray_restarts` times stops the run in one line. The driver
shows one progress line, writes OUT/metrics.jsonl from the shards' snapshots and, once every shard is done, writes
OUT/records.jsonl, rejected.jsonl and dropped_levels.jsonl from the shards' files, each whole and in shard order, so
a unit is in them exactly once however often the driver was rerun.
"""
from __future__ import annotations

import collections
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import orjson

from airgen.method import recipes

from airgen.runtime import runner, status

from airgen.store import sink
from airgen.config import Config, ConfigError
from airgen.console import say
from airgen.engines.placement import gpus_needed
from airgen.store.files import AppendLog, atomic_binary, atomic_write
from airgen.store.lock import hold
from airgen.runtime.prometheus import Endpoint
from airgen.store.folder import JOURNAL, METRICS, RUN_FILE, last_line

SHARDS = "shards"
LAYOUT = "ray.json"  # how many shards the run was split into: a resume must use the same number
MERGED = (sink.RECORDS, sink.PAIRS, sink.REJECTED, sink.DROPPED_LEVELS, JOURNAL)


def shard_dir(out: Path, k: int) -> Path:
    return Path(out) / SHARDS / str(k)


class ShardWorker:
    """One Ray actor: starts its own engines (in-process vLLM on the GPUs Ray gave it, or the configured URLs) and
    runs the scheduler over shard k of n. The driver hands it the run's recipe, so that a recipe registered at run
    time (a plugin) is known in the worker's process too."""

    def __init__(self, config: Config, recipe: Any, out: str, inputs: list[str], k: int, n: int,
                 start_engines: Callable):
        recipes.register(recipe)
        self.config, self.k, self.n = config, k, n
        self.out, self.inputs = shard_dir(Path(out), k), [Path(p) for p in inputs]
        self.start_engines = start_engines

    async def run(self) -> dict[str, Any]:  # an async actor: Ray runs it on the actor's event loop
        recipe = recipes.of(self.config)
        prompts = recipe.prompts()
        # A worker started again while its predecessor still writes (a node cut off, not dead) is refused.
        with hold(self.out, f"airgen run --ray: shard {self.k} of {self.n}"):
            runner.prepare(self.out, self.inputs, self.config, prompts, shard=True)
            engines = await self.start_engines(*self.config.models(), outage_s=self.config.run.outage_s)
            try:
                runner.settle_models(self.out, runner.models(engines))
                scheduler = await runner.generate(self.config, self.out, self.inputs, prompts, engines,
                                               shard=(self.k, self.n))
            finally:
                await runner.close_engines(engines)
        return {"shard": self.k, "done": scheduler.metrics.done, "resumed": scheduler.metrics.resumed,
                "aside": dict(scheduler.aside)}


class WorkerFailed(RuntimeError):
    """A worker died more often than `run.ray_restarts` allows; the message names the last cause."""


def execute(config: Config, out: Path, inputs: list[Path], prompts, address: str | None, workers: int | None,
            start_engines: Callable) -> int:
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        workers = _workers(workers, out)
        # A worker that dies (out of memory, its node lost) is started again by the driver, which says so, and
        # resumes its shard from its journal; one that dies more than `run.ray_restarts` times stops the run.
        actor = ray.remote(max_restarts=0, max_task_retries=0)(ShardWorker)
        gpus = _gpus_per_worker(config)
        in_process = any(not getattr(config, role).url for role in recipes.of(config).roles)

        def launch(k: int):
            worker = actor.options(num_gpus=gpus, num_cpus=1 if in_process else 0).remote(
                config, recipes.of(config), str(out), [str(p) for p in inputs], k, workers, start_engines)
            return worker.run.remote(), worker

        say(f"airgen: {workers} Ray workers, shards in {out / SHARDS}/")
        started = time.time()
        running = {ref: (k, worker) for k in range(workers) for ref, worker in [launch(k)]}
        restarts: collections.Counter = collections.Counter()
        results: dict[int, dict[str, Any]] = {}
        log = AppendLog(out / METRICS)
        endpoint = Endpoint(config.run.prometheus_port) if config.run.prometheus_port is not None else None
        if endpoint is not None:
            endpoint.watch(lambda: combined(out, workers))
        try:
            while running:
                ready, _ = ray.wait(list(running), num_returns=1, timeout=config.run.metrics_every_s)
                for ref in ready:
                    k, _worker = running.pop(ref)
                    try:
                        results[k] = ray.get(ref)
                    except ray.exceptions.RayActorError as e:  # the worker's process died
                        restarts[k] += 1
                        cause = _cause(e)
                        if restarts[k] > config.run.ray_restarts:
                            raise WorkerFailed(f"Ray worker {k} died {restarts[k]} times (run.ray_restarts = "
                                               f"{config.run.ray_restarts}); the last time: {cause}") from None
                        say(f"airgen: Ray worker {k} died ({cause}); starting it again, {restarts[k]} of "
                            f"{config.run.ray_restarts}")
                        ref, worker = launch(k)
                        running[ref] = (k, worker)
                    except ray.exceptions.RayTaskError as e:  # its own error (its engine failed): as it is
                        raise (e.cause or e) from None
                snap = combined(out, workers)
                log.write(snap)
                _status(out, workers, started, ended=False)
                if config.run.progress:
                    say(progress(snap, len(results), workers))
        finally:
            if endpoint is not None:
                endpoint.close()
            log.close()
    finally:
        ray.shutdown()
    runner.settle_models(out, orjson.loads((shard_dir(out, 0) / RUN_FILE).read_bytes())["settings"]["models"])
    merge(out, workers)
    _status(out, workers, started, ended=True)
    runner.say_outputs(out, recipes.of(config).unit)
    final = status.read(out)
    if final is not None and final["why"] == "deadline":
        say(f"airgen: deadline {final['deadline']}: {final['samples']['finished']} {recipes.of(config).unit}s "
            f"finished, {final['samples']['left']} left; the same command continues where this one stopped")
    aside = {unit: why for r in results.values() for unit, why in r["aside"].items()}
    if aside:
        unit, why = next(iter(aside.items()))
        say(f"airgen: {runner.plural(len(aside), recipes.of(config).unit)} set aside, unfinished: a call failed every "
            f"try while its server answered others ({unit}: {why}); run the same command again to ask again")
        return 1
    return 0


def _cause(error: Exception) -> str:
    """Why a worker died, in one line: the last line its process wrote (Ray keeps each worker's stderr in a log of
    its session, on this node), and how Ray saw it end."""
    text = " ".join(str(error).split())
    pid = re.search(r"\bpid: (\d+)", text)
    detail = re.search(r"Worker exit detail: ([^.]*)", text)
    said = _last_line_of_worker(int(pid.group(1))) if pid else None
    parts = [f"pid {pid.group(1)}" if pid else "", said or "", detail.group(1) if detail else ""]
    return "; ".join(p for p in parts if p) or text[:300]


def _last_line_of_worker(pid: int) -> str | None:
    import ray

    try:
        logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except AttributeError:  # a remote cluster's driver: the log is on another node
        return None
    for path in logs.glob(f"worker-*-{pid}.err"):
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [x.strip() for x in f.read().decode("utf-8", "replace").splitlines() if x.strip()]
        if lines:
            return lines[-1][:300]
    return None


def _workers(asked: int | None, out: Path) -> int:
    import ray

    layout = out / LAYOUT
    stored = orjson.loads(layout.read_bytes())["workers"] if layout.exists() else None
    if asked is None:
        asked = stored or int(ray.cluster_resources().get("GPU", 0))
        if not asked:
            raise ConfigError("the Ray cluster has no GPU: set the number of workers with --workers N")
    if stored is not None and stored != asked:
        raise ConfigError(f"{out} was split into {stored} shards; resume it with --workers {stored} (documents are "
                          f"assigned by hash of their id, so another count would move them between journals)")
    if stored is None:
        atomic_write(layout, orjson.dumps({"workers": asked}))
    return asked


def _gpus_per_worker(config: Config) -> float:
    """In-process models take GPUs (their devices together, else their tensor-parallel size, on one node); URL
    engines and CPU take none."""
    import ray

    if not ray.cluster_resources().get("GPU"):
        return 0
    return gpus_needed([m for m in config.models() if m is not None])


def _status(out: Path, workers: int, started: float, ended: bool) -> None:
    """OUT/status.json from the shards' own, once each has written one."""
    shards = [status.read(shard_dir(out, k)) for k in range(workers)]
    if all(shards):
        status.write(out, status.of_shards(shards, started, ended))


def combined(out: Path, workers: int) -> dict[str, Any]:
    """One metrics line from each shard's latest: samples and tokens summed, elapsed the longest."""
    snap: dict[str, Any] = {"time": time.time(), "elapsed_s": 0.0, "workers": workers,
                            "samples": {"records": 0, "rejected": 0, "resumed": 0, "in_flight": 0}, "roles": {}}
    for k in range(workers):
        last = last_line(shard_dir(out, k) / METRICS)
        if last is None:
            continue
        snap["elapsed_s"] = max(snap["elapsed_s"], last["elapsed_s"])
        for key in snap["samples"]:
            snap["samples"][key] += last["samples"].get(key) or 0
        for role, c in last["roles"].items():
            mine = snap["roles"].setdefault(role, {})
            for key, v in c.items():
                mine[key] = mine.get(key, 0) + v
    return snap


def progress(snap: dict[str, Any], finished: int, workers: int) -> str:
    s = snap["samples"]
    tokens = " ".join(f"{role} {c.get('output_tokens', 0):,} output tokens" for role, c in snap["roles"].items())
    return (f"[{snap['elapsed_s']:,.0f}s] workers done {finished}/{workers} | records {s['records']} rejected "
            f"{s['rejected']} in flight {s['in_flight']} | {tokens}")


def merge(out: Path, workers: int) -> None:
    """The run's output files from the shards', each written whole (a copy streamed through, never in memory):
    rerunning the merge gives the same files."""
    for name in MERGED:
        with atomic_binary(out / name) as merged:
            for k in range(workers):
                part = shard_dir(out, k) / name
                if part.exists():
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, merged, 1 << 20)
