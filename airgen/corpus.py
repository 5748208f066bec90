"""Documents in, documents out: readers for JSONL, Parquet and text files, the paper's rule filters, stable ids.

Readers stream: one line (or one Parquet batch) at a time, so memory does not grow with the corpus. Malformed input
never stops a read and never vanishes: it comes out as a `Rejection` saying where, which rule and what was seen.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import itertools
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from airgen.config import FilterConfig

JSONL_SUFFIXES = (".jsonl", ".json")
LINE_SUFFIXES = (".cor", ".txt")  # one document per line
PARQUET_SUFFIXES = (".parquet",)
TEXT_FIELDS = ("text", "document")
BUNDLED_CORPUS = "gensim/test/test_data/lee_background.cor"
# The rules of `filter_documents`; every other Rejection is one of reading (bad_json, not_utf8, ...).
FILTER_RULES = frozenset({"words", "symbol_ratio", "duplicate_lines", "char_run", "duplicate", "duplicate_id"})

_SYMBOL = re.compile(r"[^\w\s]")
_PARQUET_BATCH_ROWS = 1024


class CorpusError(ValueError):
    """Input that cannot be read at all (missing path, unknown format); the message says which and why."""


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    source: str  # "path:line" (line or row number, from 1) or "path"


@dataclass(frozen=True, slots=True)
class Rejection:
    id: str | None
    source: str
    rule: str
    value: object


def unit_name(unit: object) -> str:
    """A unit's name in the journal and the output files: its id, or "@source" for an entry that could not be read
    as one (a Rejection at reading)."""
    return f"@{unit.source}" if isinstance(unit, Rejection) else unit.id  # type: ignore[attr-defined]


def content_id(text: str) -> str:
    """Stable id of a text: the same characters give the same id whatever their Unicode composition."""
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode("utf-8")).hexdigest()[:16]


def bundled_corpus() -> Path:
    """The 300 news articles (one per line) that ship in the gensim wheel; gensim itself is never imported."""
    try:
        dist = importlib.metadata.distribution("gensim")
    except importlib.metadata.PackageNotFoundError:
        raise CorpusError(
            "no input given and the bundled corpus is missing: install it with `pip install --no-deps gensim`, "
            "or pass documents (JSONL, Parquet or a folder of .txt files)"
        ) from None
    path = Path(dist.locate_file(BUNDLED_CORPUS))
    if not path.is_file():
        raise CorpusError(f"the installed gensim has no {BUNDLED_CORPUS}; pass documents explicitly")
    return path


def read_documents(inputs: Sequence[Path]) -> Iterator[Document | Rejection]:
    """Every document of `inputs` in order, or a Rejection for each malformed entry.

    All paths are checked before anything is read, so a typo fails at once rather than after an hour of reading.
    """
    paths = [Path(p) for p in inputs]
    for path in paths:
        _check_input(path)
    return _read_all(paths)


def admitted(inputs: Sequence[Path], limit: int | None = None) -> Iterator[Document | Rejection]:
    """What a run admits, in input order: the first `limit` entries read (rejections count), each Document whose id
    was seen before turned into a `duplicate_id` Rejection. `airgen run` and `airgen bench` both read through it."""
    units = read_documents(inputs)
    if limit is not None:
        units = itertools.islice(units, limit)
    return first_ids(units)


def first_ids(units: Iterable) -> Iterator:
    """Each unit (a Document, or any unit with an id and a source) whose id was seen before, as a Rejection."""
    seen: dict[str, str] = {}  # unit id -> source of its first occurrence
    for unit in units:
        if not isinstance(unit, Rejection):
            if unit.id in seen:
                unit = Rejection(unit.id, unit.source, "duplicate_id", f"first seen at {seen[unit.id]}")
            else:
                seen[unit.id] = unit.source
        yield unit


def check_document(doc: Document, config: FilterConfig) -> Rejection | None:
    """The first rule `doc` fails, with the measured value; None if it passes. Dedup is `deduplicate`'s job."""
    words = len(doc.text.split())
    if not config.min_words <= words <= config.max_words:
        return _reject(doc, "words", words)
    if config.symbol_filter:
        ratio = symbol_ratio(doc.text)
        if ratio > config.max_symbol_ratio:
            return _reject(doc, "symbol_ratio", round(ratio, 4))
    if config.redundancy_filter:
        share = duplicate_line_share(doc.text)
        if share > config.max_duplicate_line_share:
            return _reject(doc, "duplicate_lines", round(share, 4))
        run = longest_char_run(doc.text)
        if run > config.max_char_run:
            return _reject(doc, "char_run", run)
    return None


