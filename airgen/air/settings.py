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
    # A round whose student answer has fewer words gives the judge nothing to compare: the rounds end there, so
    # that round's level and every later one make no record (the authors' final filter drops them).
    min_student_words: int = 3
    # A level whose merged constraints have fewer words than this, all together, makes no record (authors: 4).
    level_constraint_words: int = 0
    # A level that would merge the same constraints as the level before it makes a record again (the authors'
    # code merges every level); off, it is dropped as adding nothing.
    keep_unchanged_levels: bool = False
    # Preference pairs beside the records (pairs.jsonl): per level that makes a record, the student answers the
    # merged instruction and the judge scores that answer against the level's constraints (two calls, asked with
    # the level's final answer); an answer failing one or more is the pair's rejected answer, the record's output its
    # chosen one.
    preference_pairs: bool = False
    # How answers are read: airgen's lenient parsers, or the rules of the authors' code (`air.authors`), their
    # case-sensitive substring tests and any 2..6-word constraint type included.
    parsers: Literal["airgen", "authors"] = "airgen"

    def validate(self, where: str = "flow") -> None:
        super().validate(where)
        check(1 <= self.rounds <= 12, "flow.rounds must be 1..12 (there are 12 constraint types)")
        check(1 <= self.score_threshold <= 5, "flow.score_threshold must be 1..5")
        check(0 <= self.pass_score <= 4, "flow.pass_score must be 0..4 (4 = every constraint counts as failed)")
        check(self.merge_max_tokens >= 16, "flow.merge_max_tokens must be >= 16")
        check(0 <= self.few_shot <= 8, "flow.few_shot must be 0..8")
        check(self.parsers == "airgen" or not (self.one_shot or self.dedup_asks == "new"),
              "flow.parsers = authors reads one constraint a round and the duplicate question as the authors ask it: "
              "it goes with neither flow.one_shot nor flow.dedup_asks = new")
        check(self.min_student_words >= 0 and self.level_constraint_words >= 0,
              "flow.min_student_words and flow.level_constraint_words must be >= 0")
        for name in ("instruction_words", "constraint_words", "merged_words"):
            lo, hi = getattr(self, name)
            check(0 <= lo <= hi, f"flow.{name} must be [low, high] with 0 <= low <= high")
