"""Turn the two roles' model settings into running engines, sharing one engine when both name the same model."""
from __future__ import annotations

import dataclasses

from airgen.calls import Role
from airgen.config import ConfigError, ModelConfig
from airgen.engines import Engine, model_identity

# Two different in-process models on one GPU: each takes a little under half of it.
SHARED_GPU_FRACTION = 0.45


async def start_engines(guidance: ModelConfig, student: ModelConfig | None = None) -> dict[Role, Engine]:
    """Start what the roles need: a URL -> OpenAIEngine, a path -> VLLMEngine, neither -> the embedded model. No
    student: a recipe that asks only the guidance model (CRAB).

    Engines start one after the other (two vLLM engines must not measure free GPU memory at the same time).
    """
    configs = {"guidance": _resolve(guidance)} | ({"student": _resolve(student)} if student is not None else {})
    configs = _split_gpu(_shared(configs))
    engines: dict[Role, Engine] = {}
    started: dict[str, Engine] = {}
    try:
        for role in configs:
            identity = model_identity(configs[role])
            if identity not in started:
                started[identity] = await _start(configs[role])
            engines[role] = started[identity]
    except BaseException:
        await close_engines(started)
        raise
    return engines


async def close_engines(engines: dict) -> None:
    """Close each distinct engine once, all of them even when one fails; the first failure is raised after."""
    failure: BaseException | None = None
    for engine in {id(e): e for e in engines.values()}.values():
        try:
            await engine.close()
        except Exception as e:  # noqa: BLE001  (the others must still close)
            failure = failure or e
    if failure is not None:
        raise failure


def _resolve(config: ModelConfig) -> ModelConfig:
    if config.url or config.path:
        return config
    from airgen.models import embedded_model_path

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


def _split_gpu(configs: dict[Role, ModelConfig]) -> dict[Role, ModelConfig]:
    in_process = {model_identity(c) for c in configs.values() if not c.url}
    if len(in_process) < 2 or not _on_gpu():
        return configs
    return {
        role: c if c.gpu_memory_utilization is not None else dataclasses.replace(
            c, gpu_memory_utilization=SHARED_GPU_FRACTION
        )
        for role, c in configs.items()
    }


def _on_gpu() -> bool:
    from vllm.platforms import current_platform

    return not current_platform.is_cpu()


async def _start(config: ModelConfig) -> Engine:
    if config.url:
        from airgen.engines.openai import OpenAIEngine

        return await OpenAIEngine.start(config)
    from airgen.engines.vllm import VLLMEngine

    return await VLLMEngine.start(config)
