"""CRAB's config section, `crab`: what changes the records it makes (part of a crab run's fingerprint).

Defaults follow the authors' code (THU-KEG/Crab): constraints ROUGE-L above 0.6 to another are duplicates, a
forward record samples 6..8 of a pair's constraints and a reverse record 3..6 (each 1..all with probability
`diverse_rate`, `reverse_diverse_rate`), and records are forward with probability `forward_rate`. Where airgen
decides otherwise, a setting below restores theirs (README: "Where airgen differs from the authors' code").
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal

from airgen.config import Sampling, check

# What the authors' measures import (`crab.authors`): the `authors` extra.
_AUTHORS_MODULES = ("nltk", "punkt", "yake", "langdetect", "rouge")


@dataclass(frozen=True)
class CrabConfig(Sampling):
    max_tokens: int = 1024
    refine: bool = True
    # The prompt asks for 10 to 20 more words; twice that is still a refinement, and a rewrite that drops words is
    # none. Unset: any rewrite is taken (the authors'; one shorter than the instruction is still never used).
    refine_max_added_words: int | None = 40
    check: bool = True  # the model's per-constraint check of the constraints it proposed
    keep_modified: bool = True  # a constraint the check finds unmet is replaced by its rewrite, when it gives one
    dedup_rouge: float = 0.6
    forward_rate: float = 0.70
    forward_constraints: tuple[int, int] = (6, 8)
    reverse_constraints: tuple[int, int] = (3, 6)
    diverse_rate: float = 0.3
    max_response_words: int = 1500
    # How the rule-built constraints measure a response: airgen counts words (letters and digits) and splits
    # sentences at . ! ?; "nltk" counts nltk's word tokens (punctuation and split contractions too) and splits
    # sentences with its punkt model, as the authors' code does.
    counting: Literal["words", "nltk"] = "words"
    # The per-word minimum from the shortest word (it holds) or, as the authors build it, from the longest token
    # rounded up to five (it never holds).
    word_chars_from: Literal["shortest", "longest"] = "shortest"
    # The keywords a response must mention: the content words it repeats most, or YAKE's (the authors').
    keywords: Literal["frequency", "yake"] = "frequency"
    # Each rule-built constraint is checked against its response in code and removed when it does not hold (the
    # authors never check theirs).
    verify_rules: bool = True
    # ROUGE-L between constraints: airgen's over lower-cased words, or the `rouge` package's as the authors call
    # it (case-sensitive, punctuation kept on words, sentences split at ".", a failure counted as 1.0).
    rouge: Literal["words", "package"] = "words"
    # Of equally linked near-duplicates, airgen removes the earlier; the authors' order removes the later.
    dedup_ties: Literal["earlier", "authors"] = "earlier"
    # Near-duplicates are removed before the check (a check saved per duplicate) or, as the authors do, after it,
    # with the refined instruction's overlap counted before they go.
    dedup_after_check: bool = False
    # A check answer that cannot be read removes its constraint; the authors' code keeps it.
    keep_unreadable: bool = False
    # How answers are read: airgen's parsers, or the authors' scripts' (their JSON reading, a check verdict other
    # than exactly "NO" keeping its constraint).
    parsers: Literal["airgen", "authors"] = "airgen"
    # A proposed constraint of fewer words is no sentence and is removed (the authors have no such rule).
    min_constraint_words: int = 3
    # A reverse record's constraints are drawn from 1..all with this probability (as the forward ones are).
    reverse_diverse_rate: float = 0.3
    # What a reverse record asks for: the refined instruction and the constraints ("both"), or, as the authors draw
    # it, the constraints (0.7), the refined instruction (0.15) or both (0.15).
    reverse_targets: Literal["both", "drawn"] = "both"

    def validate(self, where: str = "crab") -> None:
        super().validate(where)
        check(0 <= self.forward_rate <= 1, "crab.forward_rate must be in [0, 1]")
        check(0 <= self.diverse_rate <= 1, "crab.diverse_rate must be in [0, 1]")
        check(0 < self.dedup_rouge <= 1, "crab.dedup_rouge must be in (0, 1]")
        for name in ("forward_constraints", "reverse_constraints"):
            lo, hi = getattr(self, name)
            check(1 <= lo <= hi, f"crab.{name} must be [low, high] with 1 <= low <= high")
        check(self.max_response_words >= 1, "crab.max_response_words must be >= 1")
        check(0 <= self.reverse_diverse_rate <= 1, "crab.reverse_diverse_rate must be in [0, 1]")
        check(self.min_constraint_words >= 0, "crab.min_constraint_words must be >= 0")
        check(self.refine_max_added_words is None or self.refine_max_added_words >= 0,
              "crab.refine_max_added_words must be >= 0 (or unset for no bound)")
        if self.counting == "nltk" or self.keywords == "yake" or self.rouge == "package":
            missing = [m for m in _AUTHORS_MODULES if importlib.util.find_spec(m) is None]
            check(not missing, f"crab.counting = nltk, keywords = yake and rouge = package need the authors extra "
                  f"({', '.join(missing)} missing): pip install \"airgen[authors]\"")