def filter_documents(items: Iterable[Document | Rejection], config: FilterConfig) -> Iterator[Document | Rejection]:
    """Applies the rule filters, then drops exact duplicates (same content; the value names the kept copy's id)
    and reused ids. Its only growing state is one content hash and one id per kept document.
    """
    first_with: dict[str, str] = {}  # content hash -> id of the kept document with that content
    seen_ids: set[str] = set()
    for item in items:
        if isinstance(item, Rejection):
            yield item
            continue
        rejection = check_document(item, config)
        key = content_id(item.text) if config.dedup and rejection is None else ""
        if key in first_with:
            rejection = _reject(item, "duplicate", first_with[key])
        # Two different texts under one id would make the manifest ambiguous, whatever the dedup setting.
        if rejection is None and item.id in seen_ids:
            rejection = _reject(item, "duplicate_id", item.id)
        if rejection is not None:
            yield rejection
            continue
        if key:
            first_with[key] = item.id
        seen_ids.add(item.id)
        yield item


def symbol_ratio(text: str) -> float:
    """Share of characters that are neither word characters nor whitespace."""
    return len(_SYMBOL.findall(text)) / len(text) if text else 0.0


def duplicate_line_share(text: str) -> float:
    """Share of non-empty lines that repeat an earlier one.

    Lines, not paragraphs: a repeated paragraph repeats all its lines, so it counts here as well.
    """
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    return (len(lines) - len(set(lines))) / len(lines) if lines else 0.0


def longest_char_run(text: str) -> int:
    """Longest run of one repeated non-space character (whitespace runs are layout, such as indentation)."""
    longest = run = 0
    previous = ""
    for char in text:
        run = run + 1 if char == previous else 1
        previous = char
        if not char.isspace() and run > longest:
            longest = run
    return longest


def _reject(doc: Document, rule: str, value: object) -> Rejection:
    return Rejection(id=doc.id, source=doc.source, rule=rule, value=value)


def _check_input(path: Path) -> None:
    if not path.exists():
        raise CorpusError(f"input {path} does not exist")
    if path.is_dir():
        if not any(p.is_file() for p in path.rglob("*.txt")):
            raise CorpusError(f"input folder {path} holds no .txt files")
        return
    if path.suffix.lower() not in JSONL_SUFFIXES + LINE_SUFFIXES + PARQUET_SUFFIXES:
        known = ", ".join(JSONL_SUFFIXES + LINE_SUFFIXES + PARQUET_SUFFIXES)
        raise CorpusError(f"input {path}: unknown format {path.suffix!r}; known: {known}, or a folder of .txt files")
    if path.suffix.lower() in JSONL_SUFFIXES and _first_byte(path) == b"[":
        # Read line by line, a JSON array would become one bad_json rejection per line.
        raise CorpusError(f"input {path} is one JSON array; write one JSON object per line (JSON Lines)")


def _first_byte(path: Path) -> bytes:
    with path.open("rb") as f:
        for line in f:
            if line.strip():
                return line.lstrip()[:1]
    return b""


def _read_all(paths: list[Path]) -> Iterator[Document | Rejection]:
    for path in paths:
        suffix = path.suffix.lower()
        if path.is_dir():
            yield from _read_folder(path)
        elif suffix in JSONL_SUFFIXES:
            yield from _read_jsonl(path)
        elif suffix in PARQUET_SUFFIXES:
            yield from _read_parquet(path)
        else:
            yield from _read_lines(path)


