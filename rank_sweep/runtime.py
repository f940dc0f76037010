"""Process-wide runtime settings made once at start-up: threads sized to the cores that are
actually free, and logging that stays quiet and useful in a file.

Why threads: torch's OpenMP pool spins while it waits for its other threads. On a machine
where other processes hold the cores, two spinning threads on two busy cores made the demo
15x slower for a 3-4x smaller share of the CPU. Sizing the pool to the free cores (and
letting idle threads sleep) degrades in proportion instead.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Environment knobs a user may set; when set, we never override them.
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class ThreadPlan:
    cores: int  # cores this process may run on
    load: float  # 1-minute load average at start-up
    threads: int  # intra-op threads chosen
    source: str  # "env" (user's OMP_NUM_THREADS) or "free-cores"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def plan_threads(cores: int | None = None, load: float | None = None) -> ThreadPlan:
    """Threads = cores minus the load already on them (rounded), at least 1, at most cores."""
    cores = cores or usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
    env = os.environ.get("OMP_NUM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return ThreadPlan(cores, load, int(env), "env")
    free = int(cores - load + 0.5)
    return ThreadPlan(cores, load, max(1, min(cores, free)), "free-cores")


def configure_threads_env() -> ThreadPlan:
    """Before torch is imported: export the plan so OpenMP/BLAS (also in child processes:
    spawned workers, DataLoader workers) start with it, and let idle threads sleep."""
    plan = plan_threads()
    for key in _THREAD_ENV:
        os.environ.setdefault(key, str(plan.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not _has_accelerator_device():
        # DeepSpeed (imported by diffusers/accelerate) warns once per process that it
        # "could not detect" a GPU on a machine that has none; naming CPU skips the guess.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if not is_terminal():
        # In a log file a progress bar is one line per redraw: redraw rarely instead.
        os.environ.setdefault("TQDM_MININTERVAL", "60")
        os.environ.setdefault("TQDM_MAXINTERVAL", "120")
    return plan


def _has_accelerator_device() -> bool:
    """A GPU device node (NVIDIA, or AMD's /dev/kfd) exists; checked without importing torch."""
    dev = Path("/dev")
    return (dev / "kfd").exists() or any(dev.glob("nvidia[0-9]*"))


def progress_kwargs() -> dict[str, float]:
    """tqdm redraw intervals for a bar made here. tqdm reads TQDM_* once, when it is first
    imported: a module that imported it before `configure_threads_env` ran passes these."""
    if is_terminal():
        return {}
    return {"mininterval": 60.0, "maxinterval": 120.0}


def apply_threads(plan: ThreadPlan) -> None:
    """After torch is imported (the env may have come too late for an imported torch)."""
    import torch

    if torch.get_num_threads() != plan.threads:
        torch.set_num_threads(plan.threads)


# -- logging -------------------------------------------------------------------------------
# Third-party loggers whose INFO lines are per-job noise (the facts they carry are in MLflow).
_QUIET_LOGGERS = {
    "mlflow.system_metrics": logging.WARNING,
    "mlflow.tracking": logging.WARNING,
    "mlflow.store": logging.WARNING,
    "alembic": logging.WARNING,
    "optuna": logging.WARNING,
    "httpx": logging.WARNING,
    "urllib3": logging.WARNING,
    "DeepSpeed": logging.ERROR,
    "deepspeed": logging.ERROR,
    "torch.distributed": logging.WARNING,
    "diffusers": logging.ERROR,
    "transformers": logging.ERROR,
    "peft": logging.ERROR,
}
# Known-harmless one-off notices, matched by their text at their source.
_HARMLESS = (
    "torchvision",  # "... torchvision is not available, falling back ..." notices
    "Setting ds_accelerator",
    "real_accelerator",
    "Using an existing study",
    "A new study created",
)


# Our own INFO lines that repeat per job or per batch; their facts are in the stamp/MLflow.
_CHATTY_IN_FILES = (
    "rank_sweep.eval.generation",
    "rank_sweep.eval.real_stats",
    "rank_sweep.data.splits",
)


class _DropHarmless(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not any(h in msg for h in _HARMLESS)


class OncePerProcess(logging.Filter):
    """Pass a warning the first time its message is seen (all jobs of a multirun share one
    process, so this is once per sweep); later copies go to DEBUG level only."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, "every_time", False):
            return True
        key = f"{record.name}:{record.getMessage()}"
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


_ONCE = OncePerProcess()


def quiet_logging() -> None:
    """Idempotent: set third-party levels, drop known-harmless notices, dedupe warnings."""
    for name, level in _QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger()
    # Handler filters see every record that propagates to them (logger filters do not).
    for handler in root.handlers:
        if not any(isinstance(f, _DropHarmless) for f in handler.filters):
            handler.addFilter(_DropHarmless())
        if _ONCE not in handler.filters:
            handler.addFilter(_ONCE)
    for name in ("diffusers", "transformers"):  # their own verbosity switches
        try:
            module = __import__(f"{name}.utils.logging", fromlist=["set_verbosity_error"])
            module.set_verbosity_error()
            if not is_terminal():  # "Loading weights" bars: one line per model load in a log
                module.disable_progress_bar()
        except Exception:  # noqa: BLE001 - optional, never fatal
            pass
    if not is_terminal():
        # Per-batch and per-job bookkeeping lines (kept on a terminal, and in MLflow/stamps)
        for name in _CHATTY_IN_FILES:
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")


def is_terminal() -> bool:
    return sys.stderr.isatty()
