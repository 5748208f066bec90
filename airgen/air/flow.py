"""The AIR method as a pure state machine: no engine, no file, no clock (paper section 3, Algorithm 2).

One `Sample` per document, in one of four phases:

  INITIAL   back_translate -> score (keep >= threshold) -> refine [+ reference, judge="model"] + round 1's answer
  ROUNDS    rounds 1..R: answer -> propose -> dedup (round >= 2) -> answer_with -> check
  SETTLING  the rounds are over; checks and levels still in flight
  ENDED     Done (one record per level) or Rejected (stage and reason)

and levels 1..K (merge -> respond) run alongside ROUNDS and SETTLING. What each step asks and accepts is in
`air.steps`; this module holds when each one is asked. Every transition is one handler in `AirFlow.on`, and what a
call waits for besides the answer that unlocks it is declared once, in WAITS_FOR.

A sample runs its calls in parallel wherever the method allows, so that few documents still keep an engine's batch
full: the refinement, the reference and round 1's answer run together (each needs only the instruction), round r's
check runs alongside round r+1 (nothing in a round reads a check's scores), and level k's merge -> respond starts as
soon as rounds 1..k are settled (constraint accepted and, for C', checked). The score goes first, alone, so that the
samples it drops cost nothing more. Results do not depend on the order completions come back in.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from airgen import checks
from airgen.air.prompt_data import merge_examples, types
from airgen.air.settings import FlowConfig
from airgen.air.steps import (
    ANSWER, ANSWER_WITH, BACK_TRANSLATE, CHECK, DEDUP, MERGE, PAIR_ANSWER, PAIR_CHECK, PROPOSE, REFERENCE, REFINE,
    RESPOND, SCORE,
    format_examples, format_numbered, format_types, steps_for, append_constraints, type_name,
)
from airgen.method.calls import Request
from airgen.method.corpus import Document
from airgen.method.flow import Done, Fault, Flow, FlowError, Next, Rejected, Unit, record
from airgen.method.parsing import word_count
from airgen.method.prompts import PromptSet

# What a call waits for besides the answer that unlocks it: a round's proposal goes out once none of these is in
# flight (their faults are weighed in this order, so the outcome does not depend on which came back first). A level
# waits for its rounds to be settled (`AirFlow._settled`).
WAITS_FOR = {PROPOSE: (REFINE, REFERENCE, ANSWER)}


class Phase(enum.Enum):
    INITIAL = "initial"
    ROUNDS = "rounds"
    SETTLING = "settling"
    ENDED = "ended"


@dataclass(slots=True)
class Constraint:
    round: int
    type: str
    text: str
    # None until checked (or when the check step is off or its answer could not be read).
    failed: bool | None = None
    score: int | None = None


@dataclass(slots=True)
class Round:
    """One refinement round as it happened."""

    n: int
    answer: str | None = None  # the student's answer the judge compared with the reference
    proposed: Constraint | None = None  # the judge's constraint, until the duplicate check accepts it
    accepted: Constraint | None = None
    checking: range | None = None  # the constraints this round's check decides, while it is in flight


@dataclass(slots=True)
class Sample(Unit):
    """Everything the flow knows about one document. Only the flow mutates it."""

    document: str
    _: KW_ONLY
    phase: Phase = Phase.INITIAL
    instruction: str = ""
    refined: str = ""
    score: int = 0
    reference: str = ""
    round: int = 0  # the round in progress; past the last one once the rounds are over
    rounds: dict[int, Round] = field(default_factory=dict)
    # The student's latest answer to the instruction with every accepted constraint (I_{round}), if known.
    answer: str | None = None
    # stage -> why its output was rejected, for the calls a proposal waits on (decided once none is in flight).
    faults: dict[str, str] = field(default_factory=dict)
    constraints: list[Constraint] = field(default_factory=list)  # accepted, in round order: C
    checked: int = 0  # constraints[:checked] have been sent to a check step
    rounds_end: str = ""
    next_level: int = 1  # levels below it are decided: started (in `levels`) or dropped (in `level_drops`)
    levels: dict[int, list[Constraint]] = field(default_factory=dict)  # level -> the constraints it merges
    merged: dict[int, str] = field(default_factory=dict)
    responses: dict[int, str] = field(default_factory=dict)
    level_drops: list[dict[str, Any]] = field(default_factory=list)
    # Preference pairs (flow.preference_pairs), by level: the student's answer to the merged instruction, the
    # judge's scores of it against the level's constraints, or why the level has no pair.
    pair_answers: dict[int, str] = field(default_factory=dict)
    pair_scores: dict[int, list[int]] = field(default_factory=dict)
    pair_faults: dict[int, str] = field(default_factory=dict)


class AirFlow(Flow):
    def __init__(self, config: FlowConfig, prompts: PromptSet, seed: int = 0):
        super().__init__(config, prompts, seed)
        self.steps = steps_for(config)
        # The transition table: the stage whose answer came back -> what follows from it.
        self.on = {
            BACK_TRANSLATE: self._on_back_translate,
            SCORE: self._on_score,
            REFINE: self._on_initial,
            REFERENCE: self._on_initial,
            ANSWER: self._on_initial,
            PROPOSE: self._on_propose,
            DEDUP: self._on_dedup,
            ANSWER_WITH: self._on_answer_with,
            CHECK: self._on_check,
            MERGE: self._on_merge,
            RESPOND: self._on_respond,
            PAIR_ANSWER: self._on_pair_answer,
            PAIR_CHECK: self._on_pair_check,
        }

    def sample(self, doc: Document) -> Sample:
        return Sample(doc.id, doc.text, source=doc.source)

    # -- 1. initial instruction -----------------------------------------------------------------------------------

    def begin(self, s: Sample) -> list[Request]:
        return [self.ask(s, BACK_TRANSLATE, 0, {"document": s.document})]

    def _on_back_translate(self, s: Sample, request: Request, value: str | Fault) -> Next:
        if isinstance(value, Fault):
            return Rejected(BACK_TRANSLATE, value.reason)
        s.instruction = value
        return [self.ask(s, SCORE, 0, {"instruction": s.instruction})]

    def _on_score(self, s: Sample, request: Request, value: int | Fault) -> Next:
        if isinstance(value, Fault):
            return Rejected(SCORE, value.reason)
        s.score = value
        requests = [self.ask(s, REFINE, 0, {"instruction": s.instruction, "document": s.document})]
        if self.config.judge == "model":
            requests.append(self.ask(s, REFERENCE, 0, {"text": s.instruction}))
        return requests + self._next_round(s, requests)

    def _on_initial(self, s: Sample, request: Request, value: str | Fault) -> Next:
        """The refinement, the reference or round 1's answer (the calls the first proposal waits for)."""
        if isinstance(value, Fault):
            s.faults[request.stage] = value.reason
        elif request.stage == REFINE:
            s.refined = value
        elif request.stage == REFERENCE:
            s.reference = value
        else:
            s.answer = s.rounds[s.round].answer = value
        return self._propose_when_ready(s)

    # -- 2. iterative refinement ----------------------------------------------------------------------------------

    def _next_round(self, s: Sample, asked: list[Request] = ()) -> list[Request]:
        """Open the next round: its answer, or straight its proposal. `asked`: requests going out with it."""
        s.round += 1
        limit = 1 if self.config.one_shot else self.config.rounds
        if s.round > limit:
            s.rounds_end = f"completed {limit} rounds"
            s.phase = Phase.SETTLING
            return []
        s.phase = Phase.ROUNDS
        s.rounds[s.round] = Round(s.round, answer=s.answer)
        if self.config.judge != "none" and s.answer is None:
            return [self.ask(s, ANSWER, s.round, {"text": self._current_instruction(s)})]
        # Round 1 without a judge: the proposal goes out once the refinement is back (`_propose_when_ready`).
        if self.waiting_on(s, WAITS_FOR[PROPOSE], asked):
            return []
        short = self._short_answer(s)
        if short is not None:  # the answer reused from the last round's check; a constraint exists by then
            ended = self._end_rounds(s, ANSWER, short)
            assert isinstance(ended, list)
            return ended
        return [self._propose(s)]

    def _propose_when_ready(self, s: Sample) -> Next:
        """The proposal once the calls it waits for are back, their faults weighed in WAITS_FOR's order: a failed
        refinement or reference drops the sample, a failed answer ends the rounds."""
        if self.waiting_on(s, WAITS_FOR[PROPOSE]):
            return []
        for stage in WAITS_FOR[PROPOSE]:
            if stage in s.faults:
                if stage == ANSWER:
                    return self._end_rounds(s, ANSWER, s.faults[ANSWER])
                return Rejected(stage, s.faults[stage])
        short = self._short_answer(s)
        if short is not None:
            return self._end_rounds(s, ANSWER, short)
        return [self._propose(s)]

    def _short_answer(self, s: Sample) -> str | None:
        """Why the round's student answer is too short for the judge to compare, if it is."""
        answer = s.rounds[s.round].answer
        n = word_count(answer) if answer is not None else None
        if n is None or n >= self.config.min_student_words:
            return None
        return f"the student's answer has {n} words, fewer than {self.config.min_student_words}"

    def _propose(self, s: Sample) -> Request:
        used = {c.type for c in s.constraints}
        offered = [t for t in types(self.prompts) if type_name(t, self.config) not in used]
        self.rng(s, f"{PROPOSE}/{s.round}").shuffle(offered)
        allowed = [type_name(t, self.config) for t in offered]
        inputs: dict[str, str | int] = {"instruction": s.instruction, "types": format_types(offered, allowed)}
        args: dict[str, Any] = {"allowed": allowed}
        if self.config.judge != "none":
            # The judge always sees the INITIAL instruction (authors' code); the answer varies per round.
            inputs.update(reference=self._reference(s), answer=s.answer or "")
        if self.config.one_shot:
            args["count"] = inputs["count"] = min(self.config.rounds, len(offered))
        return self.ask(s, PROPOSE, s.round, inputs, args)

    def _on_propose(self, s: Sample, request: Request, value: Any) -> Next:
        if s.phase is not Phase.ROUNDS:
            raise FlowError(f"{s.doc_id}: a proposal came back in phase {s.phase.value}")
        if isinstance(value, Fault):
            return self._end_rounds(s, PROPOSE, value.reason)
        if self.config.one_shot:
            found = [Constraint(i, kind, text) for i, (kind, text) in enumerate(value, 1)]
            s.constraints.extend(found)
            for c in found:
                s.rounds[c.round] = Round(c.round, answer=s.rounds[1].answer, accepted=c)
            s.round = len(found)
            return self._after_accept(s)
        kind, text = value
        s.rounds[s.round].proposed = Constraint(s.round, kind, text)
        if s.constraints:
            return [self.ask(s, DEDUP, s.round, {
                "constraint": text, "existing": format_numbered([c.text for c in s.constraints])},
                {"constraint": text})]
        return self._accept(s)

    def _on_dedup(self, s: Sample, request: Request, value: bool | Fault) -> Next:
        if isinstance(value, Fault):
            return self._end_rounds(s, DEDUP, value.reason)
        return self._accept(s)

    def _accept(self, s: Sample) -> list[Request]:
        current = s.rounds[s.round]
        current.accepted, current.proposed = current.proposed, None
        s.constraints.append(current.accepted)
        return self._after_accept(s)

    def _after_accept(self, s: Sample) -> list[Request]:
        if self.config.constraint_set == "all":
            # Without the check step the next round asks the student afresh for I_r.
            s.answer = None
            return self._next_round(s)
        return [self.ask(s, ANSWER_WITH, s.round, {"text": self._current_instruction(s)})]

    def _on_answer_with(self, s: Sample, request: Request, value: str | Fault) -> Next:
        if isinstance(value, Fault):
            return self._end_rounds(s, ANSWER_WITH, value.reason)
        s.answer = value if self.config.reuse_answer else None
        # The check decides membership of C' only for the constraints new this round (Algorithm 2, line 7).
        s.rounds[s.round].checking, s.checked = range(s.checked, len(s.constraints)), len(s.constraints)
        check = self.ask(s, CHECK, s.round, {
            "instruction": self._current_instruction(s), "answer": value,
            "constraints": "\n".join(c.text for c in s.constraints)}, {"count": len(s.constraints)})
        return [check, *self._next_round(s)]

    def _on_check(self, s: Sample, request: Request, value: list[int] | Fault) -> Next:
        checked = s.rounds[request.n]
        decides, checked.checking = checked.checking, None
        if isinstance(value, Fault):
            # Authors' rule: an unreadable check drops this round's check, not the sample; unchecked constraints
            # stay in C but never enter C'.
            s.level_drops.append({"level": request.n, "stage": CHECK, "reason": f"check unreadable: {value.reason}"})
            return []
        for i in decides:
            c = s.constraints[i]
            c.score = value[i]
            c.failed = c.score < self.config.pass_score
        return []

    def _end_rounds(self, s: Sample, stage: str, reason: str) -> Next:
        s.rounds_end = f"round {s.round} {stage}: {reason}"
        s.phase = Phase.SETTLING
        if not s.constraints:
            return Rejected(stage, f"round {s.round}: {reason}")
        return []

    # -- 3. final records, one per level ----------------------------------------------------------------------------

    def unlocked(self, s: Sample) -> list[Request]:
        """Merge requests for the levels whose rounds are settled: each constraint up to the level accepted and, for
        C', out of its check (scored, or never to be: unreadable, or the rounds ended first)."""
        started = []
        while any(c.round == s.next_level for c in s.constraints) and self._settled(s, s.next_level):
            k = s.next_level
            s.next_level += 1
            # Each distinct constraint once: a text proposed twice (the duplicate check said no) is one requirement.
            texts: set[str] = set()
            chosen = [c for c in s.constraints if c.round <= k and (self.config.constraint_set == "all" or c.failed)
                      and not (c.text in texts or texts.add(c.text))]
            previous = s.levels[max(s.levels)] if s.levels else None
            words = sum(word_count(c.text) for c in chosen)
            if not chosen:
                unread = any(c.failed is None for c in s.constraints if c.round <= k)
                s.level_drops.append({"level": k, "stage": CHECK, "reason": "no constraint is known to be failed: "
                                      "a check could not be read" if unread else "the student met every constraint"})
            elif chosen == previous and not self.config.keep_unchanged_levels:
                new = "failed constraint" if self.config.constraint_set == "failed" else "constraint"
                s.level_drops.append({"level": k, "stage": CHECK, "reason": f"no new {new} at this level"})
            elif words < self.config.level_constraint_words:
                s.level_drops.append({"level": k, "stage": MERGE, "reason": f"the level's constraints have {words} "
                                      f"words in all, fewer than {self.config.level_constraint_words}"})
            else:
                s.levels[k] = chosen
                started.append(self._merge(s, k))
        return started

    def _settled(self, s: Sample, k: int) -> bool:
        if self.config.constraint_set == "all":
            return True
        checking = {i for r in s.rounds.values() if r.checking is not None for i in r.checking}
        return all(i not in checking and (i < s.checked or s.rounds_end)
                   for i, c in enumerate(s.constraints) if c.round <= k)

    def _merge(self, s: Sample, k: int) -> Request:
        chosen = s.levels[k]
        rng = self.rng(s, f"{MERGE}/{k}")
        pool = merge_examples(self.prompts)
        examples = rng.sample(pool, min(self.config.few_shot, len(pool)))
        order = [c.text for c in chosen]
        rng.shuffle(order)
        return self.ask(s, MERGE, k, {"instruction": s.instruction, "constraints": format_numbered(order),
                                      "examples": format_examples(examples)})

    def _on_merge(self, s: Sample, request: Request, value: str | Fault) -> Next:
        if isinstance(value, Fault):
            return self._level_failed(s, request.n, MERGE, value.reason)
        s.merged[request.n] = value
        respond = self.ask(s, RESPOND, request.n, {"text": value})
        if not self.config.preference_pairs:
            return [respond]
        # The pair's student answer needs only the merged instruction: it goes out beside the final answer.
        return [respond, self.ask(s, PAIR_ANSWER, request.n, {"text": value})]

    def _on_respond(self, s: Sample, request: Request, value: str | Fault) -> Next:
        if isinstance(value, Fault):
            return self._level_failed(s, request.n, RESPOND, value.reason)
        s.responses[request.n] = value
        return []

    def _on_pair_answer(self, s: Sample, request: Request, value: str | Fault) -> Next:
        k = request.n
        if isinstance(value, Fault):
            s.pair_faults[k] = f"the student's answer: {value.reason}"
            return []
        s.pair_answers[k] = value
        texts = [c.text for c in s.levels[k]]
        return [self.ask(s, PAIR_CHECK, k, {"instruction": s.merged[k], "answer": value,
                                            "constraints": "\n".join(texts)}, {"count": len(texts)})]

    def _on_pair_check(self, s: Sample, request: Request, value: list[int] | Fault) -> Next:
        if isinstance(value, Fault):
            s.pair_faults[request.n] = f"the check of the student's answer: {value.reason}"
        else:
            s.pair_scores[request.n] = value
        return []

    @staticmethod
    def _level_failed(s: Sample, k: int, stage: str, reason: str) -> list[Request]:
        s.level_drops.append({"level": k, "stage": stage, "reason": reason})
        return []

    def end_refused(self, s: Sample) -> Rejected:
        s.phase = Phase.ENDED
        s.level_drops.sort(key=_level)
        return dataclasses.replace(s.refusal, dropped=s.level_drops)

    def finish(self, s: Sample) -> Done | Rejected:
        s.phase = Phase.ENDED
        # Levels finish in any order; the output does not.
        s.level_drops.sort(key=_level)
        if s.responses:
            # Built last: a record's meta tells how the rounds ended.
            levels = sorted(s.responses)
            return Done([self._record(s, k, s.responses[k]) for k in levels], s.level_drops,
                        [p for k in levels if (p := self._pair(s, k)) is not None])
        last = s.level_drops[-1]
        return Rejected(last["stage"], f"no level produced a record; level {last['level']}: {last['reason']}",
                       s.level_drops)

    def _record(self, s: Sample, level: int, response: str) -> dict[str, Any]:
        chosen, merged = s.levels[level], s.merged[level]
        asked = {id(c) for c in chosen}
        # Each constraint: whether the instruction asks it (merged), the check code can make of it, and whether the
        # answer meets the ones asked.
        constraints = [{"round": c.round, "type": c.type, "text": c.text, "failed": c.failed, "score": c.score,
                        "merged": id(c) in asked,
                        **checks.assess(checks.parse(c.text), response if id(c) in asked else None)}
                       for c in s.constraints if c.round <= level]
        return record(merged, response, {
            "doc_id": s.doc_id,
            "split": f"level_{level}",
            "level": level,
            "constraint_set": self.config.constraint_set,
            "constraints": constraints,
            "checks": checks.tally(constraints),
            "merged_constraints": [c.text for c in chosen],
            "initial_instruction": s.instruction,
            "instruction_score": s.score,
            "rounds_end": s.rounds_end,
            **({"pair": self._pair_outcome(s, level)} if self.config.preference_pairs else {}),
        })

    def _pair_outcome(self, s: Sample, k: int) -> str:
        """What became of level k's preference pair: "made", or why not."""
        if k in s.pair_faults:
            return s.pair_faults[k]
        if k not in s.pair_scores:
            return "no student answer"
        if min(s.pair_scores[k]) >= self.config.pass_score:
            return "the student met every constraint"
        if k in s.responses and " ".join(s.pair_answers[k].split()) == " ".join(s.responses[k].split()):
            return "the student's answer is the final answer itself"
        return "made"

    def _pair(self, s: Sample, k: int) -> dict[str, Any] | None:
        if not self.config.preference_pairs or self._pair_outcome(s, k) != "made":
            return None
        scored = [{"text": c.text, "type": c.type, "round": c.round, "score": score}
                  for c, score in zip(s.levels[k], s.pair_scores[k])]
        return {"prompt": s.merged[k], "chosen": s.responses[k], "rejected": s.pair_answers[k], "meta": {
            "doc_id": s.doc_id, "split": f"level_{k}", "level": k,
            "failed_constraints": [c for c in scored if c["score"] < self.config.pass_score],
            "constraints": scored, "initial_instruction": s.instruction}}

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _current_instruction(self, s: Sample) -> str:
        return append_constraints(s.instruction, [c.text for c in s.constraints])

    def _reference(self, s: Sample) -> str:
        return s.reference if self.config.judge == "model" else s.refined


def _level(drop: dict[str, Any]) -> int:
    return drop["level"]
