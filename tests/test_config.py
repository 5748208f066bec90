"""The config tree: defaults < preset < TOML file < overrides, every value checked against its declared type."""
from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from airgen import cli

from airgen.method import recipes
from airgen.air.recipe import RECIPE as AIR
from airgen.config import Config, ConfigError, load


def test_defaults_follow_the_authors_code():
    c = load()
    flow = c.sections["flow"]
    assert (flow.rounds, flow.score_threshold, flow.temperature, flow.top_p) == (5, 4, 0.2, 0.9)
    assert (flow.max_tokens, flow.merge_max_tokens, flow.few_shot) == (4096, 800, 3)
    assert (flow.instruction_words, flow.constraint_words, flow.merged_words) == ((3, 50), (3, 26), (3, 150))
    assert c.sections["crab"].max_tokens == 1024 and c.settings is flow
    assert (c.select.filters.min_words, c.select.filters.max_words, c.select.batch_size) == (50, 2048, 32)


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "tiny"\n[flow]\nrounds = 3\n[select.filters]\nmin_words = 20\n')
    c = load(path, {"flow": {"temperature": 0.5}})
    flow = c.sections["flow"]
    assert flow.rounds == 3  # the file over the preset's 2
    assert flow.score_threshold == AIR.presets["tiny"]["score_threshold"]  # the preset over the default
    assert flow.temperature == 0.5 and isinstance(flow.temperature, float)
    assert c.select.filters.min_words == 20 and c.preset == "tiny" and c.run.limit == 12
    assert c.sections["crab"].max_tokens == 200  # every recipe's part of the preset


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
    ({"crab": {"forward_rate": 2}}, "crab.forward_rate must be in [0, 1]"),
    ({"crab": {"top_p": 0}}, "crab.top_p must be in (0, 1]"),
    ({"recipe": "cake"}, "unknown recipe 'cake'; known: air, crab"),
    ({"flowz": {}}, "unknown setting flowz; known: crab, flow, guidance"),
    ({"sections": {}}, "unknown setting sections"),
    ({"student": {"dialect": "grammar"}}, "student.dialect must be one of"),
])
def test_wrong_values_are_clear_errors(overrides, message):
    with pytest.raises(ConfigError) as e:
        load(overrides=overrides)
    assert message in str(e.value)


def test_the_command_line_shorthands():
    args = argparse.ArgumentParser()
    cli._run_arguments(args)
    parsed = args.parse_args(["--rounds", "3", "--limit", "7", "--guidance-url", "http://h:1", "--student", "/m",
                              "--set", "flow.judge=model", "--set", "student.window=8", "--set", "flow.top_p=0.5"])
    c = cli.run_config(parsed)
    flow = c.sections["flow"]
    assert (flow.rounds, c.run.limit, flow.judge, flow.top_p) == (3, 7, "model", 0.5)
    assert (c.guidance.url, c.student.path, c.student.window) == ("http://h:1", "/m", 8)
    assert c.preset is None  # real models never get the tiny preset unless asked


def _leaves(obj, where=""):
    """(dotted name, declared type, value) of every setting below dataclass `obj`, recipe sections included."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name == "sections":
            for name, section in value.items():
                yield from _leaves(section, f"{name}.")
        elif dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{where}{f.name}.")
        else:
            yield f"{where}{f.name}", hints[f.name], value


def _other(hint, value):
    """A valid value of `hint` other than `value` (halved numbers stay inside every range the tree checks)."""
    options = [o for o in typing.get_args(hint) if o is not type(None)] if typing.get_origin(hint) in (
        typing.Union, type(int | None)) else [hint]
    hint = options[0]
    if typing.get_origin(hint) is typing.Literal:
        return next(o for o in typing.get_args(hint) if o != value)
    if typing.get_origin(hint) is tuple and typing.get_args(hint)[-1] is Ellipsis:  # a list of any length
        return (*value, 1) if typing.get_args(hint)[0] is int else (*value, "x")
    if typing.get_origin(hint) is tuple:
        return (value[0], value[1] + 1)
    if hint is bool:
        return not value
    if hint is int:
        return 3 if value is None else value + 1
    if hint is float:
        return 0.5 if not value else value / 2
    return "tiny" if value is None else value + "x"


def test_the_command_line_reaches_every_setting(tmp_path):
    """Every leaf of the tree (each recipe's section too), set alone with --set, lands where it is named."""
    empty = tmp_path / "empty.toml"  # a config file: no demo preset under the one setting
    empty.write_text("")
    leaves = list(_leaves(Config()))
    assert len(leaves) > 80 and any(n.startswith("crab.") for n, _, _ in leaves)
    for name, hint, value in leaves:
        section, _, leaf = name.partition(".")
        if name in ("recipe", "preset", "run.until"):
            wanted = {"recipe": "crab", "preset": "tiny", "run.until": "06:30"}[name]
        elif leaf == "keep_cut":  # a list of the recipe's free-text stages
            recipe = next(r for r in recipes.every() if r.section == section)
            free = [s.name for s in recipe.all_steps() if s.free_text]
            if not free:
                continue  # no value but the empty list is valid
            wanted = (free[0],)
        else:
            wanted = _other(hint, value)
        args = argparse.ArgumentParser()
        cli._run_arguments(args)
        literal = f'"{wanted}"' if isinstance(wanted, str) else str(list(wanted) if isinstance(wanted, tuple)
                                                                      else wanted).lower()
        c = cli.run_config(args.parse_args(["--config", str(empty), "--set", f"{name}={literal}"]))
        got = c
        for part in name.split("."):
            got = got.sections[part] if part in getattr(got, "sections", {}) else getattr(got, part)
        assert got == wanted and got != value, name


@pytest.mark.parametrize("argv, message", [
    (["run", "--set", "run.limit=abc", "--guidance-url", "http://127.0.0.1:9"], "run.limit must be an integer"),
    (["run", "--set", "flow.roundz=3", "--guidance-url", "http://127.0.0.1:9"], "unknown setting flow.roundz"),
    (["run", "--rounds", "-1", "--guidance-url", "http://127.0.0.1:9"], "flow.rounds must be 1..12"),
    (["select", "--out", "x", "--n", "2", "--set", "select.method=random"], "select.method must be one of"),
])
def test_bad_settings_end_in_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()  # refused before anything is written


def test_the_tree_is_frozen():
    config = load(overrides={"flow": {"rounds": 3}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.settings.rounds = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run = Config().run  # type: ignore[misc]
    for sections in (config.sections, Config().sections):  # each recipe's section, in place, is no way round
        with pytest.raises(TypeError):
            sections["flow"] = Config().settings  # type: ignore[index]
    assert config.settings.rounds == 3 and {"air", "crab"} <= set(recipes.names())
