"""Config composition and validation: every bad value is one line naming key, value, allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rank_sweep.config.preflight import PreflightError, expand_jobs, preflight
from rank_sweep.config.validate import validate
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


@pytest.mark.parametrize(
    "overrides",
    [
        ["model=wan2.1_i2v_14b_480p", "data=ucf101", "train=paper", "eval=fvd2048_16f"],
        ["model=wan2.1_i2v_14b_720p", "data=kinetics400", "dist=fsdp"],
        ["data=folder", "dist=deepspeed_zero3", "finetune=full", "lora=rslora"],
        ["lora=ratio", "prune=median", "track=off"],
    ],
)
def test_every_group_option_composes(compose, overrides: list[str]) -> None:
    validate(compose(overrides))


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
