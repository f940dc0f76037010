"""Job identity built once from the config: method, rank, effective alpha, scale, label,
fingerprint; and which jobs of a multirun are distinct."""

from __future__ import annotations

import math

import pytest

from rank_sweep.job.identity import JobIdentity
from rank_sweep.track import contract as C


@pytest.mark.parametrize(
    ("overrides", "alpha", "scale"),
    [
        (["lora=ratio", "lora.rank=8"], 16.0, 2.0),  # alpha = 2r: what peft receives
        (["lora=ratio", "lora.rank=64"], 128.0, 2.0),
        (["lora.rank=8"], 16.0, 2.0),  # fixed: the config's alpha, scale alpha/r
        (["lora.rank=64"], 16.0, 0.25),
        (["lora=rslora", "lora.rank=16"], 16.0, 4.0),  # alpha/sqrt(r)
    ],
)
def test_effective_alpha_and_scale(compose, overrides, alpha, scale) -> None:
    ident = JobIdentity.from_config(compose(overrides))
    assert ident.is_lora and ident.alpha == alpha and math.isclose(ident.scale, scale)
    tags = ident.tags()
    assert tags[C.TAG_LORA_ALPHA] == f"{alpha:g}" and float(tags[C.TAG_LORA_SCALE]) == scale
    assert tags[C.TAG_METHOD] == "lora" and tags[C.TAG_LORA_RANK] == str(ident.rank)
    assert ident.label == f"lora-r{ident.rank}" and ident.weights_dir == "adapter"
    assert ident.summary()["alpha"] == alpha and ident.lora_meta()["alpha"] == alpha
    assert f"alpha={alpha:g}" in ident.describe()


def test_full_ignores_lora_settings(compose, tmp_path) -> None:
    a = JobIdentity.from_config(compose(["finetune=full", "lora.rank=4"]))
    b = JobIdentity.from_config(compose(["finetune=full", "lora.rank=64", "prune=median"]))
    assert a == b and a.rank is None and a.alpha is None and a.scale is None
    assert a.label == "full" and a.weights_dir == "model" and a.lora_meta() is None
    assert a.tags()[C.TAG_LORA_RANK] == "" and a.trial_params() == {
        "method": "full",
        "lora_rank": 0,
    }
    cfg = compose(["finetune=full", f"state_dir={tmp_path}"])
    assert JobIdentity.from_config(cfg).state_dir(cfg) == tmp_path / f"full-{a.fingerprint}"


def test_fingerprint_ignores_where_and_how_it_is_tracked(compose) -> None:
    base = JobIdentity.from_config(compose(["lora.rank=8"])).fingerprint
    same = compose(
        [
            "lora.rank=8",
            "track=off",
            "sweep_name=x",
            "output_dir=/tmp/y",
            "prune.storage=sqlite:///o.db",
        ]
    )
    assert JobIdentity.from_config(same).fingerprint == base
    assert JobIdentity.from_config(compose(["lora.rank=16"])).fingerprint != base
    assert JobIdentity.from_config(compose(["lora.rank=8", "train.seed=1"])).fingerprint != base


def test_identity_of_a_job_does_not_depend_on_where_it_runs(cfg, cfg_global, tmp_path) -> None:
    """`cfg` is `cfg_global` with outputs, state and stores moved into tmp_path."""
    here, shared = JobIdentity.from_config(cfg), JobIdentity.from_config(cfg_global)
    assert here == shared and cfg.track.uri.startswith(f"sqlite:///{tmp_path}")
    assert here.state_dir(cfg) == tmp_path / "jobs" / f"lora-r8-{here.fingerprint}"
    assert cfg_global.output_dir is None  # the shared config is never changed by a test


def test_untrained_base_is_one_job_named_base(compose) -> None:
    """finetune=none: LoRA knobs are moot (one base per sweep), the label says base."""
    a = JobIdentity.from_config(compose(["finetune=none", "lora.rank=4"]))
    b = JobIdentity.from_config(compose(["finetune=none", "lora.rank=64", "lora=rslora"]))
    full = JobIdentity.from_config(compose(["finetune=full"]))
    assert a == b and a.is_base and not a.is_lora and a.rank is None
    assert a.label == "base" and a.fingerprint != full.fingerprint
    assert a.describe() == "base, no fine-tune" and a.weights_dir == ""
