"""Config composition and validation: every bad value is one line naming key, value, allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import ListConfig, OmegaConf

from rank_sweep.config.preflight import PreflightError, expand_jobs, preflight
from rank_sweep.config.validate import validate
from rank_sweep.model.blocks import WAN_ATTENTION_LINEARS, WAN_BLOCK_LINEARS
from rank_sweep.paths import REPO_ROOT

BAD = [
    # (override, text that must appear in the one-line error)
    ("lora.rank=0", "lora.rank=0"),
    ("lora.rank=-4", "lora.rank=-4"),
    ("lora.rank=3.5", "lora.rank='3.5'"),
    ("lora.rank=abc", "lora.rank='abc'"),
    ("lora.rank=2048", "lora.rank=2048"),
    ("lora.rnk=8", "lora.rnk=8"),
    ("data=nope", "data=nope"),
    ("lora.alpha=0", "lora.alpha"),
    ("lora.alpha_mode=wild", "lora.alpha_mode"),
    ("data.frames=10", "data.frames=10"),
    ("data.height=30", "data.height=30"),
    ("data.width=0", "data.width=0"),
    ("finetune=partial", "finetune=partial"),
    ("dist=deepspeed_zero2 dist.zero_stage=1", "dist.zero_stage=1"),
    ("train.steps=0", "train.steps=0"),
    ("eval.metrics=[fid]", "eval.metrics"),
    ("prune=hyperband", "prune=hyperband"),
    ("data=ucf101 data.root=null", "data.root"),
    ("nonsense_key=1", "nonsense_key=1"),
]


@pytest.mark.parametrize(("override", "needle"), BAD)
def test_bad_values_fail_with_one_line(override: str, needle: str) -> None:
    with pytest.raises(PreflightError) as info:
        preflight(override.split(), multirun=False)
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg
    assert "allowed" in msg


def test_allowed_options_are_listed() -> None:
    with pytest.raises(PreflightError, match="allowed: folder | kinetics400 | synthetic | ucf101"):
        preflight(["data=nope"], multirun=False)
    with pytest.raises(PreflightError, match="allowed keys: alpha, alpha_mode"):
        preflight(["lora.rnk=8"], multirun=False)


def test_multirun_validates_every_job() -> None:
    assert preflight(["lora.rank=4,8,16,32,64"], multirun=True) == 5
    assert preflight(["finetune=lora,full", "lora.rank=4,8"], multirun=True) == 4
    with pytest.raises(PreflightError, match="lora.rank=2048"):
        preflight(["lora.rank=4,2048"], multirun=True)


def test_expand_jobs_is_the_cartesian_product() -> None:
    jobs = list(expand_jobs(["lora.rank=4,8", "finetune=lora,full", "train.steps=3"], True))
    assert len(jobs) == 4
    assert all("train.steps=3" in j for j in jobs)


def test_default_composes_and_validates(compose) -> None:
    cfg = compose()
    validate(cfg)
    assert cfg.model.name == "tiny_wan"
    assert cfg.finetune.method == "lora" and cfg.lora.rank == 8 and cfg.lora.alpha == 16
    assert cfg.data.name == "synthetic" and (cfg.data.frames - 1) % 4 == 0
    assert list(cfg.train.betas) == [0.9, 0.999] and cfg.train.weight_decay == 0.01


ALL_LINEARS = list(WAN_BLOCK_LINEARS)
ATTENTION = list(WAN_ATTENTION_LINEARS)

# Every option of every group and every experiment file, with composed values it must have.
OPTIONS = [
    (["model=tiny_wan"], {"model.name": "tiny_wan", "model.path": None, "model.dtype": "float32"}),
    (["model=wan2.1_i2v_14b_480p"], {"model.flow_shift": 3.0, "model.dtype": "bfloat16", "model.native_height": 480}),
    (["model=wan2.1_i2v_14b_720p"], {"model.flow_shift": 5.0, "model.native_width": 1280}),
    (["finetune=lora"], {"finetune.method": "lora", "finetune.lr": 3e-5}),
    (["finetune=full"], {"finetune.method": "full", "finetune.lr": 1e-5}),
    (["finetune=none"], {"finetune.method": "none", "finetune.lr": 0.0}),
    (["lora=default"], {"lora.rank": 8, "lora.alpha": 16.0, "lora.alpha_mode": "fixed", "lora.target_modules": ALL_LINEARS}),
    (["lora=attention_only"], {"lora.target_modules": ATTENTION, "lora.alpha_mode": "fixed"}),
    (["lora=ratio"], {"lora.alpha_mode": "ratio", "lora.alpha_ratio": 2.0, "lora.target_modules": ALL_LINEARS}),
    (["lora=rslora"], {"lora.alpha_mode": "rslora"}),
    (["data=synthetic"], {"data.name": "synthetic", "data.layout": "ucf101", "data.root": None}),
    (["data=ucf101"], {"data.layout": "ucf101", "data.eval_split": "test", "data.frames": 9}),
    (["data=kinetics400"], {"data.layout": "kinetics400", "data.eval_split": "validate"}),
    (["data=folder"], {"data.layout": "folder", "data.eval_split": "train#val"}),
    (["train=cpu_tiny"], {"train.steps": 24, "train.mixed_precision": "no"}),
    (["train=paper"], {"train.steps": 4000, "train.grad_accum": 4, "train.mixed_precision": "auto", "train.warmup_ratio": 0.05}),
    (["dist=single"], {"dist.backend": "single", "dist.nproc_per_node": 1}),
    (["dist=fsdp"], {"dist.backend": "fsdp", "dist.nproc_per_node": 8, "dist.reshard_after_forward": True}),
    (["dist=deepspeed_zero2"], {"dist.backend": "deepspeed", "dist.zero_stage": 2}),
    (["dist=deepspeed_zero3"], {"dist.backend": "deepspeed", "dist.zero_stage": 3}),
    (["eval=cpu_tiny"], {"eval.every": 12, "eval.num_fake": 8, "eval.i3d_path": "world", "eval.inception_path": "world"}),
    # 16 detector frames need a clip of >= 17 (4k+1) frames.
    (["eval=fvd2048_16f", "data.frames=17", "data.synth.frames=24"], {"eval.num_real": 2048, "eval.num_fake": 2048, "eval.frames": 16, "eval.detector_size": 224}),
    (["track=mlflow"], {"track.enabled": True, "track.uri": None}),
    (["track=off"], {"track.enabled": False, "track.log_artifacts": False}),
    (["prune=asha"], {"prune.pruner": "asha", "prune.reduction_factor": 2}),
    (["prune=median"], {"prune.pruner": "median", "prune.n_warmup_steps": 1}),
    (["prune=none"], {"prune.pruner": "none"}),
    (["+experiment=demo"], {"sweep_name": "demo", "train.steps": 240, "eval.every": 60, "prune.eta": 2, "lora.alpha_mode": "ratio"}),
    (["+experiment=ucf101_rank_sweep_14b"], {"model.name": "wan2.1_i2v_14b_480p", "data.name": "ucf101", "data.frames": 81, "dist.backend": "single", "device": "cuda", "train.steps": 4000}),
    (["+experiment=kinetics400_rank_sweep_14b"], {"data.name": "kinetics400", "data.max_train_clips": 20000, "dist.nproc_per_node": 1}),
    (["+experiment=cinematic_small_data"], {"data.layout": "folder", "dist.backend": "single", "eval.num_real": 64, "lora.rank": 8}),
    (["+experiment=demo_wan22"], {}),
    (["+experiment=wan22_a14b_ucf101_rank_sweep"], {"model.arch": "wan2.2_i2v_a14b"}),
    (["+experiment=wan22_ti2v_ucf101_rank_sweep"], {"model.arch": "wan2.2_ti2v_5b"}),
    (["model=wan2.2_i2v_a14b"], {"model.arch": "wan2.2_i2v_a14b", "model.flow_shift": 5.0}),
    (["model=wan2.2_ti2v_5b"], {"model.arch": "wan2.2_ti2v_5b"}),
    (["model=tiny_wan22_a14b"], {"model.arch": "wan2.2_i2v_a14b", "model.path": None}),
    (["model=tiny_wan22_ti2v"], {"model.arch": "wan2.2_ti2v_5b", "model.path": None}),
    (["prune=sha"], {"prune.pruner": "sha", "prune.eta": 2}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "expected"), OPTIONS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_every_option_and_experiment_composes_and_validates(compose, overrides, expected) -> None:
    cfg = compose(overrides)
    validate(cfg)
    got = {key: OmegaConf.select(cfg, key) for key in expected}
    got = {k: list(v) if isinstance(v, ListConfig) else v for k, v in got.items()}
    assert got == expected


def test_every_option_file_is_in_the_table() -> None:
    """A new option or experiment file must be added to OPTIONS (and so be checked)."""
    listed = {o.split("+", 1)[-1] for overrides, _ in OPTIONS for o in overrides}
    for root in (REPO_ROOT / "conf", REPO_ROOT / "experiments"):
        for f in root.glob("*/*.yaml"):
            assert f"{f.parent.name}={f.stem}" in listed, f


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=wan2.1_i2v_14b_480p", "data=ucf101", "train=paper", "eval=fvd2048_16f"],
        ["model=wan2.1_i2v_14b_720p", "data=kinetics400", "dist=fsdp"],
        ["data=folder", "dist=deepspeed_zero3", "finetune=full", "lora=rslora"],
        ["lora=attention_only", "dist=deepspeed_zero2", "prune=none", "track=off"],
        ["+experiment=ucf101_rank_sweep_14b", "finetune=full", "dist=deepspeed_zero3"],
    ],
)
def test_group_options_compose_together(compose, overrides: list[str]) -> None:
    validate(compose(overrides))


def test_one_precision_knob_and_loader_dtypes(compose) -> None:
    from rank_sweep.model.spec import MODEL_DTYPES

    assert "mixed_precision" not in compose(["dist=fsdp"]).dist  # train.mixed_precision only
    for dtype in MODEL_DTYPES:  # exactly what the loaders take
        validate(compose([f"model.dtype={dtype}"]))
    with pytest.raises(PreflightError, match="model.dtype"):
        preflight(["model.dtype=float8"], multirun=False)


def test_research_model_configs(compose) -> None:
    assert compose(["model=wan2.1_i2v_14b_480p"]).model.flow_shift == 3.0
    assert compose(["model=wan2.1_i2v_14b_720p"]).model.flow_shift == 5.0
    # Real-data configs take the model's native clip shape: 81 frames at 480p or 720p.
    d480 = compose(["model=wan2.1_i2v_14b_480p", "data=ucf101"]).data
    d720 = compose(["model=wan2.1_i2v_14b_720p", "data=kinetics400"]).data
    assert (d480.frames, d480.height, d480.width) == (81, 480, 832)
    assert (d720.frames, d720.height, d720.width) == (81, 720, 1280)
    validate(compose(["model=wan2.1_i2v_14b_720p", "data=folder"]))


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rank_sweep", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_bad_value_exits_nonzero_with_one_line() -> None:
    proc = _cli("lora.rank=abc")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == ["error: lora.rank='abc' is invalid: allowed an int in [1, 1024]"]
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_cfg_job_prints_composed_config() -> None:
    proc = _cli("--cfg", "job", "lora.rank=32")
    assert proc.returncode == 0, proc.stderr
    for key in ("model:", "finetune:", "lora:", "data:", "train:", "dist:", "eval:", "prune:"):
        assert key in proc.stdout
    assert "rank: 32" in proc.stdout
