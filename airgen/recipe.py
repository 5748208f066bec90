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

from airgen.calls import Request, Role
from airgen.flow import Flow, Unit
from airgen.prompts import PromptSet
from airgen.step import Step

# A run folder read back (`runview.RunView`), as the report and export hand it to a recipe; not imported here, so
# that the registry (which the config reads) stays below the run-folder readers.
RunView = Any


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

    def views(self, view: RunView) -> dict[str, Any]:
        """The report's recipe-specific figures of a run folder (`report.figures` lists the keys)."""
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

    def plots(self, f: dict[str, Any], plt: Any, save: Callable[[Any, str], None]) -> None:
        """Plots of its own beyond the funnel, constraint types and lengths (none by default)."""

    def export_selection(self, view: RunView, levels: tuple[int, ...] | None,
                         constraint_set: str) -> tuple[list[str] | None, Callable[[dict[str, Any]], bool] | None]:
        """For `airgen export`'s --levels and --constraint-set: the splits to write (None: all) and a record test
        (None: every record). Raises ValueError for an option the recipe has no use for."""
        if levels is not None or constraint_set != "all":
            raise ValueError(f"--levels and --constraint-set are not options of a {self.name} run")
        return None, None

    def pair(self, sample: Unit) -> tuple[str, str] | str | None:
        """An instruction-response pair that a unit of a finished run holds, for recipes that read pairs (CRAB from
        an AIR run folder): the pair, the reason it has none, or None for a recipe whose units hold no pairs."""
        return None
