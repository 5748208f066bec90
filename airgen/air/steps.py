"""The AIR method's steps, one unit each, in the paper's order (section 3, Algorithm 2).

Each `Step` reads as input -> output: the role that answers, its template in `prompts/` with the fields it fills,
its decode-time format, its parser and the rule that accepts or rejects the parsed value. The flow (`air.flow`)
decides when each step is asked; this module decides what it asks and what it accepts.

The decode formats constrain fixed-format answers where the engine can. They stay inside the regex subset that
vLLM's structured-output backends accept: no lookarounds, no backreferences, no lazy quantifiers; groups are plain
parentheses.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from airgen.air import authors, parsers
from airgen.air.prompt_data import ConstraintType, MergeExample
from airgen.air.settings import FlowConfig
from airgen.method.parsing import word_count
from airgen.method.step import SHORT_LINE_CHARS, Format, Reject, Step, regex_literal

BACK_TRANSLATE = "back_translate"
SCORE = "score"
REFINE = "refine"
REFERENCE = "reference"
ANSWER = "answer"
PROPOSE = "propose"
DEDUP = "dedup"
ANSWER_WITH = "answer_with"
CHECK = "check"
MERGE = "merge"
RESPOND = "respond"
PAIR_ANSWER = "pair_answer"
PAIR_CHECK = "pair_check"
# The method's order, by part: reports and the stage-barrier bench list stages in it.
INITIAL_STAGES = (BACK_TRANSLATE, SCORE, REFINE, REFERENCE)  # once per sample (n = 0)
ROUND_STAGES = (ANSWER, PROPOSE, DEDUP, ANSWER_WITH, CHECK)  # once per round (n = the round)
LEVEL_STAGES = (MERGE, RESPOND, PAIR_ANSWER, PAIR_CHECK)  # once per level (n = the level)
STAGES = INITIAL_STAGES + ROUND_STAGES + LEVEL_STAGES


# -- decode-time formats -------------------------------------------------------------------------------------------

# Unbounded repeats on purpose: xgrammar compiles a bounded one like [^\n]{1,800} into a state per count, which took
# over vLLM's 5 s compile limit; max_tokens bounds the length anyway.
_LINE = "[^\\n]+"
_CRITERION = "[^\\t\\n]+"  # a check line's text, before its TAB and score
# For small models that never end a line on their own: the same formats with free-text lines capped.
SHORT_LINE = f"[^\\n]{{1,{SHORT_LINE_CHARS}}}"
_SHORT_CRITERION = f"[^\\t\\n]{{1,{SHORT_LINE_CHARS}}}"
# One to three plain sentences on one line: the sentence end lets decoding stop (small models otherwise ramble).
_SENTENCE = "[A-Z][^\\n.?!]{2,150}[.?!]"
SENTENCES_REGEX = f"{_SENTENCE}( {_SENTENCE}){{0,2}}"
SCORE_REGEX = f"{_LINE}\\n{{1,2}}Score: [1-5]/5"
DUPLICATE_CHOICES: tuple[str, str] = ("Answer: Yes", "Answer: No")
_ANALYSIS_REGEX = f"\\*\\*Analysis\\*\\*: {_LINE}"
_CONSTRAINT_REGEX = f"\\*\\*Constraint\\*\\*: {_LINE}"


def shorten(regex: str) -> str:
    """`regex` with its free-text lines (and check-line texts) capped at 150 characters."""
    return regex.replace(_LINE, SHORT_LINE).replace(_CRITERION, _SHORT_CRITERION)


def _type_choice(type_names: Sequence[str], none: bool = True) -> str:
    """The alternation in sorted order: the prompt's list is shuffled per sample, but the engine compiles and caches
    one grammar per distinct regex, so the same set of types must give the same string."""
    if not type_names:
        raise ValueError("at least one constraint type name is needed")
    return "(" + "|".join(regex_literal(n) for n in [*sorted(type_names), *(["None"] if none else [])]) + ")"


def propose_regex(type_names: Sequence[str], none: bool = True) -> str:
    """The three-line judge answer, with the type restricted to `type_names` (or None, unless `none` is False)."""
    return (f"{_ANALYSIS_REGEX}\\n\\*\\*Selected Type\\*\\*: {_type_choice(type_names, none)}"
            f"\\n{_CONSTRAINT_REGEX}")


def propose_many_regex(type_names: Sequence[str], count: int) -> str:
    """The one-shot answer: the analysis line, then `count` type/constraint pairs (distinctness is the parser's job)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    pair = f"\\n\\*\\*Selected Type\\*\\*: {_type_choice(type_names)}\\n{_CONSTRAINT_REGEX}"
    return _ANALYSIS_REGEX + pair * count


def check_lines_regex(count: int) -> str:
    """`count` lines of criterion text, a TAB and a 0..3 score, separated by blank lines."""
    if count < 1:
        raise ValueError("count must be >= 1")
    return "\\n\\n".join([f"{_CRITERION}\\t[0-3]"] * count)


def _regex(config: FlowConfig, regex: str) -> Format:
    return Format(regex=shorten(regex) if config.short_lines else regex)


def _sentences(config: FlowConfig, args: Mapping[str, Any]) -> Format | None:
    return _regex(config, SENTENCES_REGEX) if config.sentence_instructions else None


# -- what goes into the templates ------------------------------------------------------------------------------------

def append_constraints(instruction: str, constraints: Sequence[str]) -> str:
    """The instruction as the student sees it: each constraint appended as its own paragraph."""
    return "\n\n".join([instruction.strip(), *(c.strip() for c in constraints)])


def format_types(types: Sequence[ConstraintType], names: Sequence[str] | None = None) -> str:
    """The type list the judge picks from, under `names` (default: the types' own). Unnumbered, so a judge echoes a
    bare name rather than '3. Name'."""
    return "\n".join(f"- {name}: {t.description}\n  Example: {t.example}"
                     for t, name in zip(types, names or [t.name for t in types]))


def type_name(kind: ConstraintType, config: FlowConfig) -> str:
    """A type as the judge is offered it: under `parsers = "authors"`, as the authors' code names it ("Inclusion
    Constraint"), the names their 2..6-word rule for a judge's type was written for."""
    return f"{kind.name} Constraint" if config.parsers == "authors" else kind.name


def format_numbered(items: Sequence[str]) -> str:
    return "\n".join(f"{i}. {item.strip()}" for i, item in enumerate(items, 1))


def format_examples(examples: Sequence[MergeExample]) -> str:
    """The few-shot block of the merge prompt, laid out like the task that follows it; empty for no examples."""
    if not examples:
        return ""
    blocks = [
        f"Example {i}\n[Instruction]\n{e.instruction}\n\n[Constraints]\n{format_numbered(e.constraints)}\n\n"
        f"[Merged Instruction]\n{e.merged}\n"
        for i, e in enumerate(examples, 1)
    ]
    return "Examples:\n\n" + "\n".join(blocks)


# -- accept rules ----------------------------------------------------------------------------------------------------

def span(words: tuple[int, int | None]) -> str:
    return f"{words[0]}..{words[1]}" if words[1] is not None else f">= {words[0]}"


def words_within(text: str, words: tuple[int, int | None], what: str) -> str:
    n = word_count(text)
    if n < words[0] or (words[1] is not None and n > words[1]):
        raise Reject(f"{what} has {n} words, outside {span(words)}")
    return text


def _text(parse):
    """A parser that needs nothing but the text."""
    return lambda text, args: parse(text)


def _at_least_threshold(score: int, c: FlowConfig, args: Mapping[str, Any]) -> int:
    if score < c.score_threshold:
        raise Reject(f"score {score}/5 below threshold {c.score_threshold}")
    return score


def _constraints_within(pairs: list[tuple[str, str]], c: FlowConfig, args: Mapping[str, Any]) -> list[tuple[str, str]]:
    kept = [(kind, text) for kind, text in pairs if c.constraint_words[0] <= word_count(text) <= c.constraint_words[1]]
    if not kept:
        raise Reject(f"no proposed constraint has {span(c.constraint_words)} words")
    return kept


def _not_duplicate(duplicate: bool, c: FlowConfig, args: Mapping[str, Any]) -> bool:
    if duplicate:
        raise Reject(f"duplicate of an earlier constraint: {args['constraint']!r}")
    return duplicate


# -- the steps -------------------------------------------------------------------------------------------------------

# 1. Initial instruction: back-translate, score, refine the document into the judge's reference.
STEP_BACK_TRANSLATE = Step(
    BACK_TRANSLATE, "guidance", "back_translate", frozenset({"document"}),
    decode=_sentences,
    parse=_text(parsers.parse_instruction),
    accept=lambda text, c, args: words_within(text, c.instruction_words, "instruction"),
)
STEP_SCORE = Step(
    SCORE, "guidance", "score_instruction", frozenset({"instruction"}),
    decode=lambda c, args: _regex(c, SCORE_REGEX),
    parse=_text(parsers.parse_score),
    accept=_at_least_threshold,
)
STEP_REFINE = Step(
    REFINE, "guidance", "refine_document", frozenset({"instruction", "document"}),
    parse=_text(parsers.parse_refined),
    accept=lambda text, c, args: words_within(text, (c.min_refined_words, None), "refined document"),
    free_text=True,
)
# judge = "model": the guidance model's own answer to the instruction stands in for the refined document.
STEP_REFERENCE = Step(
    REFERENCE, "guidance",
    accept=lambda text, c, args: words_within(text, (c.min_answer_words, None), "reference answer"),
    free_text=True,
)

# 2. Rounds: the student answers, the judge proposes one constraint of a type not used yet, a duplicate check from
# round 2, the student answers again with it, and the judge scores every constraint so far (C' = those failed).
STEP_ANSWER = Step(ANSWER, "student", free_text=True)
STEP_PROPOSE = Step(
    PROPOSE, "guidance", "propose_constraint", frozenset({"instruction", "reference", "answer", "types"}),
    decode=lambda c, args: _regex(c, propose_regex(args["allowed"], none=c.judge_may_decline)),
    parse=lambda text, args: parsers.parse_constraint(text, args["allowed"]),
    accept=lambda pair, c, args: (pair[0], words_within(pair[1], c.constraint_words, "constraint")),
)
# judge = "none": the judge proposes from the instruction alone.
STEP_PROPOSE_BLIND = Step(
    PROPOSE, "guidance", "propose_constraint_blind", frozenset({"instruction", "types"}),
    decode=STEP_PROPOSE.decode, parse=STEP_PROPOSE.parse, accept=STEP_PROPOSE.accept,
)
# one_shot: every constraint in one call (paper Table 5); constraint i plays the part of round i.
STEP_PROPOSE_MANY = Step(
    PROPOSE, "guidance", "propose_constraints_oneshot",
    frozenset({"instruction", "reference", "answer", "types", "count"}),
    decode=lambda c, args: _regex(c, propose_many_regex(args["allowed"], args["count"])),
    parse=lambda text, args: parsers.parse_oneshot(text, args["allowed"], args["count"]),
    accept=_constraints_within,
)
STEP_DEDUP = Step(
    DEDUP, "guidance", "dedup_constraint", frozenset({"constraint", "existing"}),
    decode=lambda c, args: Format(choice=DUPLICATE_CHOICES),
    parse=_text(parsers.parse_yes_no),  # "Yes": a duplicate
    accept=_not_duplicate,
)
# dedup_asks = "new": the same check asked the other way round ("Yes": it asks for something new). The bundled 135M
# model answers "Yes" to either question whatever the pair (24 of 24), so the tiny preset asks this one.
STEP_DEDUP_NEW = Step(
    DEDUP, "guidance", "dedup_constraint_new", frozenset({"constraint", "existing"}),
    decode=STEP_DEDUP.decode,
    parse=lambda text, args: not parsers.parse_yes_no(text),
    accept=_not_duplicate,
)
STEP_ANSWER_WITH = Step(ANSWER_WITH, "student", free_text=True)
STEP_CHECK = Step(
    CHECK, "guidance", "check_constraints", frozenset({"instruction", "answer", "constraints"}),
    decode=lambda c, args: _regex(c, check_lines_regex(args["count"])),
    parse=lambda text, args: parsers.parse_check(text, args["count"]),
)

# 3. Levels: the constraints of rounds 1..k merged into one instruction (few-shot), answered by the guidance model.
STEP_MERGE = Step(
    MERGE, "guidance", "merge_constraints", frozenset({"instruction", "constraints", "examples"}),
    decode=_sentences,
    parse=_text(parsers.parse_merged),
    accept=lambda text, c, args: words_within(text, c.merged_words, "merged instruction"),
    max_tokens=lambda c: c.merge_max_tokens,
)
STEP_RESPOND = Step(
    RESPOND, "guidance",
    accept=lambda text, c, args: words_within(text, (c.min_answer_words, None), "response"),
    free_text=True,
)

# Preference pairs (flow.preference_pairs): the student answers the level's merged instruction, and the judge scores
# that answer against the level's constraints as the check step does; a failed constraint makes it a rejected answer.
STEP_PAIR_ANSWER = Step(PAIR_ANSWER, "student", free_text=True)
STEP_PAIR_CHECK = dataclasses.replace(STEP_CHECK, name=PAIR_CHECK)

ALL_STEPS: tuple[Step, ...] = (STEP_BACK_TRANSLATE, STEP_SCORE, STEP_REFINE, STEP_REFERENCE, STEP_ANSWER, STEP_PROPOSE,
             STEP_PROPOSE_BLIND, STEP_PROPOSE_MANY, STEP_DEDUP, STEP_DEDUP_NEW, STEP_ANSWER_WITH, STEP_CHECK,
             STEP_MERGE, STEP_RESPOND, STEP_PAIR_ANSWER, STEP_PAIR_CHECK)


FREE_TEXT_STAGES = tuple(sorted({s.name for s in ALL_STEPS if s.free_text}))


# flow.parsers = "authors": the steps read their answers by the rules of the authors' code.
AUTHORS_PARSERS = {
    BACK_TRANSLATE: _text(authors.instruction),
    SCORE: _text(authors.score),
    REFINE: _text(authors.free_text),
    PROPOSE: lambda text, args: authors.constraint(text, args["allowed"]),
    DEDUP: _text(authors.duplicate),
    CHECK: lambda text, args: authors.check(text, args["count"]),
    PAIR_CHECK: lambda text, args: authors.check(text, args["count"]),
    MERGE: _text(authors.free_text),
}


def steps_for(config: FlowConfig) -> dict[str, Step]:
    """Stage -> the step that answers it under `config` (propose: the judge settings; dedup: `dedup_asks`; every
    parser: `parsers`)."""
    propose = STEP_PROPOSE_MANY if config.one_shot else STEP_PROPOSE_BLIND if config.judge == "none" else STEP_PROPOSE
    dedup = STEP_DEDUP_NEW if config.dedup_asks == "new" else STEP_DEDUP
    steps = {s.name: s for s in ALL_STEPS if s.name not in (PROPOSE, DEDUP)} | {PROPOSE: propose, DEDUP: dedup}
    if config.parsers == "authors":
        steps |= {name: dataclasses.replace(steps[name], parse=parse) for name, parse in AUTHORS_PARSERS.items()}
    return steps
