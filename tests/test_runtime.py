"""Thread planning: threads sized to the cores other work keeps busy now."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from rank_sweep.runtime import busy_cores, plan_threads


def test_plan_takes_the_free_cores(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert plan_threads(cores=2, load=0.0).threads == 2
    assert plan_threads(cores=2, load=1.2).threads == 1
    assert plan_threads(cores=2, load=7.0).threads == 1  # never below one
    assert plan_threads(cores=8, load=2.6).threads == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    plan = plan_threads(cores=2, load=0.0)
    assert (plan.threads, plan.source) == (3, "env")  # the user's setting wins


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat")
def test_busy_cores_sees_a_process_spinning_now() -> None:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores(0.5) >= 0.7  # one core held by the spinner (plus whatever else runs)
    finally:
        spin.kill()
        spin.wait()
