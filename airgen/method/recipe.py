"""What a recipe is: one contract that owns everything about it, so that a new recipe is its own folder plus one
line in `airgen.recipes`.

A recipe declares its settings (a config section on `config.Sampling`), its prompt files (only they enter its runs'
fingerprint), its input reader, its steps and its flow (the transition table, `airgen.flow`), its records and
splits, its report views and card text, and scripted answers for tests and benches. The shared machinery reads a
recipe only through the attributes and methods below; those with a body are defaults a recipe may keep.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from airgen.method.calls import Request, Role
from airgen.method.flow import Flow, Unit
from airgen.method.prompts import PromptSet
from airgen.method.step import Step

# A run folder read back (`read.view.Folder`) and one unit of its journal replayed (`read.view.Ended`), as the report and
# export hand them to a recipe; not imported here, so that the registry (which the config reads) stays below the
# run-folder readers.
Folder = Any
Ended = Any


class Tally:
    """A recipe's figures of a run folder, built in one pass: each unit once (`unit`), each line of the output
    files once (`line`, with the file's name), then `figures`. This base counts nothing of its own: a recipe that
    keeps no tally of its own still gets every figure every run has (`report.figures`)."""

    def __init__(self, folder: Folder):
        self.folder = folder

    def unit(self, ended: Ended) -> None:
        """One unit of the journal, replayed."""

    def line(self, name: str, item: dict[str, Any]) -> None:
        """One line of an output file (`sink.RECORDS`, `REJECTED`, `DROPPED_LEVELS`, `PAIRS`)."""

    def figures(self, shared: dict[str, Any]) -> dict[str, Any]:
        """The recipe's own figures and words: `about`, `tags`, `funnel` ([label, count] rows), `panels` (page
        sections: title, plot names, tables of head and rows), `highlights` (lines of the text summary),
        `made_notes`, `labels` (funnel_axis, funnel_title), `card` (fields: what a record's meta holds; caveat: the
        data's own limit; pairs: what a preference pair's line holds, for a recipe that makes them), and any figures
        of its own. `shared` holds what every run has: units read, unreadable, in flight, records by split."""
        recipe = self.folder.recipe
        return {"about": f"records made by airgen with {recipe.title}", "tags": [recipe.name],
                "funnel": [[f"{recipe.unit}s read by the run", shared["units_read"]],
                           [f"read as {recipe.unit}s", shared["units_read"] - shared["unreadable"]],
                           *([f"records {k}", n] for k, n in shared["records_by_split"].items()),
                           [f"{recipe.unit}s with records", shared["units_with_records"]]],
                "panels": [], "highlights": [], "made_notes": [],
                "labels": {"funnel_axis": f"{recipe.unit}s (records for the record rows)", "funnel_title": "funnel"},
                "card": {"fields": f"the {recipe.unit}'s id and its split.", "caveat": "Synthetic data."}}


class Recipe:
    name: str  # `--recipe NAME`; a run folder records it
    title: str  # how reports and dataset cards name the method
    unit: str  # what one input entry is called in messages and the report ("document", "pair")
    reads: str  # what its inputs are, for `airgen run --help`
    roles: tuple[Role, ...]  # the models it asks
    section: str  # its config section's name ("flow", "crab")
    settings: type  # that section: a frozen dataclass on `config.Sampling`
    stages: tuple[str, ...]  # its steps' names in the method's order; part of every call key
    # Preset name -> values of its section (the shared part of a preset is `config.SHARED_PRESETS`).
    presets: Mapping[str, Mapping[str, Any]] = {}
    # Command-line shorthands for its settings: flag -> (setting in its section, type, help).
    flags: Mapping[str, tuple[str, type, str]] = {}
    # Prompt data files besides the templates: file name -> (key in `PromptSet.data`, reader of its text).
    data_files: Mapping[str, tuple[str, Callable[[str], Any]]] = {}
    # The setting that makes it write preference pairs (pairs.jsonl), for a recipe that makes them.
    pairs_setting: str | None = None
    # Its published tokens and calls per sample by role (a `plan.Mix`), for `airgen plan` where no run of it is given.
    token_mix: Any = None

    # -- what every recipe implements ---------------------------------------------------------------------------

    def all_steps(self) -> Sequence[Step]:
        """Every step it may ask, whatever its settings: their templates are its prompt files."""
        raise NotImplementedError

    def steps(self, settings: Any) -> Mapping[str, Step]:
        """Stage -> the step that answers it under `settings`."""
        return {s.name: s for s in self.all_steps()}

    def flow(self, settings: Any, prompts: PromptSet, seed: int) -> Flow:
        raise NotImplementedError

    def read(self, inputs: Sequence[Path], limit: int | None) -> Iterator[Any]:
        """The admitted units of `inputs` (a Rejection for each entry that is not one), up to `limit` entries."""
        raise NotImplementedError

    def default_input(self) -> Path:
        """What `airgen run` reads when given no input."""
        raise NotImplementedError

    def blank(self, unit_id: str) -> Any:
        """A unit with only its id: enough to replay a journal (keys, not texts)."""
        raise NotImplementedError


    def script(self, **knobs: Any) -> Callable[[Request], str]:
        """Well-formed answers for each of its stages, varied by call key: for tests and benches, never a model."""
        raise NotImplementedError

    # -- defaults -------------------------------------------------------------------------------------------------

    def templates(self) -> dict[str, frozenset[str]]:
        """Template -> the fields it fills: what its prompt files are checked against."""
        return {s.template: s.fields for s in self.all_steps() if s.template is not None}

    def prompts(self, folder: Path | None = None) -> PromptSet:
        """Its prompt set: the bundled one, or the files of `folder` checked against its steps."""
        return PromptSet.load(self.templates(), folder, self.data_files)

    def barrier(self, request: Request) -> tuple[int, ...]:
        """A request's batch in a stage-by-stage schedule (the bench's stage-barrier mode): by default every
        unit's calls of one stage, stage after stage in the method's order."""
        return (self.stages.index(request.stage),)

    def fingerprint(self, settings: Any, seed: int) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        return {"recipe": self.name, self.section: dataclasses.asdict(settings), "seed": seed}

    def about_preset(self, settings: Any) -> str:
        """The settings a preset announcement names."""
        return f"max_tokens {settings.max_tokens}"

    def tally(self, folder: Folder) -> Tally:
        """Its figures of a run folder, built in one pass (the shared figures alone by default)."""
        return Tally(folder)

    def plots(self, f: dict[str, Any], plt: Any, save: Callable[[Any, str], None]) -> None:
        """Plots of its own beyond the funnel, from its figures `f` (none by default)."""

    def export_selection(self, settings: Any, splits: list[str], levels: tuple[int, ...] | None,
                         constraint_set: str, min_constraints: int
                         ) -> tuple[list[str] | None, Callable[[dict[str, Any]], bool] | None]:
        """For `airgen export`'s --levels, --constraint-set and --min-constraints, given the splits the run made:
        the splits to write (None: all) and a record test (None: every record). Raises ValueError for an option
        the recipe has no use for."""
        if levels is not None or constraint_set != "all" or min_constraints:
            raise ValueError(f"--levels, --constraint-set and --min-constraints are not options of a {self.name} run")
        return None, None

    def export_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """What an exported line keeps of a record's `meta` (its unit's id and split, always): all of it by default."""
        return meta

    def pair(self, sample: Unit) -> tuple[str, str] | str | None:
        """An instruction-response pair that a unit of a finished run holds, for recipes that read pairs (CRAB from
        an AIR run folder): the pair, the reason it has none, or None for a recipe whose units hold no pairs."""
        return None
