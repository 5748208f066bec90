"""The config tree: defaults < preset < TOML file < overrides, every value checked against its declared type."""
from __future__ import annotations

import argparse

import pytest

from airgen import cli
from airgen.config import PRESETS, Config, ConfigError, load


def test_defaults_follow_the_authors_code():
    c = load()
    assert (c.flow.rounds, c.flow.score_threshold, c.flow.temperature, c.flow.top_p) == (5, 4, 0.2, 0.9)
    assert (c.flow.max_tokens, c.flow.merge_max_tokens, c.flow.few_shot) == (4096, 800, 3)
    assert (c.flow.instruction_words, c.flow.constraint_words, c.flow.merged_words) == ((3, 50), (3, 26), (3, 150))
    assert (c.select.filters.min_words, c.select.filters.max_words, c.select.batch_size) == (50, 2048, 32)


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "tiny"\n[flow]\nrounds = 3\n[select.filters]\nmin_words = 20\n')
    c = load(path, {"flow": {"temperature": 0.5}})
    assert c.flow.rounds == 3  # the file over the preset's 2
    assert c.flow.score_threshold == PRESETS["tiny"]["flow"]["score_threshold"]  # the preset over the default
    assert c.flow.temperature == 0.5 and isinstance(c.flow.temperature, float)
    assert c.select.filters.min_words == 20 and c.preset == "tiny"


@pytest.mark.parametrize("overrides, message", [
    ({"run": {"limit": "abc"}}, "run.limit must be an integer or unset, not 'abc'"),
    ({"run": {"prometheus_port": "x"}}, "run.prometheus_port must be an integer or unset"),
    ({"run": {"prometheus_port": 70000}}, "run.prometheus_port must be 1..65535"),
    ({"guidance": {"requests_per_second": "fast"}}, "guidance.requests_per_second must be a number or unset"),
    ({"guidance": {"model": 3}}, "guidance.model must be text or unset"),
    ({"flow": {"rounds": 2.5}}, "flow.rounds must be an integer"),
    ({"flow": {"rounds": True}}, "flow.rounds must be an integer"),
    ({"flow": {"structured": "yes"}}, "flow.structured must be true or false"),
    ({"flow": {"judge": "human"}}, "flow.judge must be one of 'document', 'model', 'none'"),
    ({"flow": {"instruction_words": [3]}}, "flow.instruction_words must be a list of 2 values"),
    ({"flow": {"instruction_words": [3, "x"]}}, "flow.instruction_words[1] must be an integer"),
    ({"select": {"method": "random"}}, "select.method must be one of 'maxmin', 'last'"),
    ({"select": {"filters": {"max_symbol_ratio": 2.0}}}, "select.filters.max_symbol_ratio must be in [0, 1]"),
    ({"flow": {"roundz": 3}}, "unknown setting flow.roundz"),
    ({"flow": 3}, "flow must be a table"),
    ({"student": {"dialect": "grammar"}}, "student.dialect must be one of"),
])
def test_wrong_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load(overrides=overrides)
    assert message in str(e.value)


def test_the_command_line_reaches_every_setting():
    args = argparse.ArgumentParser()
    cli._run_arguments(args)
    parsed = args.parse_args(["--rounds", "3", "--limit", "7", "--guidance-url", "http://h:1", "--student", "/m",
                              "--set", "flow.judge=model", "--set", "student.window=8", "--set", "flow.top_p=0.5"])
    c = cli.run_config(parsed)
    assert (c.flow.rounds, c.run.limit, c.flow.judge, c.flow.top_p) == (3, 7, "model", 0.5)
    assert (c.guidance.url, c.student.path, c.student.window) == ("http://h:1", "/m", 8)
    assert c.preset is None  # real models never get the tiny preset unless asked


@pytest.mark.parametrize("argv, message", [
    (["run", "--set", "run.limit=abc", "--guidance-url", "http://127.0.0.1:9"], "run.limit must be an integer"),
    (["run", "--set", "flow.roundz=3", "--guidance-url", "http://127.0.0.1:9"], "unknown setting flow.roundz"),
    (["run", "--rounds", "-1", "--guidance-url", "http://127.0.0.1:9"], "flow.rounds must be 1..12"),
    (["select", "--out", "x", "--n", "2", "--method", "random"], "select.method must be one of"),
])
def test_bad_settings_end_in_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()  # refused before anything is written


def test_the_tree_is_frozen():
    with pytest.raises(AttributeError):
        Config().flow.rounds = 3  # type: ignore[misc]
