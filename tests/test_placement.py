"""Where each role's engines run: replicas from device groups or URLs, the memory share of GPUs the roles share,
the layouts refused in one line, and (for real, on this CPU machine) two in-process engines each started on its own
device list, as its engine processes' environment shows."""
from __future__ import annotations

import asyncio
import os

import psutil
import pytest

from airgen.method.calls import Request, Sampling
from airgen.config import ConfigError, ModelConfig
from airgen.engines.placement import gpus_needed, place, replicas


def test_a_roles_replicas_are_its_device_groups_or_its_urls():
    config = ModelConfig(path="/m", devices=(0, 1, 2, 3), tensor_parallel_size=2)
    assert [c.devices for c in replicas(config)] == [(0, 1), (2, 3)]
    assert [c.url for c in replicas(ModelConfig(url=("http://a", "http://b")))] == ["http://a", "http://b"]
    assert replicas(ModelConfig(path="/m")) == [ModelConfig(path="/m")]
    assert gpus_needed([config, ModelConfig(path="/s", devices=(4, 5, 6, 7))]) == 8
    assert gpus_needed([ModelConfig(path="/g", tensor_parallel_size=4), ModelConfig(path="/s")]) == 4


def test_roles_on_a_shared_device_split_its_memory_and_roles_apart_do_not():
    shared = place({"guidance": ModelConfig(path="/g", devices=(0,)), "student": ModelConfig(path="/s", devices=(0,))},
                   gpus=2)
    assert [shared[r][0].gpu_memory_utilization for r in ("guidance", "student")] == [0.45, 0.45]
    apart = place({"guidance": ModelConfig(path="/g", devices=(0,)), "student": ModelConfig(path="/s", devices=(1,))},
                  gpus=2)
    assert [apart[r][0].gpu_memory_utilization for r in ("guidance", "student")] == [None, None]
    # Today's default, both on vLLM's default devices, shares them too.
    both = place({"guidance": ModelConfig(path="/g"), "student": ModelConfig(path="/s")}, gpus=1)
    assert [both[r][0].gpu_memory_utilization for r in ("guidance", "student")] == [0.45, 0.45]


@pytest.mark.parametrize("configs, gpus, says", [
    ({"guidance": ModelConfig(path="/g", devices=(0, 1, 2), tensor_parallel_size=2)}, 8,
     "has 3 GPUs, which tensor_parallel_size 2 does not divide"),
    ({"guidance": ModelConfig(path="/g", devices=(4, 5, 6, 7, 8))}, 8, "names GPU 8, but this node has 8 (0..7)"),
    ({"guidance": ModelConfig(path="/g", devices=(0, 0))}, 8, "names a GPU twice"),
    ({"guidance": ModelConfig(path="/g", devices=(0, 1), gpu_memory_utilization=0.6),
      "student": ModelConfig(path="/s", devices=(1,), gpu_memory_utilization=0.5)}, 8,
     "share GPUs [1] and ask 0.6 + 0.5 of their memory"),
])
def test_a_layout_that_cannot_run_is_refused_in_one_line(configs, gpus, says):
    with pytest.raises(ConfigError) as refused:
        place(configs, gpus)
    assert says in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.vllm
@pytest.mark.asyncio(loop_scope="module")
async def test_two_in_process_engines_each_see_their_own_devices(tmp_path):
    pytest.importorskip("vllm")
    from airgen.engines.build import close_engines, start_engines
    from airgen.engines.models import embedded_model_path

    source = embedded_model_path()
    copy = tmp_path / "student-model"  # another model to the run: its own folder (hard links: no bytes copied)
    copy.mkdir()
    for f in source.iterdir():
        os.link(f, copy / f.name)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    settings = dict(max_model_len=1024, kv_cache_gib=0.5)
    engines = await start_engines(ModelConfig(path=str(source), devices=(0,), **settings),
                                  ModelConfig(path=str(copy), devices=(1,), **settings))
    try:
        cores = [p for p in psutil.Process().children(recursive=True)
                 if p.pid not in before and "EngineCore" in " ".join(p.cmdline())]
        seen = sorted(p.environ().get("CUDA_VISIBLE_DEVICES") for p in cores)
        assert seen == ["0", "1"]  # each engine's process, read from /proc
        assert "CUDA_VISIBLE_DEVICES" not in os.environ  # set only while each engine started
        request = Request("d/answer/1", "student", "answer", ({"role": "user", "content": "Say hi."},),
                          Sampling(max_tokens=4))
        answers = await asyncio.gather(engines["guidance"].generate(request), engines["student"].generate(request))
        assert all(a.output_tokens > 0 for a in answers)
    finally:
        await close_engines(engines)
