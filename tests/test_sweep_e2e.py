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
from rank_sweep.track import contract as C

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
        if r.data.tags.get(C.TAG_ROLE) == "sweep"
        and sweep_name in r.data.tags.get(C.TAG_SWEEP_ID, "")
    ]
    assert len(parents) == 1, [p.data.tags for p in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(C.TAG_PARENT) == parent.info.run_id]
    return parent, children


def test_single_run_trains_and_writes_summary(stores, tmp_path: Path) -> None:
    out = tmp_path / "job"
    # rank 2: not an arm of the sweeps below, which count their own trained runs (reuse of
    # a finished run across sweeps has its own test)
    cli(stores, "lora.rank=2", f"output_dir={out}", "sweep_name=single")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "lora" and summary["rank"] == 2 and summary["steps"] == 4
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
        assert tags[C.TAG_METHOD] == "lora" and tags[C.TAG_LORA_RANK] in ("4", "8")
        assert tags[C.TAG_STATUS] in ("completed", "pruned")
        assert tags[C.TAG_SWEEP_ID] == parent.data.tags[C.TAG_SWEEP_ID]
        # a rank pruned at the first rung (step 1) stopped before the first eval (step 2)
        done = tags[C.TAG_STATUS] == "completed"
        key = "val_fvd/synthetic" if done else "train/loss"  # periodic tier
        hist = MlflowClient(stores["mlflow"]).get_metric_history(run.info.run_id, key)
        assert len(hist) >= 1
        assert "model/trainable_params" in run.data.metrics
        if done:  # the final tier once, completed runs only
            assert {"fvd/synthetic", "kid/synthetic"} <= set(run.data.metrics)
    study = optuna.load_study(study_name=parent.data.tags[C.TAG_SWEEP_ID], storage=stores["optuna"])
    states = sorted(t.state.name for t in study.trials)
    expected = sorted(
        "COMPLETE" if r.data.tags[C.TAG_STATUS] == "completed" else "PRUNED" for r in children
    )
    assert states == expected


def test_rerunning_a_finished_sweep_reuses_every_job(stores) -> None:
    _, children = runs_of(stores, "basic")
    proc = cli(stores, "-m", "sweep_name=basic", "lora.rank=4,8")
    assert len(runs_of(stores, "basic")[1]) == len(children)
    # pruned ranks are not relaunched (their rung records exist); finished ones are reused
    done = sum(r.data.tags[C.TAG_STATUS] == "completed" for r in children)
    assert (proc.stdout + proc.stderr).count("reusing finished run") == done


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
        assert run.data.tags[C.TAG_STATUS] in ("completed", "pruned")
        losses = client.get_metric_history(run.info.run_id, "train/loss")
        steps = [m.step for m in losses]
        done = run.data.tags[C.TAG_STATUS] == "completed"
        assert len(steps) == len(set(steps)) and len(steps) >= (4 if done else 1)


def test_failing_job_leaves_the_others_running(stores) -> None:
    from rank_sweep.model.layout import PARTS

    # A model dir complete in layout (so the preflight passes) whose files are empty: the
    # job fails at run time, after its run was opened.
    broken = Path(stores["dir"]) / "broken_wan"
    (broken / "model_index.json").parent.mkdir(parents=True, exist_ok=True)
    (broken / "model_index.json").write_text("{}")
    for part, (cfg_name, _) in PARTS.items():
        (broken / part).mkdir(exist_ok=True)
        (broken / part / cfg_name).write_text("")
        (broken / part / "model.safetensors").write_bytes(b"")
        (broken / part / "tokenizer.json").write_text("")
    proc = cli(stores, "-m", "sweep_name=failing", f"model.path=null,{broken}", check=False)
    assert proc.returncode != 0
    _, children = runs_of(stores, "failing")
    status = sorted(r.data.tags[C.TAG_STATUS] for r in children)
    assert status[-1] == C.FAILED and status[0] in (C.COMPLETED, C.PRUNED)
    failed = [r for r in children if r.data.tags[C.TAG_STATUS] == C.FAILED][0]
    assert failed.data.tags[C.TAG_ERROR]


