"""The text a run ends with: its funnel, tokens per role, faults, goodput and where the engines' time went, from
the run's `Metrics`."""
from __future__ import annotations

from airgen.run.metrics import Metrics
from airgen.store.sink import split_order


def funnel(metrics: Metrics) -> str:
    lines = ["funnel:"]
    lines.append(f"  finished this run   {metrics.done}" + (f" (+{metrics.resumed} before)" if metrics.resumed else ""))
    for outcome, n in sorted(metrics.outcomes.items()):
        lines.append(f"  {outcome:<19} {n}")
    width = max(map(len, metrics.rejected_at), default=0)
    for stage, n in metrics.rejected_at.most_common():
        lines.append(f"    rejected at {stage:<{width}} {n}")
    if metrics.set_aside:
        unit, why = next(iter(metrics.set_aside.items()))
        lines.append(f"  set aside for the next run {len(metrics.set_aside)} (a call failed every try; {unit}: {why})")
    for split in sorted(metrics.records_by_split, key=split_order):
        lines.append(f"  records {split:<11} {metrics.records_by_split[split]}")
    elapsed = metrics.elapsed
    for role, c in sorted(metrics.roles.items()):
        hit = c.cached_tokens / c.prompt_tokens if c.prompt_tokens else 0.0
        thinking = f" ({c.reasoning_tokens} thinking)" if c.reasoning_tokens else ""
        lines.append(
            f"  {role:<8} {c.calls} calls, {c.prompt_tokens} prompt + {c.output_tokens} output tokens{thinking}, "
            f"{c.output_tokens / elapsed:,.1f} output tok/s, prefix-cache hit {hit:.0%}"
        )
        if c.cut_while_thinking:
            lines.append(f"    {c.cut_while_thinking} answers cut while thinking (empty): raise {role}.think_tokens")
    if metrics.replayed_calls or metrics.asked_again:
        again = sum(metrics.asked_again.values())
        why = "; ".join(f"{reason}: {n}" for reason, n in metrics.asked_again.most_common())
        lines.append(f"  answers from the journal: {metrics.replayed_calls} replayed, {again} asked again"
                     + (f" ({why})" if why else ""))
    if metrics.step_faults:
        lines.append("  answers a step could not use: " + ", ".join(
            f"{stage} {n} of {metrics.calls_by_stage[stage]}" for stage, n in metrics.step_faults.most_common()))
        if any(n >= 10 and n > metrics.calls_by_stage[stage] / 2 for stage, n in metrics.step_faults.items()):
            lines.append("    over half of a step's answers: does the server ignore decode-time formats? "
                         "see --guidance-dialect / --student-dialect")
    for name, c in metrics.faults.items():
        if c:
            kinds = ", ".join(f"{k} {n}" for k, n in c.most_common() if k not in ("retries", "gave up"))
            lines.append(f"  {name} faults: {kinds or 'none'}; retries {c['retries']}, gave up {c['gave up']}")
    good = metrics.goodput()
    if good["share"] is not None:
        lines.append(f"goodput: {good['share']:.0%} of this run's tokens went to samples with records")
        width = max(map(len, good["by_outcome"]))
        for name, g in good["by_outcome"].items():
            lines.append(f"  {name:<{width}} {g['samples']:>7} samples {g['prompt_tokens']:>11} prompt "
                         f"{g['output_tokens']:>10} output tokens")
    if metrics.engines:
        lines.append(f"engine time over {elapsed:,.1f}s (idle: airgen = samples waited on our own work):")
        for name, t in metrics.engine_time().items():
            idle = ", ".join(f"{k} {v:,.2f}s" for k, v in t["idle_s"].items())
            lines.append(f"  {name:<16} busy {t['busy_share']:.0%} (mean {t['mean_outstanding']} requests "
                         f"outstanding); idle {idle}")
    if metrics.handled:
        lines.append(f"  airgen handling: {1e6 * metrics.handling_s / metrics.handled:,.1f} us per completion, "
                     f"{metrics.handling_s:,.2f}s in all")
    return "\n".join(lines)
