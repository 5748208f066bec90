"""The README's "From Python" example, run as written on the bundled model (vLLM in process), then the same folder
resumed with `airgen.arun` inside a running event loop."""
from __future__ import annotations

import asyncio
import re
import subprocess
import sys

import pytest

import airgen
from tests.runs import ROOT, env, lines

pytestmark = pytest.mark.vllm


def example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From Python"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written_and_resumes_with_arun(tmp_path):
    pytest.importorskip("vllm")
    done = subprocess.run([sys.executable, "-c", example()], cwd=tmp_path, capture_output=True, text=True,
                          env=env(), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()
    out = tmp_path / "runs" / "from-python"
    written = lines(out / "records.jsonl")
    # Only what the example prints: the engines' output went to OUT/engine.log, airgen's lines to its logger.
    assert printed[0].split()[:2] == ["finished", str(len(written))] and printed[-1] == "finished"
    assert printed[-2] == "report.html" and len(printed) == 1 + len(written) + 3
    assert (out / "engine.log").stat().st_size > 0 and "vllm" in (out / "engine.log").read_text(errors="replace").lower()

    async def resume_on_a_running_loop():
        run = airgen.arun(out=out, settings={"run": {"limit": 3}}, engine_log=True)
        followed = [record async for record in run.records()]
        return await run, followed

    run, followed = asyncio.run(resume_on_a_running_loop())
    assert run.summary["resumed"] == 2 and run.summary["finished"] == 1 and run.state == "finished"
    assert followed == lines(out / "records.jsonl") and followed[:len(written)] == written