def test_killed_job_resumes_the_same_mlflow_run(stores, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"  # this job's state alone, so the first checkpoint seen is its own
    args = [
        "lora.rank=8", "train.steps=6", "train.checkpoint_every=1", "eval.every=3",
        "sweep_name=killed", f"state_dir={jobs}",
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "rank_sweep", *TINY, *args,
        f"track.uri={stores['mlflow']}", f"prune.storage={stores['optuna']}", f"output_dir={tmp_path}/a",
        f"hydra.run.dir={tmp_path}/hydra",  # Hydra's own run dir too: never inside the clone
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
    assert after[0].data.tags[C.TAG_STATUS] == "completed"
    steps = [m.step for m in client.get_metric_history(after[0].info.run_id, "train/loss")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 6


@pytest.fixture(scope="module")
def aggressive(stores) -> subprocess.CompletedProcess:
    """A sweep with an aggressive ASHA and the full baseline asked for four times."""
    return cli(
        stores, "-m", "sweep_name=aggressive", "finetune=full,lora", "lora.rank=4,8,16,32",
        "eval.every=1", "prune=asha", "prune.min_resource=1", "prune.reduction_factor=4",
    )  # fmt: skip


def test_aggressive_asha_prunes_and_full_runs_once(stores, aggressive) -> None:
    proc = aggressive
    parent, children = runs_of(stores, "aggressive")
    methods = sorted(r.data.tags[C.TAG_METHOD] for r in children)
    assert methods == ["full", "lora", "lora", "lora", "lora"]  # full once: one arm
    assert "8 jobs are 5 distinct arms" in proc.stdout + proc.stderr
    status = {r.data.tags[C.TAG_LORA_RANK] or "full": r.data.tags[C.TAG_STATUS] for r in children}
    assert status["full"] == "completed"
    assert "pruned" in status.values(), status
    pruned = [r for r in children if r.data.tags[C.TAG_STATUS] == "pruned"]
    assert all(int(r.data.tags[C.TAG_PRUNED_STEP]) < 4 for r in pruned)
    study = optuna.load_study(study_name=parent.data.tags[C.TAG_SWEEP_ID], storage=stores["optuna"])
    assert sorted(t.state.name for t in study.trials) == sorted(
        {"completed": "COMPLETE", "pruned": "PRUNED"}[s] for s in status.values()
    )


def test_report_on_the_real_sweep_matches_mlflow(stores, aggressive, tmp_path: Path) -> None:
    from rank_sweep.report import build_report, load_runs

    parent, children = runs_of(stores, "aggressive")
    df = load_runs(stores["mlflow"], sweep_id=parent.data.tags[C.TAG_SWEEP_ID])
    assert len(df) == len(children) == 5
    assert df.iloc[0]["method"] == "full"  # baseline on top
    by_id = {r.info.run_id: r for r in children}
    for _, row in df.iterrows():
        run = by_id[row["run_id"]]
        for key in ("fvd/synthetic", "kid/synthetic"):  # final tier: completed runs only
            logged = run.data.metrics.get(key, float("nan"))
            assert row[key] == pytest.approx(logged, nan_ok=True)
        assert row["trainable_params"] == run.data.metrics["model/trainable_params"]
        assert row["status"] == run.data.tags[C.TAG_STATUS]
    paths = build_report(df, tmp_path / "report")
    assert paths.csv.exists() and paths.html.exists() and paths.markdown.exists()
    html = paths.html.read_text()
    # both metrics rest on the world's trained detectors: no published network, no random
    # weights (a random-init Inception's KID scored the untrained base best)
    assert "PROJECT-TRAINED DETECTOR" in html and "from random weights" not in html
    for png in paths.plots.values():
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_sweep_holds_what_make_demo_promises(stores, tmp_path: Path) -> None:
    """`make demo` at test size: one parent, ranks 1..16 + full + the untrained base as
    children, each with fvd/kid and a status tag, Optuna trial states matching those tags,
    and a report whose first row is the base, with paired deltas against it."""
    # test-size rungs at steps 2 and 4 (evals at 2 and 4): a pruned rank has its rung eval
    # and the dataset at test size too (the demo's 96 clips per class, 64 training clips and
    # 16 validation clips only cost time here)
    cli(stores, "-m", "+experiment=demo", "sweep_name=demo_check", "prune.rungs=[0.5,1.0]",
        "data.synth.videos_per_class=24", "data.max_train_clips=16",
        "train.val_clips=8")  # fmt: skip
    parent, children = runs_of(stores, "demo_check")
    names = sorted(r.data.tags[C.TAG_LORA_RANK] or r.data.tags[C.TAG_METHOD] for r in children)
    assert names == sorted(["1", "2", "4", "8", "16", "full", "none"])
    client = MlflowClient(stores["mlflow"])
    for run in children:
        tags = run.data.tags
        if tags[C.TAG_METHOD] == C.METHOD_NONE:  # scored once at step 0, nothing trained
            assert tags[C.TAG_STATUS] == "completed" and run.info.run_name == "base"
            assert {"fvd/synthetic", "kid/synthetic", C.VAL_LOSS} <= set(run.data.metrics)
            assert run.data.metrics[C.TRAIN_STEPS_DONE] == 0
            assert run.data.metrics[C.TRAINABLE_PARAMS] == 0
            assert not any(k.startswith("lora.") for k in run.data.params)
            continue
        # Periodic tier (validation slice) at every eval; final tier once, completed runs only.
        if tags[C.TAG_STATUS] == "completed":
            hist = client.get_metric_history(run.info.run_id, "val_fvd/synthetic")
            assert len(hist) >= 2, run.info.run_name
            assert {"fvd/synthetic", "kid/synthetic"} <= set(run.data.metrics)
        assert tags[C.TAG_STATUS] in ("completed", "pruned")
        assert tags[C.TAG_DETECTOR_PRETRAINED] == "false"
    study = optuna.load_study(study_name=parent.data.tags[C.TAG_SWEEP_ID], storage=stores["optuna"])
    by_arm = {(t.params["method"], t.params["lora_rank"]): t.state.name for t in study.trials}
    for run in children:
        arm = (run.data.tags[C.TAG_METHOD], int(run.data.tags[C.TAG_LORA_RANK] or 0))
        assert (
            by_arm[arm]
            == {"completed": "COMPLETE", "pruned": "PRUNED"}[run.data.tags[C.TAG_STATUS]]
        )
    assert len(study.trials) == 7

    from rank_sweep.report import build_report, load_runs

    df = load_runs(stores["mlflow"], sweep_id=parent.data.tags[C.TAG_SWEEP_ID])
    paths = build_report(df, tmp_path / "report")
    md = paths.markdown.read_text()
    table = md[md.index("| method") :]
    assert table.splitlines()[2].startswith("| base, no fine-tune")  # first row
    assert "ΔFVD vs base synthetic" in md


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
    assert len(runs) == 1 and runs[0].data.tags[C.TAG_STATUS] == "completed"  # rank 0 only


def test_jobs_of_one_sweep_report_their_own_peak_memory(stores) -> None:
    """All jobs of a multirun share one process: without a per-job reset the LoRA job, run
    after the full fine-tune (the baseline goes first), would inherit the full job's peak."""
    cli(stores, "-m", "sweep_name=peaks", "prune=none", "finetune=full,lora", "lora.rank=4")
    _, children = runs_of(stores, "peaks")
    peak = {r.data.tags[C.TAG_METHOD]: r.data.metrics[C.PEAK_MEM_MB] for r in children}
    assert set(peak) == {"full", "lora"}
    assert peak["lora"] != peak["full"] and min(peak.values()) > 0, peak
    for r in children:
        p10, med, p90 = (
            r.data.metrics[k] for k in (C.STEP_TIME_P10_S, C.STEP_TIME_S, C.STEP_TIME_P90_S)
        )
        assert 0 < p10 <= med <= p90
