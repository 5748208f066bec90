"""vLLM in process: one AsyncLLM per model, fed chat-templated token ids.

vLLM runs the model in child processes (EngineCore, which starts its Workers). A Worker exits when its EngineCore
dies, but an EngineCore whose parent is killed with SIGKILL keeps running forever, holding its memory (on a GPU, the
memory the resumed run needs). So before the first engine starts, this process arms an `_OrphanGuard`: a small
process that watches this one's children from the start-up on and ends them once this process is gone.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from airgen.method.calls import THINK_CLOSE, Completion, Request, Sampling, split_thinking, thinking_share
from airgen.config import ModelConfig
from airgen.engines import RequestRejected
from airgen.engines.models import cache_dir

_GIB = 1 << 30
# The EngineCore first waits for its Workers to exit; on a 2-core machine that took about 3 s.
_SHUTDOWN_GRACE_S = 15.0


class VLLMEngineError(RuntimeError):
    """The in-process engine cannot start or can no longer answer."""


class VLLMRequestRejected(RequestRejected, ValueError):
    """vLLM refused a request as invalid (prompt longer than max_model_len, bad regex, ...); retrying cannot help."""


class VLLMEngine:
    """An `Engine` over vLLM's AsyncLLM. Build it with `await VLLMEngine.start(config)`."""

    def __init__(self, tokenizer: Any, name: str, path: Path, reasoning: str = "auto", think_tokens: int = 0) -> None:
        self.name = name
        self.identity = str(path.resolve())  # what a run's fingerprint holds
        self.about = f"vLLM in process, {path}"
        self._tokenizer = tokenizer
        self._template_args = template_switch(tokenizer.chat_template, reasoning)
        self._think_tokens = think_tokens
        self._think_end = _think_end_id(tokenizer)
        self._llm: Any = None
        self._guard: _OrphanGuard | None = None
        self._processes: dict[int, float] = {}  # the engine's child processes: pid -> start time
        # vLLM rejects a request id that is still in flight; a retried key must get a fresh one.
        self._ids = itertools.count()
        self._closed = False
        # Each call's own seed, except on the CPU build: there vLLM rewinds a seeded request's generator when its
        # prefill is split over steps (chunked prefill: a batch of prompts over max_num_batched_tokens), and a CPU
        # torch.Generator has no offset to rewind ("CPU Generator does not use offset": the engine dies). There the
        # engine's own seed alone holds.
        self._seeded = True

    @classmethod
    async def start(cls, config: ModelConfig, *, name: str | None = None) -> "VLLMEngine":
        if not config.path:
            raise VLLMEngineError("an in-process vLLM engine needs a model path (an HF folder)")
        path = Path(config.path).expanduser()
        if not (path / "config.json").is_file():
            raise VLLMEngineError(f"model path {path} is not an HF model folder (no config.json in it)")
        on_cpu = _prepare_environment()

        from transformers import AutoTokenizer
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        if not tokenizer.chat_template:
            raise VLLMEngineError(f"{path} has no chat template; the prompts are chat messages")
        engine = cls(tokenizer, name or config.model or path.name, path, config.reasoning, config.think_budget)
        engine._seeded = not on_cpu
        # Armed before the start-up: a model load takes minutes, and a kill may come at any moment of it.
        engine._guard = _OrphanGuard.arm()
        before = _child_processes()
        try:
            # Never bound to a local: a module imported above keeps an exception whose traceback holds this frame,
            # and a local here would keep the AsyncLLM alive until interpreter exit, when its __del__ fails.
            with _placed_on(config.devices):
                engine._llm = AsyncLLM.from_engine_args(
                    AsyncEngineArgs(**engine_arguments(config, path, on_cpu=on_cpu)),
                    # LLM_CLASS selects the throughput defaults for max_num_seqs and max_num_batched_tokens.
                    usage_context=UsageContext.LLM_CLASS,
                )
        except BaseException:
            engine._guard.release()
            raise
        engine._processes = {pid: t for pid, t in _child_processes().items() if pid not in before}
        return engine

    async def generate(self, request: Request) -> Completion:
        if self._closed:
            raise VLLMEngineError(f"engine {self.name} is closed")
        from vllm.exceptions import VLLMClientError
        from vllm.inputs import tokens_input
        from vllm.v1.engine.exceptions import EngineDeadError

        # Rendering the template and tokenizing a long prompt take milliseconds: off the loop that feeds every engine.
        token_ids = await asyncio.to_thread(self._prompt_ids, request.messages)
        request_id = f"{request.key}#{next(self._ids)}"
        final = None
        try:
            async for output in self._llm.generate(
                tokens_input(token_ids),
                sampling_params(request.sampling, self._think_tokens, request.seed if self._seeded else None),
                request_id,
            ):
                final = output
        except EngineDeadError as e:
            raise VLLMEngineError(f"the vLLM engine for {self.name} died; see its log above") from e
        except VLLMClientError as e:
            raise VLLMRequestRejected(f"{request.key}: {e}") from e
        if final is None or not final.outputs:
            raise VLLMEngineError(f"vLLM returned no output for {request_id}")
        choice = final.outputs[0]
        thinking, answer = split_thinking(choice.text)
        return Completion(
            text=answer,
            finish_reason=choice.finish_reason or "stop",
            prompt_tokens=len(final.prompt_token_ids or token_ids),
            output_tokens=len(choice.token_ids),
            cached_tokens=final.num_cached_tokens or 0,
            model=self.name,
            reasoning=thinking,
            reasoning_tokens=self._thinking_tokens(choice.token_ids, thinking, answer),
        )

    def _prompt_ids(self, messages: tuple[dict, ...]) -> list[int]:
        return self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                                   return_dict=False, **self._template_args)

    def _thinking_tokens(self, token_ids: Sequence[int], thinking: str, answer: str) -> int:
        """The output's tokens up to its `</think>` token, where that is a token of its own."""
        if not thinking:
            return 0
        token_ids = list(token_ids)
        if self._think_end is not None and self._think_end in token_ids:
            return token_ids.index(self._think_end) + 1
        return thinking_share(len(token_ids), thinking, answer)

    async def reset_prefix_cache(self) -> bool:
        """Drop the prefix cache (the bench runs each schedule cold); False if requests still hold cached blocks."""
        return bool(await self._llm.reset_prefix_cache())

    async def close(self) -> None:
        """Stop the engine core and its workers; idempotent."""
        if self._closed:
            return
        self._closed = True
        # Called on the loop's thread so that vLLM cancels its output handler before the handler sees the
        # engine go and logs it as a failure. It blocks for the seconds the processes take to exit.
        self._llm.shutdown(timeout=_SHUTDOWN_GRACE_S)
        # vLLM SIGKILLs an EngineCore that outlives the grace without waiting for it; reap it.
        for child in multiprocessing.active_children():
            if child.pid in self._processes:
                child.join(timeout=5)
        assert self._guard is not None
        self._guard.release()
        # Released now, while the interpreter is whole: AsyncLLM.__del__ fails at interpreter exit.
        self._llm = None


