"""One typed, frozen config tree: defaults < preset < TOML file < command-line overrides, validated up front.

The tree holds what every run shares (the two models, how a run is carried out, `airgen select`) and one section per
registered recipe (`Config.sections`, each on the shared `Sampling` base), so a recipe's settings are set like any
other: `--set flow.rounds=3`, `[crab]` in a file.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Mapping

from airgen.method import recipes



# How decode-time formats reach an OpenAI-compatible server (`airgen.engines.dialects`); auto: asked of the server.
Dialect = Literal["auto", "vllm", "sglang", "llamacpp", "openai", "none"]
# A reasoning model's thinking (`ModelConfig.reasoning`).
Reasoning = Literal["auto", "off", "on"]


class ConfigError(ValueError):
    """A config value or combination that cannot run; the message says which and why."""


@dataclass(frozen=True)
class Sampling:
    """What every recipe's calls share, the base of each recipe's config section (`flow` for AIR, `crab` for CRAB).
    A section is part of its runs' fingerprint: it changes what the recipe generates."""

    temperature: float = 0.2
    top_p: float = 0.9
    max_tokens: int = 4096
    repetition_penalty: float = 1.0
    # The stages whose free text is used as it is when cut at max_tokens; at any other stage a cut answer counts as
    # empty (the unit or the level drops). Each must be a free-text stage of the recipe.
    keep_cut: tuple[str, ...] = ()
    # Cap the free-text lines of constrained formats (analysis, justification) at `step.SHORT_LINE_CHARS`.
    short_lines: bool = False
    # Ask engines to constrain fixed-format answers (scores, types, verdicts) at decode time.
    structured: bool = True

    def validate(self, where: str) -> None:
        """Check the section's values; `where` is its name in the config tree, for the messages."""
        check(0 < self.temperature <= 2 or self.temperature == 0, f"{where}.temperature must be 0..2")
        check(0 < self.top_p <= 1, f"{where}.top_p must be in (0, 1]")
        check(self.repetition_penalty > 0, f"{where}.repetition_penalty must be > 0")
        check(self.max_tokens >= 16, f"{where}.max_tokens must be >= 16")


