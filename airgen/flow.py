"""The AIR method as a pure state machine: no engine, no file, no clock.

One `Sample` per document. `Flow.start(sample)` gives its first requests; each `Flow.advance(sample, key,
completion)` consumes the completion of one pending request and gives the requests it unlocks (none while the sample
waits on other calls in flight), or ends the sample with `Done` (records) or `Dropped` (stage and reason). All rules
live here (paper section 3, Algorithm 2):

  1. initial instruction  back_translate -> score (keep >= threshold) -> refine [+ reference, judge="model"]
  2. rounds 1..R          answer -> propose -> dedup (round >= 2) -> answer_with -> check
  3. levels 1..K          merge -> respond: one record per level

A sample runs its calls in parallel wherever the method allows, so that few documents still keep an engine's batch
full: the refinement, the reference and round 1's answer run together (each needs only the instruction), round r's
check runs alongside round r+1 (nothing in a round reads a check's scores), and level k's merge -> respond starts as
soon as rounds 1..k are settled (constraint accepted and, for C', checked), alongside the later rounds. The score
goes first, alone, so that the samples it drops cost nothing more. Results do not depend on the order completions
come back in, and randomness (type order, few-shot picks, merge order) comes from a generator seeded by (seed, doc id,
call key), so replaying a journal through the flow makes the same requests in any order; resume relies on that.
"""
from __future__ import annotations

import dataclasses
import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from airgen import prompts as P
from airgen.calls import Completion, Request, Sampling
from airgen.config import FlowConfig

BACK_TRANSLATE = "back_translate"
REFINE = "refine"
SCORE = "score"
REFERENCE = "reference"
ANSWER = "answer"
PROPOSE = "propose"
DEDUP = "dedup"
ANSWER_WITH = "answer_with"
CHECK = "check"
MERGE = "merge"
RESPOND = "respond"
STAGES = (BACK_TRANSLATE, SCORE, REFINE, REFERENCE, ANSWER, PROPOSE, DEDUP, ANSWER_WITH, CHECK, MERGE, RESPOND)
# What a round's proposal reads: it waits until none of these is in flight.
_BEFORE_PROPOSE = (REFINE, REFERENCE, ANSWER)


class FlowError(RuntimeError):
    """An event the state machine cannot accept (a bug in the caller, never bad model output)."""


@dataclass(slots=True)
class Constraint:
    round: int
    type: str
    text: str
    # None until checked (or when the check step is off or its answer could not be read).
    failed: bool | None = None
    score: int | None = None


@dataclass(slots=True)
class Sample:
    """Everything the flow knows about one document. Only the flow mutates it."""

    doc_id: str
    document: str
    source: str = ""  # where the document was read, for rejection lines
    started: bool = False
    pending: dict[str, Request] = field(default_factory=dict)  # key -> request in flight
    calls: int = 0
    instruction: str = ""
    refined: str = ""
    score: int = 0
    reference: str = ""
    round: int = 0
    # The student's latest answer to the instruction with every accepted constraint (I_{round}), if known.
    answer: str | None = None
    # stage -> why its output was rejected, for the calls a proposal waits on (decided once none is in flight).
    faults: dict[str, str] = field(default_factory=dict)
    proposed: Constraint | None = None
    constraints: list[Constraint] = field(default_factory=list)
    checked: int = 0  # constraints[:checked] have been sent to a check step
    checks: dict[int, range] = field(default_factory=dict)  # round -> the constraints its pending check decides
    rounds_end: str = ""
    next_level: int = 1  # levels below it are decided: started (in `levels`) or dropped (in `level_drops`)
    levels: dict[int, list[Constraint]] = field(default_factory=dict)  # level -> the constraints it merges
    merged: dict[int, str] = field(default_factory=dict)
    responses: dict[int, str] = field(default_factory=dict)
    level_drops: list[dict[str, Any]] = field(default_factory=list)
    # Set when an engine refused one of the sample's requests: the sample ends with it once its other calls return.
    refusal: Dropped | None = None


@dataclass(frozen=True, slots=True)
class Done:
    records: list[dict[str, Any]]
    # Levels that produced no record, each {"level", "stage", "reason"}; the sample itself succeeded.
    level_drops: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Dropped:
    stage: str
    reason: str
    level_drops: list[dict[str, Any]] = field(default_factory=list)


# Requests to ask (an empty list: wait for the calls in flight), or the sample's end.
Step = list[Request] | Done | Dropped


class _Reject(Exception):
    """A completion the method does not accept; the caller decides whether it ends the sample or the round."""


