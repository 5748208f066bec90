"""Documents in, for AIR: JSONL (a `text` or `document` field, optional `id`), Parquet with the same columns, text
files of one document per line, or folders of .txt files (one document per file), on the shared reading layer
(`airgen.rows`): streamed, stable ids, every malformed entry a `Rejection`.
"""
from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from airgen.method.rows import (JSONL_SUFFIXES, PARQUET_SUFFIXES, CorpusError, Rejection, admit, check_jsonl, content_id,
                         jsonl_objects, open_parquet, parquet_rows, plain_id)

LINE_SUFFIXES = (".cor", ".txt")  # one document per line
TEXT_FIELDS = ("text", "document")
BUNDLED_CORPUS = "gensim/test/test_data/lee_background.cor"


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    source: str  # "path:line" (line or row number, from 1) or "path"


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
    """What a run admits of `inputs` (`rows.admit`)."""
    return admit(read_documents(inputs), limit)


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
    check_jsonl(path)


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


def _read_jsonl(path: Path) -> Iterator[Document | Rejection]:
    for item in jsonl_objects(path):
        if isinstance(item, Rejection):
            yield item
            continue
        source, record = item
        field = next((name for name in TEXT_FIELDS if name in record), None)
        if field is None:
            yield Rejection(plain_id(record.get("id")), source, "missing_field", sorted(record)[:10])
            continue
        yield _document(record[field], record.get("id"), source)


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
    for item in parquet_rows(path, [field] + (["id"] if "id" in names else [])):
        if isinstance(item, Rejection):
            yield item
            continue
        source, row = item
        text, raw_id = row[field], row.get("id")
        if text is None:
            yield Rejection(plain_id(raw_id), source, "missing_field", field)
            continue
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError as e:
                yield Rejection(plain_id(raw_id), source, "not_utf8", f"byte {e.start}")
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
