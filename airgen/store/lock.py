"""One writer per run folder: the command that writes a folder (`airgen run`, `bench --out`, `select --out`, a Ray
shard worker) holds OUT/airgen.lock for as long as it writes it.

Two runs appending to one journal would each write every record (a doubled cron line, a second terminal), so the
second writer is refused at once, told who holds the folder. The lock is an exclusive `flock` on the file, which the
kernel (or the NFS server) drops when its process dies, however it dies; the file also names its holder (pid, host,
start, command) and carries a lease the holder renews every `RENEW_S`, for filesystems where locks do not reach
other hosts and for a node that was lost: a holder whose process is gone on this host, or whose lease is older
than `LEASE_S`, is taken over with one line saying so, and the journal's own rules resume the run.

Readers (report, export, trace) never take the lock: `holder(out)` tells them whether a run is writing the folder,
so that they can say the run is in progress.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

from airgen.config import ConfigError

LOCK = "airgen.store.lock"
RENEW_S = 10.0
LEASE_S = 60.0  # a holder on another host whose lease is older than this is gone (clocks agree to within seconds)
_SIZE = 4096  # the holder's line is written padded to this size, in one pwrite, so a reader never sees two


class Locked(ConfigError):
    """Another live writer holds the folder; the message names it."""


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: float
    command: str
    renewed: float

    @property
    def here(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self, now: float | None = None) -> bool:
        """Whether the holder still writes: its process lives (this host), or its lease is fresh (another)."""
        if self.here:
            return _pid_alive(self.pid)
        return self.lease_age(now) <= LEASE_S

    def lease_age(self, now: float | None = None) -> float:
        return (time.time() if now is None else now) - self.renewed

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid} on {self.host}, since {started}: `{self.command}`"

    def gone(self) -> str:
        """Why a holder that is not alive counts as gone."""
        if self.here:
            return "its process is gone"
        return f"its lease was last renewed {self.lease_age():.0f} s ago"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _parse(raw: bytes) -> Holder | None:
    try:
        d = orjson.loads(raw.rstrip(b" \n\0"))
        return Holder(int(d["pid"]), str(d["host"]), float(d["since"]), str(d["command"]), float(d["renewed"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def holder(out: Path) -> Holder | None:
    """The live writer of `out`, if any (readers call this; it takes no lock)."""
    try:
        raw = (Path(out) / LOCK).read_bytes()
    except OSError:
        return None
    found = _parse(raw)
    return found if found is not None and found.alive() else None


class FolderLock:
    """The lock held: `release()` (or leaving `hold`) gives it up and removes the file."""

    def __init__(self, path: Path, fd: int, me: Holder, took_over: Holder | None, made: bool):
        self.path, self._fd, self.me, self.took_over, self._made = path, fd, me, took_over, made
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="airgen-lock-lease", daemon=True)
        self._renewer.start()
        os.register_at_fork(after_in_child=self._forget)

    def _write(self) -> None:
        me = self.me
        data = orjson.dumps({"pid": me.pid, "host": me.host, "since": me.since, "command": me.command,
                             "renewed": time.time()})
        os.pwrite(self._fd, data.ljust(_SIZE) + b"\n", 0)

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_S):
            try:
                self._write()
            except OSError:  # a full disk cannot take the lease: the lock itself still holds on this host
                pass

    def _forget(self) -> None:
        """In a forked child: let go of the descriptor, so that the lock dies with this process, not its children."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def release(self) -> None:
        if self._fd < 0:
            return
        self._stop.set()
        self._renewer.join()
        # Unlinked before it is unlocked: a process waiting on this file finds it replaced and starts over (`_take`).
        with contextlib.suppress(OSError):
            self.path.unlink()
        if self._made:  # a folder this command made and left empty (it stopped before writing anything) goes too
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()
        os.close(self._fd)
        self._fd = -1


def _take(path: Path) -> tuple[int, bytes]:
    """An exclusive flock on `path` (made if missing) and what it held before; Locked-free errors only."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                return -1, _read(path)
            raise
        # The file may have been released (unlinked) between our open and our flock: lock the one the name holds.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, os.pread(fd, _SIZE + 1, 0)
        os.close(fd)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


@contextlib.contextmanager
def hold(out: Path, command: str, say=None) -> Iterator[FolderLock]:
    """Hold `out` for writing (making the folder if needed) for the duration; refused with `Locked` while another
    live writer holds it. `say` gets the one line that says a gone holder was taken over."""
    out = Path(out)
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    fd, before = _take(path)
    previous = _parse(before) if before.strip(b" \n\0") else None
    if fd < 0:  # a live process holds the flock
        who = previous.describe() if previous is not None else "a process that has not named itself yet"
        raise Locked(f"{out} is being written by another airgen ({who}); wait for it to end or stop it, or give "
                     "another folder")
    if previous is not None and not previous.here and previous.alive():
        # The flock did not reach the other host (a filesystem without shared locks), but its lease is fresh.
        os.close(fd)
        raise Locked(f"{out} is being written by another airgen ({previous.describe()}; lease renewed "
                     f"{previous.lease_age():.0f} s ago); wait for it to end or stop it, or give another folder")
    now = time.time()
    me = Holder(os.getpid(), socket.gethostname(), now, command, now)
    lock = FolderLock(path, fd, me, previous, made)
    try:
        os.ftruncate(fd, 0)
        lock._write()
        if previous is not None and say is not None:
            say(f"airgen: took over {out} from {previous.describe()}: {previous.gone()}")
        yield lock
    finally:
        lock.release()

