"""The `airgen` command: the one place that parses arguments. Each command turns them into a config (the typed tree
of `airgen.config`) and calls the module that does the work; no other module sees an argparse namespace."""
from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import shlex
import sys
import time
import tomllib
import traceback
import typing
from pathlib import Path
from typing import Any

from airgen import api, console
from airgen.read import card

from airgen.store import lock

from airgen.method import recipes
from airgen.config import Config, ConfigError, Dialect, load, presets
from airgen.console import engine_log, say
from airgen.method.rows import CorpusError


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, leaf = dotted.split(".")
    for part in path:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def _parse_value(text: str) -> Any:
    """`--set` values are TOML literals (numbers, true/false, [lists], "strings"); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# -- arguments ---------------------------------------------------------------------------------------------------

def _config_arguments(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("--config", type=Path, help="TOML config file (the settings of airgen/config.py's tree)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help=f"any setting of the config tree, e.g. {example}")
    p.add_argument("--seed", type=int, metavar="N",
                   help="the run's seed: every random choice of the method (default 0)")


def _method_arguments(p: argparse.ArgumentParser) -> None:
    """What `run` and `bench` share: the inputs, the method and its settings, the models."""
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT",
                   help="; ".join(f"{r.name}: {r.reads}" for r in recipes.every())
                   + "; none = the recipe's bundled sample")
    p.add_argument("--recipe", choices=recipes.names(),
                   help=f"the method ({recipes.DEFAULT} by default); " + "; ".join(
                       f"{r.name}: {r.title}" for r in recipes.every()))
    _config_arguments(p, "--set flow.judge=model --set student.window=256")
    p.add_argument("--preset", choices=presets(),
                   help="named settings applied under --config: tiny (the bundled 135M model; chosen by itself when "
                        "no model is given), authors (the authors' code, decision for decision)")
    for flag, (key, kind, help_text) in _recipe_flags().items():
        p.add_argument(flag, type=kind, dest=key, metavar=_metavar(kind), help=help_text)
    p.add_argument("--limit", type=int, metavar="N", help="read at most N units (documents, pairs)")
    p.add_argument("--max-in-flight", type=int, metavar="N", help="samples in flight at once (default 4096)")
    for role in ("guidance", "student"):
        p.add_argument(f"--{role}", metavar="PATH", help=f"{role} model: HF folder, run in process by vLLM")
        p.add_argument(f"--{role}-url", metavar="URL", action="append",
                       help=f"{role} model: OpenAI-compatible server (again for each replica of the model)")
        p.add_argument(f"--{role}-model", metavar="NAME", help=f"model name on the {role} server")
        p.add_argument(f"--{role}-dialect", choices=typing.get_args(Dialect),
                       help=f"how the {role} server is told decode-time formats (default auto: asked of the server)")
    p.add_argument("--api-key-env", metavar="NAME",
                   help="environment variable holding the servers' API key (default OPENAI_API_KEY)")
    p.add_argument("--api-key-file", metavar="PATH", help="file holding the servers' API key (its first line)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show the engines' own output here instead of in OUT/engine.log")
    p.add_argument("--prometheus", type=int, metavar="PORT", help="serve metrics for Prometheus on 127.0.0.1:PORT")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    _method_arguments(p)
    p.add_argument("--out", type=Path, help="the run folder (default: a new runs/<time>); an existing one is "
                                            "resumed")
    p.add_argument("--layout", choices=("auto",),
                   help="auto: lay the two in-process models out on this node's GPUs as `airgen plan` would, and say "
                        "the plan and the time it will take before the first call")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run on Ray: 'auto' (the running cluster), a ray:// address, or none for a local Ray")
    p.add_argument("--workers", type=int, metavar="N", help="Ray workers (default: one per GPU in the cluster)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.add_argument("--until", dest="run.until", metavar="TIME",
                   help="a deadline: HH:MM (today's or tomorrow's, local time) or an ISO time; no sample is begun "
                        "that would end after it, and what is still out at it is cancelled (the same command "
                        "continues)")
    p.add_argument("--max-hours", dest="run.max_hours", type=float, metavar="H",
                   help="a deadline this many hours from the start (with --until: the earlier)")


def _bench_arguments(p: argparse.ArgumentParser) -> None:
    _method_arguments(p)
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="a new folder for the bench (default: runs/bench-<time>): its airgen runs (run/, run-2/, ..., "
                        "sweep-*/), bench.json (every figure) and bench.png")
    p.add_argument("--repeat", type=int, default=1, metavar="N",
                   help="N rounds, each an airgen run and the replays of its calls; report medians and the "
                        "ratios' range")
    p.add_argument("--sweep", action="store_true", help="also vary the in-flight cap and the engine windows")
    p.add_argument("--sweep-in-flight", default="1,4,16,64", help="in-flight caps for --sweep")
    p.add_argument("--sweep-window", default="1,4,16,64", help="engine windows (outstanding requests) for --sweep")


def _select_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs", nargs="*", type=Path, metavar="INPUT",
        help="JSONL or Parquet files (a `text` or `document` field, optional `id`), .txt/.cor files (one document "
        "per line) or folders of .txt files (one document per file); none: the bundled news corpus",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the outputs")
    p.add_argument("--n", type=int, required=True, help="number of documents to select")
    p.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="embed on Ray workers: 'auto', a ray:// address, or none for a local Ray")
    p.add_argument("--workers", type=int, metavar="N",
                   help="Ray workers for the embedding (default: one per GPU, else one per CPU)")
    p.add_argument(
        "--embeddings", type=Path, metavar="E.npy",
        help="sample from these precomputed embeddings (rows = documents) instead of reading INPUTs; ids come "
        "from E.ids.jsonl beside it (one JSON string a line, as airgen writes them), else row numbers",
    )
    _config_arguments(p, "--set select.filters.min_words=100 --set select.batch_size=64")
    # Shorthands for settings of the config tree (`select.*`); every one of them can also be set with --set.
    for flag, key, kind, help_text in (
        ("--method", "select.method", ("maxmin", "last"), "maxmin: farthest from the whole selected set (default); "
         "last: farthest from the previous pick only, the paper's Algorithm 1 as written"),
        ("--start", "select.start", int, "first pick, as a row among the kept documents"),
        ("--device", "select.device", ("auto", "cpu", "cuda"), "for embedding and sampling (default auto)"),
        ("--model", "select.model", str, "a sentence-transformers folder (default: the bundled all-MiniLM-L6-v2)"),
        ("--batch-size", "select.batch_size", int, "documents per embedding batch (default 32)"),
        ("--embed-dtype", "select.embed_dtype", ("auto", "float32", "bfloat16", "float16"),
         "auto: float16 on GPU, float32 on CPU (default)"),
        ("--min-words", "select.filters.min_words", int, "(default 50)"),
        ("--max-words", "select.filters.max_words", int, "(default 2048)"),
        ("--max-symbol-ratio", "select.filters.max_symbol_ratio", float,
         "largest share of non-word, non-space characters (default 0.5)"),
        ("--max-duplicate-line-share", "select.filters.max_duplicate_line_share", float,
         "largest share of lines that repeat an earlier line (default 0.1)"),
        ("--max-char-run", "select.filters.max_char_run", int,
         "longest allowed run of one repeated non-space character (default 10)"),
    ):
        if isinstance(kind, tuple):  # a choice
            p.add_argument(flag, choices=kind, dest=key, help=help_text)
        else:
            p.add_argument(flag, type=kind, dest=key, metavar=_metavar(kind), help=help_text)
    for flag, key, help_text in (
            ("--no-symbol-filter", "select.filters.symbol_filter", "keep documents whatever their share of symbols"),
            ("--no-redundancy-filter", "select.filters.redundancy_filter",
             "keep documents whatever their repeated lines and runs of one character"),
            ("--no-dedup", "select.filters.dedup", "keep documents whose text repeats another's")):
        p.add_argument(flag, action="store_const", const=False, dest=key, help=help_text)


def _metavar(kind: type) -> str:
    return {int: "N", float: "X"}.get(kind, "VALUE")


def _recipe_flags() -> dict[str, tuple[str, type, str]]:
    """Each recipe's shorthands for its settings, as flag -> (the setting's name in the tree, type, help)."""
    return {flag: (f"{r.section}.{key}", kind, f"{r.name}: {help_text}")
            for r in recipes.every() for flag, (key, kind, help_text) in r.flags.items()}


# -- arguments -> config -----------------------------------------------------------------------------------------------

def _overrides(args: argparse.Namespace, shorthands: dict[str, str]) -> dict[str, Any]:
    """The config overrides the command line gives: its shorthands (argument name -> setting), then every --set."""
    overrides: dict[str, Any] = {}
    for name, key in shorthands.items():
        value = getattr(args, name, None)
        if isinstance(value, list) and len(value) == 1:  # a repeatable flag given once
            value = value[0]
        if value is not None:
            _set(overrides, key, value)
    for name, value in vars(args).items():
        if "." in name and value is not None:  # `dest` named after the setting itself
            _set(overrides, name, value)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
        _set(overrides, key.strip(), _parse_value(value.strip()))
    return overrides


_RUN_SHORTHANDS = {
    "recipe": "recipe", "limit": "run.limit", "seed": "seed", "max_in_flight": "run.max_in_flight",
    "prometheus": "run.prometheus_port",
    **{role + suffix: f"{role}.{field}" for role in ("guidance", "student")
       for field, suffix in (("path", ""), ("url", "_url"), ("model", "_model"), ("dialect", "_dialect"))},
}
# Settings a flag gives both roles (`--api-key-env NAME`: guidance.api_key_env and student.api_key_env).
_BOTH_ROLES = ("api_key_env", "api_key_file")


def run_config(args: argparse.Namespace, progress: bool = True) -> Config:
    """The config of `run` (or, with no progress line, `bench`) from its arguments."""
    overrides = _overrides(args, _RUN_SHORTHANDS)
    for name in _BOTH_ROLES:
        if getattr(args, name, None) is not None:
            for role in ("guidance", "student"):
                _set(overrides, f"{role}.{name}", getattr(args, name))
    if not progress or args.no_progress:
        _set(overrides, "run.progress", False)
    return api.config_of(args.config, overrides, args.preset)


def _ints(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name} must list integers >= 1, got {text!r}")
    return values


# -- commands ----------------------------------------------------------------------------------------------------------

def _disk_full(error: BaseException | None) -> OSError | None:
    """The full disk (or used-up quota) behind `error`, if that is what stopped the command."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return error
        error = error.__cause__ or error.__context__
    return None


