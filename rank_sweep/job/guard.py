"""What keeps one job recoverable: one process per job, history re-logged, disk trimmed.

- `hold_job_lock`: an exclusive lock on the job's state dir. A second copy of the same job
  (same fingerprint) waits for the first and then finds its finished run and reuses it;
  with `RANK_SWEEP_JOB_LOCK_WAIT_S` set it waits at most that long and then exits with one
  line naming the holder. A lock left by a killed process is taken over.
- `relog_history`: the eval history restored from a checkpoint is logged again; the
  tracker drops every point already in the store, so this only fills a store that lacks
  the job's history (a finished job rerun against a new MLflow store).
- `after_finish`: a completed job's resume state is trimmed (`train.keep_checkpoints`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rank_sweep.locks import FileLock, Holder, LockHeld

log = logging.getLogger(__name__)

LOCK_FILE = "job.lock"
WAIT_ENV = "RANK_SWEEP_JOB_LOCK_WAIT_S"  # seconds a second copy waits; unset = until free


class JobLocked(RuntimeError):
    """Another live process runs this job; the message is one line naming it."""


def lock_wait_s() -> float | None:
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={raw!r} is invalid: allowed a number of seconds") from None


def hold_job_lock(state_dir: Path, enabled: bool = True) -> FileLock | None:
    """Lock `state_dir` for this process (main rank only); None when not enabled."""
    if not enabled:
        return None
    state_dir = Path(state_dir)
    lock = FileLock(state_dir / LOCK_FILE, what=f"job {state_dir.name}")

    def waiting(holder: Holder | None) -> None:
        who = holder.describe() if holder else "another process"
        log.warning(
            "job %s is already running (%s): waiting for it, then reusing its result",
            state_dir.name,
            who,
        )

    try:
        return lock.acquire(timeout=lock_wait_s(), on_wait=waiting)
    except LockHeld as exc:
        raise JobLocked(f"job {state_dir.name} is already running: {exc}") from None


def release(lock: FileLock | None) -> None:
    if lock is not None:
        lock.release()


def relog_history(reporter: Any, entries: list[dict[str, Any]]) -> int:
    """Log restored eval entries (`{"step": s, metric: value, ...}`); returns how many
    entries were offered. Points the store already has are dropped by the tracker."""
    for entry in entries:
        step = int(entry["step"])
        metrics = {k: float(v) for k, v in entry.items() if k != "step" and v is not None}
        reporter.log_metrics(metrics, step)
    return len(entries)


def after_finish(cfg: Any, state_dir: Path, status: str) -> int:
    """Trim a completed job's resume state; returns bytes freed (0 for other outcomes:
    a job stopped at a rung may still be resumed by the sweeper)."""
    if status != "completed":
        return 0
    from rank_sweep.train.checkpoint import prune_finished

    keep = int(cfg.train.get("keep_checkpoints", 0))
    return prune_finished(Path(state_dir), keep)
