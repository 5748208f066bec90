"""What the user's terminal shows: airgen's own lines. Engine chatter goes to a log file in the run folder.

On the command line (and for `airgen.run(..., progress=True)`) airgen's lines go to the terminal; used as a library,
they go to the `logging` logger "airgen" (INFO), and nothing is printed.

vLLM, transformers and torch write to the process's stdout and stderr, and vLLM's engine processes inherit them, so
the quiet mode works on the file descriptors: while a run or a bench goes on, fds 1 and 2 point at OUT/engine.log,
and airgen writes to a copy of the terminal's stderr that it kept. Everything is put back when it ends.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import IO, Iterator

ENGINE_LOG = "engine.log"

# Where airgen's own lines go while the engine log has taken fd 2: a copy of the terminal's stderr.
_stream: IO[str] | None = None
# Whether airgen's lines go to the terminal (else to the logger).
_terminal = False
log = logging.getLogger("airgen")


def stream() -> IO[str]:
    return _stream if _stream is not None else sys.stderr


def say(message: str) -> None:
    if _terminal:
        print(message, file=stream(), flush=True)
    else:
        log.info(message)


@contextlib.contextmanager
def terminal(on: bool = True) -> Iterator[None]:
    """airgen's lines to the terminal (`on`) or to the logger, for the duration."""
    global _terminal
    before, _terminal = _terminal, on
    try:
        yield
    finally:
        _terminal = before


@contextlib.contextmanager
def engine_log(folder: Path, verbose: bool) -> Iterator[Path | None]:
    """Send fds 1 and 2 to FOLDER/engine.log for the duration (yields its path); `verbose` leaves them alone."""
    global _stream
    if verbose:
        yield None
        return
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ENGINE_LOG
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    previous = _stream
    try:
        for fd in (1, 2):
            os.dup2(log, fd)
        _stream = terminal
        yield path
    finally:
        for out in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError):  # the log's disk may be full: the terminal gets its fds back anyway
                out.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log)
        _stream = previous
        terminal.close()