def _full_line(error: OSError, where: Path | None, then: str) -> str:
    """The one line a full disk gets, on the terminal the command was started from."""
    if error.errno == errno.ENOSPC:
        what = f"the disk holding {where or 'the output'} is full"
    else:
        what = f"the disk quota for {where or 'the output'} is used up"
    file = f" (writing {error.filename})" if error.filename else ""
    return f"airgen: {what}{file}; {then}"


_THEN = {"run": "the run stopped with every finished call kept: free some space, then run the same command again "
                "to resume it",
         "bench": "free some space, then run the bench again into a new --out folder"}


def _stopped(error: BaseException, log: Path | None, out: Path) -> int:
    """One clear line for a run that stopped on an error; the traceback goes to the engine log."""
    full = _disk_full(error)
    if full is not None:
        say(_full_line(full, out, _THEN["run"]))
        return 1
    with contextlib.suppress(OSError):  # fd 2 is the engine log (or the terminal with -v)
        traceback.print_exception(error)
    where = f"; details in {log}" if log is not None else ""
    say(f"airgen: the run stopped: {error}{where}; run the same command again to resume {out}")
    return 1


def _say_if_no_plots() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        say('airgen: no plots: matplotlib is missing (pip install "airgen[plots]"); the figures are all there')


def cmd_run(args: argparse.Namespace) -> int:
    from airgen.runtime import runner

    config = run_config(args)
    api.in_process_engines(config)
    if args.workers is not None and (args.ray is None or args.workers < 1):
        raise ConfigError("--workers needs --ray and must be >= 1")
    layout = _auto_layout(config) if args.layout == "auto" else None  # refused before any folder is made
    out = args.out or runner.default_out()
    with api.session(config, list(args.inputs), out, args.command_line, layout, engine_log=not args.verbose) as (
            config, inputs, log):
        return _run(args, config, inputs, out, log, layout)


