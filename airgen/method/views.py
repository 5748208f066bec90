"""What the recipes' report views share: small measures, a distribution kept as counts (so that a figure's memory
does not grow with the run), and the plots more than one recipe draws."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any, Callable


def trigrams(text: str) -> int:
    """Distinct word trigrams of `text` (paper Figure 6a's diversity measure)."""
    words = text.lower().split()
    return len({tuple(words[i:i + 3]) for i in range(len(words) - 2)})


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def kind_of(reason: str) -> str:
    """A reason without its particulars (quoted text, numbers), so that reasons of one kind count together."""
    reason = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", reason)
    return re.sub(r"(?<!round )(?<!completed )\d+", "N", reason)[:160]


class Distribution:
    """Whole numbers (words per instruction, say) kept as value -> count: exact quartiles and mean in memory bounded
    by the distinct values, whatever the number of records."""

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: Counter = Counter(counts or {})

    @classmethod
    def of(cls, summary: dict[str, Any]) -> "Distribution":
        """The distribution a `summary` was made of."""
        return cls({int(v): c for v, c in summary.get("counts", {}).items()})

    def add(self, value: int) -> None:
        self.counts[value] += 1

    @property
    def n(self) -> int:
        return sum(self.counts.values())

    def mean(self) -> float | None:
        n = self.n
        return sum(v * c for v, c in self.counts.items()) / n if n else None

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated between neighbours as numpy's default does."""
        values = sorted(self.counts)
        position = q * (self.n - 1)
        below, seen = int(position), 0
        for i, v in enumerate(values):
            seen += self.counts[v]
            if seen > below:
                if position == below or seen > below + 1:
                    return float(v)
                return v + (position - below) * (values[i + 1] - v)
        raise ValueError("an empty distribution has no quantile")

    def box(self, label: str) -> dict[str, Any]:
        """matplotlib's `bxp` statistics: quartiles, and whiskers at the furthest values within 1.5 IQR."""
        q1, median, q3 = (self.quantile(q) for q in (0.25, 0.5, 0.75))
        reach = 1.5 * (q3 - q1)
        inside = [v for v in self.counts if q1 - reach <= v <= q3 + reach]
        return {"label": label, "med": median, "q1": q1, "q3": q3, "whislo": min(inside), "whishi": max(inside),
                "fliers": []}

    def summary(self) -> dict[str, Any]:
        """What summary.json holds of it."""
        if not self.counts:
            return {"n": 0}
        return {"n": self.n, "mean": self.mean(), "min": min(self.counts), "median": self.quantile(0.5),
                "max": max(self.counts), "counts": {str(v): self.counts[v] for v in sorted(self.counts)}}


Save = Callable[[Any, str], None]


def plot_shares(groups: dict[str, dict[str, int]], title: str, plt: Any, save: Save, name: str) -> None:
    """One bar per group, split into the shares of its kinds (constraint types per round, per source)."""
    if not groups:
        return
    kinds = sorted({t for c in groups.values() for t in c})
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(groups) + 2))
    for i, (group, counts) in enumerate(groups.items()):
        total, left = sum(counts.values()), 0.0
        for j, kind in enumerate(kinds):
            share = counts.get(kind, 0) / total
            ax.barh(group, share, left=left, color=cmap(j % 20), label=kind if i == 0 else None)
            left += share
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the group's constraints")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    save(fig, name)


def plot_lengths(lengths: dict[str, dict[str, dict[str, Any]]], plt: Any, save: Save) -> None:
    """Box plots of instruction and response lengths per group (a level, a record kind), from the summaries of
    their distributions (group -> "instruction" and "response" -> `Distribution.summary()`)."""
    instructions = {k: Distribution.of(v["instruction"]) for k, v in lengths.items() if v.get("instruction")}
    responses = {k: Distribution.of(v["response"]) for k, v in lengths.items() if v.get("response")}
    if not responses:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].bxp([d.box(k) for k, d in instructions.items()], showfliers=False)
    axes[0].set_title("instruction length (words)")
    axes[1].bxp([d.box(k) for k, d in responses.items()], showfliers=False)
    axes[1].set_title("response length (words)")
    save(fig, "lengths")


class Checked:
    """The constraints records' answers were asked to meet, by group (a level, a record kind) and by type: how many
    code can check (`checks`), and how many of those the answers meet."""

    def __init__(self) -> None:
        self.groups: dict[str, list[int]] = {}  # group -> [asked, checkable, met]
        self.types: dict[str, list[int]] = {}

    def add(self, group: str, kind: str, assessed: dict[str, Any]) -> None:
        for counts in (self.groups.setdefault(group, [0, 0, 0]), self.types.setdefault(kind, [0, 0, 0])):
            counts[0] += 1
            counts[1] += assessed.get("check") is not None
            counts[2] += assessed.get("holds") is True

    @staticmethod
    def _shares(counts: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
        return {k: {"asked": a, "checkable": c, "met": m, "checkable_share": c / a if a else None,
                    "met_share": m / c if c else None} for k, (a, c, m) in counts.items()}

    def figures(self) -> dict[str, Any]:
        asked, checkable, met = (sum(c[i] for c in self.groups.values()) for i in range(3))
        return {"asked": asked, "checkable": checkable, "met": met,
                "by_group": self._shares(self.groups),
                "by_type": self._shares(dict(sorted(self.types.items(), key=lambda kv: -kv[1][0])))}

    def panel(self, group_name: str) -> dict[str, Any]:
        f = self.figures()

        def rows(shares: dict[str, dict[str, Any]]) -> list[list[Any]]:
            return [[k, v["asked"], v["checkable"], v["checkable_share"], v["met"], v["met_share"]]
                    for k, v in shares.items()]

        head = ["asked", "checkable", "checkable share", "met", "met share (of checkable)"]
        return {"title": "Checked constraints", "plots": ["checks"], "tables": [
            {"head": [group_name, *head], "rows": rows(f["by_group"])},
            {"head": ["constraint type", *head], "rows": rows(f["by_type"])}]}


def checks_line(checks: dict[str, Any]) -> str:
    """The text summary's line (and the card's) on the checked constraints."""
    asked, checkable, met = checks["asked"], checks["checkable"], checks["met"]
    if not asked:
        return "checked constraints: none asked"
    return (f"checked constraints: {checkable} of {asked} asked are checkable in code ({checkable / asked:.0%}); "
            f"the answers meet {met} of them" + (f" ({met / checkable:.0%})" if checkable else ""))


def plot_checks(checks: dict[str, Any], plt: Any, save: Save) -> None:
    """Per group: the share of the constraints asked that code can check, and the share of those the answers met."""
    groups = checks.get("by_group") or {}
    if not any(v["asked"] for v in groups.values()):
        return
    names = list(groups)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(names) + 2), 3.8))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [groups[n]["checkable_share"] or 0 for n in names], width=0.4,
           label="checkable (of asked)", color="tab:blue")
    ax.bar([x + 0.2 for x in xs], [groups[n]["met_share"] or 0 for n in names], width=0.4,
           label="met (of checkable)", color="tab:green")
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1)
    ax.set_title("constraints checked in code")
    ax.legend(fontsize=8)
    save(fig, "checks")
