"""Job dir names of a multirun: capped in length (a long override used to fail at mkdir
with "File name too long"), distinct, and free of where the stores live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from rank_sweep.paths import JOB_DIRNAME_MAX, REPO_ROOT, job_dirname


def test_job_dirname_caps_and_keeps_names_apart() -> None:
    short = "finetune=lora,lora.rank=8"
    assert job_dirname(short) == short
    a, b = job_dirname("x" * 300 + "rank=4"), job_dirname("x" * 300 + "rank=8")
    assert len(a) == len(b) == JOB_DIRNAME_MAX and a != b
    assert job_dirname("x" * 300 + "rank=4") == a  # a pure function: resume finds its dir


def test_multirun_with_long_overrides_makes_short_distinct_job_dirs(tmp_path: Path) -> None:
    long = "y" * 300
    sweep_dir = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "rank_sweep", "-m", "dry_run=true", "lora.rank=4,8",
         f"+extras.note={long}", "sweep_name=dirs", f"state_dir={tmp_path / 'jobs'}",
         f"track.uri=sqlite:///{tmp_path}/mlflow.db",
         f"prune.storage=sqlite:///{tmp_path}/optuna.db", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert len(jobs) == 2 and jobs[0] != jobs[1]
    for name in jobs:
        assert len(name.encode()) <= 255 and name[:2] in ("0_", "1_")
        assert "sqlite" not in name and "state_dir" not in name and "sweep_name" not in name