def _run(args: argparse.Namespace, config: Config, inputs: list[Path], out: Path, log: Path | None, layout) -> int:
    import uvloop

    from airgen.runtime import runner

    prompts = recipes.of(config).prompts()
    try:
        if args.ray is not None:
            from airgen.runtime import cluster

            code = cluster.execute(config, out, inputs, prompts, None if args.ray == "local" else args.ray,
                                   args.workers, runner.start_engines)
        else:
            code = uvloop.run(runner.execute(config, out, inputs, prompts, layout))
    except (ConfigError, CorpusError):
        raise
    except Exception as e:  # noqa: BLE001 - an engine or the disk failed: say so in one line, keep the journal
        return _stopped(e, log, out)
    if code == 0:
        say(f"airgen: `airgen report {out}` shows what the run made; `airgen export {out} --to DIR` writes "
            "training files")
    return code


def _auto_layout(config: Config):
    """`--layout auto`: the plan of this node's GPUs for the run's two in-process models."""
    from airgen.engines import plan

    guidance, student = config.models()
    if student is None or guidance.url or student.url or not (guidance.path and student.path):
        raise ConfigError("--layout auto lays out two in-process models: give --guidance PATH and --student PATH")
    gpus, memory = plan.node()
    if not gpus:
        raise ConfigError("--layout auto needs GPUs, and this machine has none (`airgen plan --gpus N` plans a node "
                          "you do not have)")
    return plan.plan(gpus, memory, plan.model_of(guidance.path), plan.model_of(student.path),
                     recipes.of(config).token_mix)


