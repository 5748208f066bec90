"""`airgen run` with scripted engines in place of models, for tests that run a real process.

SCRIPTED_ENGINE=chatty: the engines' start writes to stdout and stderr, from this process and a child, as vLLM does.
SCRIPTED_ENGINE=failing: every call after the first 30 fails as a dead engine does.
SCRIPTED_ENGINE=stuck: every call hangs and ignores being cancelled (an engine that does not let go).
SCRIPTED_ENGINE=drops: AIR's level-2 merge answers nothing for documents whose id ends in an even digit, so that
those documents drop a level (a run that writes every output file).
SCRIPTED_DISK_FULL=NAME[:N]: the disk is full under the file NAME: its N+1-th append writes half its bytes, then
fails (ENOSPC); a whole file of that name (run.json, a report's page, an export's file) fails as it is made durable,
as ENOSPC surfaces at fsync on filesystems that allocate late.
SCRIPTED_LATENCY_S=S: each call takes up to S seconds (default 0.02).
SCRIPTED_PARSER_RAISES=ID: AIR's back-translation parser raises IndexError on the answer for document ID (a bug in a
parser, met by one answer).
SCRIPTED_CHANGED_STEP=STAGE: AIR's step STAGE asks for other max_tokens (a step changed by an upgrade).
SCRIPTED_DIE_AT_START=1: every process that starts engines dies at once (a Ray worker out of memory at load).
SCRIPTED_DIE_AFTER=N with SCRIPTED_DIE_MARK=PATH: the first process to answer N calls dies at once (os._exit, as
a killed Ray worker does) and leaves PATH, so that its restart lives.
"""
import asyncio
import errno
import os
import random
import subprocess
import sys

from airgen.runtime import runner
from airgen.engines.scripted import ScriptedEngine, answers


async def start_engines(guidance, student=None, outage_s=None):
    if os.environ.get("SCRIPTED_DIE_AT_START"):
        print("the engine ran out of memory while loading", file=sys.stderr, flush=True)
        os._exit(1)
    kind = os.environ.get("SCRIPTED_ENGINE", "")
    answer = answers(air={"fail": 1.0})
    if kind == "chatty":
        print("INFO engine chatter on stdout", flush=True)
        print("WARNING engine chatter on stderr", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-c", "import sys; print('INFO chatter from an engine process', "
                        "file=sys.stderr)"], check=True)
    calls = iter(range(10**9))

    die_after, mark = int(os.environ.get("SCRIPTED_DIE_AFTER", 0)), os.environ.get("SCRIPTED_DIE_MARK", "")

    def respond(request):
        n = next(calls)
        if kind == "failing" and n >= 30:
            raise RuntimeError("the engine core died")
        if kind == "drops" and request.stage == "merge" and request.n == 2 and request.unit[-1] in "02468":
            return ""
        if die_after and n >= die_after and not os.path.exists(mark):
            open(mark, "w").close()
            os._exit(1)
        return answer(request)

    most = float(os.environ.get("SCRIPTED_LATENCY_S", 0.02))
    engine = ScriptedEngine(respond, latency=lambda r: random.random() * most)
    if kind == "stuck":
        async def generate(request):
            while True:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        engine.generate = generate
    return {"guidance": engine} | ({"student": engine} if student is not None else {})


runner.start_engines = start_engines

if os.environ.get("SCRIPTED_PARSER_RAISES") or os.environ.get("SCRIPTED_CHANGED_STEP"):
    import dataclasses

    from airgen.air import flow as air_flow

    real_steps_for = air_flow.steps_for

    def steps_for(config):
        steps = dict(real_steps_for(config))
        broken = os.environ.get("SCRIPTED_PARSER_RAISES")
        if broken:
            step = steps["back_translate"]

            def parse(text, args, real=step.parse):
                if f"topic {broken} " in text:
                    raise IndexError("list index out of range")
                return real(text, args)

            steps["back_translate"] = dataclasses.replace(step, parse=parse)
        changed = os.environ.get("SCRIPTED_CHANGED_STEP")
        if changed:
            steps[changed] = dataclasses.replace(steps[changed], max_tokens=lambda c: 999)
        return steps

    air_flow.steps_for = steps_for

if os.environ.get("SCRIPTED_DISK_FULL"):
    from airgen.store import files

    full_name, _, after = os.environ["SCRIPTED_DISK_FULL"].partition(":")
    appends, real_write, real_publish = iter(range(10**9)), files.write_all, files.publish

    def write_all(fd, data):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")) == full_name and next(appends) >= int(after or 0):
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    def publish(tmp, path):
        if os.path.basename(path) == full_name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_publish(tmp, path)

    files.write_all, files.publish = write_all, publish

if __name__ == "__main__":
    from airgen.cli import main

    sys.exit(main(sys.argv[1:]))
