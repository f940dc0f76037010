"""Wan2.2 end to end through the same CLI as Wan2.1: a one-job LoRA run and a 2-rank sweep
on each tiny Wan2.2 preset (A14B training its low-noise expert, TI2V-5B), with FVD/KID,
the report, and the saved adapter loaded back by WanImageToVideoPipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors import safe_open

from rank_sweep.paths import REPO_ROOT
from rank_sweep.track import contract as C

pytestmark = pytest.mark.slow  # ~1 min per CLI call on 2 cores

TINY = [
    "train.steps=4", "train.checkpoint_every=2", "eval.every=2", "eval.num_real=6",
    "eval.num_fake=4", "eval.sample_steps=2", "eval.bootstrap=10", "eval.kid_subset_size=4",
    "eval.log_videos=1", "track.system_metrics=false",
]  # fmt: skip
PRESETS = {
    "a14b": ["model=tiny_wan22_a14b", "lora.experts=low"],
    "ti2v": ["model=tiny_wan22_ti2v"],
}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("stores22")
    return {"dir": str(d), "mlflow": f"sqlite:///{d}/mlflow.db", "optuna": f"sqlite:///{d}/o.db"}


def _run(stores: dict[str, str], module: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO_ROOT, capture_output=True, text=True,
        env=env, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    return proc


def _train(stores: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    d = stores["dir"]
    return _run(
        stores, "rank_sweep", *TINY, f"track.uri={stores['mlflow']}",
        f"prune.storage={stores['optuna']}", f"hydra.run.dir={d}/outputs/${{now:%H%M%S%f}}",
        f"hydra.sweep.dir={d}/multirun/${{sweep_name}}", *args,
    )  # fmt: skip


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_one_job_sweep_and_report(stores, tmp_path: Path, preset: str) -> None:
    out = tmp_path / "job"
    _train(
        stores, *PRESETS[preset], "lora.rank=16", f"output_dir={out}", f"sweep_name=one_{preset}"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["evals"]) == 2
    assert all("fvd/synthetic" in e and "kid/synthetic" in e for e in summary["evals"])
    adapter = out / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == [
        "lora_comfyui.safetensors",
        "pytorch_lora_weights.safetensors",
    ]
    with safe_open(str(adapter / "pytorch_lora_weights.safetensors"), framework="pt") as f:
        header = f.metadata()
    assert header["rank_sweep.expert"] == ("low_noise" if preset == "a14b" else "transformer")

    _train(stores, *PRESETS[preset], "-m", "lora.rank=4,8", f"sweep_name=two_{preset}")
    client = MlflowClient(stores["mlflow"])
    exp = client.get_experiment_by_name("rank_sweep")
    runs = client.search_runs([exp.experiment_id], max_results=200)
    parent = next(
        r for r in runs
        if r.data.tags.get(C.TAG_ROLE) == "sweep"
        and f"two_{preset}" in r.data.tags.get(C.TAG_SWEEP_ID, "")
    )  # fmt: skip
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.tags[C.TAG_LORA_RANK] for r in children) == ["4", "8"]
    for run in children:
        assert "fvd/synthetic" in run.data.metrics and "kid/synthetic" in run.data.metrics
        arts = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
        assert arts == {
            "adapter/pytorch_lora_weights.safetensors",
            "adapter/lora_comfyui.safetensors",
        }
    report = tmp_path / "report"
    sweep_id = parent.data.tags[C.TAG_SWEEP_ID]
    _run(stores, "rank_sweep.report", "--tracking-uri", stores["mlflow"], "--sweep", sweep_id,
         "--out", str(report))  # fmt: skip
    assert (report / "report.md").is_file() and (report / "results.csv").is_file()
    # weights size = the diffusers file alone (the ComfyUI export is the same weights again)
    from rank_sweep.report import load_runs

    df = load_runs(stores["mlflow"], sweep_id=sweep_id).set_index("run_id")
    assert len(df) == 2
    for run in children:
        sizes = {a.path: a.file_size for a in client.list_artifacts(run.info.run_id, "adapter")}
        main_file = sizes["adapter/pytorch_lora_weights.safetensors"]
        assert df.loc[run.info.run_id, "adapter_bytes"] == main_file

    if preset == "a14b":  # the low-noise LoRA goes where it was trained: transformer_2
        from diffusers import WanImageToVideoPipeline

        from rank_sweep.model.spec import resolve_model_path

        model_dir = resolve_model_path(
            type("M", (), {"path": None, "tiny_seed": 0, "arch": "wan2.2_i2v_a14b"})()
        )
        pipe = WanImageToVideoPipeline.from_pretrained(model_dir)
        g = torch.Generator().manual_seed(0)
        x = dict(
            hidden_states=torch.randn(1, 36, 3, 4, 4, generator=g),
            timestep=torch.tensor([300.0]),
            encoder_hidden_states=torch.randn(1, 512, 32, generator=g),
            return_dict=False,
        )
        with torch.no_grad():
            before = pipe.transformer_2(**x)[0]
            pipe.load_lora_weights(adapter, load_into_transformer_2=True)
            after = pipe.transformer_2(**x)[0]
        assert hasattr(pipe.transformer_2, "peft_config") and not torch.equal(before, after)


def test_fsdp_two_workers_train_both_experts(stores, tmp_path: Path) -> None:
    """FSDP2 over 2 CPU workers (gloo) with both A14B experts sharded: every rank runs both
    experts in each forward, the gathered weights are saved as one file per expert."""
    out = tmp_path / "job"
    _train(
        stores, "model=tiny_wan22_a14b", "lora.experts=both", "lora.rank=4", "dist=fsdp",
        "dist.nproc_per_node=2", "eval.every=4", f"output_dir={out}", "sweep_name=fsdp22",
    )  # fmt: skip
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    assert sorted(p.name for p in (out / "adapter").iterdir()) == [
        "lora_comfyui.safetensors", "lora_comfyui_low_noise.safetensors",
        "pytorch_lora_weights.safetensors", "pytorch_lora_weights_low_noise.safetensors",
    ]  # fmt: skip
