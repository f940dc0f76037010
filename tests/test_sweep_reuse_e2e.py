"""Reuse across sweeps through the real CLI (split from test_sweep_e2e.py so the two files
run on two pytest workers): a run finished elsewhere is ranked, a later sweep never takes
over a pruned run, and the env-var store moves jobs and report together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from test_sweep_e2e import TINY, cli, runs_of

from rank_sweep.paths import REPO_ROOT
from rank_sweep.track import contract as C


def test_sweep_ranks_a_run_that_finished_under_another_state_dir(tmp_path: Path) -> None:
    """A single run finished elsewhere (another state root) is reused by a sweep: the sweep
    gets its final rung record from the run's artifacts, carries it past the rungs it has
    no record for (its compute is spent) and ranks it at the end; nothing fails."""
    st = {"dir": str(tmp_path), "mlflow": f"sqlite:///{tmp_path}/mlflow.db",
          "optuna": f"sqlite:///{tmp_path}/optuna.db"}  # fmt: skip
    cli(st, "lora.rank=4", f"state_dir={tmp_path}/single-jobs", "sweep_name=alone",
        f"output_dir={tmp_path}/alone")  # fmt: skip
    proc = cli(st, "-m", "sweep_name=reuse", "lora.rank=4,8", f"state_dir={tmp_path}/sweep-jobs")
    out = proc.stdout + proc.stderr
    assert "reusing finished run" in out and "treated as failed" not in out
    doc = json.loads((tmp_path / "multirun" / "reuse" / "decisions.json").read_text())
    assert set(doc["final"]["arms"]) == {"lora-r4", "lora-r8"}
    assert all("lora-r4" not in r["pruned"] for r in doc["rungs"])
    records = list((tmp_path / "sweep-jobs").glob("lora-r4-*/rungs/step*.json"))
    assert [p.name for p in records] == ["step00000004.json"]  # restored, not retrained
    study = optuna.load_study(study_name=doc["sweep_id"], storage=st["optuna"])
    assert {t.user_attrs["arm"]: t.state.name for t in study.trials}["lora-r4"] == "COMPLETE"
    # the sweep's report pairs the reused copy too (its features stay with the source run)
    import pandas as pd

    from rank_sweep.report import build_report, load_runs

    df = load_runs(st["mlflow"], sweep_id=doc["sweep_id"])
    csv = pd.read_csv(build_report(df, tmp_path / "report").csv)
    r4 = csv[csv["rank"] == 4].iloc[0]
    assert isinstance(r4["reused_from"], str) and r4["reused_from"]
    assert pd.notna(r4["pdelta_fvd_best/synthetic"])


def test_a_later_sweep_does_not_take_over_a_pruned_run(tmp_path: Path) -> None:
    """Sweep A prunes a rank; sweep B (another name, prune=none) trains the same rank from
    the shared checkpoint into a run of its own: A's pruned run keeps its sweep and status,
    so A's report still has every rank."""
    st = {"dir": str(tmp_path), "mlflow": f"sqlite:///{tmp_path}/mlflow.db",
          "optuna": f"sqlite:///{tmp_path}/optuna.db"}  # fmt: skip
    jobs = f"state_dir={tmp_path}/jobs"
    cli(st, "-m", "sweep_name=first", "lora.rank=4,8,16", jobs)
    pa, kids_a = runs_of(st, "first")
    pruned = {r.info.run_id for r in kids_a if r.data.tags[C.TAG_STATUS] == "pruned"}
    assert pruned, "the tiny sweep pruned nothing: the test needs a pruned rank"
    cli(st, "-m", "sweep_name=second", "lora.rank=4,8,16", "prune=none", jobs)
    _, kids_a2 = runs_of(st, "first")
    assert {r.info.run_id for r in kids_a2} == {r.info.run_id for r in kids_a}
    for r in kids_a2:
        if r.info.run_id in pruned:
            assert r.data.tags[C.TAG_STATUS] == "pruned"
            assert r.data.tags[C.TAG_SWEEP_ID] == pa.data.tags[C.TAG_SWEEP_ID]
    _, kids_b = runs_of(st, "second")
    assert sorted(r.info.run_name for r in kids_b) == ["lora-r16", "lora-r4", "lora-r8"]
    assert all(r.data.tags[C.TAG_STATUS] == "completed" for r in kids_b)
    assert not pruned & {r.info.run_id for r in kids_b}


def test_env_store_for_jobs_and_report_and_a_reused_job_says_where(tmp_path: Path) -> None:
    """RANK_SWEEP_TRACKING_URI alone moves the store of jobs and report; running the same
    job twice reuses the first: the second run dir holds its summary.json with
    `reused_from`, and the log names where the weights are."""
    db = tmp_path / "X.db"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "RANK_SWEEP_TRACKING_URI": f"sqlite:///{db}"}
    default_db = REPO_ROOT / "mlflow.db"
    had_default = default_db.exists()
    job = [
        sys.executable, "-m", "rank_sweep", *TINY, "lora=ratio", "lora.rank=4",
        "sweep_name=envstore", f"state_dir={tmp_path}/jobs", f"prune.storage=sqlite:///{tmp_path}/o.db",
        f"hydra.run.dir={tmp_path}/hydra/${{now:%H%M%S%f}}",
    ]  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [*job, *args], cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    run(f"output_dir={tmp_path}/a")
    assert db.is_file() and default_db.exists() == had_default
    second = run(f"output_dir={tmp_path}/b")
    first_summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{db}")
    exp_id = client.get_experiment_by_name("rank_sweep").experiment_id
    (run_id,) = [r.info.run_id for r in client.search_runs([exp_id])]
    assert summary["reused_from"] == run_id
    assert (summary["rank"], summary["alpha"], summary["lora_scale"]) == (4, 8.0, 2.0)
    assert summary["objective"] == first_summary["objective"] and summary["steps"] == 4
    assert summary["weights"].endswith(f"{run_id}/artifacts/adapter")
    assert summary["weights"] in second.stdout + second.stderr  # the log says where
    assert not (tmp_path / "b" / "adapter").exists()

    report = subprocess.run(
        [sys.executable, "-m", "rank_sweep.report", "--out", str(tmp_path / "report")],
        cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-3000:]
    assert report.stdout.startswith("1 runs ->")
    assert "Downloading artifacts" not in report.stderr  # no MLflow bar per artifact read
    assert "8 (ratio, scale 2)" in (tmp_path / "report" / "report.md").read_text()
