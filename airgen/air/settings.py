"""AIR's config section, `flow`: everything that changes what the method generates (part of a run's fingerprint).

The defaults follow the authors' own code where the paper is silent; every one can be changed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from airgen.config import Sampling, check

JudgeMode = Literal["document", "model", "none"]
ConstraintSet = Literal["failed", "all"]


@dataclass(frozen=True)
class FlowConfig(Sampling):
    rounds: int = 5
    score_threshold: int = 4
    # A constraint scored below this by the check step goes to C' (the set the student still fails).
    pass_score: int = 3
    # Which set the final records merge: "failed" = C' (the paper's "w/ check" headline rows), "all" = C.
    constraint_set: ConstraintSet = "failed"
    # Reference for the judge: the refined document (paper), the guidance model's own answer, or no comparison.
    judge: JudgeMode = "document"
    # Propose all constraints in one call instead of one per round (paper Table 5).
    one_shot: bool = False
    # The student's answer to I_r in round r's check is reused as round r+1's answer to the same instruction.
    reuse_answer: bool = True
    # The duplicate check asks "is it a duplicate?" (the authors' question) or "is it new?" (the same check the other
    # way round, for models that answer Yes to any question: the tiny preset).
    dedup_asks: Literal["duplicate", "new"] = "duplicate"
    # The judge may answer "None" (no gap found), which ends the rounds; off, decoding forces a type.
    judge_may_decline: bool = True
    # Decode back-translated and merged instructions as 1..4 plain sentences (small models otherwise ramble).
    sentence_instructions: bool = False
    merge_max_tokens: int = 800
    few_shot: int = 3
    instruction_words: tuple[int, int] = (3, 50)
    constraint_words: tuple[int, int] = (3, 26)
    merged_words: tuple[int, int] = (3, 150)
    min_refined_words: int = 3
    min_answer_words: int = 4

    def validate(self, where: str = "flow") -> None:
        super().validate(where)
        check(1 <= self.rounds <= 12, "flow.rounds must be 1..12 (there are 12 constraint types)")
        check(1 <= self.score_threshold <= 5, "flow.score_threshold must be 1..5")
        check(0 <= self.pass_score <= 4, "flow.pass_score must be 0..4 (4 = every constraint counts as failed)")
        check(self.merge_max_tokens >= 16, "flow.merge_max_tokens must be >= 16")
        check(0 <= self.few_shot <= 8, "flow.few_shot must be 0..8")
        for name in ("instruction_words", "constraint_words", "merged_words"):
            lo, hi = getattr(self, name)
            check(0 <= lo <= hi, f"flow.{name} must be [low, high] with 0 <= low <= high")
