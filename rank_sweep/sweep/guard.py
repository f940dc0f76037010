"""Keeping concurrent sweeps apart and failing a sweep's set-up loudly.

- A live sweep holds a lock on its sweep id. The id is a hash of the command, so that a
  rerun after a crash attaches to the same parent run and study; a second sweep of the
  same command started while the first one runs gets its own id (`<id>.2`), hence its
  own parent run and study, instead of joining the live one.
- A live sweep holds its sweep dir: a second sweep resolving to the same dir (Hydra's
  dir has one-second resolution; the default config adds a per-launch token) fails with
  one line instead of overwriting `sweep.json`.
- Hydra only warns when a callback raises an Exception, and then runs every job without
  parent, study or pruning; `setup_or_exit` turns any set-up failure into SystemExit,
  which Hydra does not catch, so the command exits non-zero before any job starts.
- A sweep's end closes its parent only when none of its children is still running.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rank_sweep.locks import FileLock, LockHeld

log = logging.getLogger(__name__)

LAUNCH_ENV = "RANK_SWEEP_LAUNCH_ID"  # per-command token in the default sweep dir
DIR_LOCK = ".sweep.lock"
MAX_TWINS = 50  # concurrent sweeps of one command before giving up

_CLAIMS: dict[str, list[FileLock]] = {}  # sweep dir -> locks this process holds for it


class SweepSetupError(RuntimeError):
    pass


def new_launch_id() -> str:
    """Set a fresh per-command token (inherited by launcher workers and spawned ranks)."""
    token = f"{os.getpid()}{secrets.token_hex(2)}"
    os.environ[LAUNCH_ENV] = token
    return token


def lock_root(config: Any) -> Path:
    """Where sweep-id locks live: beside the Optuna store when it is a file, so every
    process using that store sees them; else the cache."""
    from rank_sweep.paths import cache_dir, optuna_storage
    from rank_sweep.track.store import sqlite_path

    storage = optuna_storage(config.prune.storage)
    path = sqlite_path(storage)
    if path is None and storage.startswith("journal://"):
        path = Path(storage.removeprefix("journal://"))
    return (path.parent / ".rank_sweep_locks") if path is not None else cache_dir() / "locks"


def claim_sweep_id(config: Any, base_id: str, sweep_dir: Path) -> str:
    """Lock `base_id` (or, when a live sweep holds it, the next free `<base_id>.N`)."""
    root = lock_root(config)
    for n in range(1, MAX_TWINS + 1):
        sid = base_id if n == 1 else f"{base_id}.{n}"
        lock = FileLock(root / f"sweep-{sid}.lock", what=f"sweep {sid}")
        try:
            lock.acquire(timeout=0)
        except LockHeld as exc:
            log.warning("%s: this sweep takes its own id", exc)
            continue
        _CLAIMS.setdefault(str(sweep_dir), []).append(lock)
        return sid
    raise SweepSetupError(f"{MAX_TWINS} sweeps of this command are running; wait for one")


def claim_sweep_dir(sweep_dir: Path) -> None:
    """Hold `sweep_dir` for this sweep; one line naming the holder if another sweep has it."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(sweep_dir / DIR_LOCK, what=f"sweep dir {sweep_dir}")
    try:
        lock.acquire(timeout=0)
    except LockHeld as exc:
        raise SweepSetupError(f"another sweep is running in this dir: {exc}") from None
    _CLAIMS.setdefault(str(sweep_dir), []).append(lock)


def release_claims(sweep_dir: Path) -> None:
    for lock in reversed(_CLAIMS.pop(str(sweep_dir), [])):
        lock.release()


def setup_or_exit(fn: Callable[..., Any], config: Any, *args: Any, **kwargs: Any) -> Any:
    """Run the sweep set-up; on any failure release what it claimed and exit non-zero
    with one line, before Hydra launches a single job."""
    try:
        return fn(config, *args, **kwargs)
    except Exception as exc:  # every cause ends the command the same way, loudly
        release_claims(Path(str(config.hydra.sweep.dir)))
        first = (str(exc).strip().splitlines() or [""])[0][:400]
        log.error("sweep set-up failed, no job was started: %s: %s", type(exc).__name__, first)
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            log.exception("set-up traceback")
        raise SystemExit(
            f"error: sweep set-up failed, no job was started: {type(exc).__name__}: {first}"
        ) from exc


def running_children(runs: list[Any]) -> list[Any]:
    """Children whose MLflow run is still RUNNING (a job of this or another process)."""
    return [r for r in runs if getattr(r, "mlflow_status", "") == "RUNNING"]
