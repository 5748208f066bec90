"""AIR's views of a run, for `airgen report` and the dataset card (paper section 4 and appendix): the funnel (Table
8), constraint types per round (Figure 3b, Table 10), instruction and response lengths per level (Figure 4) with
mean unique word trigrams (Figure 6a), and the judge (C' against C per round, check scores, how rounds ended)."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from airgen.method.parsing import word_count
from airgen.method.recipe import Tally
from airgen.store.sink import PAIRS, RECORDS
from airgen.method.views import (Checked, Distribution, checks_line, kind_of, plot_checks, plot_lengths,
                                 plot_shares, trigrams)

ABOUT = ("instruction-response records at levels of constraint complexity, made by airgen with AIR (Automatic "
         "Iterative Refinement): an instruction is back-translated from each human-written document, the document "
         "is rewritten into a reference answer, and for up to {rounds} rounds a guidance model, as judge, compares "
         "a student model's answer with it and adds one constraint the student misses. Level k merges the "
         "constraints of rounds 1..k into one instruction, which the guidance model answers.")
TAGS = ("air", "instruction-following", "complex-instructions")


CARD_FIELDS = ("the document id, the split and level, the constraints of rounds 1..k in order, each with its type, "
               "round, check score and whether the student failed it, and the initial instruction.")
CAVEAT = "Synthetic data: responses are written by the guidance model and inherit its errors and biases."
PAIRS_LINES = ("Each line is a preference pair: the prompt (the level's merged instruction), `chosen` (the guidance "
               "model's answer, the record's output) and `rejected` (the student's answer, which the judge found "
               "failing at least one of the level's constraints), in TRL's conversational form, the same as "
               "`instruction`, `chosen_response` and `rejected_response` for LlamaFactory, and `meta`: the document "
               "id, the level, each constraint with its type, round and the score the judge gave the rejected "
               "answer, and the failed ones.")


class AirTally(Tally):
    """AIR's figures, one unit and one line at a time."""

    def __init__(self, folder):
        super().__init__(folder)
        self.settings = folder.config.settings
        self.kept = 0  # samples whose instruction scored at the threshold or above
        self.finished_round: Counter = Counter()
        self.types: dict[int, Counter] = defaultdict(Counter)
        self.checked: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # round -> [checked, failed]
        self.scores: Counter = Counter()
        self.ends: Counter = Counter()
        self.by_level: Counter = Counter()
        self.lengths: dict[str, dict[str, Distribution]] = defaultdict(lambda: {"instruction": Distribution(),
                                                                               "response": Distribution()})
        self.grams: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # key -> [sum of trigrams, records]
        self.last_doc: str | None = None  # records of a document are written together: its initial instruction once
        self.pair_outcomes: Counter = Counter()
        self.code_checks = Checked()
        self.failed_types: Counter = Counter()

    def unit(self, ended) -> None:
        s = ended.sample
        if s is None:
            return
        self.kept += s.score >= self.settings.score_threshold
        for r in {c.round for c in s.constraints}:
            self.finished_round[r] += 1
        for c in s.constraints:
            self.types[c.round][c.type] += 1
            if c.score is not None:
                self.checked[c.round][0] += 1
                self.checked[c.round][1] += bool(c.failed)
                self.scores[c.score] += 1
        if s.rounds_end:
            self.ends[kind_of(s.rounds_end)] += 1

    def line(self, name: str, item: dict[str, Any]) -> None:
        if name == RECORDS:
            meta = item["meta"]
            level = str(meta["level"])
            self.by_level[meta["level"]] += 1
            if meta["doc_id"] != self.last_doc:
                self.last_doc = meta["doc_id"]
                self._length("init", meta["initial_instruction"], None)
            self._length(level, item["instruction"], item["output"])
            self.pair_outcomes[meta.get("pair", "no pair asked")] += 1
            for c in meta["constraints"]:
                if c.get("merged"):
                    self.code_checks.add(f"level {level}", c["type"], c)
        elif name == PAIRS:
            self.failed_types.update(c["type"] for c in item["meta"]["failed_constraints"])

    def _length(self, key: str, instruction: str, response: str | None) -> None:
        self.lengths[key]["instruction"].add(word_count(instruction))
        if response is not None:
            self.lengths[key]["response"].add(word_count(response))
        self.grams[key][0] += trigrams(instruction)
        self.grams[key][1] += 1

    def figures(self, shared: dict[str, Any]) -> dict[str, Any]:
        flow = self.settings
        levels = sorted(self.by_level)
        rounds = 1 if flow.one_shot else flow.rounds
        funnel: list[list[Any]] = []
        selection = self.folder.selection
        if selection:
            funnel += [["read by airgen select", selection.get("read")], ["passed the rule filters", selection.get("kept")],
                       ["selected (farthest-point)", selection.get("selected")]]
        read, unreadable = shared["units_read"], shared["unreadable"]
        funnel += [["documents read by the run", read], ["read as documents", read - unreadable],
                   [f"instruction kept (score >= {flow.score_threshold})", self.kept]]
        funnel += [[f"finished round {r}", self.finished_round[r]] for r in range(1, rounds + 1)]
        funnel += [[f"records at level {k}", self.by_level[k]] for k in levels]
        funnel.append(["documents with records", shared["units_with_records"]])
        pairs = self._pairs() if flow.preference_pairs else None
        if pairs is not None:
            funnel += [["levels that made a preference pair", pairs["made"]],
                       ["levels whose student answer met every constraint (no pair)", pairs["met"]],
                       ["levels with no pair for another reason", pairs["other"]]]
        judge = {
            "constraint_set": flow.constraint_set,
            "failed_share_by_round": {str(r): failed / checked for r, (checked, failed) in sorted(self.checked.items())
                                      if checked},
            "checked_by_round": {str(r): checked for r, (checked, _) in sorted(self.checked.items())},
            "check_scores": {str(k): self.scores[k] for k in range(4)},
            "rounds_end": dict(self.ends.most_common()),
        }
        keys = ["init", *map(str, levels)]
        lengths = {k: self.lengths[k] for k in keys if k in self.lengths}
        grams = {k: self.grams[k][0] / self.grams[k][1] if self.grams[k][1] else None for k in keys}
        types = {f"round {r}": dict(c.most_common()) for r, c in sorted(self.types.items())}
        label = {"init": "initial instruction", **{str(k): f"level {k}" for k in levels}}
        return {
            "about": ABOUT.format(rounds=max(levels, default=rounds)),
            "tags": list(TAGS),
            "levels": levels,
            "funnel": funnel,
            "constraint_types": types,
            "lengths": {k: {part: d.summary() for part, d in v.items() if d.n} for k, v in lengths.items()},
            "mean_unique_trigrams": grams,
            "judge": judge,
            "checks": self.code_checks.figures(),
            "made_notes": [f"constraint set merged: {flow.constraint_set} " + (
                "(C': the constraints the student still failed)" if flow.constraint_set == "failed"
                else "(C: every constraint found)")],
            "labels": {"funnel_axis": "units (records for the record rows)", "funnel_title": "funnel (paper Table 8)"},
            "panels": [
                {"title": "Constraint types", "plots": ["constraint_types"], "tables": [
                    {"head": ["round", "type", "count"], "rows": [[r, t, n] for r, c in types.items()
                                                                  for t, n in c.items()]}]},
                {"title": "Lengths", "plots": ["lengths", "trigrams"], "tables": [
                    {"head": ["records", "count", "mean instruction words", "mean response words",
                              "mean unique trigrams"],
                     "rows": [[label[k], v["instruction"].n, v["instruction"].mean(), v["response"].mean(), grams[k]]
                              for k, v in lengths.items()]}]},
                self.code_checks.panel("level"),
                {"title": "The judge", "plots": ["judge"], "tables": [
                    {"head": ["round", "checked", "failed share"],
                     "rows": [[r, judge["checked_by_round"].get(r), share]
                              for r, share in judge["failed_share_by_round"].items()]},
                    {"head": ["check score", "constraints"], "rows": [[k, v] for k, v in judge["check_scores"].items()]},
                    {"head": ["how the rounds ended", "samples"],
                     "rows": [[k, v] for k, v in judge["rounds_end"].items()]},
                    *([{"head": ["a preference pair's failed constraint, by type", "pairs"],
                        "rows": [[t, n] for t, n in pairs["failed_types"].items()]},
                       {"head": ["why a level made no pair", "levels"],
                        "rows": [[why, n] for why, n in pairs["why_not"].items()]}] if pairs else []),
                ]}],
            "highlights": [f"{group} types: " + ", ".join(f"{t} {n}" for t, n in list(c.items())[:3])
                           for group, c in types.items()]
            + (["student failed (C'/C): " + ", ".join(
                f"round {r} {share:.0%}" for r, share in judge["failed_share_by_round"].items())]
               if judge["failed_share_by_round"] else [])
            + [checks_line(self.code_checks.figures())]
            + ([f"preference pairs: {pairs['made']} of {shared['records']} levels with records (pairs.jsonl); the "
                f"student met every constraint in {pairs['met']}"] if pairs else []),
            "pairs": pairs,
            "card": {"fields": CARD_FIELDS, "caveat": CAVEAT, "pairs": PAIRS_LINES},
        }

    def _pairs(self) -> dict[str, Any]:
        """The preference pairs: levels that made one, levels whose student answer met every constraint, the rest
        (with why), and the pairs' failed constraints by type."""
        outcomes = Counter(self.pair_outcomes)
        made, met = outcomes.pop("made", 0), outcomes.pop("the student met every constraint", 0)
        why_not: Counter = Counter()
        for why, n in outcomes.items():
            why_not[kind_of(why)] += n
        return {"made": made, "met": met, "other": sum(outcomes.values()), "why_not": dict(why_not.most_common()),
                "failed_types": dict(self.failed_types.most_common())}


