"""Readers, rule filters and ids: every malformed entry and every filtered document is recorded with its reason."""
from __future__ import annotations

import errno
import importlib.metadata
import json
import tracemalloc
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from airgen.method import corpus
from airgen.config import ConfigError, FilterConfig, load
from airgen.method.corpus import Document, bundled_corpus, read_documents
from airgen.select.filters import check_document, filter_documents
from airgen.method.rows import CorpusError, Rejection, content_id

PROSE = (
    "The committee met on Tuesday to discuss the budget for the coming year, and members agreed that spending on "
    "roads and schools should rise while administrative costs fall. Several speakers warned that revenue forecasts "
    "were uncertain and asked for a review in six months. The chair closed the meeting after two hours of debate."
)  # 54 words, ordinary punctuation


def doc(text: str, doc_id: str = "d") -> Document:
    return Document(doc_id, text, "test")


def rule_of(text: str, config: FilterConfig = FilterConfig()):
    rejection = check_document(doc(text), config)
    return None if rejection is None else (rejection.rule, rejection.value)


def test_ordinary_prose_passes_every_rule():
    assert len(PROSE.split()) == 54
    assert rule_of(PROSE) is None


def test_word_count_limits():
    assert rule_of("too short " * 10) == ("words", 20)
    assert rule_of(" ".join(["word"] * 2049)) == ("words", 2049)
    assert rule_of(" ".join(f"w{i}" for i in range(2048))) is None
    assert rule_of("too short " * 10, FilterConfig(min_words=20)) is None


def test_symbols_may_not_outnumber_text():
    noisy = PROSE + " " + "#$%&*@!" * 60  # 420 symbols against ~300 letters
    rule, value = rule_of(noisy)
    assert rule == "symbol_ratio" and 0.5 < value < 0.6
    assert rule_of(noisy, FilterConfig(max_symbol_ratio=0.6)) is None
    assert rule_of(noisy, FilterConfig(symbol_filter=False)) is None


def test_duplicate_lines_over_ten_percent_are_redundant():
    lines = [f"Line {i} says something different about the weather and the harvest." for i in range(18)]
    two_repeats = "\n".join(lines + lines[:2])  # 2 of 20 lines repeat: exactly 10%, allowed
    three_repeats = "\n".join(lines + lines[:3])  # 3 of 21: over 10%
    assert rule_of(two_repeats) is None
    assert rule_of(three_repeats) == ("duplicate_lines", round(3 / 21, 4))
    assert rule_of(three_repeats, FilterConfig(redundancy_filter=False)) is None


def test_one_character_repeated_eleven_times_is_redundant():
    assert rule_of(PROSE + " " + "=" * 10) is None
    assert rule_of(PROSE + " " + "=" * 11) == ("char_run", 11)
    assert rule_of(PROSE + " wow" + "!" * 30) == ("char_run", 30)
    assert rule_of(PROSE + "\n" + " " * 40 + "indented") is None  # whitespace runs are layout
    assert rule_of(PROSE + " " + "=" * 11, FilterConfig(max_char_run=11)) is None


def test_exact_duplicates_and_reused_ids_are_rejected():
    other = PROSE.replace("Tuesday", "Friday")
    items = [doc(PROSE, "a"), doc(PROSE, "b"), doc(other, "a"), doc(other, "c"), doc("short", "e")]
    out = list(filter_documents(items, FilterConfig()))
    kept = [item.id for item in out if isinstance(item, Document)]
    rejected = [(item.id, item.rule) for item in out if isinstance(item, Rejection)]
    assert kept == ["a", "c"]
    assert rejected == [("b", "duplicate"), ("a", "duplicate_id"), ("e", "words")]
    assert out[1].value == "a"  # the duplicate names the copy that was kept
    # With dedup off the copy stays, but a reused id is still refused: the manifest could not tell them apart.
    out = list(filter_documents(items[:3], FilterConfig(dedup=False)))
    assert [(x.id, getattr(x, "rule", "kept")) for x in out] == [("a", "kept"), ("b", "kept"), ("a", "duplicate_id")]


@pytest.mark.parametrize(
    "kwargs", [{"min_words": 10, "max_words": 5}, {"max_symbol_ratio": 1.5}, {"max_char_run": 0},
               {"max_duplicate_line_share": -0.1}]
)
def test_impossible_thresholds_are_refused(kwargs):
    with pytest.raises(ConfigError, match="select.filters"):
        load(overrides={"select": {"filters": kwargs}})


def test_content_id_is_stable_across_unicode_forms():
    composed = "café au lait"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert content_id(composed) == content_id(decomposed)
    assert len(content_id(composed)) == 16 and int(content_id(composed), 16) >= 0
    assert content_id(composed) != content_id("cafe au lait")


