"""What a run ends with: its funnel, tokens per role, faults, goodput and where the engines' time went, as numbers
(`numbers`: what `airgen.Run.summary` and status.json hold) and as the text the terminal shows (`funnel`)."""
from __future__ import annotations

from typing import Any

from airgen.runtime.metrics import Metrics
from airgen.store.sink import split_order


def numbers(metrics: Metrics) -> dict[str, Any]:
    """The run's summary as plain data (JSON)."""
    elapsed = metrics.elapsed
    return {
        "elapsed_s": round(elapsed, 3),
        "finished": metrics.done, "resumed": metrics.resumed, "outcomes": dict(sorted(metrics.outcomes.items())),
        "rejected_at": dict(metrics.rejected_at.most_common()),
        "set_aside": dict(metrics.set_aside),
        "records_by_split": {s: metrics.records_by_split[s] for s in sorted(metrics.records_by_split, key=split_order)},
        "roles": {role: {"calls": c.calls, "prompt_tokens": c.prompt_tokens, "output_tokens": c.output_tokens,
                         "thinking_tokens": c.reasoning_tokens, "cut_while_thinking": c.cut_while_thinking,
                         "output_tok_s": round(c.output_tokens / elapsed, 1),
                         "cache_hit": round(c.cached_tokens / c.prompt_tokens, 4) if c.prompt_tokens else 0.0}
                  for role, c in sorted(metrics.roles.items())},
        "journal": {"replayed": metrics.replayed_calls, "asked_again": dict(metrics.asked_again.most_common())},
        "unusable_answers": {stage: [n, metrics.calls_by_stage[stage]] for stage, n in metrics.step_faults.most_common()},
        "faults": {name: dict(c.most_common()) for name, c in metrics.faults.items() if c},
        "goodput": metrics.goodput(),
        "engines": metrics.engine_time(),
        "handling_us_per_call": round(1e6 * metrics.handling_s / metrics.handled, 1) if metrics.handled else None,
        "handling_s": round(metrics.handling_s, 3),
    }


def funnel(n: dict[str, Any]) -> str:
    """The summary's text, from `numbers`."""
    lines = ["funnel:"]
    lines.append(f"  finished this run   {n['finished']}" + (f" (+{n['resumed']} before)" if n["resumed"] else ""))
    for outcome, count in n["outcomes"].items():
        lines.append(f"  {outcome:<19} {count}")
    width = max(map(len, n["rejected_at"]), default=0)
    for stage, count in n["rejected_at"].items():
        lines.append(f"    rejected at {stage:<{width}} {count}")
    if n["set_aside"]:
        unit, why = next(iter(n["set_aside"].items()))
        lines.append(f"  set aside for the next run {len(n['set_aside'])} (a call failed every try; {unit}: {why})")
    for split, count in n["records_by_split"].items():
        lines.append(f"  records {split:<11} {count}")
    for role, c in n["roles"].items():
        thinking = f" ({c['thinking_tokens']} thinking)" if c["thinking_tokens"] else ""
        lines.append(
            f"  {role:<8} {c['calls']} calls, {c['prompt_tokens']} prompt + {c['output_tokens']} output tokens"
            f"{thinking}, {c['output_tok_s']:,.1f} output tok/s, prefix-cache hit {c['cache_hit']:.0%}"
        )
        if c["cut_while_thinking"]:
            lines.append(f"    {c['cut_while_thinking']} answers cut while thinking (empty): raise {role}.think_tokens")
    journal = n["journal"]
    if journal["replayed"] or journal["asked_again"]:
        again = sum(journal["asked_again"].values())
        why = "; ".join(f"{reason}: {count}" for reason, count in journal["asked_again"].items())
        lines.append(f"  answers from the journal: {journal['replayed']} replayed, {again} asked again"
                     + (f" ({why})" if why else ""))
    if n["unusable_answers"]:
        lines.append("  answers a step could not use: " + ", ".join(
            f"{stage} {bad} of {calls}" for stage, (bad, calls) in n["unusable_answers"].items()))
        if any(bad >= 10 and bad > calls / 2 for bad, calls in n["unusable_answers"].values()):
            lines.append("    over half of a step's answers: does the server ignore decode-time formats? "
                         "see --guidance-dialect / --student-dialect")
    for name, c in n["faults"].items():
        kinds = ", ".join(f"{k} {count}" for k, count in c.items() if k not in ("retries", "gave up"))
        lines.append(f"  {name} faults: {kinds or 'none'}; retries {c.get('retries', 0)}, gave up {c.get('gave up', 0)}")
    good = n["goodput"]
    if good["share"] is not None:
        lines.append(f"goodput: {good['share']:.0%} of this run's tokens went to samples with records")
        width = max(map(len, good["by_outcome"]))
        for name, g in good["by_outcome"].items():
            lines.append(f"  {name:<{width}} {g['samples']:>7} samples {g['prompt_tokens']:>11} prompt "
                         f"{g['output_tokens']:>10} output tokens")
    if n["engines"]:
        lines.append(f"engine time over {n['elapsed_s']:,.1f}s (idle: airgen = samples waited on our own work):")
        for name, t in n["engines"].items():
            idle = ", ".join(f"{k} {v:,.2f}s" for k, v in t["idle_s"].items())
            lines.append(f"  {name:<16} busy {t['busy_share']:.0%} (mean {t['mean_outstanding']} requests "
                         f"outstanding); idle {idle}")
    if n["handling_us_per_call"] is not None:
        lines.append(f"  airgen handling: {n['handling_us_per_call']:,.1f} us per completion, "
                     f"{n['handling_s']:,.2f}s in all")
    return "\n".join(lines)
