"""CRAB as a recipe: what the shared machinery asks of it (`airgen.recipe.Recipe`), from the parts in this folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from airgen.crab import pairs, views
from airgen.crab.flow import CrabFlow
from airgen.crab.script import CrabScript
from airgen.crab.settings import CrabConfig
from airgen.crab.steps import STAGES, STEPS
from airgen.method.prompts import PromptSet
from airgen.method.recipe import Recipe
from airgen.method.step import Step


class CrabRecipe(Recipe):
    name = "crab"
    title = "CRAB"
    unit = "pair"
    reads = ("instruction-response pairs (JSONL or Parquet: alpaca, messages or conversations) or an AIR run "
             "folder")
    roles = ("guidance",)
    section = "crab"
    settings = CrabConfig
    stages = STAGES
    # keep_modified off: the 135M checker finds every constraint unmet and its rewrites are noise.
    presets = {
        "tiny": {"max_tokens": 200, "short_lines": True, "repetition_penalty": 1.3, "keep_modified": False},
        # The authors' code, decision for decision (README: "Where airgen differs from the authors' code").
        "authors": {"counting": "nltk", "word_chars_from": "longest", "keywords": "yake", "verify_rules": False,
                    "rouge": "package", "dedup_ties": "authors", "dedup_after_check": True, "keep_unreadable": True,
                    "reverse_targets": "drawn",
                    "refine_max_added_words": None, "parsers": "authors", "min_constraint_words": 0,
                    "structured": False},
    }

    def all_steps(self) -> Sequence[Step]:
        return tuple(STEPS.values())

    def flow(self, settings: CrabConfig, prompts: PromptSet, seed: int) -> CrabFlow:
        return CrabFlow(settings, prompts, seed)

    def read(self, inputs: Sequence[Path], limit: int | None) -> Iterator[Any]:
        return pairs.admitted_pairs(inputs, limit)

    def default_input(self) -> Path:
        return pairs.bundled_pairs()

    def blank(self, unit_id: str) -> pairs.Pair:
        return pairs.Pair(unit_id, "", "", "")

    def tally(self, folder) -> views.CrabTally:
        return views.CrabTally(folder)

    def plots(self, f: dict[str, Any], plt: Any, save: Callable[[Any, str], None]) -> None:
        views.plots(f, plt, save)

    def export_selection(self, settings: CrabConfig, splits: list[str], levels: tuple[int, ...] | None,
                         constraint_set: str, min_constraints: int):
        if levels is not None or constraint_set != "all":
            raise ValueError("--levels and --constraint-set are not options of a crab run")
        return None, (lambda r: len(r["meta"]["constraints"]) >= min_constraints) if min_constraints else None

    def export_meta(self, meta: dict[str, Any]) -> dict[str, Any]:
        """Each constraint whole (its type, source and fate), the record kind."""
        return {k: meta[k] for k in ("doc_id", "split", "constraints", "checks", "kind") if k in meta}

    def script(self, **knobs: Any) -> CrabScript:
        return CrabScript(**knobs)


RECIPE = CrabRecipe()
