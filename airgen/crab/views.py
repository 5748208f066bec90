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
from airgen.parsing import word_count
from airgen.views import read_units

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


def figures(view) -> dict[str, Any]:
    records = view.records
    counts: Counter = Counter()
    finished = 0
    for r in records:
        counts.update(r["meta"]["counts"])
        finished += 1
    for line in view.rejected:
        if isinstance(line.get("value"), dict):
            counts.update(line["value"])
            finished += 1
    read, unreadable = read_units(view)
    kept_rule = sum(counts[f"rule_{s}"] for s in KEEPS)
    kept_model = sum(counts[f"model_{s}"] for s in KEEPS)
    by_kind = Counter(r["meta"]["kind"] for r in records)
    funnel: list[list[Any]] = [["pairs read by the run", read], ["read as pairs", read - unreadable],
                               ["pairs finished (constraints counted)", finished],
                               ["constraints built by rule", counts["built_by_rule"]],
                               ["constraints proposed by the model", counts["proposed_by_model"]]]
    funnel += [[label, counts[key]] for key, label in REMOVALS if counts[key]]
    funnel += [["rule-built kept (verified)", kept_rule],
               ["proposed kept (met in the check)", counts["model_kept"] + counts["model_unchecked"]],
               ["proposed kept as the check's rewrite", counts["model_modified"]],
               ["constraints kept", kept_rule + kept_model]]
    funnel += [[f"records {k}", by_kind[k]] for k in KINDS]
    funnel.append(["pairs with records", len({r["meta"]["doc_id"] for r in records})])

    types: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        for c in r["meta"]["constraints"]:
            types[c["source"]][c["type"]] += 1
    lengths = {k: {"instruction_words": [word_count(r["instruction"]) for r in records if r["meta"]["kind"] == k],
                   "response_words": [word_count(r["output"]) for r in records if r["meta"]["kind"] == k]}
               for k in KINDS if by_kind[k]}
    fates = {source: {s: counts[f"{source}_{s}"] for s in STATUSES if counts[f"{source}_{s}"]}
             for source in ("rule", "model")}
    used = [len(r["meta"]["constraints"]) for r in records if r["meta"]["kind"] == "forward"]
    settings = view.config.settings
    mean_used = sum(used) / len(used) if used else None
    return {
        "about": ABOUT,
        "tags": list(TAGS),
        "levels": [],
        "funnel": funnel,
        "constraint_types": {f"in records, {source}": dict(c.most_common()) for source, c in sorted(types.items())},
        "lengths": lengths,
        "crab": {"fates": fates, "counts": dict(sorted(counts.items())),
                 "mean_constraints_per_forward_record": mean_used,
                 "records_by_kind": {k: by_kind[k] for k in KINDS}},
        "made_notes": [f"forward rate {settings.forward_rate}; forward records take "
                       f"{settings.forward_constraints[0]}..{settings.forward_constraints[1]} "
                       "constraints, reverse records "
                       f"{settings.reverse_constraints[0]}..{settings.reverse_constraints[1]}"],
        "labels": {"funnel_axis": "pairs, constraints, records", "funnel_title": "funnel",
                   "types_title": "constraint types"},
        "panels": [{"title": "What became of each constraint", "plot": None, "tables": [
            {"head": ["source", "fate", "constraints"],
             "rows": [[source, fate, n] for source, items in fates.items() for fate, n in items.items()]},
            {"head": ["figure", "value"], "rows": [["mean constraints per forward record", mean_used]]},
        ]}],
        "highlights": [],
        "card": {"fields": CARD_FIELDS, "caveat": CAVEAT},
    }
