"""The registry: the one place that knows which recipes exist.

A recipe is everything in its own folder (`airgen.recipe.Recipe` says what that is); it joins airgen with one line
in BUILTIN, or at run time with `register()` (a plugin, a test). cli, config, run, runfolder, report, card, export,
bench and cluster ask the registry for the run's recipe and never compare a recipe's name.
"""
from __future__ import annotations

import importlib

from airgen.method.recipe import Recipe

# name -> the module whose `RECIPE` it is; imported on first use (the command line's help, which names every recipe's
# shorthands, imports them all).
BUILTIN = {
    "air": "airgen.air.recipe",
    "crab": "airgen.crab.recipe",
}
DEFAULT = "air"

_known: dict[str, Recipe] = {}


class UnknownRecipe(ValueError):
    """No recipe of that name is registered."""


def register(recipe: Recipe) -> Recipe:
    """Add `recipe` (again, or a copy of it: a no-op). Its name, config section and stage names must be its own:
    stages are part of every call key, and test servers answer by stage."""
    known = _known.get(recipe.name)
    if known is not None and type(known).__qualname__ == type(recipe).__qualname__:
        return known
    if known is not None:
        raise ValueError(f"a recipe named {recipe.name!r} is registered already")
    for other in _known.values():
        if other.section == recipe.section:
            raise ValueError(f"recipe {recipe.name!r}: section {recipe.section!r} belongs to {other.name!r}")
        shared = set(other.stages) & set(recipe.stages)
        if shared:
            raise ValueError(f"recipe {recipe.name!r}: stage {sorted(shared)[0]!r} belongs to {other.name!r}")
    _known[recipe.name] = recipe
    return recipe


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_known))


def get(name: str) -> Recipe:
    recipe = _known.get(name)
    if recipe is None:
        if name not in BUILTIN:
            raise UnknownRecipe(f"unknown recipe {name!r}; known: {', '.join(names())}")
        recipe = register(importlib.import_module(BUILTIN[name]).RECIPE)
    return recipe


def of(config) -> Recipe:
    """The recipe a config runs."""
    return get(config.recipe)


def every() -> list[Recipe]:
    """Every recipe, the built-in ones loaded."""
    return [get(name) for name in names()]
