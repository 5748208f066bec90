"""`airgen select` end to end on real news articles with real MiniLM embeddings."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from airgen import cli

from airgen.select import selection
from airgen.method.corpus import Document, bundled_corpus, read_documents
from airgen_kernels import farthest_point_sampling

N_ARTICLES = 14
N_PICK = 5


def run_select(*argv: str) -> int:
    return cli.main(["select", *(str(a) for a in argv)])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def articles() -> list[Document]:
    docs = [x for x in read_documents([bundled_corpus()]) if isinstance(x, Document)]
    return [d for d in docs if len(d.text.split()) >= 50][:N_ARTICLES]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory, articles) -> Path:
    path = tmp_path_factory.mktemp("in") / "news.jsonl"
    records = [{"id": f"news-{i}", "text": d.text} for i, d in enumerate(articles)]
    records.append({"id": "short", "text": "Too short to teach anything."})
    records.append({"id": "copy", "text": articles[3].text})
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
        f.write('{"text": broken json\n')
    return path


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, corpus_file):
    out = tmp_path_factory.mktemp("out")
    assert run_select(corpus_file, "--out", out, "--n", N_PICK, "--seed", "3") == 0
    return out


def test_outputs_name_the_picks_in_order(first_run, articles):
    manifest = read_jsonl(first_run / selection.MANIFEST)
    selected = read_jsonl(first_run / selection.SELECTED)
    assert [m["rank"] for m in manifest] == list(range(N_PICK))
    assert [m["id"] for m in manifest] == [s["id"] for s in selected]
    assert len({m["id"] for m in manifest}) == N_PICK
    by_id = {f"news-{i}": d.text for i, d in enumerate(articles)}
    for record in selected:
        assert set(record) == {"id", "text"} and record["text"] == by_id[record["id"]]
    # Each pick is farther from the set than any later one (max-min), the first has no set to be far from.
    distances = [m["distance"] for m in manifest]
    assert distances[0] is None and all(0 < d < 2 for d in distances[1:])
    assert all(a >= b - 1e-6 for a, b in zip(distances[1:], distances[2:]))


def test_every_rejection_is_recorded_with_its_rule(first_run, corpus_file):
    rejected = read_jsonl(first_run / selection.REJECTED)
    assert [(r["id"], r["stage"], r["reason"]) for r in rejected] == [
        ("short", "filter", "words"), ("copy", "filter", "duplicate"), (None, "read", "bad_json")]
    assert rejected[0]["value"] == 5 and rejected[1]["value"] == "news-3" and rejected[2]["source"] == f"{corpus_file}:{N_ARTICLES + 3}"
    summary = json.loads((first_run / selection.SUMMARY).read_text())
    assert summary["read"] == N_ARTICLES + 3 and summary["kept"] == N_ARTICLES
    assert summary["rejected"] == {"bad_json": 1, "duplicate": 1, "words": 1}


def test_embeddings_are_unit_float16_with_ids_beside(first_run):
    matrix = np.load(first_run / "embeddings.npy")
    ids = read_jsonl(first_run / "embeddings.ids.jsonl")
    assert matrix.dtype == np.float16 and matrix.shape == (N_ARTICLES, 384)
    np.testing.assert_allclose(np.linalg.norm(matrix.astype(np.float32), axis=1), 1, atol=2e-3)
    assert ids == [f"news-{i}" for i in range(N_ARTICLES)]
    # Real sentence embeddings: distinct news articles are related but far from identical.
    sims = matrix.astype(np.float32) @ matrix.astype(np.float32).T
    assert 0.0 < np.median(sims[np.triu_indices(N_ARTICLES, 1)]) < 0.6
    # The manifest is exactly farthest-point sampling over these vectors, started where the seed says.
    manifest = read_jsonl(first_run / selection.MANIFEST)
    picks = farthest_point_sampling(matrix, N_PICK, seed=3, device="cpu").indices
    assert [m["row"] for m in manifest] == picks.tolist()


def test_a_rerun_reuses_the_embeddings(first_run, corpus_file, capsys):
    before = (first_run / selection.MANIFEST).read_text()
    assert run_select(corpus_file, "--out", first_run, "--n", N_PICK, "--seed", "3") == 0
    summary = json.loads((first_run / selection.SUMMARY).read_text())
    assert summary["embeddings_cached"] is True and summary["embedded"] == 0
    assert "from the cache" in capsys.readouterr().out
    assert (first_run / selection.MANIFEST).read_text() == before


def test_last_method_and_start_row(first_run, corpus_file, tmp_path):
    for cache_file in first_run.glob("embeddings.*"):  # the cache travels with the folder
        shutil.copy(cache_file, tmp_path)
    assert run_select(corpus_file, "--out", tmp_path, "--n", 4, "--method", "last", "--start", 2) == 0
    assert json.loads((tmp_path / selection.SUMMARY).read_text())["embeddings_cached"] is True
    manifest = read_jsonl(tmp_path / selection.MANIFEST)
    matrix = np.load(tmp_path / "embeddings.npy")
    assert manifest[0]["row"] == 2
    want = farthest_point_sampling(matrix, 4, start=2, method="last", device="cpu")
    assert [m["row"] for m in manifest] == want.indices.tolist()


def test_sampling_alone_on_precomputed_embeddings(first_run, tmp_path):
    matrix = np.load(first_run / "embeddings.npy").astype(np.float32)
    own = tmp_path / "mine.npy"
    np.save(own, matrix * np.linspace(1, 5, len(matrix))[:, None])  # unnormalised: lengths must not matter
    out = tmp_path / "out"
    assert run_select("--embeddings", own, "--out", out, "--n", 4, "--start", 1) == 0
    manifest = read_jsonl(out / selection.MANIFEST)
    want = farthest_point_sampling(matrix / np.linalg.norm(matrix, axis=1, keepdims=True), 4, start=1)
    assert [m["row"] for m in manifest] == want.indices.tolist()
    assert [m["id"] for m in manifest] == [str(r) for r in want.indices]  # no ids file: row numbers
    assert not (out / selection.SELECTED).exists()
    # airgen's own cache carries its ids beside it.
    assert run_select("--embeddings", first_run / "embeddings.npy", "--out", out, "--n", 2, "--start", 0) == 0
    assert [m["id"] for m in read_jsonl(out / selection.MANIFEST)][0] == "news-0"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["missing.jsonl"], "does not exist"),
        (["{corpus}", "--n", "50"], "--n 50 is more than the 14 documents"),
        (["{corpus}", "--start", "14"], "--start 14 is outside"),
        (["{corpus}", "--embeddings", "e.npy"], "not both"),
        (["{corpus}", "--max-symbol-ratio", "2"], "max_symbol_ratio"),
        (["{corpus}", "--min-words", "100000", "--max-words", "100000"], "none of the 17 documents"),
        (["--embeddings", "nothing.npy"], "does not exist"),
        (["--n", "100000"], "passed the filters (300 read)"),  # no INPUT: the bundled corpus
    ],
)
def test_errors_exit_2_with_a_reason(argv, message, corpus_file, tmp_path, capsys):
    argv = [a.replace("{corpus}", str(corpus_file)) for a in argv]
    if "--n" not in argv:
        argv += ["--n", "2"]
    assert run_select(*argv, "--out", tmp_path / "out") == 2
    assert message in capsys.readouterr().err