def replay(flow: "Flow", sample: Sample, requests: list[Request],
           answer: Callable[[Request], Completion | None]) -> Step:
    """Advance `sample` through every request `answer` knows (a journal's completions); give what is left to ask,
    or the sample's end."""
    todo, ask = list(requests), []
    while todo:
        request = todo.pop()
        completion = answer(request)
        if completion is None:
            ask.append(request)
            continue
        step = flow.advance(sample, request.key, completion)
        if not isinstance(step, list):
            return step
        todo.extend(step)
    return ask


class Flow:
    def __init__(self, config: FlowConfig, prompts: P.PromptSet, seed: int = 0):
        self.config = config
        self.prompts = prompts
        self.seed = seed
        self._handlers = {
            BACK_TRANSLATE: self._on_back_translate,
            REFINE: self._on_refine,
            SCORE: self._on_score,
            REFERENCE: self._on_reference,
            ANSWER: self._on_answer,
            PROPOSE: self._on_propose,
            DEDUP: self._on_dedup,
            ANSWER_WITH: self._on_answer_with,
            CHECK: self._on_check,
            MERGE: self._on_merge,
            RESPOND: self._on_respond,
        }

    # -- public API -------------------------------------------------------------------------------------------

    def start(self, sample: Sample) -> list[Request]:
        if sample.started:
            raise FlowError(f"{sample.doc_id}: already started")
        sample.started = True
        return [self._request(
            sample, BACK_TRANSLATE, 0, "guidance", self.prompts.messages("back_translate", document=sample.document),
            regex=P.SENTENCES_REGEX if self.config.sentence_instructions else None,
        )]

    def advance(self, sample: Sample, key: str, completion: Completion) -> Step:
        request = self._take(sample, key)
        if sample.refusal is not None:
            return self._settle(sample, [])
        cut = ""
        if completion.finish_reason == "length":
            cut = f"output cut at max_tokens={request.sampling.max_tokens}"
        return self._settle(sample, self._handlers[request.stage](sample, request, completion.text, cut))

    def refused(self, sample: Sample, key: str, reason: str) -> Step:
        """The engine refused a request (a prompt longer than its context, say): the sample is dropped at that
        stage, once the calls it still has in flight have returned."""
        request = self._take(sample, key)
        if sample.refusal is None:
            sample.refusal = Dropped(request.stage, f"engine refused the request: {reason}")
        return self._settle(sample, [])

    def _take(self, sample: Sample, key: str) -> Request:
        request = sample.pending.pop(key, None)
        if request is None:
            raise FlowError(f"{sample.doc_id}: no pending request {key!r}")
        sample.calls += 1
        return request

    def _settle(self, s: Sample, step: Step) -> Step:
        """After each event: start the levels it settled; with nothing in flight, the sample is over."""
        if isinstance(step, list) and s.refusal is None:
            step = step + self._start_levels(s)
        if isinstance(step, list) and not s.pending:
            if s.refusal is not None:
                s.level_drops.sort(key=_level)
                step = dataclasses.replace(s.refusal, level_drops=s.level_drops)
            else:
                step = self._finish(s)
        if not isinstance(step, list) and s.pending:
            raise FlowError(f"{s.doc_id}: ended with calls in flight: {sorted(s.pending)}")
        return step

    # -- 1. initial instruction -----------------------------------------------------------------------------------

    def _on_back_translate(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        try:
            s.instruction = self._words(P.parse_instruction(self._text(text, cut)), self.config.instruction_words,
                                        "instruction")
        except (P.ParseError, _Reject) as e:
            return Dropped(BACK_TRANSLATE, str(e))
        return [self._request(s, SCORE, 0, "guidance",
                              self.prompts.messages("score_instruction", instruction=s.instruction),
                              regex=P.SCORE_REGEX)]

    def _on_score(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        try:
            s.score = P.parse_score(self._text(text, cut))
        except (P.ParseError, _Reject) as e:
            return Dropped(SCORE, str(e))
        if s.score < self.config.score_threshold:
            return Dropped(SCORE, f"score {s.score}/5 below threshold {self.config.score_threshold}")
        requests = [self._request(s, REFINE, 0, "guidance", self.prompts.messages(
            "refine_document", instruction=s.instruction, document=s.document))]
        if self.config.judge == "model":
            requests.append(self._request(s, REFERENCE, 0, "guidance", self.prompts.chat(s.instruction)))
        return requests + self._next_round(s)

    def _on_refine(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        try:
            s.refined = P.parse_refined(self._free_text(text, cut))
            self._words(s.refined, (self.config.min_refined_words, None), "refined document")
        except (P.ParseError, _Reject) as e:
            s.faults[REFINE] = str(e)
        return self._propose_when_ready(s)

    def _on_reference(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        try:
            s.reference = self._words(self._free_text(text, cut), (self.config.min_answer_words, None),
                                      "reference answer")
        except _Reject as e:
            s.faults[REFERENCE] = str(e)
        return self._propose_when_ready(s)

    # -- 2. iterative refinement ----------------------------------------------------------------------------------

    def _next_round(self, s: Sample) -> list[Request]:
        s.round += 1
        limit = 1 if self.config.one_shot else self.config.rounds
        if s.round > limit:
            s.rounds_end = f"completed {limit} rounds"
            return []
        if self.config.judge != "none" and s.answer is None:
            return [self._request(s, ANSWER, s.round, "student", self.prompts.chat(self._current_instruction(s)))]
        # Round 1 without a judge: the proposal goes out once the refinement is back (`_propose_when_ready`).
        return [] if self._awaiting(s) else [self._propose(s)]

    def _on_answer(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        try:
            s.answer = self._free_text(text, cut)
        except _Reject as e:
            s.faults[ANSWER] = str(e)
        return self._propose_when_ready(s)

    def _propose_when_ready(self, s: Sample) -> Step:
        """The proposal once the calls it reads are back. Their faults are weighed in stage order, so the outcome
        does not depend on which came back first: a failed refinement or reference drops the sample, a failed answer
        ends the rounds."""
        if self._awaiting(s):
            return []
        for stage in (REFINE, REFERENCE):
            if stage in s.faults:
                return Dropped(stage, s.faults[stage])
        if ANSWER in s.faults:
            return self._end_rounds(s, ANSWER, s.faults[ANSWER])
        return [self._propose(s)]

    @staticmethod
    def _awaiting(s: Sample) -> bool:
        return any(r.stage in _BEFORE_PROPOSE for r in s.pending.values())

    def _propose(self, s: Sample) -> Request:
        used = {c.type for c in s.constraints}
        types = [t for t in self.prompts.types if t.name not in used]
        self._rng(s, f"{PROPOSE}/{s.round}").shuffle(types)
        names = [t.name for t in types]
        listing = P.format_types(types)
        if self.config.one_shot:
            count = min(self.config.rounds, len(types))
            return self._request(s, PROPOSE, s.round, "guidance", self.prompts.messages(
                "propose_constraints_oneshot", instruction=s.instruction, reference=self._reference(s),
                answer=s.answer or "", types=listing, count=str(count)), regex=P.propose_many_regex(names, count))
        if self.config.judge == "none":
            messages = self.prompts.messages("propose_constraint_blind", instruction=s.instruction, types=listing)
        else:
            # The judge always sees the INITIAL instruction (authors' code); the answer varies per round.
            messages = self.prompts.messages("propose_constraint", instruction=s.instruction,
                                             reference=self._reference(s), answer=s.answer or "", types=listing)
        return self._request(s, PROPOSE, s.round, "guidance", messages,
                             regex=P.propose_regex(names, none=self.config.judge_may_decline))

    def _on_propose(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        allowed = [t.name for t in self.prompts.types if t.name not in {c.type for c in s.constraints}]
        try:
            if self.config.one_shot:
                pairs = P.parse_constraints(self._text(text, cut), allowed, min(self.config.rounds, len(allowed)))
                kept = [(kind, c) for kind, c in pairs if self._fits(c, self.config.constraint_words)]
                # Constraint i of one call plays the part of round i, so levels work as in the iterative method.
                found = [Constraint(i, kind, c) for i, (kind, c) in enumerate(kept, 1)]
                if not found:
                    raise _Reject(f"no proposed constraint has {self._span(self.config.constraint_words)} words")
                s.constraints.extend(found)
                s.round = len(found)
                return self._after_accept(s)
            kind, constraint = P.parse_constraint(self._text(text, cut), allowed)
            s.proposed = Constraint(s.round, kind, self._constraint_words(constraint))
        except (P.ParseError, _Reject) as e:
            return self._end_rounds(s, PROPOSE, str(e))
        if s.constraints:
            return [self._request(s, DEDUP, s.round, "guidance", self.prompts.messages(
                "dedup_constraint", constraint=s.proposed.text,
                existing=P.format_numbered([c.text for c in s.constraints])), choice=P.DUPLICATE_CHOICES)]
        return self._accept(s)

    def _on_dedup(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        try:
            if P.parse_duplicate(self._text(text, cut)):
                raise _Reject(f"duplicate of an earlier constraint: {s.proposed.text!r}")
        except (P.ParseError, _Reject) as e:
            return self._end_rounds(s, DEDUP, str(e))
        return self._accept(s)

    def _accept(self, s: Sample) -> list[Request]:
        s.constraints.append(s.proposed)
        s.proposed = None
        return self._after_accept(s)

    def _after_accept(self, s: Sample) -> list[Request]:
        if self.config.constraint_set == "all":
            # Without the check step the next round asks the student afresh for I_r.
            s.answer = None
            return self._next_round(s)
        return [self._request(s, ANSWER_WITH, s.round, "student", self.prompts.chat(self._current_instruction(s)))]

    def _on_answer_with(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        try:
            answer = self._free_text(text, cut)
        except _Reject as e:
            return self._end_rounds(s, ANSWER_WITH, str(e))
        s.answer = answer if self.config.reuse_answer else None
        # The check decides membership of C' only for the constraints new this round (Algorithm 2, line 7).
        s.checks[s.round], s.checked = range(s.checked, len(s.constraints)), len(s.constraints)
        check = self._request(s, CHECK, s.round, "guidance", self.prompts.messages(
            "check_constraints", instruction=self._current_instruction(s), answer=answer,
            constraints="\n".join(c.text for c in s.constraints)), regex=P.check_regex(len(s.constraints)))
        return [check, *self._next_round(s)]

    def _on_check(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        decides = s.checks.pop(request.n)
        try:
            scores = P.parse_check(self._text(text, cut), decides.stop)
        except (P.ParseError, _Reject) as e:
            # Authors' rule: an unreadable check drops this round's check, not the sample; unchecked constraints
            # stay in C but never enter C'.
            s.level_drops.append({"level": request.n, "stage": CHECK, "reason": f"check unreadable: {e}"})
            return []
        for i in decides:
            c = s.constraints[i]
            c.score = scores[i]
            c.failed = c.score < self.config.pass_score
        return []

    def _end_rounds(self, s: Sample, stage: str, reason: str) -> Step:
        s.rounds_end = f"round {s.round} {stage}: {reason}"
        if not s.constraints:
            return Dropped(stage, f"round {s.round}: {reason}")
        return []

    # -- 3. final records, one per level ----------------------------------------------------------------------------

    def _start_levels(self, s: Sample) -> list[Request]:
        """Merge requests for the levels whose rounds are settled: each constraint up to the level accepted and, for
        C', out of its check (scored, or never to be: unreadable, or the rounds ended first)."""
        started = []
        while any(c.round == s.next_level for c in s.constraints) and self._settled(s, s.next_level):
            k = s.next_level
            s.next_level += 1
            chosen = [c for c in s.constraints if c.round <= k and (self.config.constraint_set == "all" or c.failed)]
            previous = s.levels[max(s.levels)] if s.levels else None
            if not chosen:
                s.level_drops.append({"level": k, "stage": CHECK, "reason": "the student met every constraint"})
            elif chosen == previous:
                s.level_drops.append({"level": k, "stage": CHECK, "reason": "no new failed constraint at this level"})
            else:
                s.levels[k] = chosen
                started.append(self._merge(s, k))
        return started

    def _settled(self, s: Sample, k: int) -> bool:
        if self.config.constraint_set == "all":
            return True
        checking = {i for decides in s.checks.values() for i in decides}
        return all(i not in checking and (i < s.checked or s.rounds_end)
                   for i, c in enumerate(s.constraints) if c.round <= k)

    def _merge(self, s: Sample, k: int) -> Request:
        chosen = s.levels[k]
        rng = self._rng(s, f"{MERGE}/{k}")
        examples = rng.sample(self.prompts.merge_examples, min(self.config.few_shot, len(self.prompts.merge_examples)))
        order = [c.text for c in chosen]
        rng.shuffle(order)
        return self._request(s, MERGE, k, "guidance", self.prompts.messages(
            "merge_constraints", instruction=s.instruction, constraints=P.format_numbered(order),
            examples=P.format_examples(examples)), max_tokens=self.config.merge_max_tokens,
            regex=P.SENTENCES_REGEX if self.config.sentence_instructions else None)

    def _on_merge(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        k = request.n
        try:
            s.merged[k] = self._words(P.parse_merged(self._text(text, cut)), self.config.merged_words,
                                      "merged instruction")
        except (P.ParseError, _Reject) as e:
            return self._level_failed(s, k, MERGE, str(e))
        return [self._request(s, RESPOND, k, "guidance", self.prompts.chat(s.merged[k]))]

    def _on_respond(self, s: Sample, request: Request, text: str, cut: str) -> Step:
        k = request.n
        try:
            response = self._words(self._free_text(text, cut), (self.config.min_answer_words, None), "response")
        except _Reject as e:
            return self._level_failed(s, k, RESPOND, str(e))
        s.responses[k] = response
        return []

    @staticmethod
    def _level_failed(s: Sample, k: int, stage: str, reason: str) -> list[Request]:
        s.level_drops.append({"level": k, "stage": stage, "reason": reason})
        return []

    def _finish(self, s: Sample) -> Done | Dropped:
        # Levels finish in any order; the output does not.
        s.level_drops.sort(key=_level)
        if s.responses:
            # Built last: a record's meta tells how the rounds ended.
            return Done([self._record(s, k, s.responses[k]) for k in sorted(s.responses)], s.level_drops)
        last = s.level_drops[-1]
        return Dropped(last["stage"], f"no level produced a record; level {last['level']}: {last['reason']}",
                       s.level_drops)

    def _record(self, s: Sample, level: int, response: str) -> dict[str, Any]:
        chosen, merged = s.levels[level], s.merged[level]
        return {
            "instruction": merged,
            "input": "",
            "output": response,
            "messages": [{"role": "user", "content": merged}, {"role": "assistant", "content": response}],
            "meta": {
                "doc_id": s.doc_id,
                "level": level,
                "constraint_set": self.config.constraint_set,
                "constraints": [
                    {"round": c.round, "type": c.type, "text": c.text, "failed": c.failed, "score": c.score}
                    for c in s.constraints if c.round <= level
                ],
                "merged_constraints": [c.text for c in chosen],
                "initial_instruction": s.instruction,
                "instruction_score": s.score,
                "rounds_end": s.rounds_end,
            },
        }

    # -- helpers -------------------------------------------------------------------------------------------------------

    def _request(self, s: Sample, stage: str, n: int, role: str, messages: tuple[dict, ...], *,
                 regex: str | None = None, choice: tuple[str, ...] | None = None,
                 max_tokens: int | None = None) -> Request:
        structured = self.config.structured
        if regex is not None and self.config.short_lines:
            regex = P.shorten(regex)
        request = Request(
            key=f"{s.doc_id}/{stage}/{n}",
            role=role,  # type: ignore[arg-type]
            stage=stage,
            messages=messages,
            sampling=Sampling(
                max_tokens=max_tokens or self.config.max_tokens,
                temperature=self.config.temperature,
                top_p=self.config.top_p,
                repetition_penalty=self.config.repetition_penalty,
                regex=regex if structured else None,
                choice=choice if structured else None,
            ),
            progress=s.calls,
        )
        s.pending[request.key] = request
        return request

    def _rng(self, s: Sample, key: str) -> random.Random:
        digest = hashlib.blake2b(f"{self.seed}/{s.doc_id}/{key}".encode(), digest_size=8).digest()
        return random.Random(int.from_bytes(digest, "big"))

    def _current_instruction(self, s: Sample) -> str:
        return P.with_constraints(s.instruction, [c.text for c in s.constraints])

    def _reference(self, s: Sample) -> str:
        return s.reference if self.config.judge == "model" else s.refined

    def _free_text(self, text: str, cut: str) -> str:
        return self._text(text, "" if self.config.keep_cut_text else cut)

    @staticmethod
    def _text(text: str, cut: str) -> str:
        if cut:
            raise _Reject(cut)
        if not text.strip():
            raise _Reject("empty output")
        return text.strip()

    def _constraint_words(self, text: str) -> str:
        return self._words(text, self.config.constraint_words, "constraint")

    @staticmethod
    def _fits(text: str, span: tuple[int, int]) -> bool:
        return span[0] <= P.word_count(text) <= span[1]

    @staticmethod
    def _span(span: tuple[int, int | None]) -> str:
        return f"{span[0]}..{span[1]}" if span[1] is not None else f">= {span[0]}"

    def _words(self, text: str, span: tuple[int, int | None], what: str) -> str:
        n = P.word_count(text)
        if n < span[0] or (span[1] is not None and n > span[1]):
            raise _Reject(f"{what} has {n} words, outside {self._span(span)}")
        return text


def _level(drop: dict[str, Any]) -> int:
    return drop["level"]
