"""Reasoning models: the thinking never reaches the records (inline `<think>` blocks, or a server's reasoning field),
the journal keeps it and trace shows it, tokens are counted apart, an answer cut while thinking is said, the
chat template's switch, and each call's seed sent to the server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airgen.checks import answer_of
from airgen.config import ModelConfig
from airgen.engines.vllm import VLLMEngine, template_switch
from airgen.method.calls import split_thinking
from tests.faultserver import FaultServer
from tests.runs import documents, lines, records

ROOT = Path(__file__).resolve().parent.parent


def airgen(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airgen", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def run(tmp: Path, name: str, *extra: str, **server) -> tuple[Path, subprocess.CompletedProcess, FaultServer]:
    out = tmp / name
    with FaultServer(**server) as s:
        done = airgen("run", str(documents(tmp / "docs.jsonl", 10)), "--out", str(out), "--guidance-url", s.url,
                      "--student-url", s.url, "--rounds", "2", "--no-progress", *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done, s


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reasoning")
    return {think: run(tmp, str(think), think=think) for think in (None, "inline", "field")}


def test_records_from_a_thinking_model_equal_those_without_thinking(runs):
    plain = records(runs[None][0])
    assert plain
    for think in ("inline", "field"):
        out = runs[think][0]
        assert records(out) == plain, think
        assert b"<think>" not in (out / "records.jsonl").read_bytes()
        assert b"Let me think" not in (out / "records.jsonl").read_bytes()


def test_the_journal_keeps_the_thinking_and_trace_shows_it(runs):
    out = runs["inline"][0]
    calls = [e for e in lines(out / "journal.jsonl") if "k" in e and not e["k"].endswith("/probe/0")]
    assert calls and all(e["th"].startswith("Let me think") and "<think>" not in e["t"] for e in calls)
    assert all(0 < e["to"] < e["o"] for e in calls)  # the thinking's tokens, of the output's
    unit = calls[0]["s"]
    traced = airgen("trace", str(out), unit)
    assert traced.returncode == 0, traced.stderr
    assert "  thinking: Let me think" in traced.stdout and "thinking)" in traced.stdout


def test_thinking_tokens_are_counted_apart(runs):
    for think in ("inline", "field"):
        out, done, _ = runs[think]
        assert "thinking)" in done.stderr  # the run's summary, per role
        report = airgen("report", str(out))
        thinking = json.loads((out / "report" / "summary.json").read_text())["throughput"]["thinking_tokens"]
        journal = sum(e.get("to", 0) for e in lines(out / "journal.jsonl") if "k" in e)
        assert thinking == journal > 0 and "of them thinking" in report.stdout
    assert "thinking" not in runs[None][1].stderr


def test_an_answer_cut_while_thinking_is_said_with_the_setting_to_raise(tmp_path):
    out, done, server = run(tmp_path, "cut", "--set", "guidance.think_tokens=64", "--set", "student.think_tokens=64",
                            think="cut")
    assert "answers cut while thinking (empty): raise guidance.think_tokens" in done.stderr
    assert not lines(out / "records.jsonl")
    # The thinking budget comes on top of each step's own.
    asked = {b["max_tokens"] for b in server.bodies if b["max_tokens"] > 1}
    _, _, plain = run(tmp_path, "plain")
    assert asked and asked <= {n + 64 for n in {b["max_tokens"] for b in plain.bodies if b["max_tokens"] > 1}}


def test_reasoning_off_is_sent_as_the_templates_switch_and_each_call_has_its_seed(tmp_path):
    _, _, server = run(tmp_path, "off", "--set", "guidance.reasoning=off", "--set", "student.reasoning=off")
    sent = [b for b in server.bodies if b["max_tokens"] > 1]
    assert all(b["chat_template_kwargs"] == {"enable_thinking": False} for b in sent)
    _, _, again = run(tmp_path, "again")
    _, _, other = run(tmp_path, "other", "--seed", "7")
    seeds = {b["messages"][-1]["content"][:200] + str(b["max_tokens"]): b["seed"] for b in sent}
    assert len(set(seeds.values())) > len(seeds) / 2  # a seed per call
    assert all("chat_template_kwargs" not in b for b in again.bodies)  # "auto": nothing asked of the template
    assert sorted(b["seed"] for b in again.bodies if b["max_tokens"] > 1) == sorted(b["seed"] for b in sent)
    assert sorted(b["seed"] for b in other.bodies if b["max_tokens"] > 1) != sorted(b["seed"] for b in sent)


@pytest.mark.parametrize("text, thinking, answer", [
    ("<think>\nweigh it\n</think>\n\nThe answer.", "weigh it", "The answer."),
    ("weigh it</think>The answer.", "weigh it", "The answer."),  # the template opened the block
    ("<think>still weighing", "still weighing", ""),  # cut while thinking
    ("The answer, no thinking.", "", "The answer, no thinking."),
    ("<think>a</think>The answer names </think>.", "a", "The answer names </think>."),
])
def test_split_thinking(text, thinking, answer):
    assert split_thinking(text) == (thinking, answer)
    assert answer_of(text) == answer  # the reward reads a completion as the flow does


QWEN_LIKE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
             "{% if add_generation_prompt %}<|im_start|>assistant\n{% if enable_thinking is defined and "
             "enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


@pytest.fixture(scope="module")
def qwen_like(tmp_path_factory):
    """The bundled model's tokenizer with a chat template that has Qwen3's switch, and `</think>` as one token."""
    from transformers import AutoTokenizer

    from airgen.engines.models import embedded_model_path

    folder = tmp_path_factory.mktemp("tok")
    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model_path()))
    tokenizer.chat_template = QWEN_LIKE
    tokenizer.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("reasoning, closed", [("auto", False), ("on", False), ("off", True)])
def test_the_in_process_prompt_asks_the_templates_switch(qwen_like, reasoning, closed):
    engine = VLLMEngine(qwen_like, "m", ROOT, reasoning)
    prompt = qwen_like.decode(engine._prompt_ids(({"role": "user", "content": "Hi"},)))
    assert prompt.endswith("<think>\n\n</think>\n\n") is closed
    assert template_switch(QWEN_LIKE, reasoning) == ({} if reasoning == "auto" else
                                                     {"enable_thinking": reasoning == "on"})


def test_in_process_thinking_tokens_are_those_up_to_the_end_token(qwen_like):
    engine = VLLMEngine(qwen_like, "m", ROOT)
    ids = qwen_like.encode("<think>weigh it</think>The answer.", add_special_tokens=False)
    end = qwen_like.convert_tokens_to_ids("</think>")
    assert engine._thinking_tokens(ids, "weigh it", "The answer.") == ids.index(end) + 1 < len(ids)
    assert template_switch("{{ reasoning_effort }}", "off") == {"reasoning_effort": "low"}
    assert template_switch("no switch here", "on") == {}


def test_a_bad_reasoning_setting_is_one_line(tmp_path):
    done = airgen("run", str(documents(tmp_path / "d.jsonl", 2)), "--out", str(tmp_path / "o"), "--guidance-url",
                  "http://127.0.0.1:9", "--set", "guidance.reasoning=maybe")
    assert done.returncode == 2 and "guidance.reasoning" in done.stderr and "Traceback" not in done.stderr
    assert ModelConfig(reasoning="on").think_budget == 4096
    assert ModelConfig(reasoning="off", think_tokens=9).think_budget == 0