@dataclass(frozen=True)
class ModelConfig:
    """One role's model: an HF folder run in process by vLLM, or OpenAI-compatible servers."""

    path: str | None = None
    # One server, or several serving the same model (replicas: a document's calls stay on one of them).
    url: str | tuple[str, ...] | None = None
    # The model name sent to the server (default: the first one its /v1/models lists).
    model: str | None = None
    # The API key is read from this environment variable, or from the first line of `api_key_file`; it is sent
    # to the server and never written anywhere.
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: str | None = None
    # Outstanding requests kept at the engine: enough for continuous batching to stay full.
    window: int = 512
    requests_per_second: float | None = None
    # One try's limit: a 4096-token answer at 15 tokens/s per sequence. A server that holds calls without answering
    # gets `timeout_retries` more tries per call (about 15 minutes in all), any other fault `max_retries`.
    timeout_s: float = 300.0
    max_retries: int = 6
    timeout_retries: int = 2
    backoff_s: float = 0.5  # the first retry's wait (up to), doubling with each further one, at most 30 s
    # The request fields a server understands beyond the OpenAI standard (`Dialect`): vllm's `structured_outputs`,
    # sglang's `regex`, llama.cpp's `grammar`, OpenAI's `response_format`, or none (the lenient parsers read what
    # comes back).
    dialect: Dialect = "auto"
    # Refusals (HTTP 400/413/422) are judged this many requests at a time, in the order sent: a window more than
    # half refused stops the run with nothing of it journaled (`engines.openai._Refusals`).
    refusal_window: int = 32
    # A reasoning model's thinking: "auto" leaves it to the model (and its server), "off" and "on" ask its chat
    # template to skip or to think (Qwen3's `enable_thinking`; in process, and sent to a server as
    # `chat_template_kwargs`). Whatever comes, the thinking is kept out of what the method reads: the answer is what
    # follows it.
    reasoning: Reasoning = "auto"
    # Tokens a call may spend thinking, on top of the step's own budget for the answer (None: 4096 with reasoning
    # "on", else none). Raise it for a model that thinks by default: an answer cut while thinking is empty.
    think_tokens: int | None = None
    # In-process vLLM settings.
    # The GPUs its engines run on (what each engine's processes see as CUDA_VISIBLE_DEVICES): one engine, a replica,
    # per `tensor_parallel_size` of them; none given: one engine on vLLM's default devices.
    devices: tuple[int, ...] = ()
    gpu_memory_utilization: float | None = None
    max_model_len: int = 8192
    dtype: str = "auto"
    tensor_parallel_size: int = 1
    enforce_eager: bool | None = None  # None: eager on CPU (compiling costs minutes there), graphs on GPU
    max_num_seqs: int | None = None
    kv_cache_gib: float = 4.0  # CPU only: the KV cache size (VLLM_CPU_KVCACHE_SPACE, when set, wins)
    # The engine's known peak output tokens/s (all its replicas; `bench/engine.py` measures it): the report and the
    # live line say what share of it the run used.
    peak_tokens_per_s: float | None = None

    @property
    def think_budget(self) -> int:
        if self.reasoning == "off":
            return 0
        return self.think_tokens if self.think_tokens is not None else 4096 if self.reasoning == "on" else 0

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url,) if isinstance(self.url, str) else tuple(self.url or ())

    def validate(self, role: str) -> None:
        check(not (self.path and self.url), f"{role}: give a model path or a URL, not both")
        check(self.window >= 1, f"{role}.window must be >= 1")
        check(self.max_retries >= 0 and self.timeout_retries >= 0, f"{role}: retries must be >= 0")
        check(self.timeout_s > 0, f"{role}.timeout_s must be > 0")
        check(self.backoff_s >= 0, f"{role}.backoff_s must be >= 0")
        check(
            self.requests_per_second is None or self.requests_per_second > 0,
            f"{role}.requests_per_second must be > 0 (or unset for no limit)",
        )
        check(self.dialect in typing.get_args(Dialect), f"{role}.dialect must be one of {typing.get_args(Dialect)}")
        check(self.refusal_window >= 1, f"{role}.refusal_window must be >= 1")
        check(self.reasoning in typing.get_args(Reasoning),
              f"{role}.reasoning must be one of {typing.get_args(Reasoning)}")
        check(self.think_tokens is None or self.think_tokens >= 0, f"{role}.think_tokens must be >= 0")
        check(self.kv_cache_gib > 0, f"{role}.kv_cache_gib must be > 0")
        check(self.url is None or len(self.urls) >= 1, f"{role}.url: give at least one URL")
        check(all(d >= 0 for d in self.devices), f"{role}.devices must be GPU numbers >= 0")
        check(self.peak_tokens_per_s is None or self.peak_tokens_per_s > 0, f"{role}.peak_tokens_per_s must be > 0")
        if self.gpu_memory_utilization is not None:
            check(0 < self.gpu_memory_utilization < 1, f"{role}.gpu_memory_utilization must be in (0, 1)")