def template_switch(template: Any, reasoning: str) -> dict[str, Any]:
    """What a chat template is given to think or not (`ModelConfig.reasoning`): Qwen3's `enable_thinking`, or
    gpt-oss's `reasoning_effort` (which cannot turn thinking off: "low" is the least); nothing where the template has
    no such switch, or with "auto"."""
    text = str(template or "")
    if reasoning == "auto":
        return {}
    if "enable_thinking" in text:
        return {"enable_thinking": reasoning == "on"}
    if "reasoning_effort" in text:
        return {"reasoning_effort": "high" if reasoning == "on" else "low"}
    return {}


def _think_end_id(tokenizer: Any) -> int | None:
    """The id of `</think>` where the vocabulary has it as one token (Qwen3 and DeepSeek-R1 do)."""
    return tokenizer.get_vocab().get(THINK_CLOSE)


def sampling_params(sampling: Sampling, think_tokens: int = 0, seed: int | None = None) -> Any:
    from vllm.sampling_params import RequestOutputKind, SamplingParams, StructuredOutputsParams

    structured = None
    if sampling.regex is not None:
        structured = StructuredOutputsParams(regex=sampling.regex)
    elif sampling.choice is not None:
        structured = StructuredOutputsParams(choice=list(sampling.choice))
    return SamplingParams(
        max_tokens=sampling.max_tokens + think_tokens,  # vLLM's default is 16
        seed=seed,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        repetition_penalty=sampling.repetition_penalty,
        ignore_eos=sampling.ignore_eos,
        structured_outputs=structured,
        output_kind=RequestOutputKind.FINAL_ONLY,
    )


