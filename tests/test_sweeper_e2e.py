"""The sweeper on the embedded world through the real CLI: `-m lora.rank=4,16,64` and the
list reversed (each from fresh job state) decide the same, and the tracking contract holds:
pruned children tagged with step and reason, the decisions artifact on the parent, paused
runs continued (not duplicated), Optuna trial states from the sweeper."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from rank_sweep.paths import REPO_ROOT
from rank_sweep.track import contract as C

SMALL = [
    "train.steps=8", "train.checkpoint_every=4", "eval.every=4", "eval.num_real=6",
    "eval.num_fake=4", "eval.sample_steps=2", "eval.bootstrap=10", "eval.kid_subset_size=4",
    "eval.log_videos=1", "track.system_metrics=false",
]  # fmt: skip


def _sweep(tmp: Path, name: str, ranks: str) -> dict:
    cmd = [
        sys.executable, "-m", "rank_sweep", "-m", f"lora.rank={ranks}", *SMALL,
        # own MLflow store per sweep: the other sweep's finished runs are not reused here
        f"track.uri=sqlite:///{tmp}/mlflow-{name}.db", f"prune.storage=sqlite:///{tmp}/optuna.db",
        f"hydra.sweep.dir={tmp}/{name}", f"state_dir={tmp}/jobs-{name}", f"sweep_name={name}",
    ]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-5000:]
    return json.loads((tmp / name / "decisions.json").read_text())


@pytest.mark.slow
def test_reversed_rank_list_same_decisions_and_tracking(tmp_path: Path) -> None:
    fwd = _sweep(tmp_path, "fwd", "4,16,64")
    rev = _sweep(tmp_path, "rev", "64,16,4")

    def outcome(doc: dict) -> list:
        return [[(r["step"], r["kept"], r["pruned"], r["arms"]) for r in doc["rungs"]],
                doc["final"]]  # fmt: skip

    assert outcome(fwd) == outcome(rev)  # same items, noise and weights: same numbers too

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow-fwd.db")
    exp = client.get_experiment_by_name("rank_sweep")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    parent = next(r for r in runs if r.info.run_name == f"sweep-{fwd['sweep_id']}")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["lora-r16", "lora-r4", "lora-r64"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["decisions.json"]
    pruned_at = {k: r["step"] for r in fwd["rungs"] for k in r["pruned"]}
    for run in children:
        tags, key = run.data.tags, run.info.run_name
        if key in pruned_at:
            assert tags[C.TAG_STATUS] == "pruned"
            assert int(tags[C.TAG_PRUNED_STEP]) == pruned_at[key]
            assert "worse than" in tags[C.TAG_PRUNE_REASON]
        else:
            assert tags[C.TAG_STATUS] == "completed"
            assert int(tags[C.TAG_RESUMES]) == len(fwd["rungs"])  # one run, resumed
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
        assert len(steps) == len(set(steps))  # resumed without duplicate steps
    study = optuna.load_study(study_name=fwd["sweep_id"], storage=f"sqlite:///{tmp_path}/optuna.db")
    states = {t.user_attrs["arm"]: t.state.name for t in study.trials}
    assert states == {
        r.info.run_name: "PRUNED" if r.info.run_name in pruned_at else "COMPLETE" for r in children
    }
