"""CRAB's state machine over one instruction-response pair (sans IO, on the shared `airgen.flow` contract).

  begin     rule-built constraints, built and verified in code; refine, global and local proposals asked together
  proposals once all three are back: local constraints naming a mark the response lacks are dropped, then
            near-duplicates (ROUGE-L) among every constraint, then one check per model constraint, all at once
  checks    a met constraint is kept; an unmet one is replaced by the checker's rewrite (authors' rule) or dropped
  end       one record per pair, forward or reverse (drawn at `forward_rate`), from the kept constraints

Every constraint keeps its fate (`Found.status`), so a record's meta and a rejection line both say how many were
proposed and what removed the others: that is the report's funnel.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from airgen import checks
from airgen.checks import Check
from airgen.method.calls import Request
from airgen.crab import records, rules
from airgen.crab.pairs import Pair
from airgen.crab.settings import CrabConfig
from airgen.crab.steps import CHECK, GLOBAL, LOCAL, MARKED_TYPES, MARKS, REFINE, steps_for
from airgen.method.flow import Done, Fault, Flow, FlowError, Next, Rejected, Unit, record
from airgen.method.prompts import PromptSet

RULE = "rule"
KEPT = "kept"  # verified (rule) or met in the check (model)
MODIFIED = "modified"  # unmet, replaced by the checker's rewrite
UNCHECKED = "unchecked"  # kept without a check (crab.check off)
PROPOSED = "proposed"  # waiting for its check
KEEPS = (KEPT, MODIFIED, UNCHECKED)
# Every other status is a removal: failed_rule, too_short, unmarked, duplicate, unmet, vague, unreadable.
STATUSES = (KEPT, MODIFIED, UNCHECKED, "failed_rule", "too_short", "unmarked", "duplicate", "unmet", "vague",
            "unreadable")


@dataclass(slots=True)
class Found:
    source: str  # "rule", or the proposal it came from: "global" or "local"
    type: str
    text: str
    status: str = PROPOSED
    original: str = ""  # the proposed text, where the check rewrote it
    check: Check | None = None  # a rule's own check; a proposal's is read from its text


@dataclass(slots=True)
class PairSample(Unit):
    instruction: str
    response: str
    _: KW_ONLY
    refined: str = ""
    faults: dict[str, str] = field(default_factory=dict)  # stage -> why its answer was not used
    found: list[Found] = field(default_factory=list)  # rule-built first, then global, then local
    # stage -> its proposal, until both are back: they join `found` in a fixed order whatever order they came in,
    # since a check's call key is the constraint's place in `found`.
    proposals: dict[str, dict[str, str]] = field(default_factory=dict)


# What the proposals' checks wait for: the refinement and both proposals back.
PROPOSALS = (REFINE, GLOBAL, LOCAL)


class CrabFlow(Flow):
    def __init__(self, config: CrabConfig, prompts: PromptSet, seed: int = 0):
        super().__init__(config, prompts, seed)
        self.steps = steps_for(config)
        measure, keywords, self.rouge = rules.WORDS, rules.frequency_keywords, rules.rouge_l
        if config.counting == "nltk" or config.keywords == "yake" or config.rouge == "package":
            from airgen.crab import authors  # the authors extra: imported only by the runs that use it

            measure = authors.MEASURE if config.counting == "nltk" else measure
            keywords = authors.keywords if config.keywords == "yake" else keywords
            self.rouge = authors.rouge_l if config.rouge == "package" else self.rouge
        self.how = rules.How(measure, config.word_chars_from == "longest", keywords)
        self.on = {REFINE: self._on_refine, GLOBAL: self._on_proposal, LOCAL: self._on_proposal, CHECK: self._on_check}

    def sample(self, pair: Pair) -> PairSample:
        return PairSample(pair.id, pair.instruction, pair.response, source=pair.source)

    def begin(self, s: PairSample) -> list[Request] | Rejected:
        length = len(s.response.split())
        if length > self.config.max_response_words:
            return Rejected("length", f"response of {length} words, over crab.max_response_words="
                            f"{self.config.max_response_words}", value=length)
        for rule in rules.build(s.response, self.rng(s, "rules"), self.how):
            holds = not self.config.verify_rules or rules.holds(rule, s.response, self.how.measure)
            s.found.append(Found(RULE, rule.kind, rule.text, KEPT if holds else "failed_rule",
                                 check=rules.check(rule)))
        inputs = {"instruction": s.instruction, "response": s.response}
        asked = [self.ask(s, GLOBAL, 0, inputs), self.ask(s, LOCAL, 0, inputs)]
        if self.config.refine:
            asked.insert(0, self.ask(s, REFINE, 0, inputs, {"instruction_words": len(s.instruction.split())}))
        return asked

    def _on_refine(self, s: PairSample, request: Request, value: str | Fault) -> Next:
        if isinstance(value, Fault):
            s.faults[REFINE] = value.reason
        else:
            s.refined = value
        return self._after_proposals(s)

    def _on_proposal(self, s: PairSample, request: Request, value: dict[str, str] | Fault) -> Next:
        if isinstance(value, Fault):
            s.faults[request.stage] = value.reason
            value = {}
        s.proposals[request.stage] = value
        return self._after_proposals(s)

    def _after_proposals(self, s: PairSample) -> Next:
        """Once the refinement and both proposals are back: remove near-duplicates, then check what is left (or, with
        `dedup_after_check`, check every proposal and remove near-duplicates at the end)."""
        if self.waiting_on(s, PROPOSALS):
            return []
        if sorted(s.proposals) != sorted((GLOBAL, LOCAL)):
            raise FlowError(f"{s.doc_id}: proposals back: {sorted(s.proposals)}")
        for stage, source in ((GLOBAL, "global"), (LOCAL, "local")):
            for kind, text in s.proposals[stage].items():
                unmarked = (stage == LOCAL and kind in MARKED_TYPES
                            and any(mark in text and mark not in s.response for mark in MARKS))
                short = len(text.split()) < self.config.min_constraint_words
                status = "too_short" if short else "unmarked" if unmarked else PROPOSED
                s.found.append(Found(source, kind, text, status))
        if not self.config.dedup_after_check:
            self._remove_duplicates([f for f in s.found if f.status in (KEPT, PROPOSED)])
        asked = []
        for n, f in enumerate(s.found):
            if f.status == PROPOSED:
                if self.config.check:
                    asked.append(self.ask(s, CHECK, n, {"response": s.response, "constraint": f.text}))
                else:
                    f.status = UNCHECKED
        return asked

    def _on_check(self, s: PairSample, request: Request, value: Any) -> Next:
        f = s.found[request.n]
        if f.status != PROPOSED:
            raise FlowError(f"{s.doc_id}: a check came back for constraint {request.n}, which is {f.status}")
        if isinstance(value, Fault):
            f.status = UNCHECKED if self.config.keep_unreadable else "unreadable"
        elif value.satisfied:
            f.status = KEPT
        elif value.valid and value.modified and self.config.keep_modified:
            # The authors' rewrite speaks of "the text"; in an instruction it is the response.
            f.original, f.text, f.status = f.text, value.modified.replace("text", "response", 1), MODIFIED
        else:
            f.status = "unmet" if value.valid else "vague"
        return []

    def _remove_duplicates(self, alive: list[Found]) -> None:
        for i in rules.near_duplicates([f.text for f in alive], self.config.dedup_rouge, self.rouge,
                                       authors_ties=self.config.dedup_ties == "authors"):
            alive[i].status = "duplicate"

    def _overlap(self, refined: str, constraints: list[Found]) -> int:
        """How many constraints the refined instruction already says (ROUGE-L over the threshold): each one makes
        the refined instruction less likely to be used (the authors' rule)."""
        return sum(1 for f in constraints if refined and self.rouge(refined, f.text) > self.config.dedup_rouge)

    def finish(self, s: PairSample) -> Done | Rejected:
        refined = s.refined if len(s.refined.split()) >= len(s.instruction.split()) else ""
        overlap = None
        if self.config.dedup_after_check:  # the authors' order: overlap counted, then duplicates removed
            alive = [f for f in s.found if f.status in KEEPS]
            overlap = self._overlap(refined, alive)
            self._remove_duplicates(alive)
        kept = [f for f in s.found if f.status in KEEPS]
        counts = self.counts(s)
        if not kept:
            stage = CHECK if counts.get("proposed_by_model") else GLOBAL
            return Rejected(stage, "no constraint kept: " + _removals(counts), value=counts)
        rng = self.rng(s, "record")
        kind = records.FORWARD if rng.random() < self.config.forward_rate else records.REVERSE
        if kind == records.FORWARD:
            chosen = self._draw(kept, self.config.forward_constraints, rng, self.config.diverse_rate)
            overlap = self._overlap(refined, kept) if overlap is None else overlap
            use_refined = bool(refined) and rng.random() > overlap * 0.1 + self.config.diverse_rate
            base = refined if use_refined else s.instruction
            prompt, output = records.lay_out_constraints(base, [f.text for f in chosen], rng), s.response
        else:
            targets = records.reverse_targets(rng) if self.config.reverse_targets == "drawn" else records.BOTH
            chosen = (self._draw(kept, self.config.reverse_constraints, rng, self.config.reverse_diverse_rate)
                      if targets != records.REFINED else [])
            base = refined or s.instruction
            prompt = records.reverse_prompt(s.instruction, s.response, targets)
            output = records.reverse_target(base, [f.text for f in chosen], targets)
        # A forward record's answer is the response its constraints were found in: each checkable one is checked
        # on it. A reverse record answers with an instruction, which the constraints do not describe.
        answer = output if kind == records.FORWARD else None
        constraints = [{"source": f.source, "type": f.type, "text": f.text, "status": f.status,
                        **({"proposed": f.original} if f.original else {}),
                        **checks.assess(f.check or checks.parse(f.text), answer)} for f in chosen]
        return Done([record(prompt, output, {
            "doc_id": s.doc_id,
            "split": kind,
            "kind": kind,
            **({"asks": targets} if kind == records.REVERSE else {}),
            "constraints": constraints,
            "checks": checks.tally(constraints),
            "kept_constraints": len(kept),
            "initial_instruction": s.instruction,
            "refined_instruction": s.refined,
            "instruction_used": base,
            "counts": counts,
            "faults": dict(s.faults),
        })], [])

    @staticmethod
    def _draw(kept: list[Found], bounds: tuple[int, int], rng, diverse_rate: float = 0.0) -> list[Found]:
        return rng.sample(kept, records.how_many(len(kept), bounds, rng, diverse_rate))

    @staticmethod
    def counts(s: PairSample) -> dict[str, int]:
        """The pair's constraints by source and fate: the funnel's unit."""
        c: Counter = Counter()
        for f in s.found:
            c["built_by_rule" if f.source == RULE else "proposed_by_model"] += 1
            c[f"{'rule' if f.source == RULE else 'model'}_{f.status}"] += 1
        return dict(sorted(c.items()))


def _removals(counts: dict[str, int]) -> str:
    removed = {k: v for k, v in counts.items() if not k.endswith(KEEPS) and k not in ("built_by_rule",
                                                                                      "proposed_by_model")}
    return ", ".join(f"{k} {v}" for k, v in removed.items()) or "none proposed"
