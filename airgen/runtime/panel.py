"""The live display of a run: token rates over a sliding window of snapshots, the ETA and the deadline (the run's
`estimate`, `deadline.Estimate`), and a rich panel on a terminal or a plain line every 30 s in a log."""
from __future__ import annotations

import collections
from typing import Any

from airgen import console


class Rates:
    """Tokens/s per role over a sliding window of snapshots."""

    def __init__(self, window_s: float = 30.0):
        self.window_s = window_s
        self._points: collections.deque[tuple[float, dict[str, Any]]] = collections.deque()

    def add(self, snap: dict[str, Any]) -> dict[str, Any]:
        t = snap["elapsed_s"]
        self._points.append((t, snap))
        while len(self._points) > 2 and t - self._points[1][0] >= self.window_s:
            self._points.popleft()
        t0, first = self._points[0]
        dt = t - t0
        rates: dict[str, Any] = {"window_s": round(dt, 3), "roles": {}}
        if dt <= 0:
            return rates
        for role, c in snap["roles"].items():
            before = first["roles"].get(role, {})
            prompt = c["prompt_tokens"] - before.get("prompt_tokens", 0)
            cached = c["cached_tokens"] - before.get("cached_tokens", 0)
            output = round((c["output_tokens"] - before.get("output_tokens", 0)) / dt, 1)
            peak = snap.get("peaks", {}).get(role)
            rates["roles"][role] = {
                "prompt_tok_s": round(prompt / dt, 1),
                "output_tok_s": output,
                "of_peak": output / peak if peak else None,
                "cache_hit": round(cached / prompt, 4) if prompt else None,
            }
        return rates


def _eta(snap: dict[str, Any]) -> str:
    """The ETA, and the deadline with what it lets in."""
    est = snap["estimate"]
    parts = [f"eta {est['eta_s']:,.0f}s"] if est["eta_s"] is not None else []
    if est["deadline"] is not None:
        parts.append(f"deadline in {max(est['deadline_in_s'], 0):,.0f}s"
                     + ("" if est["admitting"] else ", admission closed: finishing what is in flight"))
    return "  ".join(parts)


def progress_line(snap: dict[str, Any], rates: dict[str, Any]) -> str:
    s = snap["samples"]
    total = f"/{s['total']}" if s["total"] else ""
    flight = " ".join(f"{stage}:{n}" for stage, n in snap["in_flight_by_stage"].items()) or "-"
    tps = " ".join(f"{role} {r['prompt_tok_s']:,.0f}/{r['output_tok_s']:,.0f} tok/s"
                   + (f" ({r['of_peak']:.0%} of peak)" if r.get("of_peak") is not None else "")
                   + (f" hit {r['cache_hit']:.0%}" if r["cache_hit"] is not None else "")
                   for role, r in rates["roles"].items()) or "-"
    eta = _eta(snap)
    return (f"[{snap['elapsed_s']:,.0f}s] done {s['records']} rejected {s['rejected']}{total} | in flight {flight} | "
            f"prompt/output {tps}" + (f" | {eta}" if eta else "") + _trouble(snap))


def _trouble(snap: dict[str, Any]) -> str:
    """Retries and stalled calls, where there are any."""
    parts = [f"{name} retries {c.get('retries', 0)} gave up {c.get('gave up', 0)}" for name, c in snap["faults"].items()]
    stalled = snap["stalled"]
    if stalled["calls"]:
        parts.append(f"stalled {stalled['calls']} calls > {stalled['over_s']:.0f}s (oldest {stalled['oldest_s']:,.0f}s)")
    return "".join(f" | {p}" for p in parts)


class Progress:
    """Live display: a rich panel on a terminal, a plain line every `log_every_s` otherwise."""

    def __init__(self, log_every_s: float = 30.0):
        self._live = None
        self._log_every_s = log_every_s
        self._last_log = float("-inf")
        self._stream = console.stream()
        if self._stream.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=self._stream), refresh_per_second=2, transient=False)
            self._live.start()

    def update(self, snap: dict[str, Any], rates: dict[str, Any]) -> None:
        if self._live is not None:
            self._live.update(_panel(snap, rates))
        elif snap["elapsed_s"] - self._last_log >= self._log_every_s:
            self._last_log = snap["elapsed_s"]
            print(progress_line(snap, rates), file=self._stream, flush=True)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


def _panel(snap: dict[str, Any], rates: dict[str, Any]):
    from rich.table import Table

    s = snap["samples"]
    eta = _eta(snap)
    title = (f"{snap['elapsed_s']:,.0f}s  records {s['records']}  rejected {s['rejected']}"
             + (f" of {s['total']}" if s["total"] else "") + (f"  resumed {s['resumed']}" if s["resumed"] else "")
             + (f"  {eta}" if eta else "") + _trouble(snap))
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in ("", "in flight", "rejected", "prompt tok/s", "output tok/s", "cache hit", "busy"):
        table.add_column(column, justify="left" if not column else "right")
    for stage, n in snap["in_flight_by_stage"].items():
        table.add_row(stage, str(n), str(snap["rejected_at"].get(stage, 0)), "", "", "", "")
    for stage, n in snap["rejected_at"].items():
        if stage not in snap["in_flight_by_stage"]:
            table.add_row(stage, "0", str(n), "", "", "", "")
    busy = {name: t["busy_share"] for name, t in snap["engines"].items()}
    for role, r in rates["roles"].items():
        share = next((f"{v:.0%}" for name, v in busy.items() if role in name.split("+")), "")
        of_peak = f" ({r['of_peak']:.0%} of peak)" if r.get("of_peak") is not None else ""
        table.add_row(f"[bold]{role}", "", "", f"{r['prompt_tok_s']:,.0f}", f"{r['output_tok_s']:,.0f}{of_peak}",
                      f"{r['cache_hit']:.0%}" if r["cache_hit"] is not None else "-", share)
    return table