def _document(text: object, raw_id: object, source: str) -> Document | Rejection:
    """A Document from one entry's fields, or the Rejection that says what is wrong with them."""
    if not isinstance(text, str):
        return Rejection(None, source, "bad_type", f"text is {type(text).__name__}")
    if not text.strip():
        return Rejection(None, source, "empty", len(text))
    if raw_id is None:
        return Document(content_id(text), text, source)
    # bool is an int subclass, but True as an id is almost surely a wrong column.
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        return Rejection(None, source, "bad_type", f"id is {type(raw_id).__name__}")
    return Document(str(raw_id), text, source)


def jsonl_objects(path: Path) -> Iterator[tuple[str, dict] | Rejection]:
    """(source, object) for each line of a JSON Lines file, or the Rejection of a line that is not one object."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            source = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Rejection(None, source, "not_utf8", f"byte {e.start}")
                continue
            if not line.strip():
                yield Rejection(None, source, "empty", 0)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                yield Rejection(None, source, "bad_json", e.msg)
                continue
            if not isinstance(record, dict):
                yield Rejection(None, source, "bad_json", f"a {type(record).__name__}, not an object")
                continue
            yield source, record


def _read_jsonl(path: Path) -> Iterator[Document | Rejection]:
    for item in jsonl_objects(path):
        if isinstance(item, Rejection):
            yield item
            continue
        source, record = item
        field = next((name for name in TEXT_FIELDS if name in record), None)
        if field is None:
            yield Rejection(_plain_id(record.get("id")), source, "missing_field", sorted(record)[:10])
            continue
        yield _document(record[field], record.get("id"), source)


def _plain_id(raw_id: object) -> str | None:
    return str(raw_id) if isinstance(raw_id, (str, int)) and not isinstance(raw_id, bool) else None


def open_parquet(path: Path):
    """The Parquet file at `path`, or the Rejection saying why it cannot be read as one."""
    import pyarrow.parquet as pq  # deferred: only Parquet inputs pay for the import

    try:
        return pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a damaged or non-Parquet file
        return Rejection(None, str(path), "bad_parquet", str(e)[:200])


def _read_parquet(path: Path) -> Iterator[Document | Rejection]:
    parquet = open_parquet(path)
    if isinstance(parquet, Rejection):
        yield parquet
        return
    names = parquet.schema_arrow.names
    field = next((name for name in TEXT_FIELDS if name in names), None)
    if field is None:
        yield Rejection(None, str(path), "missing_field", names[:10])
        return
    columns = [field] + (["id"] if "id" in names else [])
    number = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        texts = batch.column(field).to_pylist()
        ids = batch.column("id").to_pylist() if "id" in columns else [None] * len(texts)
        for text, raw_id in zip(texts, ids):
            number += 1
            source = f"{path}:{number}"
            if text is None:
                yield Rejection(_plain_id(raw_id), source, "missing_field", field)
                continue
            if isinstance(text, bytes):
                try:
                    text = text.decode("utf-8")
                except UnicodeDecodeError as e:
                    yield Rejection(_plain_id(raw_id), source, "not_utf8", f"byte {e.start}")
                    continue
            yield _document(text, raw_id, source)


def _read_lines(path: Path) -> Iterator[Document | Rejection]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            source = f"{path}:{number}"
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                yield Rejection(None, source, "not_utf8", f"byte {e.start}")
                continue
            yield _document(text, None, source)


def _read_folder(folder: Path) -> Iterator[Document | Rejection]:
    # Sorted by relative path so the order (and so the default random start) does not depend on the file system.
    # Every *.txt entry is read or rejected: a folder named x.txt, a dangling link, a file that cannot be opened.
    for path in sorted(folder.rglob("*.txt"), key=lambda p: p.relative_to(folder).as_posix()):
        if path.is_dir():
            yield Rejection(None, str(path), "not_a_file", "a folder")
            continue
        try:
            text = path.read_bytes().decode("utf-8").strip()
        except UnicodeDecodeError as e:
            yield Rejection(None, str(path), "not_utf8", f"byte {e.start}")
            continue
        except OSError as e:
            why = "a link to nothing" if path.is_symlink() and not path.exists() else e.strerror or type(e).__name__
            yield Rejection(None, str(path), "unreadable", why)
            continue
        yield _document(text, None, str(path))
