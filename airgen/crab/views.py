"""CRAB's views of a run, for `airgen report` and the dataset card: the funnel (pairs in -> constraints built and
proposed -> what removed the others -> kept -> records by kind), the kept constraint types by source, the
constraints' fates by source, and lengths per record kind.

Each finished pair carries its constraint counts (`meta.counts` of its record, or the `value` of its rejection line),
so the funnel is read from the output files; the journal is not replayed for it.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from airgen.crab.flow import KEEPS, STATUSES
from airgen.crab.records import KINDS
from airgen.method.parsing import word_count
from airgen.method.recipe import Tally
from airgen.store.sink import RECORDS, REJECTED
from airgen.method.views import Checked, Distribution, checks_line, plot_checks, plot_lengths, plot_shares

ABOUT = ("instruction-response records made by airgen with constraint back-translation (CRAB, arXiv 2410.24175): "
         "for each existing instruction-response pair a guidance model writes down constraints the response already "
         "meets (global and local kinds, checked one by one against the response), and rule-built constraints "
         "(length, sentence and paragraph limits, keywords, punctuation) are measured from the response and "
         "verified in code. Forward records ask the instruction with several of those constraints and keep the "
         "original response; reverse records ask for the constraint-rich instruction of a given response.")
TAGS = ("crab", "constraint-back-translation", "instruction-following", "complex-instructions")
CARD_FIELDS = ("the pair's id, the split (the record kind), the constraints used, each with its type, its source "
               "(rule, global or local) and its fate, and the original instruction.")
CAVEAT = ("Synthetic constraints: the responses are the input's own; the constraints are written by the guidance "
          "model (checked by it) or built by rule (verified in code).")
# The funnel's removal rows, in the order the flow applies them.
REMOVALS = (("rule_failed_rule", "rule-built: removed by verification in code"),
            ("model_too_short", "proposed: removed, fewer than three words"),
            ("model_unmarked", "proposed: removed, names a mark the response lacks"),
            ("rule_duplicate", "rule-built: removed as near-duplicates"),
            ("model_duplicate", "proposed: removed as near-duplicates (ROUGE-L)"),
            ("model_unmet", "proposed: removed, the check found it unmet"),
            ("model_vague", "proposed: removed, the check found it restricts nothing"),
            ("model_unreadable", "proposed: removed, the check could not be read"))


class CrabTally(Tally):
    """CRAB's figures, one line at a time: each finished pair's constraint counts ride on its record (`meta.counts`)
    or its rejection line (`value`), so the journal's units are not needed."""

    def __init__(self, folder):
        super().__init__(folder)
        self.counts: Counter = Counter()
        self.finished = 0
        self.by_kind: Counter = Counter()
        self.types: dict[str, Counter] = defaultdict(Counter)
        self.lengths: dict[str, dict[str, Distribution]] = defaultdict(lambda: {"instruction": Distribution(),
                                                                               "response": Distribution()})
        self.used = [0, 0]  # constraints in forward records, forward records
        self.code_checks = Checked()

    def line(self, name: str, item: dict[str, Any]) -> None:
        if name == RECORDS:
            meta = item["meta"]
            self.counts.update(meta["counts"])
            self.finished += 1
            self.by_kind[meta["kind"]] += 1
            for c in meta["constraints"]:
                self.types[c["source"]][c["type"]] += 1
            self.lengths[meta["kind"]]["instruction"].add(word_count(item["instruction"]))
            self.lengths[meta["kind"]]["response"].add(word_count(item["output"]))
            if meta["kind"] == "forward":
                self.used[0] += len(meta["constraints"])
                self.used[1] += 1
                for c in meta["constraints"]:  # a forward record's answer is asked them all
                    self.code_checks.add(c["source"], c["type"], c)
        elif name == REJECTED and isinstance(item.get("value"), dict):
            self.counts.update(item["value"])
            self.finished += 1

    def figures(self, shared: dict[str, Any]) -> dict[str, Any]:
        counts, by_kind = self.counts, self.by_kind
        read, unreadable = shared["units_read"], shared["unreadable"]
        kept_rule = sum(counts[f"rule_{s}"] for s in KEEPS)
        kept_model = sum(counts[f"model_{s}"] for s in KEEPS)
        funnel: list[list[Any]] = [["pairs read by the run", read], ["read as pairs", read - unreadable],
                                   ["pairs finished (constraints counted)", self.finished],
                                   ["constraints built by rule", counts["built_by_rule"]],
                                   ["constraints proposed by the model", counts["proposed_by_model"]]]
        funnel += [[label, counts[key]] for key, label in REMOVALS if counts[key]]
        funnel += [["rule-built kept (verified)", kept_rule],
                   ["proposed kept (met in the check)", counts["model_kept"] + counts["model_unchecked"]],
                   ["proposed kept as the check's rewrite", counts["model_modified"]],
                   ["constraints kept", kept_rule + kept_model]]
        funnel += [[f"records {k}", by_kind[k]] for k in KINDS]
        funnel.append(["pairs with records", shared["units_with_records"]])
        fates = {source: {s: counts[f"{source}_{s}"] for s in STATUSES if counts[f"{source}_{s}"]}
                 for source in ("rule", "model")}
        types = {f"in records, {source}": dict(c.most_common()) for source, c in sorted(self.types.items())}
        lengths = {k: self.lengths[k] for k in KINDS if by_kind[k]}
        mean_used = self.used[0] / self.used[1] if self.used[1] else None
        settings = self.folder.config.settings
        return {
            "about": ABOUT,
            "tags": list(TAGS),
            "funnel": funnel,
            "constraint_types": types,
            "lengths": {k: {part: d.summary() for part, d in v.items() if d.n} for k, v in lengths.items()},
            "checks": self.code_checks.figures(),
            "crab": {"fates": fates, "counts": dict(sorted(counts.items())),
                     "mean_constraints_per_forward_record": mean_used,
                     "records_by_kind": {k: by_kind[k] for k in KINDS}},
            "made_notes": [f"forward rate {settings.forward_rate}; forward records take "
                           f"{settings.forward_constraints[0]}..{settings.forward_constraints[1]} "
                           "constraints, reverse records "
                           f"{settings.reverse_constraints[0]}..{settings.reverse_constraints[1]}"],
            "labels": {"funnel_axis": "pairs, constraints, records", "funnel_title": "funnel"},
            "panels": [
                {"title": "Constraint types", "plots": ["constraint_types"], "tables": [
                    {"head": ["source", "type", "count"], "rows": [[g, t, n] for g, c in types.items()
                                                                   for t, n in c.items()]}]},
                {"title": "Lengths", "plots": ["lengths"], "tables": [
                    {"head": ["records", "count", "mean instruction words", "mean response words"],
                     "rows": [[k, v["instruction"].n, v["instruction"].mean(), v["response"].mean()]
                              for k, v in lengths.items()]}]},
                self.code_checks.panel("source (forward records)"),
                {"title": "What became of each constraint", "plots": [], "tables": [
                    {"head": ["source", "fate", "constraints"],
                     "rows": [[source, fate, n] for source, items in fates.items() for fate, n in items.items()]},
                    {"head": ["figure", "value"], "rows": [["mean constraints per forward record", mean_used]]},
                ]}],
            "highlights": [f"{group} types: " + ", ".join(f"{t} {n}" for t, n in list(c.items())[:3])
                           for group, c in types.items()] + [checks_line(self.code_checks.figures())],
            "card": {"fields": CARD_FIELDS, "caveat": CAVEAT},
        }


def plots(f: dict[str, Any], plt: Any, save) -> None:
    plot_shares(f["constraint_types"], "constraint types", plt, save, "constraint_types")
    plot_lengths(f["lengths"], plt, save)
    plot_checks(f["checks"], plt, save)
