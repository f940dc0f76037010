"""Cost measurements of one job: peak memory of the job itself and step-time spread.

Every Hydra job of a multirun shares one process, so the process-lifetime peak
(`ru_maxrss`, `max_memory_allocated`) would give every job the peak of the largest one
run before it. `PeakMemory.reset()` starts a fresh high-water mark for the job: on CUDA
`reset_peak_memory_stats`; on Linux CPUs the kernel's VmHWM, reset by writing 5 to
`/proc/self/clear_refs` (Linux >= 4.0) after freeing what earlier jobs left behind.
Where that is refused, a sampling thread keeps the maximum RSS seen during the job.

Step time is a median with its p10-p90 spread over steps that exclude the warm-up and the
steps that ran an evaluation: one noisy mean says nothing about a 2x difference.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import resource
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
MEMORY_METHODS = ("cuda_max_allocated", "vmhwm_reset", "rss_sampled", "ru_maxrss")


def _status_kib(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _trim_heap() -> None:
    """Give freed memory of earlier jobs back to the OS so it does not count as theirs."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except OSError:  # not glibc
            pass


class _RssSampler(threading.Thread):
    def __init__(self, every_s: float = 0.05) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.every_s, self.peak_kib, self._stop = every_s, 0.0, threading.Event()

    def run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_kib = max(self.peak_kib, _status_kib("VmRSS") or 0.0)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class PeakMemory:
    """Peak memory of the job from `reset()` on, in MiB, and how it was measured."""

    device: torch.device
    method: str = ""
    start_mb: float = 0.0  # resident (or allocated) memory at reset: what the job inherited
    _sampler: _RssSampler | None = None

    def reset(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda_max_allocated"
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return self
        _trim_heap()
        self.start_mb = (_status_kib("VmRSS") or 0.0) / 1024
        try:
            _CLEAR_REFS.write_text("5")
            self.method = "vmhwm_reset"
        except OSError:
            if _STATUS.exists():
                self._sampler = _RssSampler()
                self._sampler.start()
                self.method = "rss_sampled"
            else:  # macOS and friends: the process-lifetime peak is all there is
                self.method = "ru_maxrss"
        return self

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.method == "vmhwm_reset":
            return (_status_kib("VmHWM") or 0.0) / 1024
        if self.method == "rss_sampled" and self._sampler is not None:
            now = (_status_kib("VmRSS") or 0.0) / 1024
            return max(self._sampler.peak_kib / 1024, now)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 1024

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None


@dataclass(frozen=True)
class StepTimeStats:
    median_s: float
    p10_s: float
    p90_s: float
    n: int  # steps the figures are over


def step_time_stats(times: list[float]) -> StepTimeStats:
    """Median and p10/p90 of per-step wall times (already without warm-up and eval steps)."""
    if not times:
        return StepTimeStats(0.0, 0.0, 0.0, 0)
    arr = np.asarray(times, dtype=np.float64)
    p10, med, p90 = np.percentile(arr, [10, 50, 90])
    return StepTimeStats(float(med), float(p10), float(p90), int(arr.size))
