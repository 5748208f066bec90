"""An engine's output tokens/s against the number of requests in flight: how many documents a run needs.

A sample has only a few calls in flight at once (its refinement alongside round 1's answer; later its round, the
previous round's check, its settled levels), so a run keeps a few requests per live document at the engines at most.
Where this curve flattens is the batch the engine needs, and so roughly how many documents `airgen bench --limit`
must run for the airgen/raw ratio to measure the scheduler rather than the number of documents.

    python bench/engine.py [--concurrency 1,4,16,64,128] [--tokens 64]        # the embedded model
    python bench/engine.py --guidance /models/X | --guidance-url URL
    python bench/engine.py --prompt-words 1500 --tokens 1 --concurrency 8    # prefill: prompt tokens/s

Every level sends distinct prompts with a fixed output length (ignore_eos), cache reset between levels. With
`--prompt-words N` each prompt is about N words (distinct from the first word on: no prefix-cache hit), and the line
also says the prompt tokens/s: with `--tokens 1`, the engine's prefill rate (bench/schedules.py is fitted on both).
"""
from __future__ import annotations

import argparse
import asyncio
import time

from airgen.method.calls import Request, Sampling
from airgen.config import ModelConfig
from airgen.engines.build import close_engines, start_engines


def prompt(i: int, n: int, words: int) -> str:
    head = f"Story {i} of {n}: tell it about cats."
    return head if not words else f"{i} {n} " + " ".join(f"w{(i * 7919 + j) % 10007}" for j in range(words)) + head


async def measure(config: ModelConfig, levels: list[int], tokens: int, words: int) -> None:
    engines = await start_engines(config, config)
    engine = engines["guidance"]
    try:
        base = None
        for n in levels:
            requests = [Request(f"c{n}-{i}/probe/0", "guidance", "probe",
                                ({"role": "user", "content": prompt(i, n, words)},),
                                Sampling(max_tokens=tokens, ignore_eos=True)) for i in range(n)]
            start = time.perf_counter()
            done = await asyncio.gather(*(engine.generate(r) for r in requests))
            wall = time.perf_counter() - start
            rate = sum(c.output_tokens for c in done) / wall
            prefill = sum(c.prompt_tokens - c.cached_tokens for c in done) / wall
            base = base or rate / n
            print(f"in flight {n:5d}: {wall:7.1f} s  {rate:8.1f} output tok/s  ({rate / (base * n):.0%} of linear)"
                  f"  {prefill:9.1f} prompt tok/s", flush=True)
            reset = getattr(engine, "reset_prefix_cache", None)
            if reset is not None:
                await reset()
    finally:
        await close_engines(engines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="1,2,4,8,16,32,64,128", help="requests in flight, comma-separated")
    p.add_argument("--tokens", type=int, default=64, help="output tokens per request")
    p.add_argument("--prompt-words", type=int, default=0, help="words per prompt (default: a short prompt)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--guidance", help="an HF model folder (default: the embedded model)")
    model.add_argument("--guidance-url", help="an OpenAI-compatible server")
    args = p.parse_args()
    levels = [int(v) for v in args.concurrency.split(",")]
    config = ModelConfig(path=args.guidance, url=args.guidance_url)
    asyncio.run(measure(config, levels, args.tokens, args.prompt_words))


if __name__ == "__main__":
    main()
