"""A role's replicas: a unit's calls stay on one, new units go where the least is outstanding, a replica that dies
hands its calls to the others; for real, two fault servers as the replicas of both roles, one killed mid-run."""
from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from airgen.method.calls import Request, Sampling
from airgen.engines.replicas import NoReplicaLeft, Replicas
from airgen.engines.scripted import ScriptedEngine
from tests.faultserver import FaultServer

ROOT = Path(__file__).resolve().parent.parent


def request(unit: str, n: int = 0) -> Request:
    return Request(f"{unit}/answer/{n}", "student", "answer", ({"role": "user", "content": "Hi"},),
                   Sampling(max_tokens=8))


def engines(n: int, latency: float = 0.01, fail: set[int] = frozenset()):
    made = []
    for i in range(n):
        def respond(r, i=i):
            if i in fail:
                raise RuntimeError(f"replica {i} is gone")
            return f"answer from {i}"
        made.append(ScriptedEngine(respond, name="m", latency=lambda r: latency))
    return made


async def test_a_units_calls_stay_on_one_replica_and_new_units_balance():
    group = Replicas(engines(3))
    for round_ in range(3):  # three calls per unit, the units' calls interleaved
        await asyncio.gather(*(group.generate(request(f"u{i}", round_)) for i in range(12)))
    homes = collections.defaultdict(set)
    for i, engine in enumerate(group.engines):
        for call in engine.calls:
            homes[call.unit].add(i)
    assert all(len(h) == 1 for h in homes.values())  # sticky
    assert sorted(len(e.calls) for e in group.engines) == [12, 12, 12]  # 4 units each


async def test_new_units_go_where_the_least_is_outstanding():
    slow, fast = engines(2)
    slow._latency = lambda r: 0.5
    group = Replicas([slow, fast])
    first = asyncio.ensure_future(group.generate(request("a")))  # replica 0 busy with one request
    await asyncio.sleep(0.05)
    for i in range(3):  # one at a time: each new unit finds replica 1 idle and replica 0 busy
        await group.generate(request(f"b{i}"))
    await first
    assert [c.unit for c in slow.calls] == ["a"] and [c.unit for c in fast.calls] == ["b0", "b1", "b2"]


async def test_a_dead_replicas_calls_are_asked_again_elsewhere():
    group = Replicas(engines(2, fail={0}))
    answers = await asyncio.gather(*(group.generate(request(f"u{i}")) for i in range(6)))
    assert {a.text for a in answers} == {"answer from 1"}
    assert group.faults["replica lost"] == 1
    with pytest.raises(NoReplicaLeft):
        await Replicas(engines(2, fail={0, 1})).generate(request("x"))


async def test_a_request_one_replica_gave_up_is_asked_of_the_others():
    from airgen.engines import CallFailed

    def gives_up(r):
        raise CallFailed("gave up after 7 tries")

    group = Replicas([ScriptedEngine(gives_up, name="m"), ScriptedEngine(lambda r: "answered", name="m")])
    assert all(a.text == "answered" for a in await asyncio.gather(*(group.generate(request(f"u{i}"))
                                                                      for i in range(4))))
    both = Replicas([ScriptedEngine(gives_up, name="m"), ScriptedEngine(gives_up, name="m")])
    with pytest.raises(CallFailed):
        await both.generate(request("x"))
    assert both._live == {0, 1}  # a request given up is not a replica lost


class Outage:
    """A replica's outage as the HTTP engine keeps it: down until `back` is set."""

    def __init__(self):
        self.over = asyncio.Event()

    @property
    def down(self) -> bool:
        return not self.over.is_set()

    async def back(self) -> None:
        await self.over.wait()


async def test_a_replica_that_answers_nothing_is_passed_by_until_it_is_back():
    from airgen.engines import ServerDown

    outages = [Outage(), Outage()]

    def down_while(i):
        def respond(r):
            if outages[i].down:
                raise ServerDown(f"replica {i}")
            return f"answer from {i}"
        return respond

    made = [ScriptedEngine(down_while(i), name="m") for i in range(2)]
    for engine, outage in zip(made, outages):
        engine.outage = outage
    outages[1].over.set()
    group = Replicas(made)
    assert {(await group.generate(request(f"u{i}"))).text for i in range(4)} == {"answer from 1"}
    outages[1].over.clear()  # both down: calls wait for the first one back
    waiting = asyncio.ensure_future(group.generate(request("w")))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    outages[0].over.set()
    assert (await waiting).text == "answer from 0"


def airgen(servers, docs: Path, out: Path) -> subprocess.Popen:
    urls = [arg for s in servers for arg in ("--guidance-url", s.url, "--student-url", s.url)]
    settings = [f"--set={role}.{k}" for role in ("guidance", "student")
                for k in ("backoff_s=0.01", "max_retries=2", "timeout_s=5")]
    return subprocess.Popen([sys.executable, "-m", "airgen", "run", str(docs), "--out", str(out), "--rounds", "2",
                             "--no-progress", *urls, *settings], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines()]


def outputs(out: Path):
    return sorted((r["meta"]["doc_id"], r["meta"]["level"], r["instruction"], r["output"])
                  for r in lines(out / "records.jsonl"))


def test_two_servers_as_replicas_one_killed_mid_run(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_bytes(b"".join(orjson.dumps({"id": f"d{i:02d}", "text": f"document {i} about a topic " * 12}) + b"\n"
                              for i in range(40)))
    with FaultServer(latency_s=0.01) as one, FaultServer(latency_s=0.01) as two:
        whole = airgen([one, two], docs, tmp_path / "whole")
        _, err = whole.communicate(timeout=300)
        assert whole.returncode == 0, err[-3000:]
    # Each document's calls went to one server; the two took about as many documents each.
    by_server = [collections.Counter(key.split("/")[0] for key in s.keys()) for s in (one, two)]
    assert not set(by_server[0]) & set(by_server[1])
    assert 10 <= len(by_server[0]) <= 30 and len(by_server[0]) + len(by_server[1]) == 40
    assert "2 replicas" in err

    one, two = FaultServer(latency_s=0.02), FaultServer(latency_s=0.02)
    with two:
        one.__enter__()
        out = tmp_path / "out"
        proc = airgen([one, two], docs, out)
        deadline = time.monotonic() + 120
        while len(one.received) < 60 and time.monotonic() < deadline:
            time.sleep(0.01)
        one.__exit__(None, None, None)  # the server is gone, with calls of its documents in flight
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert outputs(out) == outputs(tmp_path / "whole")
    keys = collections.Counter(e["k"] for e in lines(out / "journal.jsonl") if "k" in e)
    assert max(keys.values()) == 1  # no call journaled twice
    assert lines(out / "metrics.jsonl")[-1]["faults"]["guidance+student"]["outages"] == 1  # polled meanwhile