def cmd_plan(args: argparse.Namespace) -> int:
    from airgen.engines import plan

    gpus, memory = (args.gpus, args.gpu_memory) if args.gpus else plan.node()
    if not gpus or not memory:
        raise ConfigError("this machine has no GPU: give the node with --gpus N --gpu-memory GIB")
    per = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}[args.dtype] if args.dtype else None
    models = {}
    for role in ("guidance", "student"):
        path, params = getattr(args, role), getattr(args, f"{role}_params")
        if path is None and params is None:
            raise ConfigError(f"give the {role} model: --{role} PATH (an HF folder) or --{role}-params BILLIONS")
        models[role] = plan.model_of(path, per) if path else plan.Model(f"{params:g}B", params, per or 2.0)
    recipe = recipes.get(args.recipe)
    if recipe.token_mix is None and not args.from_run:
        raise ConfigError(f"{recipe.name} publishes no token mix: give a run of it with --from OUT")
    mix = plan.mix_of(args.from_run) if args.from_run else recipe.token_mix
    peaks = {r: v for r in ("guidance", "student") if (v := getattr(args, f"{r}_peak")) is not None}
    p = plan.plan(gpus, memory, models["guidance"], models["student"], mix, peaks)
    print(plan.describe(p, args.samples))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import uvloop

    from airgen.runtime import bench

    from airgen.runtime import runner

    config = run_config(args, progress=False)
    api.in_process_engines(config)
    sweep = {"max_in_flight": _ints(args.sweep_in_flight, "--sweep-in-flight"),
             "window": _ints(args.sweep_window, "--sweep-window")} if args.sweep else {}
    out = args.out or Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    with lock.hold(out, args.command_line, say), runner.ends_process_on_second_signal(), engine_log(out, args.verbose):
        try:
            result = uvloop.run(bench.bench(config, recipes.of(config).prompts(), out, list(args.inputs), sweep,
                                            runner.start_engines, runner.close_engines, args.repeat))
        except bench.Interrupted as e:
            say(f"airgen bench: {e}; nothing written")
            return 130
        table = bench.write(result, out)
    print(table)
    return 0


