"""Turn the two roles' model settings into running engines: each role's replicas placed on their devices (or
servers), one engine shared when both roles name the same model."""
from __future__ import annotations

import dataclasses

from airgen.method.calls import Role
from airgen.config import ConfigError, ModelConfig, RunConfig
from airgen.console import say
from airgen.engines import EMBEDDED, Engine, model_identity
from airgen.engines.placement import place
from airgen.engines.replicas import Replicas


async def start_engines(guidance: ModelConfig, student: ModelConfig | None = None,
                        outage_s: float = RunConfig.outage_s) -> dict[Role, Engine]:
    """Start what the roles need: URLs -> OpenAIEngines, a path -> VLLMEngines (one per replica's devices),
    neither role given a model -> the embedded model, one role given one -> that model for both; a role with several
    becomes one `Replicas`. No student: a recipe that asks only
    the guidance model (CRAB). A server that stops answering is waited for `outage_s` (`run.outage_s`).

    Engines start one after the other (two vLLM engines must not measure free GPU memory at the same time).
    """
    given = {"guidance": guidance} | ({"student": student} if student is not None else {})
    named = [role for role, c in given.items() if c.url or c.path]
    if len(named) == 1 and len(given) == 2:
        # One role given a model: the other asks it too, never the bundled 135M model nobody asked for.
        other = "student" if named == ["guidance"] else "guidance"
        say(f"airgen: no {other} model given: the {named[0]}'s model answers as the {other} too")
        given[other] = given[named[0]]
    bundled = {role for role, c in given.items() if not (c.url or c.path)}
    configs = {role: _resolve(c) for role, c in given.items()}
    placed = place(_shared(configs), _gpu_count(configs))
    engines: dict[Role, Engine] = {}
    by_model: dict[str, Engine] = {}
    opened: list[Engine] = []  # every engine started, to close if a later one fails
    try:
        for role, replicas in placed.items():
            identity = model_identity(configs[role])
            if identity not in by_model:
                ready = []
                for config in replicas:
                    ready.append(await _start(config, outage_s, alone=len(replicas) == 1))
                    opened.append(ready[-1])
                    if role in bundled:  # the bundled model, wherever its cache is
                        ready[-1].identity = EMBEDDED
                by_model[identity] = ready[0] if len(ready) == 1 else Replicas(ready)
            engines[role] = by_model[identity]
    except BaseException:
        await close_engines(dict(enumerate(opened)))
        raise
    return engines


async def close_engines(engines: dict) -> None:
    """Close each distinct engine once (a role's replicas each once), all of them even when one fails; the first
    failure is raised after."""
    failure: BaseException | None = None
    distinct = {id(e): e for e in engines.values() if not isinstance(e, Replicas)}
    for group in (e for e in engines.values() if isinstance(e, Replicas)):
        distinct.update((id(e), e) for e in group.engines)
    for engine in distinct.values():
        try:
            await engine.close()
        except Exception as e:  # noqa: BLE001  (the others must still close)
            failure = failure or e
    if failure is not None:
        raise failure


def _resolve(config: ModelConfig) -> ModelConfig:
    if config.url or config.path:
        return config
    from airgen.engines.models import embedded_model_path

    return dataclasses.replace(config, path=str(embedded_model_path()))


def _shared(configs: dict[Role, ModelConfig]) -> dict[Role, ModelConfig]:
    """One engine serves a model both roles name (however its path or url is spelled), so their settings must
    agree."""
    guidance, student = configs["guidance"], configs.get("student")
    if student is not None and model_identity(guidance) == model_identity(student):
        differing = [
            f.name
            for f in dataclasses.fields(ModelConfig)
            if f.name not in ("path", "url") and getattr(guidance, f.name) != getattr(student, f.name)
        ]
        if differing:
            raise ConfigError(
                f"guidance and student name the same model, which one engine serves, but set "
                f"{', '.join(differing)} differently; give both roles the same values"
            )
    return configs


def _gpu_count(configs: dict[Role, ModelConfig]) -> int | None:
    """The node's GPUs, for in-process engines (None on a machine without: device lists only name what the engines
    would see)."""
    if all(c.url for c in configs.values()):
        return None
    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        return None
    import torch

    return torch.cuda.device_count()


async def _start(config: ModelConfig, outage_s: float, alone: bool) -> Engine:
    if config.url:
        from airgen.engines.openai import OpenAIEngine

        return await OpenAIEngine.start(config, outage_s, alone)
    from airgen.engines.vllm import VLLMEngine

    return await VLLMEngine.start(config)
