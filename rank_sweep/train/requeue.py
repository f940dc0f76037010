"""SLURM requeue: a signal before the time limit (or at preemption) -> checkpoint at the
next step boundary -> exit with the requeue status; the rerun resumes from it.

Signals: `RANK_SWEEP_REQUEUE_SIGNALS` (default `USR1,USR2`: submitit sends USR2
`signal_delay_s` before the limit; a plain sbatch script can ask for
`--signal=B:USR1@600`). The handler only sets a flag (nothing else is safe inside a
signal handler); the training loop polls it once per optimizer step, agreed over ranks.

Leaving: whatever handler was installed before (submitit's checkpoint-and-requeue, which
pickles the Hydra job and calls `scontrol requeue`) is called after our checkpoint;
without one, rank 0 of a SLURM job requeues itself with `scontrol requeue`. Then every
process raises `RequeueRequested`, a SystemExit with status 75 (EX_TEMPFAIL: try again).
A job that spawned its workers forwards the signal to them and, when they exit with that
status, leaves the same way (`forward_to_children`, `exit_for_requeue`).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from typing import Any

log = logging.getLogger(__name__)

REQUEUE_EXIT_CODE = 75  # sysexits.h EX_TEMPFAIL
SIGNALS_ENV = "RANK_SWEEP_REQUEUE_SIGNALS"


class RequeueRequested(SystemExit):
    """Raised after the requeue checkpoint; exits the process with REQUEUE_EXIT_CODE."""

    def __init__(self, message: str = "requeue requested") -> None:
        super().__init__(REQUEUE_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


_flag = threading.Event()
_signum: list[int] = []
_previous: dict[int, Any] = {}
_children: list[int] = []


def _signals() -> list[signal.Signals]:
    names = os.environ.get(SIGNALS_ENV, "USR1,USR2")
    out = []
    for name in filter(None, (n.strip().upper() for n in names.split(","))):
        sig = getattr(signal, name if name.startswith("SIG") else f"SIG{name}", None)
        if sig is None:
            raise ValueError(f"{SIGNALS_ENV}={names!r}: unknown signal {name!r}")
        out.append(sig)
    return out


def _handler(signum: int, frame: Any) -> None:
    _signum.append(signum)
    _flag.set()
    for pid in list(_children):  # workers spawned by this process checkpoint too
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def install() -> None:
    """Catch the requeue signals in this process (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in _signals():
        current = signal.getsignal(sig)
        if current is _handler:
            continue
        _previous[int(sig)] = current
        signal.signal(sig, _handler)


def forward_to_children(pids: list[int]) -> None:
    """Signals caught here are passed on to these worker processes."""
    _children[:] = list(pids)


def pending() -> bool:
    return _flag.is_set()


def requested(ctx: Any = None) -> bool:
    """True on every rank when any rank caught the signal (a collective when distributed)."""
    from rank_sweep.train.dist import any_rank

    return any_rank(_flag.is_set(), ctx)


def reset() -> None:
    _flag.clear()
    _signum.clear()


def exit_for_requeue(rank: int = 0) -> None:
    """Hand over to the previous handler (submitit) or `scontrol requeue`, then exit 75."""
    signum = _signum[0] if _signum else int(signal.SIGUSR1)
    prev = _previous.get(signum)
    log.warning("requeue: checkpoint written, leaving with status %d", REQUEUE_EXIT_CODE)
    if callable(prev):
        try:
            prev(signum, None)  # submitit: requeues on rank 0, then sys.exit
        except SystemExit:
            pass
    elif rank == 0 and os.environ.get("SLURM_JOB_ID") and shutil.which("scontrol"):
        job = os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID")
        job_id = (
            f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
            if job
            else os.environ["SLURM_JOB_ID"]
        )
        subprocess.run(["scontrol", "requeue", job_id], check=False)
    raise RequeueRequested(f"requeue requested by signal {signal.Signals(signum).name}")
