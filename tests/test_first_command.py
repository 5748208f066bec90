"""A first command that works: a role given no model asks the other role's model (said in the banner), and a fresh
venv with only `pip install airgen` (no torch) drives a server run and refuses what needs an extra in one line."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faultserver import FaultServer
from tests.runs import documents, lines

ROOT = Path(__file__).resolve().parent.parent


def airgen(python: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "airgen", *args], capture_output=True, text=True, timeout=600,
                          cwd=ROOT if python == sys.executable else "/", env={**os.environ, "PYTHONPATH": ""})


def test_a_role_given_no_model_asks_the_other_roles_model_and_says_so(tmp_path):
    with FaultServer() as server:
        done = airgen(sys.executable, "run", str(documents(tmp_path / "d.jsonl", 4)), "--out", str(tmp_path / "o"),
                      "--guidance-url", server.url, "--rounds", "2", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "airgen: no student model given: the guidance's model answers as the student too" in done.stderr
    assert f"airgen: guidance and student: {server.url}" in done.stderr
    assert "in process" not in done.stderr
    assert any("/student" in key or "/answer" in key for key, _, _ in server.received)
    assert lines(tmp_path / "o" / "records.jsonl")


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> str:
    """A venv holding `pip install airgen` and nothing else."""
    if not _pypi_reachable():
        pytest.skip("PyPI is not reachable: a fresh install cannot be made")
    venv = tmp_path_factory.mktemp("light") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)], check=True,
                   timeout=900)
    return python


@pytest.mark.slow
def test_pip_install_airgen_drives_a_server_run_without_torch(light, tmp_path):
    assert subprocess.run([light, "-c", "import torch"], capture_output=True).returncode != 0
    with FaultServer() as server:
        done = airgen(light, "run", str(documents(tmp_path / "d.jsonl", 4)), "--out", str(tmp_path / "o"),
                      "--guidance-url", server.url, "--student-url", server.url, "--rounds", "2", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert lines(tmp_path / "o" / "records.jsonl")
    report = airgen(light, "report", str(tmp_path / "o"))
    assert report.returncode == 0 and "no plots: matplotlib is missing" in report.stderr


@pytest.mark.parametrize("args, extra", [
    (("select", "{docs}", "--out", "{tmp}/s", "--n", "2"), 'pip install "airgen[select]"'),
    (("run", "{docs}", "--out", "{tmp}/r"), 'pip install "airgen[vllm]"'),
    (("run", "{docs}", "--out", "{tmp}/p", "--guidance", "{tmp}"), 'pip install "airgen[vllm]"'),
])
@pytest.mark.slow
def test_what_needs_an_extra_is_refused_in_one_line(light, tmp_path, args, extra):
    docs = documents(tmp_path / "d.jsonl", 4)
    done = airgen(light, *(a.format(docs=docs, tmp=tmp_path) for a in args))
    assert done.returncode == 2 and extra in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and extra in done.stderr.strip().splitlines()[-1]
