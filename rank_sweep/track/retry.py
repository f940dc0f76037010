"""Retry of store calls that lose a SQLite write-lock race.

Several jobs (joblib workers, the system-metrics thread) write one SQLite file. SQLite
serializes writers and gives up after its busy timeout with "database is locked"; the
call did not happen, so running it again is safe.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

_LOCK_MARKERS = ("database is locked", "database table is locked", "database is busy")


def is_lock_error(exc: BaseException) -> bool:
    """True if `exc` (or an exception it wraps) is SQLite's busy/locked error."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        text = str(cur).lower()
        if any(m in text for m in _LOCK_MARKERS):
            return True
        cur = cur.__cause__ or cur.__context__
    return False


def backoff_delay(attempt: int, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter, so parallel writers do not retry in lockstep."""
    return random.uniform(0.0, min(cap, base * (2**attempt)))


def with_lock_retry(fn: Callable[[], T], what: str, deadline_s: float = 120.0) -> T:
    """Call `fn`; on a SQLite lock error wait and call again until `deadline_s` is spent."""
    start = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_lock_error(exc) or time.monotonic() - start > deadline_s:
                raise
            delay = backoff_delay(attempt)
            log.warning("%s: database is locked, retry %d in %.2f s", what, attempt + 1, delay)
            time.sleep(delay)
            attempt += 1
