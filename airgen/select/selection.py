"""`airgen select`: filter documents, embed them, keep the N most diverse (the paper's section 3.1, Algorithm 1).

Writes into --out:
  manifest.jsonl  the picks in pick order: rank, id, row, source, cosine distance to the set when picked
  selected.jsonl  the picked documents, {"id", "text"}, in pick order: the input of `airgen run`
  rejected.jsonl  every document not kept: id, source, stage (read or filter), reason (the rule), measured value
  summary.json    counts per stage and rule, the settings, the time taken
  embeddings.*    the embedding cache (a rerun over the same documents and model does not embed again)

Memory stays flat in the corpus size apart from the embeddings: documents that pass the filters are spooled to a
file in --out and read back by offset, never held in memory.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator

import numpy as np

from airgen.config import Config, FilterConfig
from airgen.method.corpus import bundled_corpus, read_documents
from airgen.select.filters import FILTER_RULES, filter_documents
from airgen.method.rows import Rejection
from airgen.select.embed import embed_documents
from airgen.store.files import atomic_text
from airgen.store.sink import rejection
from airgen_kernels import Selection, farthest_point_sampling, resolve_device

MANIFEST = "manifest.jsonl"
SELECTED = "selected.jsonl"
REJECTED = "rejected.jsonl"
SUMMARY = "summary.json"
_SPOOL = ".candidates.jsonl"
_CHUNK_ROWS = 65536


class SelectError(ValueError):
    """A request `airgen select` cannot carry out; the message says why."""


@dataclass(frozen=True)
class Job:
    """One `airgen select`: what to read (documents, or precomputed embeddings), where to write, how many to keep."""

    out: Path
    n: int
    inputs: tuple[Path, ...] = ()
    embeddings: Path | None = None
    ray: tuple[str | None, int | None] | None = None  # (address, workers): embed on Ray workers


def run(job: Job, config: Config) -> dict:
    """Select `job.n` documents with `config.select`; returns the summary (also written to summary.json)."""
    started = time.perf_counter()
    if job.embeddings is not None and job.inputs:
        raise SelectError("give INPUT files or --embeddings, not both")
    if job.n < 1:
        raise SelectError(f"--n must be >= 1, got {job.n}")
    if job.embeddings is not None:
        summary = _select_from_embeddings(job, config, job.out)
    else:
        summary = _select_documents(job, config, job.out)
    summary["seconds"]["total"] = round(time.perf_counter() - started, 3)
    with atomic_text(job.out / SUMMARY) as f:
        f.write(json.dumps(summary, indent=1) + "\n")
    return summary


def _ray_embedder(ray: tuple[str | None, int | None]) -> Callable:
    from airgen.select.ray import EmbedPool  # deferred: Ray is an optional extra

    address, workers = ray
    return lambda path, device, dtype: EmbedPool(path, device, dtype, address, workers)


def _select_documents(job: Job, config: Config, out: Path) -> dict:
    args = config.select
    inputs = list(job.inputs) or [bundled_corpus()]
    items = read_documents(inputs)  # checks every path before anything is written
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    spool_path = out / _SPOOL
    try:
        clock = time.perf_counter()
        ids, offsets, rejected = _filter_to_spool(items, args.filters, out / REJECTED, spool_path)
        seconds["read_filter"] = round(time.perf_counter() - clock, 3)
        kept = len(ids)
        read = kept + sum(rejected.values())
        if kept == 0:
            raise SelectError(f"none of the {read} documents read passed the filters (see {out / REJECTED})")
        if job.n > kept:
            raise SelectError(f"--n {job.n} is more than the {kept} documents that passed the filters ({read} read)")
        _check_start(args.start, kept)

        clock = time.perf_counter()
        embeddings = embed_documents(
            lambda: _spooled_texts(spool_path),
            ids,
            out,
            model_path=args.model,
            device=args.device,
            dtype=args.embed_dtype,
            batch_size=args.batch_size,
            make_embedder=_ray_embedder(job.ray) if job.ray is not None else None,
        )
        seconds["embed"] = round(time.perf_counter() - clock, 3)

        clock = time.perf_counter()
        selection = farthest_point_sampling(
            embeddings.matrix, job.n, start=args.start, seed=config.seed, method=args.method, device=args.device
        )
        seconds["sample"] = round(time.perf_counter() - clock, 3)
        with spool_path.open("rb") as spool:
            _write_manifest(out, selection, ids, lambda row: _spooled(spool, offsets[row])["source"])
            with atomic_text(out / SELECTED) as f:
                for row in selection.indices:
                    record = _spooled(spool, offsets[row])
                    f.write(_line({"id": record["id"], "text": record["text"]}))
    finally:
        spool_path.unlink(missing_ok=True)
    return {
        "out": str(out),
        "read": read,
        "kept": kept,
        "rejected": dict(sorted(rejected.items())),
        "embedded": 0 if embeddings.cached else kept,
        "embeddings_cached": embeddings.cached,
        "model": str(embeddings.model),
        "embed_device": embeddings.device,
        "embed_dtype": embeddings.dtype,
        **_selection_summary(config, selection),
        "seconds": seconds,
    }


def _select_from_embeddings(job: Job, config: Config, out: Path) -> dict:
    args = config.select
    path = job.embeddings
    clock = time.perf_counter()
    try:
        raw = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise SelectError(f"embeddings file {path} does not exist") from None
    except ValueError as e:
        raise SelectError(f"{path} is not a readable .npy matrix: {e}") from None
    if raw.ndim != 2 or raw.shape[0] == 0 or not np.issubdtype(raw.dtype, np.floating):
        raise SelectError(f"{path}: expected a non-empty 2-D float matrix (rows = documents), got {raw.shape} {raw.dtype}")
    ids = _embedding_ids(path, raw.shape[0])
    if job.n > raw.shape[0]:
        raise SelectError(f"--n {job.n} is more than the {raw.shape[0]} rows of {path}")
    _check_start(args.start, raw.shape[0])
    unit = _unit_rows(raw, path)
    out.mkdir(parents=True, exist_ok=True)
    loaded = round(time.perf_counter() - clock, 3)
    clock = time.perf_counter()
    selection = farthest_point_sampling(unit, job.n, start=args.start, seed=config.seed, method=args.method,
                                        device=args.device)
    sampled = round(time.perf_counter() - clock, 3)
    _write_manifest(out, selection, ids, lambda row: f"{path}:{row}")
    # Documents come from elsewhere here: drop an earlier run's lists so the folder never mixes two runs.
    for stale in (SELECTED, REJECTED):
        (out / stale).unlink(missing_ok=True)
    return {"rows": raw.shape[0], "embeddings": str(path), **_selection_summary(config, selection),
            "seconds": {"load": loaded, "sample": sampled}}


def _filter_to_spool(
    items: Iterator, config: FilterConfig, rejected_path: Path, spool_path: Path
) -> tuple[list[str], np.ndarray, Counter]:
    """Writes rejections to rejected.jsonl and kept documents to the spool; returns the kept ids, their byte
    offsets in the spool, and the rejection count per rule."""
    ids: list[str] = []
    offsets: list[int] = []
    rejected: Counter = Counter()
    with atomic_text(rejected_path) as rejects, spool_path.open("wb") as spool:
        for item in filter_documents(items, config):
            if isinstance(item, Rejection):
                rejected[item.rule] += 1
                stage = "filter" if item.rule in FILTER_RULES else "read"
                rejects.write(_line(rejection(item.id, item.source, stage, item.rule, item.value)))
                continue
            offsets.append(spool.tell())
            spool.write(_line({"id": item.id, "text": item.text, "source": item.source}).encode("utf-8"))
            ids.append(item.id)
    return ids, np.array(offsets, dtype=np.int64), rejected


def _spooled_texts(spool_path: Path) -> Iterator[tuple[str, str]]:
    with spool_path.open("rb") as spool:
        for line in spool:
            record = json.loads(line)
            yield record["id"], record["text"]


def _spooled(spool: IO[bytes], offset: int) -> dict:
    spool.seek(int(offset))
    return json.loads(spool.readline())


def _write_manifest(out: Path, selection: Selection, ids: list[str], source_of: Callable[[int], str]) -> None:
    with atomic_text(out / MANIFEST) as f:
        for rank, (row, distance) in enumerate(zip(selection.indices, selection.distances)):
            row = int(row)
            f.write(_line({
                "rank": rank,
                "id": ids[row],
                "row": row,
                "source": source_of(row),
                "distance": None if np.isnan(distance) else round(float(distance), 6),
            }))


def _selection_summary(config: Config, selection: Selection) -> dict:
    return {
        "selected": len(selection.indices),
        "method": config.select.method,
        "start": int(selection.indices[0]),
        "seed": config.seed,
        "sample_device": resolve_device(config.select.device),
    }


def _embedding_ids(path: Path, rows: int) -> list[str]:
    """Ids from the file beside the matrix (as airgen writes them), else the row numbers."""
    ids_path = path.with_suffix(".ids.jsonl")
    if not ids_path.is_file():
        return [str(row) for row in range(rows)]
    with ids_path.open(encoding="utf-8") as f:
        try:
            ids = [str(json.loads(line)) for line in f if line.strip()]
        except json.JSONDecodeError as e:
            raise SelectError(f"{ids_path}: not one JSON string a line ({e})") from None
    if len(ids) != rows:
        raise SelectError(f"{ids_path} names {len(ids)} documents but {path} has {rows} rows")
    return ids


def _unit_rows(raw: np.ndarray, path: Path) -> np.ndarray:
    """float32 copy with unit rows (cosine = dot product), normalised slice by slice."""
    unit = np.empty(raw.shape, dtype=np.float32)
    for lo in range(0, raw.shape[0], _CHUNK_ROWS):
        chunk = np.asarray(raw[lo : lo + _CHUNK_ROWS], dtype=np.float32)
        norms = np.linalg.norm(chunk, axis=1, keepdims=True)
        bad = np.flatnonzero(~(norms[:, 0] > 0) | ~np.isfinite(norms[:, 0]))
        if bad.size:
            raise SelectError(f"{path}: row {lo + int(bad[0])} is zero or not finite; it has no direction to compare")
        unit[lo : lo + _CHUNK_ROWS] = chunk / norms
    return unit


def _check_start(start: int | None, rows: int) -> None:
    if start is not None and not 0 <= start < rows:
        raise SelectError(f"--start {start} is outside the {rows} candidate rows (0..{rows - 1})")


def describe(s: dict) -> str:
    """The few lines `airgen select` prints."""
    lines = []
    if "read" in s:
        rules = ", ".join(f"{rule} {count}" for rule, count in s["rejected"].items()) or "none"
        lines.append(f"read      {s['read']} documents: {s['kept']} kept, {s['read'] - s['kept']} rejected ({rules})")
        if s["embeddings_cached"]:
            lines.append(f"embedded  {s['kept']} documents: all from the cache in {s['out']}")
        else:
            lines.append(f"embedded  {s['kept']} documents on {s['embed_device']}/{s['embed_dtype']} "
                         f"in {s['seconds']['embed']:.1f} s")
    else:
        lines.append(f"loaded    {s['rows']} embeddings from {s['embeddings']}")
    lines.append(
        f"selected  {s['selected']} by {s['method']} from row {s['start']} on {s['sample_device']} "
        f"in {s['seconds']['sample']:.2f} s"
    )
    lines.append(f"total     {s['seconds']['total']:.1f} s")
    return "\n".join(lines)


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"
