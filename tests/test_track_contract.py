"""The tracking contract: names built and parsed back, and spelled nowhere else."""

from __future__ import annotations

import re

import pytest

from rank_sweep.paths import REPO_ROOT
from rank_sweep.track import contract as C


def test_metric_keys_round_trip_also_for_odd_dataset_names() -> None:
    for ds in ("ucf101", "kinetics.v2", "my/set"):
        assert C.parse_dataset_metric(C.dataset_metric(C.FVD, ds)) == (C.FVD, ds)
        assert C.parse_dataset_metric(C.ci_metric(C.KID, "hi", ds)) == ("kid_ci_hi", ds)
    assert C.ci_metric(C.FVD, "lo", "ucf101") == "fvd_ci_lo/ucf101"
    for key in (C.TRAIN_LOSS, C.VAL_LOSS, C.TRAINABLE_PARAMS, "fvd", "fvd/"):
        assert C.parse_dataset_metric(key) is None
    keys = ["fvd/a.b", "kid/c", "kid_ci_lo/d", "train/loss", "delta_fvd/e"]
    assert C.metric_datasets(keys) == ["a.b", "c"]
    with pytest.raises(ValueError, match="lo, hi"):
        C.ci_name(C.FVD, "mid")


def test_protocol_params_parse_with_dotted_dataset_names() -> None:
    key = C.protocol_param("kinetics.v2", "eval.n_real")
    assert key == "protocol.kinetics.v2.eval.n_real"
    # Told apart by the datasets the runs name; without them the first part is taken.
    assert C.parse_protocol_param(key, ["kinetics.v2", "kinetics"]) == (
        "kinetics.v2",
        "eval.n_real",
    )
    assert C.parse_protocol_param(key) == ("kinetics", "v2.eval.n_real")
    assert C.parse_protocol_param("protocol.ucf101.detector.pretrained", ["ucf101"]) == (
        "ucf101",
        C.TAG_DETECTOR_PRETRAINED,
    )
    assert C.parse_protocol_param("lora.rank") is None
    assert C.parse_protocol_param("protocol.ucf101") is None
    cols = [key, C.protocol_param("kinetics.v2", "eval.seed"), C.protocol_param("u", "x"), "fvd/u"]
    assert C.protocol_fields(cols, ["kinetics.v2"]) == {
        "kinetics.v2": ["eval.n_real", "eval.seed"],
        "u": ["x"],
    }


def test_statuses_weights_and_counts() -> None:
    assert set(C.FINAL_STATUSES) < set(C.STATUSES)
    assert {C.PAUSED, C.STOPPED_PLATEAU, C.RUNNING} <= set(C.STATUSES)
    assert C.PRUNED not in C.REUSABLE_STATUSES and C.COMPLETED in C.REUSABLE_STATUSES
    assert set(C.MLFLOW_RUN_STATUS) == set(C.STATUSES) - {C.RUNNING}
    assert C.run_status({C.TAG_STATUS: C.PRUNED}) == C.PRUNED
    assert C.run_status({C.TAG_STATUS: "weird"}) == C.run_status({}) == C.RUNNING
    assert C.status_count_tag(C.FAILED) == "rank_sweep.n_failed"
    assert (C.weights_dir("lora"), C.weights_dir("full")) == ("adapter", "model")
    with pytest.raises(ValueError, match="lora | full"):
        C.weights_dir("dora")


def _tag_literals() -> set[str]:
    names = [v for k, v in vars(C).items() if k.startswith("TAG_") and isinstance(v, str)]
    return {v for v in names if "." in v and not v.startswith("mlflow.")}


def test_tag_names_are_spelled_only_in_the_contract() -> None:
    """Writers and readers import the names; a quoted tag name elsewhere is a second copy."""
    offenders = []
    files = [*(REPO_ROOT / "rank_sweep").rglob("*.py"), *(REPO_ROOT / "tests").glob("*.py")]
    files += [
        *(REPO_ROOT / "benchmarks").glob("*.py"),
        *(REPO_ROOT / "hydra_plugins").rglob("*.py"),
    ]
    literals = _tag_literals()
    assert {"rank_sweep.status", "rank_sweep.reused_from", "detector.pretrained"} <= literals
    for path in files:
        if path.name in ("contract.py", "test_track_contract.py"):
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for q in re.findall(r"[\"']([A-Za-z_.]+)[\"']", line):
                if q in literals:
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{n}: {q}")
    assert offenders == []
