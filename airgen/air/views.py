"""AIR's views of a run, for `airgen report` and the dataset card (paper section 4 and appendix): the funnel (Table
8), constraint types per round (Figure 3b, Table 10), instruction and response lengths per level (Figure 4) with
mean unique word trigrams (Figure 6a), and the judge (C' against C per round, check scores, how rounds ended)."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from airgen.parsing import word_count
from airgen.views import kind_of, mean, read_units, trigrams

ABOUT = ("instruction-response records at levels of constraint complexity, made by airgen with AIR (Automatic "
         "Iterative Refinement): an instruction is back-translated from each human-written document, the document "
         "is rewritten into a reference answer, and for up to {rounds} rounds a guidance model, as judge, compares "
         "a student model's answer with it and adds one constraint the student misses. Level k merges the "
         "constraints of rounds 1..k into one instruction, which the guidance model answers.")
TAGS = ("air", "instruction-following", "complex-instructions")


CARD_FIELDS = ("the document id, the split and level, the constraints of rounds 1..k in order, each with its type, "
               "round, check score and whether the student failed it, and the initial instruction.")
CAVEAT = "Synthetic data: responses are written by the guidance model and inherit its errors and biases."


def figures(view) -> dict[str, Any]:
    flow = view.config.settings
    records, samples = view.records, view.samples
    docs_with_records = {r["meta"]["doc_id"] for r in records}
    levels = sorted({r["meta"]["level"] for r in records})
    rounds = 1 if flow.one_shot else flow.rounds

    funnel: list[list[Any]] = []
    if view.selection:
        sel = view.selection
        funnel += [["read by airgen select", sel.get("read")], ["passed the rule filters", sel.get("kept")],
                   ["selected (farthest-point)", sel.get("selected")]]
    read, unreadable = read_units(view)
    kept = [s for s in samples.values() if s.score >= flow.score_threshold]
    funnel += [["documents read by the run", read], ["read as documents", read - unreadable],
               [f"instruction kept (score >= {flow.score_threshold})", len(kept)]]
    for r in range(1, rounds + 1):
        funnel.append([f"finished round {r}", sum(1 for s in samples.values() if any(c.round == r for c in s.constraints))])
    by_level = Counter(r["meta"]["level"] for r in records)
    funnel += [[f"records at level {k}", by_level[k]] for k in levels]
    funnel.append(["documents with records", len(docs_with_records)])
    pairs = _pairs(view) if flow.preference_pairs else None
    if pairs is not None:
        funnel += [["levels that made a preference pair", pairs["made"]],
                   ["levels whose student answer met every constraint (no pair)", pairs["met"]],
                   ["levels with no pair for another reason", pairs["other"]]]

    types: dict[int, Counter] = defaultdict(Counter)
    checked: dict[int, list[bool]] = defaultdict(list)
    scores: Counter = Counter()
    ends: Counter = Counter()
    for s in samples.values():
        for c in s.constraints:
            types[c.round][c.type] += 1
            if c.score is not None:
                checked[c.round].append(bool(c.failed))
                scores[c.score] += 1
        if s.rounds_end:
            ends[kind_of(s.rounds_end)] += 1

    initial = {r["meta"]["doc_id"]: r["meta"]["initial_instruction"] for r in records}
    lengths = {"init": {"instruction_words": [word_count(t) for t in initial.values()]}}
    grams = {"init": mean([trigrams(t) for t in initial.values()])}
    for k in levels:
        at = [r for r in records if r["meta"]["level"] == k]
        lengths[str(k)] = {"instruction_words": [word_count(r["instruction"]) for r in at],
                           "response_words": [word_count(r["output"]) for r in at]}
        grams[str(k)] = mean([trigrams(r["instruction"]) for r in at])
    judge = {
        "constraint_set": flow.constraint_set,
        "failed_share_by_round": {str(r): sum(v) / len(v) for r, v in sorted(checked.items()) if v},
        "checked_by_round": {str(r): len(v) for r, v in sorted(checked.items())},
        "check_scores": {str(k): scores[k] for k in range(4)},
        "rounds_end": dict(ends.most_common()),
    }
    return {
        "about": ABOUT.format(rounds=max(levels, default=rounds)),
        "tags": list(TAGS),
        "levels": levels,
        "funnel": funnel,
        "constraint_types": {f"round {r}": dict(c.most_common()) for r, c in sorted(types.items())},
        "lengths": lengths,
        "mean_unique_trigrams": grams,
        "judge": judge,
        "made_notes": [f"constraint set merged: {flow.constraint_set} " + (
            "(C': the constraints the student still failed)" if flow.constraint_set == "failed"
            else "(C: every constraint found)")],
        "labels": {"funnel_axis": "units (records for the record rows)", "funnel_title": "funnel (paper Table 8)",
                   "types_title": "constraint types per round (paper Figure 3b)"},
        "panels": [{"title": "The judge", "plot": "judge", "tables": [
            {"head": ["round", "checked", "failed share"],
             "rows": [[r, judge["checked_by_round"].get(r), share]
                      for r, share in judge["failed_share_by_round"].items()]},
            {"head": ["check score", "constraints"], "rows": [[k, v] for k, v in judge["check_scores"].items()]},
            {"head": ["how the rounds ended", "samples"], "rows": [[k, v] for k, v in judge["rounds_end"].items()]},
            *([{"head": ["a preference pair's failed constraint, by type", "pairs"],
                "rows": [[t, n] for t, n in pairs["failed_types"].items()]},
               {"head": ["why a level made no pair", "levels"],
                "rows": [[why, n] for why, n in pairs["why_not"].items()]}] if pairs else []),
        ]}],
        "highlights": (["student failed (C'/C): " + ", ".join(
            f"round {r} {share:.0%}" for r, share in judge["failed_share_by_round"].items())]
            if judge["failed_share_by_round"] else [])
        + ([f"preference pairs: {pairs['made']} of {len(records)} levels with records (pairs.jsonl); the student met "
            f"every constraint in {pairs['met']}"] if pairs else []),
        "pairs": pairs,
        "card": {"fields": CARD_FIELDS, "caveat": CAVEAT},
    }


def _pairs(view) -> dict[str, Any]:
    """The preference pairs: levels that made one, levels whose student answer met every constraint, the rest
    (with why), and the pairs' failed constraints by type."""
    outcomes = Counter(r["meta"].get("pair", "no pair asked") for r in view.records)
    made, met = outcomes.pop("made", 0), outcomes.pop("the student met every constraint", 0)
    failed = Counter(c["type"] for p in view.pairs for c in p["meta"]["failed_constraints"])
    why_not: Counter = Counter()
    for why, n in outcomes.items():
        why_not[kind_of(why)] += n
    return {"made": made, "met": met, "other": sum(outcomes.values()), "why_not": dict(why_not.most_common()),
            "failed_types": dict(failed.most_common())}


def plots(f: dict[str, Any], plt: Any, save) -> None:
    """The judge: C'/C per round and the check scores where the run had a check step, how the rounds ended."""
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
