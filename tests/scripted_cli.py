"""`airgen run` with scripted engines in place of models, for tests that kill a real process."""
import random
import sys

from airgen import run
from airgen.engines.scripted import MethodScript, ScriptedEngine
from airgen.air.steps import load_prompts


async def start_engines(guidance, student):
    engine = ScriptedEngine(MethodScript(load_prompts(), fail=1.0), latency=lambda r: random.random() * 0.02)
    return {"guidance": engine, "student": engine}


run.start_engines = start_engines

if __name__ == "__main__":
    from airgen.cli import main

    sys.exit(main(sys.argv[1:]))