def test_jsonl_malformed_lines_are_recorded_not_fatal(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [
        json.dumps({"id": 7, "text": "first document"}).encode(),
        b'{"text": "unterminated',
        json.dumps({"body": "no text field", "id": "x"}).encode(),
        json.dumps({"text": 42}).encode(),
        b'{"text": "caf\xe9"}',  # Latin-1, not UTF-8
        b"",
        json.dumps({"document": "   "}).encode(),
        json.dumps(["a", "list"]).encode(),
        json.dumps({"text": "bad id", "id": {"nested": 1}}).encode(),
        json.dumps({"document": "second document"}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = list(read_documents([path]))
    assert [(x.id, x.text, x.source) for x in items if isinstance(x, Document)] == [
        ("7", "first document", f"{path}:1"),
        (content_id("second document"), "second document", f"{path}:10"),
    ]
    rejected = [(x.source.rsplit(":", 1)[1], x.rule) for x in items if isinstance(x, Rejection)]
    assert rejected == [
        ("2", "bad_json"), ("3", "missing_field"), ("4", "bad_type"), ("5", "not_utf8"), ("6", "empty"),
        ("7", "empty"), ("8", "bad_json"), ("9", "bad_type"),
    ]
    missing = next(x for x in items if isinstance(x, Rejection) and x.rule == "missing_field")
    assert missing.id == "x" and missing.value == ["body", "id"]


def test_parquet_rows_and_bad_parquet_files(tmp_path):
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "document": ["alpha text", None, "gamma text"]}), good)
    no_text = tmp_path / "no_text.parquet"
    pq.write_table(pa.table({"body": ["x"]}), no_text)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    items = list(read_documents([good, no_text, broken]))
    assert [(x.id, x.text, x.source) for x in items if isinstance(x, Document)] == [
        ("1", "alpha text", f"{good}:1"), ("3", "gamma text", f"{good}:3")
    ]
    assert [(x.source, x.rule) for x in items if isinstance(x, Rejection)] == [
        (f"{good}:2", "missing_field"), (str(no_text), "missing_field"), (str(broken), "bad_parquet")
    ]


def test_text_folder_and_line_files(tmp_path):
    folder = tmp_path / "docs"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "2.txt").write_text("in a subfolder\n")
    (folder / "a.txt").write_text("  first file  \n")
    (folder / "c.txt").write_bytes(b"\xff\xfe broken")
    (folder / "notes.md").write_text("not a .txt file")
    lines = tmp_path / "corpus.cor"
    lines.write_text("one per line\n\nsecond line\n")
    items = list(read_documents([folder, lines]))
    assert [(x.text, x.source) for x in items if isinstance(x, Document)] == [
        ("first file", str(folder / "a.txt")),
        ("in a subfolder", str(folder / "b" / "2.txt")),
        ("one per line", f"{lines}:1"),
        ("second line", f"{lines}:3"),
    ]
    assert [(x.source, x.rule) for x in items if isinstance(x, Rejection)] == [
        (str(folder / "c.txt"), "not_utf8"), (f"{lines}:2", "empty")
    ]


def test_bad_paths_fail_before_anything_is_read(tmp_path):
    good = tmp_path / "ok.jsonl"
    good.write_text('{"text": "x"}\n')
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "table.csv").write_text("text\nx\n")
    (tmp_path / "array.json").write_text('\n  [{"text": "x"},\n {"text": "y"}]\n')
    for bad, message in [
        (tmp_path / "array.json", "one JSON array"),
        (tmp_path / "missing.jsonl", "does not exist"),
        (tmp_path / "table.csv", "unknown format '.csv'"),
        (tmp_path / "empty_dir", "holds no .txt files"),
    ]:
        with pytest.raises(CorpusError, match=message):
            read_documents([good, bad])  # raises on the call itself, not on the first next()


def test_reading_streams(tmp_path):
    # Memory must not grow with the corpus: peak allocation reading 40k lines stays near that of one line.
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(40_000):
            f.write(json.dumps({"id": i, "text": f"document number {i} " + "filler words " * 20}) + "\n")
    tracemalloc.start()
    count = sum(1 for _ in read_documents([path]))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 40_000
    assert peak < 1_000_000, f"reading 40k lines peaked at {peak} bytes"


def test_bundled_corpus_is_found_without_importing_gensim():
    path = bundled_corpus()
    docs = [x for x in read_documents([path]) if isinstance(x, Document)]
    assert len(docs) == 300 and all(len(d.text.split()) > 20 for d in docs)


def test_bundled_corpus_missing_gives_a_clear_error(monkeypatch):
    def no_gensim(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(corpus.importlib.metadata, "distribution", no_gensim)
    with pytest.raises(CorpusError, match="pip install --no-deps gensim"):
        bundled_corpus()


def test_a_folder_rejects_what_it_cannot_read(tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("A readable document about gardens.")
    (folder / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (folder / "x.txt").mkdir()
    (folder / "bad-disk.txt").write_text("a sector that cannot be read")
    read_bytes = Path.read_bytes

    def failing(path):
        if path.name == "bad-disk.txt":
            raise OSError(errno.EIO, "Input/output error")
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", failing)
    out = list(read_documents([folder]))
    by_source = {Path(u.source).name: u for u in out}
    assert isinstance(by_source["a.txt"], Document)
    assert (by_source["dangling.txt"].rule, by_source["dangling.txt"].value) == ("unreadable", "a link to nothing")
    assert (by_source["x.txt"].rule, by_source["x.txt"].value) == ("not_a_file", "a folder")
    assert (by_source["bad-disk.txt"].rule, by_source["bad-disk.txt"].value) == ("unreadable", "Input/output error")
    assert len(out) == 4
