"""OUT/status.json: where a run stands, for what schedules it (Airflow, Prefect, Slurm, cron) and for
`airgen.load(OUT)`. Rewritten whole (atomically) at every metrics tick and once more as the run ends; that end state
stays when the process is gone. A `running` state whose `pid` is gone is a process that was killed.

Fields: `state` (running, finished, stopped), `why` (a stop's cause: deadline, interrupted, cancelled, error,
set aside), `samples` (total in the input once counted, finished in all, finished this run with records and
rejected, resumed from earlier runs, in flight, set aside, left), `records` (records.jsonl's lines), `rates`
(samples/s, output tokens/s per role), `eta_s` and `eta`, `deadline` and `admitting`, `pid`, `host`, `started`,
`updated`, `elapsed_s`, `last_error`, and `summary` (the numbers of the summary a run ends with: `summary.numbers`).
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import time
from pathlib import Path
from typing import Any

import orjson

from airgen.store.files import atomic_write
from airgen.store.folder import STATUS


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def left(samples: dict[str, Any]) -> int | None:
    """Units of the input not finished yet (in flight and set aside included), once the input is counted."""
    if samples["total"] is None:
        return None
    return max(samples["total"] - samples["records"] - samples["rejected"] - samples["resumed"], 0)


def document(snap: dict[str, Any], records: int, summary: dict[str, Any], state: str, why: str | None = None,
             error: str | None = None) -> dict[str, Any]:
    """status.json's content from a metrics snapshot (with its `rates` and `estimate`)."""
    s, est = snap["samples"], snap["estimate"]
    return {
        "state": state, "why": why,
        "samples": {"total": s["total"], "finished": s["records"] + s["rejected"] + s["resumed"],
                    "with_records": s["records"], "rejected": s["rejected"], "resumed": s["resumed"],
                    "in_flight": s["in_flight"], "set_aside": s["set_aside"], "left": left(s)},
        "records": records,
        "rates": {"samples_per_s": est["samples_per_s"],
                  "output_tok_s": {role: r["output_tok_s"] for role, r in snap["rates"]["roles"].items()}},
        "eta_s": est["eta_s"], "eta": _iso(snap["time"] + est["eta_s"]) if est["eta_s"] is not None else None,
        "deadline": est["deadline"], "admitting": est["admitting"],
        "pid": os.getpid(), "host": socket.gethostname(),
        "started": _iso(snap["time"] - snap["elapsed_s"]), "updated": _iso(time.time()),
        "elapsed_s": snap["elapsed_s"], "last_error": error, "summary": summary,
    }


def write(out: Path, status: dict[str, Any]) -> None:
    atomic_write(Path(out) / STATUS, orjson.dumps(status, option=orjson.OPT_INDENT_2))


def read(folder: Path) -> dict[str, Any] | None:
    try:
        return orjson.loads((Path(folder) / STATUS).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None


def of_shards(shards: list[dict[str, Any]], started: float, ended: bool) -> dict[str, Any]:
    """A `--ray` run's status from its shards' (each a run of its own): counts and rates summed; stopped when one
    shard stopped, with its cause. Its `summary` is each shard's, in shard order."""
    samples: dict[str, Any] = {}
    for key in ("total", "finished", "with_records", "rejected", "resumed", "in_flight", "set_aside", "left"):
        values = [sh["samples"][key] for sh in shards]
        samples[key] = None if not values or None in values else sum(values)
    rates: dict[str, Any] = {"samples_per_s": sum(sh["rates"]["samples_per_s"] or 0 for sh in shards) or None,
                             "output_tok_s": {}}
    for sh in shards:
        for role, v in sh["rates"]["output_tok_s"].items():
            rates["output_tok_s"][role] = rates["output_tok_s"].get(role, 0) + v
    stopped = next((sh for sh in shards if sh["state"] == "stopped"), None)
    state, why = ("running", None) if not ended else ("stopped", stopped["why"]) if stopped else ("finished", None)
    left, per_s = samples["left"], rates["samples_per_s"]
    eta = left / per_s if left is not None and per_s else None
    now = time.time()
    return {"state": state, "why": why, "samples": samples, "records": sum(sh["records"] for sh in shards),
            "rates": rates, "eta_s": eta, "eta": _iso(now + eta) if eta is not None else None,
            "deadline": next((sh["deadline"] for sh in shards if sh["deadline"]), None),
            "admitting": any(sh["admitting"] for sh in shards), "pid": os.getpid(), "host": socket.gethostname(),
            "started": _iso(started), "updated": _iso(now), "elapsed_s": round(now - started, 3),
            "last_error": next((sh["last_error"] for sh in shards if sh["last_error"]), None),
            "summary": {"shards": [sh["summary"] for sh in shards]}}
