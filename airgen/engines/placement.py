"""Where each role's engines run: one engine per URL of a role, or, in process, one per group of `tensor_parallel_size`
of its `devices` (its replicas), with the share of each GPU's memory that follows from whether the roles share one.

A layout that cannot run is refused in one line before any engine starts: a device list the tensor-parallel size does
not divide, more devices than the node has, or two roles on the same GPUs asking more than all of its memory.
"""
from __future__ import annotations

import dataclasses

from airgen.method.calls import Role
from airgen.config import ConfigError, ModelConfig
from airgen.engines import model_identity

# Two different in-process models on the same GPUs: each takes a little under half of them.
SHARED_GPU_FRACTION = 0.45
# Two shares of one GPU may add up to this much of it (vLLM's own default for one engine is 0.9).
MAX_SHARED = 0.95


def replicas(config: ModelConfig) -> list[ModelConfig]:
    """One config per engine of the role: per URL, or per `tensor_parallel_size` devices, in order."""
    if config.url:
        return [dataclasses.replace(config, url=url) for url in config.urls]
    tp = config.tensor_parallel_size
    if not config.devices:
        return [config]
    return [dataclasses.replace(config, devices=config.devices[i:i + tp]) for i in range(0, len(config.devices), tp)]


def place(configs: dict[Role, ModelConfig], gpus: int | None) -> dict[Role, list[ModelConfig]]:
    """Each role's engines, checked against the node (`gpus`: how many it has; None on a machine without GPUs,
    where device lists only name what the engines would see) and given their memory share."""
    for role, config in configs.items():
        _check(role, config, gpus)
    configs = _split_memory(configs, gpus)
    return {role: replicas(config) for role, config in configs.items()}


def _check(role: str, config: ModelConfig, gpus: int | None) -> None:
    devices, tp = config.devices, config.tensor_parallel_size
    if not devices or config.url:
        return
    if len(set(devices)) != len(devices):
        raise ConfigError(f"{role}.devices {list(devices)} names a GPU twice")
    if len(devices) % tp:
        raise ConfigError(f"{role}.devices has {len(devices)} GPUs, which tensor_parallel_size {tp} does not "
                          f"divide: each replica takes {tp}")
    if gpus is not None and max(devices) >= gpus:
        raise ConfigError(f"{role}.devices {list(devices)} names GPU {max(devices)}, but this node has {gpus} "
                          f"(0..{gpus - 1})")


def _split_memory(configs: dict[Role, ModelConfig], gpus: int | None) -> dict[Role, ModelConfig]:
    """Two different in-process models on common GPUs (or both on the default ones) share their memory."""
    in_process = {role: c for role, c in configs.items() if not c.url}
    if len(in_process) < 2 or len({model_identity(c) for c in in_process.values()}) < 2:
        return configs
    guidance, student = in_process["guidance"], in_process["student"]
    common = set(guidance.devices) & set(student.devices) if guidance.devices and student.devices else None
    if common == set():
        return configs  # apart: each has its GPUs to itself
    if not gpus:
        return configs  # no GPU (or none known): no memory to share
    asked = [c.gpu_memory_utilization for c in (guidance, student)]
    where = f"GPUs {sorted(common)}" if common else "the same GPUs"
    if all(a is not None for a in asked) and sum(asked) > MAX_SHARED:
        raise ConfigError(f"guidance and student share {where} and ask {asked[0]} + {asked[1]} of their memory; "
                          f"together at most {MAX_SHARED} (set gpu_memory_utilization lower, or give them apart "
                          "devices)")
    shares = [a if a is not None else
              (MAX_SHARED - asked[1 - i] if asked[1 - i] is not None else SHARED_GPU_FRACTION)
              for i, a in enumerate(asked)]
    return configs | {role: dataclasses.replace(c, gpu_memory_utilization=round(share, 3))
                      for (role, c), share in zip((("guidance", guidance), ("student", student)), shares)}


def gpus_needed(configs: list[ModelConfig]) -> int:
    """GPUs the in-process engines of a run take: their devices together, else the largest tensor-parallel size."""
    in_process = [c for c in configs if not c.url]
    placed = {d for c in in_process for d in c.devices}
    return len(placed) if placed else max((c.tensor_parallel_size for c in in_process), default=0)
