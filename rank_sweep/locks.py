"""Exclusive file locks between processes, with the holder (pid, host, start) on record.

Used where two processes must never do the same thing at once: creating or migrating a
SQLite store (MLflow, Optuna), running one job's state dir, running one sweep id.

Two mechanisms, one interface:
- `flock` (default on local disks and NFSv4): the kernel drops the lock when its process
  dies, so a lock left by a killed process is free at once; the previous holder's record
  is still in the file, and taking over from a dead holder is logged.
- exclusive create (`O_CREAT | O_EXCL`, for file systems without working flock): the lock
  file itself is the lock; one left by a dead process on this host is removed and taken
  over (a holder on another host cannot be checked and is waited for).

A waiting process names the holder once ("waiting for pid 123 on host h since 22:01:03");
with a timeout it raises `LockHeld`, whose message is one line naming the holder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

try:  # fcntl is POSIX only; without it every lock uses exclusive create
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

# Locks this process holds, by path: a nested acquire of the same path counts up instead of
# deadlocking on itself (flock locks belong to an open file, not to the process).
_HELD: dict[str, FileLock] = {}


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    since: float  # time.time() when it took the lock
    what: str = ""  # what the lock guards, for the message

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        what = f" ({self.what})" if self.what else ""
        return f"pid {self.pid} on host {self.host} since {when}{what}"

    def alive(self) -> bool | None:
        """True/False for a process on this host; None (unknown) for another host."""
        if self.host != socket.gethostname():
            return None
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class LockHeld(RuntimeError):
    """The lock is held by another live process; the message is one line naming it."""

    def __init__(self, path: Path, holder: Holder | None, what: str) -> None:
        who = holder.describe() if holder else "another process (no holder record)"
        super().__init__(f"{what or path} is locked by {who}; lock file {path}")
        self.path = path
        self.holder = holder


def _read_holder(path: Path) -> Holder | None:
    try:
        text = path.read_text()
        return Holder(**json.loads(text)) if text.strip() else None
    except (OSError, ValueError, TypeError):  # being written, or not ours: no record
        return None


class FileLock:
    """`with FileLock(path, what="job lora-r8"):` or `.acquire(timeout=...)` / `.release()`.

    timeout None waits forever, 0 tries once. `on_wait(holder)` is called once when the
    lock is busy (default: one log line).
    """

    def __init__(self, path: str | Path, what: str = "", mode: str = "auto") -> None:
        self.path = Path(path)
        self.what = what
        if mode not in ("auto", "flock", "exclusive"):
            raise ValueError(f"lock mode={mode!r} not allowed; use auto | flock | exclusive")
        self.mode = "exclusive" if mode == "auto" and fcntl is None else mode
        self._fd: int | None = None
        self._depth = 0
        self.took_over: Holder | None = None  # the dead holder this lock replaced, if any

    # -- public ---------------------------------------------------------------------------
    def acquire(
        self,
        timeout: float | None = None,
        poll: float = 0.2,
        on_wait: Callable[[Holder | None], None] | None = None,
    ) -> FileLock:
        key = str(self.path.resolve())
        mine = _HELD.get(key)
        if mine is not None:
            mine._depth += 1
            return mine
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        told = False
        while True:
            if self._try():
                self._record()
                self._depth = 1
                _HELD[key] = self
                return self
            holder = _read_holder(self.path)
            if deadline is not None and time.monotonic() >= deadline:
                raise LockHeld(self.path, holder, self.what)
            if not told:
                told = True
                if on_wait is not None:
                    on_wait(holder)
                else:
                    who = holder.describe() if holder else "another process"
                    log.info("waiting for %s, which holds %s", who, self.what or self.path)
            time.sleep(poll)

    def release(self) -> None:
        if self._depth > 1:
            self._depth -= 1
            return
        if self._depth == 0:
            return
        self._depth = 0
        _HELD.pop(str(self.path.resolve()), None)
        if self.mode == "exclusive":
            self.path.unlink(missing_ok=True)
        if self._fd is not None:
            try:
                if self.mode != "exclusive":
                    os.ftruncate(self._fd, 0)  # no stale record once free
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None

    @property
    def held(self) -> bool:
        return self._depth > 0

    def holder(self) -> Holder | None:
        return _read_holder(self.path)

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- mechanisms -----------------------------------------------------------------------
    def _try(self) -> bool:
        if self.mode != "exclusive":
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return False
                if self.mode == "flock":
                    raise
                # No working flock here (some network file systems): the file is the lock.
                log.warning("flock unsupported on %s (%s): using lock files", self.path, exc)
                self.mode = "exclusive"
                return self._try()
            self._fd = fd
            self.took_over = self._dead_previous(_read_holder(self.path))
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(self.path)
            dead = self._dead_previous(holder)
            if dead is None:
                return False
            # Remove the dead holder's file and race for a fresh one: O_EXCL lets one win.
            self.path.unlink(missing_ok=True)
            self.took_over = dead
            return self._try()
        self._fd = fd
        return True

    def _dead_previous(self, holder: Holder | None) -> Holder | None:
        if holder is None or holder.pid == os.getpid() or holder.alive() is not False:
            return None
        log.warning(
            "taking over a stale lock on %s left by %s (dead)", self.path, holder.describe()
        )
        return holder

    def _record(self) -> None:
        me = Holder(os.getpid(), socket.gethostname(), time.time(), self.what)
        data = json.dumps(asdict(me)).encode()
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)
        os.fsync(self._fd)


@contextmanager
def locked(path: str | Path, what: str = "", timeout: float | None = None) -> Iterator[FileLock]:
    """`with locked(path, "MLflow store x"):` waits (up to timeout) and releases at exit."""
    lock = FileLock(path, what).acquire(timeout=timeout)
    try:
        yield lock
    finally:
        lock.release()


def store_lock_path(url: str) -> Path | None:
    """Lock file of a SQLite store URL (`<db>.lock` beside it); None for other stores,
    whose servers serialize their own migrations."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    db = Path(rest)
    return db.with_name(db.name + ".lock")


@contextmanager
def store_lock(url: str, what: str) -> Iterator[None]:
    """Hold the store's creation/migration lock (no-op for non-SQLite stores)."""
    path = store_lock_path(url)
    if path is None:
        yield
        return
    with locked(path, what):
        yield