@dataclass(frozen=True)
class RunConfig:
    """How a run is carried out; none of it changes a record, so it may change between resumes."""

    max_in_flight: int = 4096
    limit: int | None = None
    progress: bool = True
    # Serve the run's counters for Prometheus on 127.0.0.1:PORT (off by default).
    prometheus_port: int | None = None
    # A metrics.jsonl line every this many seconds, and a last one at the end.
    metrics_every_s: float = 5.0
    # A server that answers nothing (not even a one-token request) is waited for this long before the run stops.
    outage_s: float = 900.0
    # `--ray`: a worker that dies is started again this many times (its cause said each time), then the run stops.
    ray_restarts: int = 3
    # A deadline (`--until`): HH:MM (its next occurrence, local time) or an ISO time; and/or at most this many hours
    # from the start. No sample is admitted that would end after it; at it, what is still out is cancelled.
    until: str | None = None
    max_hours: float | None = None


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the paper's document filters (section 3.1), for `airgen select`; all rules are on by default.

    The authors' script switches the symbol and redundancy tests off by default, but the paper lists length,
    symbol-to-text ratio and redundancy as its criteria, so all three run unless turned off here.
    """

    min_words: int = 50
    max_words: int = 2048
    # Symbols (non-word, non-space characters) must not outnumber text: share of all characters.
    max_symbol_ratio: float = 0.5
    # Share of non-empty lines that repeat an earlier line; above it the document is redundant.
    max_duplicate_line_share: float = 0.1
    # Longest allowed run of one non-space character; the authors reject 11 or more in a row.
    max_char_run: int = 10
    symbol_filter: bool = True
    redundancy_filter: bool = True
    dedup: bool = True

    def validate(self) -> None:
        check(0 <= self.min_words <= self.max_words, "select.filters: need 0 <= min_words <= max_words")
        check(0.0 <= self.max_symbol_ratio <= 1.0, "select.filters.max_symbol_ratio must be in [0, 1]")
        check(0.0 <= self.max_duplicate_line_share <= 1.0,
               "select.filters.max_duplicate_line_share must be in [0, 1]")
        check(self.max_char_run >= 1, "select.filters.max_char_run must be >= 1")


@dataclass(frozen=True)
class SelectConfig:
    """`airgen select`: how documents are embedded and sampled (the paper's section 3.1, Algorithm 1)."""

    filters: FilterConfig = field(default_factory=FilterConfig)
    # maxmin: farthest from the whole selected set; last: farthest from the previous pick (Algorithm 1 as written).
    method: Literal["maxmin", "last"] = "maxmin"
    start: int | None = None  # first pick, as a row among the kept documents; None: drawn from the seed
    device: Literal["auto", "cpu", "cuda"] = "auto"
    model: str | None = None  # a sentence-transformers folder; None: the bundled all-MiniLM-L6-v2
    batch_size: int = 32  # the authors' embedding batch
    embed_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def validate(self) -> None:
        self.filters.validate()
        check(self.batch_size >= 1, "select.batch_size must be >= 1")
        check(self.start is None or self.start >= 0, "select.start must be >= 0")


@dataclass(frozen=True)
class Config:
    recipe: str = recipes.DEFAULT
    guidance: ModelConfig = field(default_factory=ModelConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    run: RunConfig = field(default_factory=RunConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    seed: int = 0
    # A named preset applied under the file and the command line (see `presets`).
    preset: str | None = None
    # Each registered recipe's own section, by its name in the tree (AIR: `flow`, CRAB: `crab`).
    sections: Mapping[str, Sampling] = field(default_factory=lambda: types.MappingProxyType({
        r.section: r.settings() for r in recipes.every()}))

    def validate(self) -> "Config":
        try:
            recipes.get(self.recipe)
        except recipes.UnknownRecipe as e:
            raise ConfigError(str(e)) from None
        for recipe in recipes.every():
            section = self.sections[recipe.section]
            section.validate(recipe.section)
            free = sorted(s.name for s in recipe.all_steps() if s.free_text)
            for stage in section.keep_cut:
                check(stage in free, f"{recipe.section}.keep_cut: {stage!r} is no free-text stage of {recipe.name} "
                      f"(those are: {', '.join(free) or 'none'})")
        self.guidance.validate("guidance")
        self.student.validate("student")
        check(self.run.max_in_flight >= 1, "run.max_in_flight must be >= 1")
        check(self.run.limit is None or self.run.limit >= 0, "run.limit must be >= 0")
        check(self.run.metrics_every_s > 0, "run.metrics_every_s must be > 0")
        check(self.run.outage_s > 0, "run.outage_s must be > 0")
        check(self.run.ray_restarts >= 0, "run.ray_restarts must be >= 0")
        check(self.run.max_hours is None or self.run.max_hours > 0, "run.max_hours must be > 0")
        if self.run.until is not None:
            parse_until(self.run.until)
        check(self.run.prometheus_port is None or 1 <= self.run.prometheus_port <= 65535,
              "run.prometheus_port must be 1..65535")
        self.select.validate()
        check(self.preset is None or self.preset in presets(), f"unknown preset {self.preset!r}; known: {presets()}")
        return self

    @property
    def settings(self) -> Any:
        """The run's recipe's own section."""
        return self.sections[recipes.get(self.recipe).section]

    def models(self) -> tuple[ModelConfig, ModelConfig | None]:
        """The guidance model's settings, and the student's where the run's recipe asks a student (else None)."""
        return self.guidance, self.student if "student" in recipes.get(self.recipe).roles else None


# Presets: the shared part of each named preset; every recipe adds its own section's part (`Recipe.presets`).
# The bundled 135M model cannot pass the method's thresholds: "tiny" keeps the demo producing records; it is
# announced when a run starts and never applied to real models unless asked for.
SHARED_PRESETS: dict[str, dict[str, dict[str, Any]]] = {"tiny": {"run": {"limit": 12}}}
# What a run's start says of each preset.
PRESET_ABOUT = {
    "tiny": "for the bundled 135M model: short outputs, lenient bounds; README 'The bundled demo'",
    "authors": "the authors' code, decision for decision; README 'Where airgen differs from the authors' code'",
}


def presets() -> list[str]:
    return sorted(set(SHARED_PRESETS).union(*(r.presets for r in recipes.every())))


def _with_preset(config: Config, name: str) -> Config:
    if name not in presets():
        raise ConfigError(f"unknown preset {name!r}; known: {presets()}")
    values: dict[str, Any] = dict(SHARED_PRESETS.get(name, {}))
    for r in recipes.every():
        if name in r.presets:
            values[r.section] = r.presets[name]
    return _apply(config, values)


def parse_until(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """`HH:MM` (or `HH:MM:SS`): its next occurrence in local time, today's or tomorrow's; else an ISO time (local
    when it names no zone). A time already past is an error."""
    now = now or dt.datetime.now().astimezone()
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})(?::(\d{2}))?", text.strip())
    if clock:
        h, m, s = int(clock[1]), int(clock[2]), int(clock[3] or 0)
        if h > 23 or m > 59 or s > 59:
            raise ConfigError(f"run.until: {text!r} is no time of day (HH:MM, 00:00..23:59)")
        at = now.replace(hour=h, minute=m, second=s, microsecond=0)
        return at if at > now else at + dt.timedelta(days=1)
    try:
        at = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"run.until: {text!r} is neither HH:MM nor an ISO time (2026-12-07T06:30)") from None
    at = at.astimezone() if at.tzinfo is None else at  # a naive time is local
    if at <= now:
        raise ConfigError(f"run.until: {at.isoformat(timespec='seconds')} is already past")
    return at


def check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _merge(obj: Any, values: dict[str, Any], where: str, extra: list[str] = ()) -> Any:
    """A copy of dataclass `obj` with `values` applied; unknown keys and values of the wrong type are errors.
    `extra`: other names valid here, for the message."""
    known = {f.name: f for f in fields(obj) if f.name != "sections"}
    hints = _hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"unknown setting {where}{key}; known: {', '.join(sorted([*known, *extra]))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key} must be a table")
            changes[key] = _merge(current, value, f"{where}{key}.")
            continue
        changes[key] = _coerce(value, hints[key], f"{where}{key}")
    return replace(obj, **changes)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """`value` as the declared type `hint` (int, float, bool, str, None, tuple[...], Literal[...] and unions of
    them), or a ConfigError that says what was expected."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        try:
            return _as(value, option, name)
        except _Mismatch:
            continue
    raise ConfigError(f"{name} must be {' or '.join(_describe(o) for o in options)}, not {value!r}")


def _as(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is type(None):
        ok = value is None
    elif origin is Literal:
        ok = value in typing.get_args(hint) and not isinstance(value, bool)
    elif origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[T, ...]: a list of any length
            args = (args[0],) * len(value) if isinstance(value, (list, tuple)) else ()
        if isinstance(value, (list, tuple)) and len(value) == len(args):
            return tuple(_coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        ok = False
    elif hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:
        raise TypeError(f"{name}: config type {hint!r} is not supported")
    if not ok:
        raise _Mismatch
    return value


class _Mismatch(Exception):
    """`value` is not of the type tried; the next option of a union is tried."""


def _describe(hint: Any) -> str:
    if hint is type(None):
        return "unset"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(hint, str(hint))


def _apply(config: Config, values: dict[str, Any]) -> Config:
    """`values` (a TOML tree) applied to `config`: a recipe's section by its name, every other key as a field."""
    sections = dict(config.sections)
    top = {}
    for key, value in values.items():
        if key in sections:
            if not isinstance(value, dict):
                raise ConfigError(f"{key} must be a table")
            sections[key] = _merge(sections[key], value, f"{key}.")
        elif key == "sections":
            raise ConfigError(f"unknown setting {key}")
        else:
            top[key] = value
    return replace(_merge(config, top, "", extra=sorted(sections)), sections=types.MappingProxyType(sections))


def load(path: Path | None = None, overrides: dict[str, Any] | None = None, preset: str | None = None) -> Config:
    """Defaults, then the preset, then the TOML file, then `overrides` (nested dicts, e.g. from the CLI)."""
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    preset = preset or file_values.get("preset")
    config = Config(preset=preset)
    if preset is not None:
        config = _with_preset(config, preset)
    config = _apply(config, file_values)
    config = _apply(config, overrides or {})
    return config.validate()
