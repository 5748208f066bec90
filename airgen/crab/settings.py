"""CRAB's config section, `crab`: what changes the records it makes (part of a crab run's fingerprint).

Defaults follow the authors' code (THU-KEG/Crab): constraints ROUGE-L above 0.6 to another are duplicates, a
forward record samples 6..8 of a pair's constraints (1..all with probability `diverse_rate`), a reverse record
3..6, and records are forward with probability `forward_rate`.
"""
from __future__ import annotations

from dataclasses import dataclass

from airgen.config import Sampling, check


@dataclass(frozen=True)
class CrabConfig(Sampling):
    max_tokens: int = 1024
    refine: bool = True
    refine_max_added_words: int = 40  # the prompt asks for 10 to 20 more; twice that is still a refinement
    check: bool = True  # the model's per-constraint check of the constraints it proposed
    keep_modified: bool = True  # a constraint the check finds unmet is replaced by its rewrite, when it gives one
    dedup_rouge: float = 0.6
    forward_rate: float = 0.75
    forward_constraints: tuple[int, int] = (6, 8)
    reverse_constraints: tuple[int, int] = (3, 6)
    diverse_rate: float = 0.3
    max_response_words: int = 1500

    def validate(self, where: str = "crab") -> None:
        super().validate(where)
        check(0 <= self.forward_rate <= 1, "crab.forward_rate must be in [0, 1]")
        check(0 <= self.diverse_rate <= 1, "crab.diverse_rate must be in [0, 1]")
        check(0 < self.dedup_rouge <= 1, "crab.dedup_rouge must be in (0, 1]")
        for name in ("forward_constraints", "reverse_constraints"):
            lo, hi = getattr(self, name)
            check(1 <= lo <= hi, f"crab.{name} must be [low, high] with 1 <= low <= high")
        check(self.max_response_words >= 1, "crab.max_response_words must be >= 1")
