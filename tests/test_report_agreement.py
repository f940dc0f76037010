"""The report's 'Validation loss vs final FVD' section: agreement of the metric the rungs
rank by with the one the sweep is judged by, on planted runs in a real MLflow store (the
features and losses are planted; loading, pairing and rendering are the product's)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_report_paired import plant_features
from test_report_table import planted_sweep

from rank_sweep.report import build_report
from rank_sweep.report.agreement import agreement, loss_pick, separated_pairs, spearman

SHIFT = {None: 0.0, 4: 1.5, 8: 1.0, 16: 0.5, 32: 0.3}  # FVD: full < r32 < r16 < r8 < r4
# val loss that agrees with FVD on the ranks but ranks full last (as the world does)
LOSS = {None: 0.30, 4: 0.25, 8: 0.20, 16: 0.12, 32: 0.11}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    df = planted_sweep(tmp_path_factory, "agree")
    feats = plant_features(df, SHIFT, seed=1, n=300, dims=(8, 4), noise=0.2, bootstrap=20)
    df["val_loss"] = [
        LOSS[None if m == "full" else int(r)] for m, r in zip(df["method"], df["rank"])
    ]
    return df, feats


def test_spearman_ties_and_degenerate_inputs() -> None:
    assert math.isclose(spearman([1, 2, 3], [10, 20, 30]), 1.0)
    assert math.isclose(spearman([1, 2, 3], [30, 20, 10]), -1.0)
    assert math.isnan(spearman([1, 2], [1, 2]))  # below 3 points: no claim
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # nothing to order
    # a tie shares its mean rank: [1, 2.5, 2.5] vs [1, 2, 3]
    assert math.isclose(
        spearman([0.1, 0.2, 0.2], [1, 2, 3]), np.corrcoef([1, 2.5, 2.5], [1, 2, 3])[0, 1]
    )
    with pytest.raises(ValueError, match="equal lengths"):
        spearman([1, 2, 3], [1, 2])


def test_separated_pairs_count_only_what_fvd_resolves() -> None:
    rng = np.random.default_rng(0)
    tuned = ["full", "lora r=4", "lora r=16", "lora r=64"]
    fvd = {"full": 30.0, "lora r=4": 40.0, "lora r=16": 35.0, "lora r=64": 35.2}
    loss = {"full": 0.18, "lora r=4": 0.22, "lora r=16": 0.19, "lora r=64": 0.17}
    rows = {n: {"fvd": fvd[n], "val_loss": loss[n]} for n in tuned}
    # a shared resample effect (cancels in pairs) plus run noise: the 0.2 gap of r16/r64
    # stays inside its interval, the 5-10 FVD gaps are resolved
    shared = rng.normal(0, 3.0, size=(400, 1))
    reps = np.array([fvd[n] for n in tuned]) + shared + rng.normal(0, 0.1, size=(400, 4))
    reps[:, 2:] += rng.normal(0, 0.5, size=(400, 1))
    reps[:, 3] += rng.normal(0, 0.5, size=400)
    got = separated_pairs(tuned, rows, reps)
    assert got["separated"] == 5
    # the loss puts r64 ahead of full while FVD puts full 5 ahead: the one disagreement
    assert got["agree"] == 4 and got["against"] == ["full vs lora r=64"]
    rows["lora r=64"]["val_loss"] = None  # no loss: not counted either way
    assert separated_pairs(tuned, rows, reps)["separated"] == 3


def test_loss_pick_is_the_lowest_loss_rank_with_a_loss() -> None:
    rows = {"lora r=4": {"val_loss": 0.22}, "lora r=32": {"val_loss": 0.17},
            "lora r=64": {"val_loss": None}, "full": {"val_loss": 0.10}}  # fmt: skip
    # full is a reference, not a candidate; a rank without a loss cannot be picked
    assert loss_pick(["lora r=4", "lora r=32", "lora r=64"], rows) == "lora r=32"
    assert loss_pick(["lora r=64"], rows) is None


def test_section_names_the_pairs_the_loss_orders_against_fvd(planted, tmp_path) -> None:
    from rank_sweep.report.paired import add_paired

    df, feats = planted
    paths = build_report(df, tmp_path / "r", features=feats)
    md = paths.markdown.read_text()
    assert "## Validation loss vs final FVD" in md
    paired = add_paired(df, feats)[0]
    a = agreement(paired, feats, "ucf101")
    assert a is not None and len(a.runs) == 5 and a.unread == 0
    # full has the best FVD by far and the worst loss: every pair FVD resolves against full
    # is ordered the other way by the loss; the ranks among themselves agree
    assert a.against and all(p.startswith("full vs ") for p in a.against)
    assert {"full vs lora r=4", "full vs lora r=8"} <= set(a.against)
    assert a.agree == a.separated - len(a.against) and a.agree >= 3
    assert a.rho < 0.7  # full's inversion alone pulls it down
    # the loss picks the best rank; full beats it beyond the interval, but full is a
    # reference, not a candidate of the rungs: no warning (the demo's case)
    assert a.pick == "lora r=32" and a.pick_tied is True
    r32 = paired[paired["rank"] == 32].iloc[0]
    assert not bool(r32["tied_best_fvd/ucf101"])
    assert f"{a.agree}/{a.separated}" in md and "full vs lora r=4" in md
    assert "worse FVD than the best rank" not in md


def test_a_loss_pick_that_fvd_rejects_is_a_warning(planted, tmp_path) -> None:
    df, feats = planted
    df = df.copy()
    df.loc[df["rank"] == 4, "val_loss"] = 0.05  # the worst FVD rank now has the lowest loss
    paths = build_report(df, tmp_path / "r", features=feats)
    assert any("lora r=4" in w and "worse FVD than the best rank" in w for w in paths.warnings)
    assert "worse FVD than the best rank" in paths.markdown.read_text()


def test_pruned_runs_are_not_read_and_the_note_says_so(planted) -> None:
    from rank_sweep.report.paired import add_paired

    df, feats = planted
    df = df.copy()
    df.loc[df["rank"] == 8, "status"] = "pruned"
    a = agreement(add_paired(df, feats)[0], feats, "ucf101")
    assert a is not None and "lora r=8" not in a.runs and a.unread == 1
    df.loc[df["rank"].isin([4, 16, 32]), "val_loss"] = np.nan  # under 3 runs left: no claim
    assert agreement(add_paired(df, feats)[0], feats, "ucf101") is None


def test_reuses_add_paireds_resamples_and_gets_the_same_answer(planted) -> None:
    from rank_sweep.report.paired import REPLICATES, add_paired

    df, feats = planted
    paired = add_paired(df, feats)[0]
    assert "fvd/ucf101" in paired.attrs[REPLICATES]
    reused = agreement(paired, feats, "ucf101")
    paired.attrs.pop(REPLICATES)
    assert agreement(paired, feats, "ucf101") == reused  # recomputed: the same draws


def test_runs_of_one_setting_are_told_apart_and_a_table_without_losses_makes_no_claim(
    planted,
) -> None:
    import pandas as pd

    from rank_sweep.report.paired import add_paired

    df, feats = planted
    # the same sweep under a second training seed (same features: a replicate)
    again = df.copy()
    again["run_id"] = again["run_id"] + "-s1"
    again["seed"] = 1
    feats2 = {**feats, **{k + "-s1": v for k, v in feats.items()}}
    both = pd.concat([df.assign(seed=0), again], ignore_index=True)
    a = agreement(add_paired(both, feats2)[0], feats2, "ucf101")
    assert a is not None and len(a.runs) == len(set(a.runs)) == 10
    assert "lora r=4 (seed 0)" in a.runs and "full (seed 1)" in a.runs
    assert agreement(add_paired(df, feats)[0].drop(columns="val_loss"), feats, "ucf101") is None
