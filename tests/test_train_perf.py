"""Per-job cost figures: a peak-memory mark reset per job, step-time median with spread."""

from __future__ import annotations

import sys

import pytest
import torch

from rank_sweep.train.perf import PeakMemory, step_time_stats


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_second_job_does_not_inherit_the_first_jobs_peak() -> None:
    """Two jobs in one process: a big one, then a small one. The small one's peak, measured
    from its own reset, stays far below the big one's (the process-lifetime peak would not)."""
    big = PeakMemory(torch.device("cpu")).reset()
    x = torch.ones(96 * 2**20 // 4)  # 96 MiB touched
    x += 1
    big_peak = big.peak_mb()
    del x
    small = PeakMemory(torch.device("cpu")).reset()
    y = torch.ones(8 * 2**20 // 4)  # 8 MiB
    y += 1
    small_peak = small.peak_mb()
    assert big.method == small.method and big.method in ("vmhwm_reset", "rss_sampled")
    assert big_peak - big.start_mb > 80
    assert small_peak < big_peak - 60, (small_peak, big_peak)


def test_step_time_stats_median_and_spread() -> None:
    st = step_time_stats([1.0, 2.0, 3.0, 4.0, 100.0])
    assert st.median_s == 3.0 and st.n == 5
    assert st.p10_s <= st.median_s <= st.p90_s and st.p90_s > 4.0
    assert step_time_stats([]).n == 0