def plots(f: dict[str, Any], plt: Any, save) -> None:
    """Constraint types per round, lengths per level, diversity across levels, and the judge: C'/C per round and the
    check scores where the run had a check step, how the rounds ended."""
    plot_shares(f["constraint_types"], "constraint types per round (paper Figure 3b)", plt, save, "constraint_types")
    label = lambda k: f"level {k}" if k.isdigit() else k  # noqa: E731
    plot_lengths({label(k): v for k, v in f["lengths"].items()}, plt, save)
    trigrams_ = {label(k): v for k, v in f["mean_unique_trigrams"].items() if v is not None}
    if len(trigrams_) > 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(list(trigrams_), list(trigrams_.values()), marker="o")
        ax.set_ylabel("mean unique word trigrams per instruction")
        ax.set_title("diversity across levels (paper Figure 6a)")
        save(fig, "trigrams")
    plot_checks(f["checks"], plt, save)
    judge = f["judge"]
    if not (any(judge["check_scores"].values()) or judge["rounds_end"]):
        return
    checked = any(judge["check_scores"].values())  # no check step (constraint set C): no scores to show
    fig, axes = plt.subplots(1, 3 if checked else 1, figsize=(14 if checked else 6, 3.8), squeeze=False)
    axes = axes[0]
    if checked:
        shares = judge["failed_share_by_round"]
        axes[0].bar([f"round {r}" for r in shares], list(shares.values()), color="tab:orange")
        axes[0].set_ylim(0, 1)
        axes[0].set_title("constraints the student still failed (C'/C)")
        axes[1].bar(list(judge["check_scores"]), list(judge["check_scores"].values()), color="tab:green")
        axes[1].set_xlabel("check score (0..3)")
        axes[1].set_title("check scores")
    ends = judge["rounds_end"]
    axes[-1].barh([_short(k) for k in ends][::-1], list(ends.values())[::-1], color="tab:gray")
    axes[-1].set_title("how the rounds ended")
    axes[-1].tick_params(axis="y", labelsize=7)
    save(fig, "judge")


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