def engine_arguments(config: ModelConfig, path: Path, *, on_cpu: bool) -> dict[str, Any]:
    """AsyncEngineArgs keywords for `config`; only what airgen decides, vLLM's defaults otherwise."""
    args: dict[str, Any] = {
        "model": str(path),
        "tokenizer": str(path),
        "served_model_name": config.model or path.name,
        "dtype": _cpu_dtype() if on_cpu and config.dtype == "auto" else config.dtype,
        "max_model_len": config.max_model_len,
        "tensor_parallel_size": config.tensor_parallel_size,
        # Compiling takes minutes on CPU; on GPU the graphs pay for themselves.
        "enforce_eager": on_cpu if config.enforce_eager is None else config.enforce_eager,
        "enable_prefix_caching": True,
        "disable_log_stats": True,
    }
    if config.gpu_memory_utilization is not None:
        args["gpu_memory_utilization"] = config.gpu_memory_utilization
    if config.max_num_seqs is not None:
        args["max_num_seqs"] = config.max_num_seqs
    if on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        # The same setting as VLLM_CPU_KVCACHE_SPACE, but per engine and not rounded to whole GiB.
        args["kv_cache_memory_bytes"] = int(config.kv_cache_gib * _GIB)
    return args


@contextlib.contextmanager
def _placed_on(devices: tuple[int, ...]) -> Iterator[None]:
    """While an engine starts, the GPUs its processes are to see: they are spawned (not forked) with this
    environment, so each engine's EngineCore and workers see their own devices, and /proc/PID/environ shows them."""
    if not devices:
        yield
        return
    placed = {"CUDA_VISIBLE_DEVICES": ",".join(map(str, devices)), "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    saved = {k: os.environ.get(k) for k in placed}
    os.environ.update(placed)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _prepare_environment() -> bool:
    """Set vLLM's process-wide defaults before it starts; True when it runs on CPU."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    # vLLM retitles its processes ("VLLM::EngineCore"); this keeps their environment readable in /proc.
    os.environ.setdefault("SPT_NOENV", "1")
    from vllm.platforms import current_platform

    on_cpu = current_platform.is_cpu()
    if on_cpu:
        # Else vLLM writes its caches under ~/.cache/vllm.
        os.environ.setdefault("VLLM_CACHE_ROOT", str(cache_dir() / "vllm"))
        bind = _small_machine_binding()
        if bind is not None:
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", bind)
    return on_cpu


# vLLM keeps one core per worker for its scheduler process; on a machine this small that is half the compute or
# more. Computing on every core made `airgen run` 1.6x faster on 2 cores, scheduler and airgen included.
_SMALL_MACHINE_CPUS = 4


def _small_machine_binding() -> str | None:
    """The CPUs this process may use, as a VLLM_CPU_OMP_THREADS_BIND list, on a machine with few of them."""
    cpus = sorted(os.sched_getaffinity(0))
    return ",".join(map(str, cpus)) if len(cpus) <= _SMALL_MACHINE_CPUS else None


def _cpu_dtype() -> str:
    """vLLM's "auto" picks bfloat16 on any x86 CPU; without AVX512-BF16 or AMX that is emulated and float32 is
    faster (2.4x more output tokens/s measured with 16 concurrent requests on a 2-core AVX512 machine)."""
    import torch

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return "auto"
    native_bf16 = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return "auto" if native_bf16 else "float32"


def _child_processes() -> dict[int, float]:
    """This process's children: pid -> start time (the pair names a process even after its pid is reused)."""
    import psutil

    children = {}
    for child in psutil.Process().children():
        try:
            children[child.pid] = child.create_time()
        except psutil.NoSuchProcess:
            pass
    return children


# Runs in its own session, so a Ctrl-C meant for airgen does not end it before it has done its work. It notes the
# owner's descendants every 0.1 s while the owner lives; once the owner is gone (end of file on its stdin, with no
# "disarm" first), it ends them, and also any orphan of the owner's session born since it was armed (a child
# started in the last instant, after the last look).
_GUARD_SCRIPT = r"""
import os, select, sys, time, psutil
owner, armed, session = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
seen = {}
def look():
    try:
        for proc in psutil.Process(owner).children(recursive=True):
            if proc.pid != os.getpid():
                seen.setdefault(proc.pid, proc)
    except psutil.Error:
        pass
said = b""
while True:
    if select.select([0], [], [], 0.1)[0]:
        data = os.read(0, 64)
        said += data
        if said == b"disarm":
            sys.exit(0)
        if not data:
            break
    look()
procs = {}
for proc in seen.values():
    try:
        if proc.is_running():
            procs[proc.pid] = proc
            procs.update((p.pid, p) for p in proc.children(recursive=True))
    except psutil.Error:
        pass
for proc in psutil.process_iter():
    try:
        if proc.pid != os.getpid() and proc.create_time() >= armed and os.getsid(proc.pid) == session \
                and (proc.ppid() == 1 or os.getsid(proc.ppid()) != session):
            procs[proc.pid] = proc
            procs.update((p.pid, p) for p in proc.children(recursive=True))
    except (psutil.Error, OSError):
        pass
for proc in procs.values():
    try:
        proc.terminate()
    except psutil.Error:
        pass
for proc in psutil.wait_procs(list(procs.values()), timeout=10)[1]:
    try:
        proc.kill()
    except psutil.Error:
        pass
"""


class _OrphanGuard:
    """Ends this process's children when it exits without disarming the guard, even by SIGKILL: one guard per
    process, shared by its engines (`arm` and `release` count them).

    The guard blocks reading a pipe whose only writer is this process: end-of-file without "disarm" means the
    owner died.
    """

    _current: "_OrphanGuard | None" = None

    def __init__(self) -> None:
        self.users = 0
        self._proc = subprocess.Popen(
            # The owner's session is given, not looked up: the owner may be gone before the guard has started.
            [sys.executable, "-c", _GUARD_SCRIPT, str(os.getpid()), repr(time.time() - 1), str(os.getsid(0))],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    @classmethod
    def arm(cls) -> "_OrphanGuard":
        if cls._current is None:
            cls._current = cls()
        cls._current.users += 1
        return cls._current

    @classmethod
    def _after_fork(cls) -> None:
        """In a forked child (vLLM forks its EngineCore): let go of the pipe's writing end, so that the guard
        still sees the end of the file when its owner dies. Pointed at /dev/null rather than closed, since the
        child's copy of this object still closes it at exit."""
        guard = cls._current
        if guard is not None and guard._proc.stdin is not None:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, guard._proc.stdin.fileno())
            os.close(null)

    def release(self) -> None:
        """One engine closed; the last one disarms the guard."""
        self.users -= 1
        if self.users > 0:
            return
        type(self)._current = None
        try:
            self._proc.stdin.write(b"disarm")
            self._proc.stdin.close()
        except BrokenPipeError:  # the guard was already gone
            pass
        self._proc.wait()


os.register_at_fork(after_in_child=_OrphanGuard._after_fork)
