"""`airgen plan`: the layout it proposes for nodes and model pairs, with the reason, its refusals, and the figures a
run is held to (the share of an engine's peak in the live line and the report)."""
from __future__ import annotations

import orjson
import pytest

from airgen import cli

from airgen.engines import plan
from airgen.air.recipe import RECIPE as AIR
from airgen.config import ConfigError, ModelConfig
from airgen.runtime.panel import Rates, progress_line

H100, H200 = 80.0, 141.0
MIX = AIR.token_mix


@pytest.mark.parametrize("gpus, memory, guidance, student, layout, reason", [
    # One GPU: no room for a set each, both share it (8B + 8B fit at 0.45 each).
    (1, H100, 8, 8, {"guidance": ("0", 1, 1), "student": ("0", 1, 1)}, "both on GPUs 0"),
    (2, H100, 8, 8, {"guidance": ("0", 1, 1), "student": ("1", 1, 1)}, "split 1:1"),
    (4, H100, 8, 8, {"guidance": ("0-1", 1, 2), "student": ("2-3", 1, 2)}, "split 2:2"),
    (8, H100, 8, 8, {"guidance": ("0-4", 1, 5), "student": ("5-7", 1, 3)}, "split 5:3"),
    # 70B in bf16 (130 GiB) needs TP 2 on an H200 and TP 4 on an H100 before its KV cache.
    (4, H200, 70, 8, {"guidance": ("0-1", 2, 1), "student": ("2-3", 1, 2)}, "split 2:2"),
    (8, H200, 70, 8, {"guidance": ("0-5", 2, 3), "student": ("6-7", 1, 2)}, "split 6:2"),
    (8, H100, 70, 8, {"guidance": ("0-3", 4, 1), "student": ("4-7", 1, 4)}, "split 4:4"),
    (8, H100, 72, 7, {"guidance": ("0-3", 4, 1), "student": ("4-7", 1, 4)}, "split 4:4"),
    (8, H200, 72, 7, {"guidance": ("0-5", 2, 3), "student": ("6-7", 1, 2)}, "split 6:2"),
])
def test_the_planners_choice_for_each_node_and_pair(gpus, memory, guidance, student, layout, reason):
    p = plan.plan(gpus, memory, plan.Model(f"{guidance}B", guidance), plan.Model(f"{student}B", student), MIX)
    got = {role: (plan._span(r.devices), r.tensor_parallel_size, r.replicas) for role, r in p.roles.items()}
    assert got == layout and reason in p.reason
    assert len({d for r in p.roles.values() for d in r.devices}) == gpus  # every GPU works on the flow
    if gpus > 1:  # apart: the pace is the slower role's, which runs at its peak, the other below its own
        assert max(r.tokens_per_s / r.peak_tokens_per_s for r in p.roles.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("gpus, memory, guidance, student, says", [
    (1, H200, 70, 8, "the guidance model (70B, 130 GiB of weights) does not fit on 1 GPU of 141 GiB"),
    (2, H100, 70, 8, "does not fit on 2 GPUs of 80 GiB"),
    (1, H100, 24, 8, "the two models (60 GiB of weights) do not fit together on 1 GPU of 80 GiB"),
])
def test_what_cannot_fit_is_refused_with_the_reason(gpus, memory, guidance, student, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        plan.plan(gpus, memory, plan.Model(f"{guidance}B", guidance), plan.Model(f"{student}B", student), MIX)


def test_the_plans_figures_and_its_layout_applied():
    p = plan.plan(8, H200, plan.Model("70B", 70), plan.Model("8B", 8), MIX)
    text = plan.describe(p, 20_000)
    assert "20,000 samples: 660,000 calls, 96.0M output tokens" in text and "hours" in text
    assert "GPU-hours per million output tokens" in text
    hours = 20_000 / p.samples_per_s / 3600
    assert f"{hours:.1f} hours" in text
    guidance, student = plan.apply(p, ModelConfig(path="/g"), ModelConfig(path="/s"))
    assert (guidance.devices, guidance.tensor_parallel_size) == ((0, 1, 2, 3, 4, 5), 2)
    assert (student.devices, student.tensor_parallel_size) == ((6, 7), 1)


@pytest.mark.parametrize("gpus, guidance, student, in_process", [(1, 8, 8, True), (4, 70, 8, True),
                                                                (8, 70, 8, True), (8, 8, 1, False)])
def test_the_plan_says_whether_one_process_can_feed_the_engines(gpus, guidance, student, in_process):
    p = plan.plan(gpus, H200, plan.Model("g", guidance), plan.Model("s", student), MIX)
    tokens = p.samples_per_s * sum(MIX.output.values())
    cores = tokens * plan.FRONT_END_S_PER_TOKEN + p.samples_per_s * sum(MIX.calls.values()) * plan.LOOP_S_PER_CALL
    line = plan.front_end(p)
    assert (cores <= plan.ONE_PROCESS_CORES) == in_process
    assert line.startswith("in process") == in_process and ("vllm serve" in line) != in_process
    assert f"{tokens:,.0f} output tok/s" in line and f"  front end: {line}" in plan.describe(p)


async def test_a_runs_own_token_mix(prompts, tmp_path):
    """The mix is the run's own tokens and calls per finished sample, by role, as its journal has them."""
    from tests.test_report import make_run

    out = await make_run(prompts, tmp_path)
    mix = plan.mix_of(out)
    events = [orjson.loads(x) for x in (out / "journal.jsonl").read_bytes().splitlines()]
    done = sum(1 for e in events if "done" in e)  # every unit the run finished, rejected ones included
    student = {"answer", "answer_with"}
    for role, stages in (("student", lambda s: s in student), ("guidance", lambda s: s not in student)):
        calls = [e for e in events if "k" in e and stages(e["k"].split("/")[1])]
        assert mix.calls[role] == pytest.approx(len(calls) / done)
        assert mix.output[role] == pytest.approx(sum(e["o"] for e in calls) / done)
    p = plan.plan(8, H100, plan.Model("70B", 70), plan.Model("8B", 8), mix)
    assert p.mix is mix and f"{done} samples" in mix.source


def test_a_recipe_without_a_published_mix_is_refused_without_a_run(capsys):
    assert cli.main(["plan", "--gpus", "8", "--gpu-memory", "141", "--guidance-params", "70", "--student-params", "8",
                     "--recipe", "crab"]) == 2
    assert "crab publishes no token mix" in capsys.readouterr().err


def test_the_command_line(capsys):
    assert cli.main(["plan", "--gpus", "8", "--gpu-memory", "141", "--guidance-params", "70", "--student-params", "8",
                     "--samples", "1000"]) == 0
    assert "plan for 8 GPUs of 141 GiB" in capsys.readouterr().out
    assert cli.main(["plan", "--gpus", "8", "--gpu-memory", "141", "--guidance-params", "70"]) == 2
    assert "give the student model" in capsys.readouterr().err
    assert cli.main(["run", "--layout", "auto", "--guidance", "/g", "--student", "/s"]) == 2
    err = capsys.readouterr().err
    assert "--layout auto" in err and err.count("\n") == 1


def test_the_share_of_an_engines_peak_in_the_live_line():
    rates = Rates()
    base = {"elapsed_s": 0, "samples": {"records": 0, "rejected": 0, "resumed": 0, "total": None, "in_flight": 0},
            "estimate": {"eta_s": None, "deadline": None},
            "in_flight_by_stage": {}, "rejected_at": {}, "engines": {}, "faults": {}, "stalled": {"calls": 0},
            "peaks": {"guidance": 2000.0}}
    rates.add({**base, "roles": {"guidance": {"prompt_tokens": 0, "output_tokens": 0, "cached_tokens": 0}}})
    r = rates.add({**base, "elapsed_s": 10, "roles": {"guidance": {"prompt_tokens": 0, "output_tokens": 15000,
                                                                   "cached_tokens": 0}}})
    assert r["roles"]["guidance"]["of_peak"] == pytest.approx(0.75)
    assert "(75% of peak)" in progress_line({**base, "elapsed_s": 10}, r)
