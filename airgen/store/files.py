"""How airgen writes files, in one place: whole files appear atomically, logs only ever grow by whole lines.

- `atomic_write` / `atomic_text`: the file appears under its name only once completely written (temporary file in
  the same folder, fsync, rename, fsync of the folder), so a kill never leaves a half-written file behind its name;
  `publish` does the same for a file written some other way (a memory map).
- `AppendLog`: one orjson line per `write`, a single os.write on an O_APPEND descriptor, fsync on `sync` and on
  close. A SIGKILL leaves whole lines plus at most one torn last line, which `repair_tail` cuts off when the file
  is opened again.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any, Iterator

import orjson

_LINE = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def line(obj: Any) -> bytes:
    """One JSON line, as every airgen JSONL file holds them."""
    return orjson.dumps(obj, option=_LINE)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def named(error: OSError, path: Path) -> OSError:
    """`error` with the file it happened on: a full disk's message names the file that could not be written."""
    if error.filename is not None:
        return error
    return type(error)(error.errno, error.strerror, str(path))


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO]:
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        try:
            with tmp.open(mode, encoding="utf-8" if "b" not in mode else None) as f:
                yield f
            publish(tmp, path)
        except OSError as e:
            raise named(e, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def publish(tmp: Path, path: Path) -> None:
    """Give the complete file `tmp` the name `path`, durably: its bytes, then the rename, reach the disk."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(Path(path).parent)


def atomic_text(path: Path) -> contextlib.AbstractContextManager[IO[str]]:
    """A text file, written through the yielded handle, that appears under `path` only once complete."""
    return _atomic(path, "w")


def atomic_binary(path: Path) -> contextlib.AbstractContextManager[IO[bytes]]:
    """A binary file (a plot, say), written through the yielded handle, that appears under `path` only once
    complete."""
    return _atomic(path, "wb")


def atomic_write(path: Path, data: bytes) -> None:
    with _atomic(path, "wb") as f:
        f.write(data)


def repair_tail(path: Path) -> None:
    """Cut a torn last line (a write interrupted by a kill) so that appends start on a fresh line."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Walk back to the last newline; lines are short relative to the file, so read in blocks.
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                f.truncate(start + i + 1)
                return
            pos = start
        f.truncate(0)


class AppendLog:
    """An append-only JSONL file: whole lines only, durable once closed. Its one writer holds the run folder
    (`airgen.lock`), so the file's size is known without asking: a write that fails part-way (a full disk) is cut
    back off, and what the file holds is still whole lines."""

    def __init__(self, path: Path):
        self.path = Path(path)
        repair_tail(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def write(self, *objs: Any) -> None:
        """Append each object as one line, all of them in one write."""
        if objs:
            data = b"".join(line(obj) for obj in objs)
            try:
                write_all(self._fd, data)
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)
                raise named(e, self.path) from None
            self._size += len(data)

    def sync(self) -> None:
        """What was written so far, on disk."""
        try:
            os.fsync(self._fd)
        except OSError as e:
            raise named(e, self.path) from None

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            try:
                os.fsync(fd)
            except OSError as e:
                raise named(e, self.path) from None
            finally:
                os.close(fd)
