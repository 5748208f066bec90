"""`airgen select --ray`: the embedding on Ray workers, each loading the model once; the farthest-point sampling
after it stays one pass on one device."""
from __future__ import annotations

import collections
from pathlib import Path


class EmbedWorker:
    """One Ray actor of `airgen select --ray`: loads the embedding model once, then embeds the chunks it is sent."""

    def __init__(self, path: str, device: str, dtype: str):
        import ray
        import torch

        from airgen.select.embed import load_embedder  # deferred, here and below: it brings torch, which a run's workers
        # on URL engines never need

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(max(1, int(cpus)))  # each worker computes on its own share of the cores
        self.embedder = load_embedder(Path(path), device, dtype)

    def encode(self, texts: list[str], batch_size: int):
        return self.embedder.encode(texts, batch_size)


class EmbedPool:
    """The `Embedder` interface over Ray workers: chunks go out round-robin, at most two per worker in flight, and
    come back in order; the farthest-point sampling after it stays one pass on one device (it is one sequential
    loop over every document)."""

    def __init__(self, path: Path, device: str, dtype: str, address: str | None, workers: int | None):
        import ray

        from airgen.select.embed import model_key

        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        gpus = int(ray.cluster_resources().get("GPU", 0)) if device == "cuda" else 0
        workers = workers or gpus or int(ray.cluster_resources().get("CPU", 1))
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)) // workers) if not gpus else 1
        actor = ray.remote(max_restarts=-1, max_task_retries=-1)(EmbedWorker)
        self.actors = [actor.options(num_cpus=cpus, num_gpus=1 if gpus else 0).remote(str(path), device, dtype)
                       for _ in range(workers)]
        self.model_key, self.dtype = model_key(path), dtype

    def encode_chunks(self, chunks, batch_size: int):
        import ray

        flying: collections.deque = collections.deque()
        for i, chunk in enumerate(chunks):
            flying.append(self.actors[i % len(self.actors)].encode.remote(chunk, batch_size))
            if len(flying) >= 2 * len(self.actors):
                yield ray.get(flying.popleft())
        while flying:
            yield ray.get(flying.popleft())

    def close(self) -> None:
        import ray

        ray.shutdown()

