"""Small measures the recipes' report views share."""
from __future__ import annotations

import re
from typing import Any


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


def read_units(view: Any) -> tuple[int, int]:
    """(units the run read, of them the ones that could not be read as its units at all)."""
    with_records = {r["meta"]["doc_id"] for r in view.records}
    rejected = {line.get("unit", line.get("id")) for line in view.rejected}
    unreadable = sum(1 for line in view.rejected if line["stage"] == "read" and str(line.get("unit", "")).startswith("@"))
    return len(with_records | rejected | set(view.in_flight)), unreadable
