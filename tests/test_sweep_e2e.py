"""The product end to end through the real CLI: Hydra multirun, tiny Wan I2V on synthetic
videos, MLflow + Optuna in SQLite stores in a temp dir. Small steps, but every part real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from rank_sweep.paths import REPO_ROOT

TINY = [
    "train.steps=4",
    "train.checkpoint_every=2",
    "eval.every=2",
    "eval.num_real=6",
    "eval.num_fake=4",
    "eval.sample_steps=2",
    "eval.bootstrap=10",
    "eval.kid_subset_size=4",
    "eval.log_videos=1",
    "track.system_metrics=false",
]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("stores")
    return {
        "dir": str(d),
        "mlflow": f"sqlite:///{d}/mlflow.db",
        "optuna": f"sqlite:///{d}/optuna.db",
    }


def cli(
    stores: dict[str, str], *args: str, check: bool = True, **kw
) -> subprocess.CompletedProcess:
    d = stores["dir"]
    cmd = [
        sys.executable, "-m", "rank_sweep", *TINY,
        f"track.uri={stores['mlflow']}", f"prune.storage={stores['optuna']}",
        f"hydra.run.dir={d}/outputs/${{now:%H%M%S%f}}",
        f"hydra.sweep.dir={d}/multirun/${{sweep_name}}", *args,
    ]  # fmt: skip
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=600, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def runs_of(stores: dict[str, str], sweep_name: str) -> tuple[object, list]:
    client = MlflowClient(stores["mlflow"])
    exp = client.get_experiment_by_name("rank_sweep")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [
        r
        for r in runs
        if r.data.tags.get("rank_sweep.role") == "sweep"
        and sweep_name in r.data.tags.get("rank_sweep.sweep_id", "")
    ]
    assert len(parents) == 1, [p.data.tags for p in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def test_single_run_trains_and_writes_summary(stores, tmp_path: Path) -> None:
    out = tmp_path / "job"
    cli(stores, "lora.rank=4", f"output_dir={out}", "sweep_name=single")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "lora" and summary["rank"] == 4 and summary["steps"] == 4
    assert summary["trainable_params"] > 0 and summary["step_time_s"] > 0
    assert summary["final_train_loss"] == summary["final_train_loss"]  # not NaN
    assert (out / "adapter" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    assert len(summary["evals"]) == 2


def test_sweep_basic_parent_children_and_trials(stores) -> None:
    cli(stores, "-m", "sweep_name=basic", "lora.rank=4,8")
    parent, children = runs_of(stores, "basic")
    assert len(children) == 2
    for run in children:
        tags = run.data.tags
        assert tags["rank_sweep.method"] == "lora" and tags["rank_sweep.lora_rank"] in ("4", "8")
        assert tags["rank_sweep.status"] in ("completed", "pruned")
        assert tags["rank_sweep.sweep_id"] == parent.data.tags["rank_sweep.sweep_id"]
        hist = MlflowClient(stores["mlflow"]).get_metric_history(
            run.info.run_id, "val_fvd/synthetic"
        )
        assert len(hist) >= 1  # periodic tier; the final tier only for completed runs
        assert "model/trainable_params" in run.data.metrics
        if tags["rank_sweep.status"] == "completed":
            assert {"fvd/synthetic", "kid/synthetic"} <= set(run.data.metrics)
    study = optuna.load_study(
        study_name=parent.data.tags["rank_sweep.sweep_id"], storage=stores["optuna"]
    )
    states = sorted(t.state.name for t in study.trials)
    expected = sorted(
        "COMPLETE" if r.data.tags["rank_sweep.status"] == "completed" else "PRUNED"
        for r in children
    )
    assert states == expected


def test_rerunning_a_finished_sweep_reuses_every_job(stores) -> None:
    before = len(runs_of(stores, "basic")[1])
    proc = cli(stores, "-m", "sweep_name=basic", "lora.rank=4,8")
    assert len(runs_of(stores, "basic")[1]) == before
    assert (proc.stdout + proc.stderr).count("reusing finished run") == 2


def test_sweep_joblib_two_parallel_jobs_one_sqlite_store(stores) -> None:
    cli(
        stores,
        "-m",
        "sweep_name=parallel",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "lora.rank=16,32",
    )
    _, children = runs_of(stores, "parallel")
    assert len(children) == 2
    client = MlflowClient(stores["mlflow"])
    for run in children:
        assert run.data.tags["rank_sweep.status"] in ("completed", "pruned")
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        steps = [m.step for m in losses]
        assert len(steps) == len(set(steps)) and len(steps) >= 2


def test_failing_job_leaves_the_others_running(stores) -> None:
    proc = cli(stores, "-m", "sweep_name=failing", "model.path=null,/nonexistent/wan", check=False)
    assert proc.returncode != 0
    _, children = runs_of(stores, "failing")
    status = sorted(r.data.tags["rank_sweep.status"] for r in children)
    assert status[-1] == "failed" and status[0] in ("completed", "pruned")
    failed = [r for r in children if r.data.tags["rank_sweep.status"] == "failed"][0]
    assert "nonexistent" in failed.data.tags["rank_sweep.error"]


def test_killed_job_resumes_the_same_mlflow_run(stores, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"  # this job's state alone, so the first checkpoint seen is its own
    args = [
        "lora.rank=8", "train.steps=6", "train.checkpoint_every=1", "eval.every=3",
        "sweep_name=killed", f"state_dir={jobs}",
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "rank_sweep", *TINY, *args,
        f"track.uri={stores['mlflow']}", f"prune.storage={stores['optuna']}", f"output_dir={tmp_path}/a",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(jobs.glob("lora-r8-*/checkpoint/*")):
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"job ended before it could be killed: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    client = MlflowClient(stores["mlflow"])
    exp = client.get_experiment_by_name("rank_sweep")

    def killed_runs():
        return [
            r
            for r in client.search_runs([exp.experiment_id], max_results=1000)
            if r.data.params.get("sweep_name") == "killed"
        ]

    first = killed_runs()
    assert len(first) == 1
    cli(stores, *args, f"output_dir={tmp_path}/b")
    after = killed_runs()
    assert [r.info.run_id for r in after] == [first[0].info.run_id]
    assert after[0].data.tags["rank_sweep.status"] == "completed"
    steps = [m.step for m in client.get_metric_history(after[0].info.run_id, "train/loss")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 6


@pytest.fixture(scope="module")
def aggressive(stores) -> subprocess.CompletedProcess:
    """A sweep with an aggressive ASHA and the full baseline asked for four times."""
    return cli(
        stores, "-m", "sweep_name=aggressive", "finetune=full,lora", "lora.rank=4,8,16,32",
        "eval.every=1", "prune.min_resource=1", "prune.reduction_factor=4",
    )  # fmt: skip


def test_aggressive_asha_prunes_and_full_runs_once(stores, aggressive) -> None:
    proc = aggressive
    parent, children = runs_of(stores, "aggressive")
    methods = sorted(r.data.tags["rank_sweep.method"] for r in children)
    assert methods == ["full", "lora", "lora", "lora", "lora"]  # full once, then reused
    assert (proc.stdout + proc.stderr).count("reusing finished run") >= 3
    status = {
        r.data.tags["rank_sweep.lora_rank"] or "full": r.data.tags["rank_sweep.status"]
        for r in children
    }
    assert status["full"] == "completed"
    assert "pruned" in status.values(), status
    pruned = [r for r in children if r.data.tags["rank_sweep.status"] == "pruned"]
    assert all(int(r.data.tags["rank_sweep.pruned_step"]) < 4 for r in pruned)
    study = optuna.load_study(
        study_name=parent.data.tags["rank_sweep.sweep_id"], storage=stores["optuna"]
    )
    assert sorted(t.state.name for t in study.trials) == sorted(
        {"completed": "COMPLETE", "pruned": "PRUNED"}[s] for s in status.values()
    )


def test_report_on_the_real_sweep_matches_mlflow(stores, aggressive, tmp_path: Path) -> None:
    from rank_sweep.report import build_report, load_runs

    parent, children = runs_of(stores, "aggressive")
    df = load_runs(stores["mlflow"], sweep_id=parent.data.tags["rank_sweep.sweep_id"])
    assert len(df) == len(children) == 5
    assert df.iloc[0]["method"] == "full"  # baseline on top
    by_id = {r.info.run_id: r for r in children}
    for _, row in df.iterrows():
        run = by_id[row["run_id"]]
        for key in ("fvd/synthetic", "kid/synthetic"):  # final tier: completed runs only
            logged = run.data.metrics.get(key, float("nan"))
            assert row[key] == pytest.approx(logged, nan_ok=True)
        assert row["trainable_params"] == run.data.metrics["model/trainable_params"]
        assert row["status"] == run.data.tags["rank_sweep.status"]
    paths = build_report(df, tmp_path / "report")
    assert paths.csv.exists() and paths.html.exists() and paths.markdown.exists()
    assert "RANDOM-INIT" in paths.html.read_text().upper()
    for png in paths.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_sweep_holds_what_make_demo_promises(stores) -> None:
    """`make demo` at test size: one parent, 5 ranks + full as children, each with fvd/kid
    at >= 2 eval steps and a status tag, and Optuna trial states matching those tags."""
    cli(stores, "-m", "+experiment=demo", "sweep_name=demo_check")
    parent, children = runs_of(stores, "demo_check")
    assert sorted(r.data.tags["rank_sweep.lora_rank"] or "full" for r in children) == sorted(
        ["4", "8", "16", "32", "64", "full"]
    )
    client = MlflowClient(stores["mlflow"])
    for run in children:
        # Periodic tier (validation slice) at every eval; final tier once, completed runs only.
        hist = client.get_metric_history(run.info.run_id, "val_fvd/synthetic")
        assert len(hist) >= 2, run.info.run_name
        if run.data.tags["rank_sweep.status"] == "completed":
            assert {"fvd/synthetic", "kid/synthetic"} <= set(run.data.metrics)
        assert run.data.tags["rank_sweep.status"] in ("completed", "pruned")
        assert run.data.tags["detector.pretrained"] == "false"
    study = optuna.load_study(
        study_name=parent.data.tags["rank_sweep.sweep_id"], storage=stores["optuna"]
    )
    by_rank = {t.params["lora_rank"]: t.state.name for t in study.trials}
    for run in children:
        rank = int(run.data.tags["rank_sweep.lora_rank"] or 0)
        assert (
            by_rank[rank]
            == {"completed": "COMPLETE", "pruned": "PRUNED"}[run.data.tags["rank_sweep.status"]]
        )
    assert len(study.trials) == 6


def test_fsdp_job_spawns_two_workers_and_saves_once(stores, tmp_path: Path) -> None:
    out = tmp_path / "fsdp"
    cli(
        stores,
        "dist=fsdp",
        "dist.nproc_per_node=2",
        "lora.rank=4",
        "sweep_name=fsdp",
        f"output_dir={out}",
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and len(summary["evals"]) == 2
    assert (out / "adapter" / "pytorch_lora_weights.safetensors").stat().st_size > 0
    client = MlflowClient(stores["mlflow"])
    exp = client.get_experiment_by_name("rank_sweep")
    runs = [
        r
        for r in client.search_runs([exp.experiment_id])
        if r.data.params.get("sweep_name") == "fsdp"
    ]
    assert len(runs) == 1 and runs[0].data.tags["rank_sweep.status"] == "completed"  # rank 0 only