def _say_if_in_progress(out: Path) -> None:
    """Readers of a folder a run is writing say so, and how far it has come (a folder that is no run: the command
    says that itself)."""
    from airgen.store.folder import in_progress
    from airgen.read.view import read_info

    try:
        _, config = read_info(out)
    except ConfigError:
        return
    note = in_progress(out, recipes.of(config).unit)
    if note is not None:
        say(f"airgen: {note}")


def cmd_report(args: argparse.Namespace) -> int:
    from airgen.read import report

    _say_if_in_progress(args.out)
    _say_if_no_plots()
    _, text = report.write_report(args.out)
    print(text)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from airgen.read import trace

    _say_if_in_progress(args.out)
    try:
        story = trace.trace(args.out, args.id)
    except trace.TraceError as e:
        print(f"airgen: {e}", file=sys.stderr)
        return 2
    if args.html:
        path = trace.write_page(args.out / "report" / "trace", story)
        print(f"{path} ({len(story.calls)} calls; ended: {trace.ending(story)})")
    else:
        print(trace.text(story))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from airgen.read import export

    levels = tuple(_ints(args.levels, "--levels")) if args.levels else None
    job = export.Job(out=args.out, to=args.to, format=args.format, levels=levels,
                     min_constraints=args.min_constraints, constraint_set=args.constraint_set,
                     dedupe=not args.keep_duplicates, name=args.name, checked=args.checked)
    _say_if_no_plots()
    _say_if_in_progress(args.out)
    try:
        done = export.export(job)
    except export.ExportError as e:
        print(f"airgen: {e}", file=sys.stderr)
        return 2
    what = {"dpo": "pairs", "rlvr": "rows"}.get(args.format, "records")
    llamafactory = ("" if args.format in ("prompt-completion", "rlvr")
                    else f"dataset_info.json for LlamaFactory ({export.dataset_name(job)}_*), ")
    left = ([f"--checked left out {done.unchecked} records whose answer misses a checkable constraint"]
            if args.checked else []) + ([f"{done.uncheckable} records with no checkable constraint have no row"]
                                        if args.format == "rlvr" else [])
    print(f"{args.to}: " + ", ".join(f"{k}: {n} {what}" for k, n in done.counts.items() if n)
          + f" ({args.format}); {llamafactory}README.md dataset card" + "".join(f"; {x}" for x in left))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    api.needs('pip install "airgen[select]"', "airgen select", "torch", "sentence_transformers")
    from airgen.select import selection

    config = load(args.config, _overrides(args, {"seed": "seed"}))
    if args.workers is not None and (args.ray is None or args.workers < 1):
        raise ConfigError("--workers needs --ray and must be >= 1")
    ray = (None if args.ray == "local" else args.ray, args.workers) if args.ray is not None else None
    job = selection.Job(out=args.out, n=args.n, inputs=tuple(args.inputs), embeddings=args.embeddings, ray=ray)
    try:
        with lock.hold(args.out, args.command_line, say):
            summary = selection.run(job, config)
    except lock.Locked:
        raise
    except (ValueError, OSError) as e:  # bad input, settings or paths: all carry a message for the user
        if _disk_full(e) is not None:
            raise
        print(f"airgen: {e}", file=sys.stderr)
        return 2
    print(selection.describe(summary))
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"airgen: {message} (see {self.prog} --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="airgen", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _run_arguments(commands.add_parser("run", help="generate records (AIR from documents, or another recipe)"))
    _select_arguments(commands.add_parser("select", help="filter documents and pick the most diverse ones"))
    _bench_arguments(commands.add_parser(
        "bench", help="throughput: airgen vs the engines' ceiling vs a stage-barrier schedule, same documents"))
    report_parser = commands.add_parser("report", help="plots, an HTML page and a dataset card of a run folder")
    report_parser.add_argument("out", type=Path, metavar="OUT", help="a run folder (finished, running or killed)")
    export_parser = commands.add_parser("export", help="a run's records as training files (HF folder, LlamaFactory)")
    export_parser.add_argument("out", type=Path, metavar="OUT", help="a run folder")
    export_parser.add_argument("--to", type=Path, required=True, metavar="DIR", help="the dataset folder to write")
    export_parser.add_argument("--format", default="alpaca", choices=card.FORMATS,
                               help="alpaca (default), sharegpt, messages, prompt-completion (TRL: loss on the "
                                    "completion alone), dpo (the preference pairs: TRL and LlamaFactory), or rlvr "
                                    "(prompts with their checks as data, for RL with verifiable rewards)")
    export_parser.add_argument("--name", help="the dataset's name in LlamaFactory's dataset_info.json (default: the "
                                              "folder's name)")
    export_parser.add_argument("--levels", help="comma-separated levels to keep, e.g. 1,3,5 (default: all)")
    export_parser.add_argument("--min-constraints", type=int, default=0, metavar="N",
                               help="keep records with at least N constraints")
    export_parser.add_argument("--constraint-set", default="all", choices=("all", "failed"),
                               help="all (default), or failed: only records whose merged constraints the student "
                                    "all failed")
    export_parser.add_argument("--checked", action="store_true",
                               help="keep only records whose answer meets every checkable constraint it was asked "
                                    "(airgen.checks); says how many it left out")
    export_parser.add_argument("--keep-duplicates", action="store_true",
                               help="keep records whose instruction repeats another document's")
    plan_parser = commands.add_parser("plan", help="lay one GPU node out for the two models, and say how long the "
                                                   "corpus will take")
    plan_parser.add_argument("--gpus", type=int, help="the node's GPUs (default: this machine's)")
    plan_parser.add_argument("--gpu-memory", type=float, metavar="GIB", help="each GPU's memory in GiB")
    for role in ("guidance", "student"):
        plan_parser.add_argument(f"--{role}", metavar="PATH", help=f"the {role} model's HF folder (its size is read)")
        plan_parser.add_argument(f"--{role}-params", type=float, metavar="BILLIONS",
                                 help=f"the {role} model's parameters, in billions")
        plan_parser.add_argument(f"--{role}-peak", type=float, metavar="TOK_S",
                                 help=f"one GPU's measured peak output tokens/s for the {role} model (bench/engine.py)")
    plan_parser.add_argument("--dtype", choices=("bf16", "fp16", "fp8"), help="the weights' type (default bf16)")
    plan_parser.add_argument("--from", dest="from_run", type=Path, metavar="OUT",
                             help="take the tokens per sample from this run folder (default: the recipe's published "
                                  "figures; AIR's: the paper's Table 4)")
    plan_parser.add_argument("--recipe", choices=recipes.names(), default=recipes.DEFAULT,
                             help="whose flow to plan for (default: air)")
    plan_parser.add_argument("--samples", type=int, metavar="N", help="the corpus: samples to make")
    trace_parser = commands.add_parser("trace", help="every call of one document (or pair) of a run, and how it "
                                                     "ended")
    trace_parser.add_argument("out", type=Path, metavar="OUT", help="a run folder (finished, running or killed)")
    trace_parser.add_argument("id", metavar="ID", help="the unit's id, as in records.jsonl and rejected.jsonl")
    trace_parser.add_argument("--html", action="store_true", help="write the story as a page in OUT/report/trace/ instead (its path is printed)")
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["airgen", *(sys.argv[1:] if argv is None else argv)])
    handlers = {"run": cmd_run, "bench": cmd_bench, "select": cmd_select, "report": cmd_report,
                "export": cmd_export, "trace": cmd_trace, "plan": cmd_plan}
    with console.terminal():
        return _handle(handlers[args.command], args)


def _handle(handler, args: argparse.Namespace) -> int:
    """The command, and what ends it early said in one line."""
    try:
        return handler(args)
    except (ConfigError, CorpusError) as e:
        print(f"airgen: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling (a report, an export, a run's last steps)
        say("airgen: interrupted")
        return 130
    except OSError as e:
        full = _disk_full(e)
        if full is None:
            raise
        where = getattr(args, "to", None) or getattr(args, "out", None)
        say(_full_line(full, where, _THEN.get(args.command, "free some space, then run the same command again")))
        return 1


if __name__ == "__main__":
    sys.exit(main())
