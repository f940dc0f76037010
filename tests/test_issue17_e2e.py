"""Issue 17 end to end through the real CLI on the embedded world: CLIP-SIM and LPIPS in
MLflow and the report for every run, one-stage vs two-stage at the same rank compared in
the report, and a plateau early stop recorded as `stopped_plateau` (apart from pruning)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from rank_sweep.paths import REPO_ROOT
from rank_sweep.track import contract as C

pytestmark = pytest.mark.slow  # two CLI sweeps: ~1-2 min on 2 cores

TINY = [
    "lora.rank=4", "train.steps=4", "train.checkpoint_every=2", "eval.every=2",
    "eval.num_real=6", "eval.num_fake=4", "eval.sample_steps=2", "eval.bootstrap=10",
    "eval.kid_subset_size=4", "eval.log_videos=1", "track.system_metrics=false", "prune=none",
]  # fmt: skip
TWO_STAGE = "[{name:style,view:stills,steps:2},{name:motion,view:clips,steps:2}]"
EXTRA = ("clipsim_img", "clipsim_temporal", "clipsim_text", "lpips")


def _cli(d: Path, *args: str) -> None:
    cmd = [sys.executable, "-m", "rank_sweep", *TINY, f"track.uri=sqlite:///{d}/mlflow.db",
           f"prune.storage=sqlite:///{d}/optuna.db", f"hydra.run.dir={d}/out/${{now:%H%M%S%f}}",
           f"hydra.sweep.dir={d}/multirun/${{sweep_name}}", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HYDRA_FULL_ERROR": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-5000:]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("i17")
    _cli(d, "-m", f"train.stages=choice([],{TWO_STAGE})", "sweep_name=recipes")
    return d


def _children(client: MlflowClient, sweep_name: str) -> list:
    exp = client.get_experiment_by_name("rank_sweep")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    return [r for r in runs if sweep_name in r.data.tags.get(C.TAG_SWEEP_ID, "")
            and r.data.tags.get(C.TAG_ROLE) != "sweep"]  # fmt: skip


def test_one_and_two_stage_complete_with_clipsim_lpips_and_are_compared(store: Path, tmp_path):
    from rank_sweep.report import build_report, load_runs

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    runs = _children(client, "recipes")
    assert len(runs) == 2
    by_recipe = {r.data.tags[C.TAG_RECIPE]: r for r in runs}
    assert set(by_recipe) == {"one_stage", "two_stage"}
    for r in runs:
        assert r.data.tags[C.TAG_STATUS] == "completed"
        for m in EXTRA:  # final value + paired-ready interval, at each eval
            assert f"{m}/synthetic" in r.data.metrics, m
            lo, hi = r.data.metrics[f"{m}_ci_lo/synthetic"], r.data.metrics[f"{m}_ci_hi/synthetic"]
            assert lo <= r.data.metrics[f"{m}/synthetic"] <= hi
            assert [h.step for h in client.get_metric_history(r.info.run_id, f"{m}/synthetic")] == [
                2,
                4,
            ]
        assert r.data.params["protocol.synthetic.extra.lpips.pretrained"] == "false"
        arts = [a.path for a in client.list_artifacts(r.info.run_id, "extra_per_clip")]
        assert arts == ["extra_per_clip/synthetic.json"]
    two = by_recipe["two_stage"]
    assert two.data.tags[C.TAG_STAGES] == "style:stills:0-2|motion:clips:2-4"
    marks = client.get_metric_history(two.info.run_id, "train/stage")
    assert [(m.step, m.value) for m in marks] == [(0, 1.0), (2, 2.0)]  # stage boundaries

    df = load_runs(f"sqlite:///{store}/mlflow.db", "rank_sweep")
    md = build_report(df, tmp_path / "rep", votes=[]).markdown.read_text()
    quality = md.split("## CLIP-SIM and LPIPS", 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in quality.splitlines() if ln.startswith("| lora")]
    assert len(rows) == 2 and all(" – " not in ln for ln in rows)
    recipe = md.split("## One-stage vs two-stage recipe", 1)[1].split("\n## ", 1)[0]
    assert "| lora | 4 | one_stage |" in recipe and "| lora | 4 | two_stage |" in recipe
    assert "two-stage − one-stage" in recipe  # the paired difference row
    assert "several runs for the same setting" not in md  # the recipe tells them apart
    assert (tmp_path / "rep" / "lpips_vs_rank.png").is_file()


def test_plateau_early_stop_is_its_own_status(store: Path, tmp_path):
    from rank_sweep.report import build_report, load_runs

    # min_delta far above any change: the metric is flat by construction -> stop at the
    # 2nd eval (patience 1), step 4 of 8; the final tier then runs once at that step.
    _cli(store, "-m", "train.steps=8", "sweep_name=plateau", "train.early_stop.metric=lpips/synthetic",
         "train.early_stop.patience=1", "train.early_stop.min_delta=1000")  # fmt: skip
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    (run,) = _children(client, "plateau")
    tags, metrics = run.data.tags, run.data.metrics
    assert tags[C.TAG_STATUS] == "stopped_plateau"
    assert tags[C.TAG_PLATEAU_STEP] == "4" and C.TAG_PRUNED_STEP not in tags
    assert metrics["train/steps_done"] == 4 and "fvd_ci_lo/synthetic" in metrics  # final tier
    assert run.info.status == "FINISHED"
    df = load_runs(f"sqlite:///{store}/mlflow.db", "rank_sweep")
    md = build_report(df, tmp_path / "rep", votes=[]).markdown.read_text()
    assert "stopped_plateau @ 4" in md and "pruned @" not in md
    assert "missing run" not in md and "missing final metrics" not in md
