"""Paired comparisons in the report: ΔFVD/ΔKID vs full and vs best from saved per-clip
features, the tied-with-best set, the one-line recommendation, and a results.csv in which
every interval contains its point."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_report_table import planted_sweep

from rank_sweep.eval.scoring import score
from rank_sweep.report import build_report
from rank_sweep.report.paired import RunFeatures, drop_bad_intervals, recommendation

SHIFT = {None: 0.0, 4: 1.0, 8: 0.7, 16: 0.1, 32: 0.05}  # mean shift of each run's features


def plant_features(
    df: pd.DataFrame, shift: dict, *, seed: int, n: int, dims: tuple[int, int], noise: float,
    bootstrap: int,
) -> dict[str, RunFeatures]:  # fmt: skip
    """Per-run detector features with the paired structure of a sweep: the same real clips,
    generated clip i = shared noise z_i + run noise, feature 0 shifted by `shift[rank]`
    (None = full). Scores them into df's ucf101 columns; returns run_id -> features."""
    rng = np.random.default_rng(seed)
    real = {"video": rng.normal(size=(n, dims[0])), "frame": rng.normal(size=(n, dims[1]))}
    z = {k: rng.normal(size=v.shape) for k, v in real.items()}  # noise shared by the runs
    feats = {}
    for i, r in df.iterrows():
        rank = None if r["method"] == "full" else int(r["rank"])
        fake = {k: z[k] + noise * rng.normal(size=z[k].shape) for k in z}
        for k in fake:
            fake[k][:, 0] += shift[rank]
        feats[r["run_id"]] = RunFeatures(
            real, fake, {"eval.dataset": "ucf101", "eval.cov_ddof": "0"}
        )
        s = score(real, fake, metrics=["fvd", "kid"], kid_subsets=10, kid_subset_size=100,
                  seed=0, bootstrap=bootstrap)  # fmt: skip
        for key, v in s.items():
            if key != "kid_subset_size_used":
                df.loc[i, f"{key}/ucf101"] = v
    return feats


@pytest.fixture(scope="module")
def paired_report(tmp_path_factory):
    df = planted_sweep(tmp_path_factory, "paired")
    feats = plant_features(df, SHIFT, seed=0, n=200, dims=(16, 8), noise=0.3, bootstrap=50)
    out = tmp_path_factory.mktemp("paired_report")
    return build_report(df, out, features=feats), pd.read_csv(out / "results.csv")


def test_tied_set_and_recommendation(paired_report) -> None:
    paths, csv = paired_report
    tied = csv[csv["tied_best_fvd/ucf101"].astype(str) == "True"]
    labels = {"full" if m == "full" else int(r) for m, r in zip(tied["method"], tied["rank"])}
    assert labels == {"full", 16, 32}
    line = recommendation(csv, "ucf101")
    assert "Recommendation: rank 16" in line and "tied with full fine-tuning" in line
    md = paths.markdown.read_text()
    assert "## Paired comparisons" in md and "Recommendation: rank 16" in md
    assert "ΔFVD vs best ucf101" in md and "paired_fvd.png" in md
    assert "overlapping" not in md.replace("do not compare runs by overlapping them", "")


def test_every_interval_in_results_csv_contains_its_point(paired_report) -> None:
    _, csv = paired_report
    pairs = [
        (c, c.replace("_ci_lo/", "/"), c.replace("_lo/", "_hi/")) for c in csv if "_ci_lo/" in c
    ]
    pairs += [(c, c.replace("_lo/", "/"), c.replace("_lo/", "_hi/"))
              for c in csv if c.startswith("pdelta_") and "_lo/" in c]  # fmt: skip
    checked = 0
    for lo, point, hi in pairs:
        ok = csv[lo].notna()
        assert (csv.loc[ok, lo] <= csv.loc[ok, point]).all(), lo
        assert (csv.loc[ok, point] <= csv.loc[ok, hi]).all(), hi
        checked += int(ok.sum())
    assert checked >= 5 * 6  # 5 runs x (fvd, kid, 4 paired deltas) on ucf101 at least
    best = csv[csv["pdelta_fvd_best/ucf101"] == 0.0]
    assert len(best) == 1 and best["fvd/ucf101"].iloc[0] == csv["fvd/ucf101"].min()


def test_intervals_that_miss_their_point_are_dropped() -> None:
    df = pd.DataFrame({"run_id": ["a", "b"], "run_name": ["a", "b"], "fvd/x": [220.8, 5.0],
                       "fvd_ci_lo/x": [418.0, 4.0], "fvd_ci_hi/x": [436.0, 6.0]})  # fmt: skip
    out, warnings = drop_bad_intervals(df)
    assert out["fvd_ci_lo/x"].isna().tolist() == [True, False]
    assert len(warnings) == 1 and "does not contain 220.8" in warnings[0]


def test_mixed_protocol_check_covers_the_new_stamp_fields() -> None:
    from rank_sweep.report import check_protocols

    fields = ("eval.fps", "eval.guidance_scale", "eval.negative_prompt", "eval.sampler",
              "eval.model_dtype", "eval.cov_ddof", "eval.kid_frame_rule", "eval.interval",
              "eval.tier", "eval.split_rule")  # fmt: skip
    base = {"run_id": "a" * 8, "run_name": "", "method": "lora", "rank": 4, "fvd/x": 1.0}
    for field in fields:
        df = pd.DataFrame([{**base, f"protocol.x.{field}": "1"},
                           {**base, "rank": 8, f"protocol.x.{field}": "2"}])  # fmt: skip
        warnings = check_protocols(df)
        assert any(field in w and "mixed protocol" in w for w in warnings), field


def test_untrained_base_is_a_reference_row_never_the_best() -> None:
    """finetune=none: paired deltas of every run against it, excluded from "best" even when
    its FVD is the lowest, and named the same way in every section."""
    from rank_sweep.report.paired import add_paired, paired_display
    from rank_sweep.report.table import arm_name, order_rows

    rng = np.random.default_rng(1)
    n = 150
    real = {"video": rng.normal(size=(n, 8)), "frame": rng.normal(size=(n, 4))}
    z = {k: rng.normal(size=v.shape) for k, v in real.items()}
    shift = {"none": 2.0, "full": 0.2, 4: 0.8, 16: 0.25}
    rows, feats = [], {}
    for i, (key, s) in enumerate(shift.items()):
        method = key if isinstance(key, str) else "lora"
        rank = key if isinstance(key, int) else np.nan
        fake = {k: z[k] + 0.3 * rng.normal(size=z[k].shape) for k in z}
        for k in fake:
            fake[k][:, 0] += s
        sc = score(real, fake, metrics=["fvd", "kid"], kid_subsets=5, kid_subset_size=50,
                   seed=0, bootstrap=0)  # fmt: skip
        rid = f"run{i}"
        feats[rid] = RunFeatures(real, fake, {"eval.dataset": "ucf101", "eval.cov_ddof": "0"})
        rows.append({"run_id": rid, "run_name": rid, "method": method, "rank": rank,
                     "seed": 0, "status": "completed",
                     "fvd/ucf101": sc["fvd"], "kid/ucf101": sc["kid"]})  # fmt: skip
    df = pd.DataFrame(rows)
    df["rank"] = df["rank"].astype("Int64")
    df = order_rows(df)
    assert [arm_name(r) for _, r in df.iterrows()] == [
        "base, no fine-tune",
        "full",
        "lora r=4",
        "lora r=16",
    ]
    out, _ = add_paired(df, feats, n_boot=100)
    base = out[out["method"] == "none"].iloc[0]
    assert base["pdelta_fvd_base/ucf101"] == 0.0
    for _, r in out[out["method"] != "none"].iterrows():  # every fine-tune beats the base
        assert r["pdelta_fvd_base_hi/ucf101"] < 0, r["run_name"]
        assert r["pdelta_fvd_base_lo/ucf101"] <= r["pdelta_fvd_base/ucf101"]
    assert not bool(base["tied_best_fvd/ucf101"])
    line = recommendation(out, "ucf101")
    assert "better than the untrained base" in line and "best FVD" in line
    headers, cells, _ = paired_display(out)
    assert "ΔFVD vs base ucf101 [95% CI]" in headers
    assert cells[0][0].startswith("base, no fine-tune")

    # a base that beats every fine-tune is still not "the best": it is reported as such
    flipped = out.copy()
    flipped.loc[flipped["method"] == "none", "fvd/ucf101"] = 0.0
    feats2 = dict(feats)
    feats2[base["run_id"]] = RunFeatures(real, z, feats[base["run_id"]].stamp)
    again, _ = add_paired(flipped, feats2, n_boot=100)
    best = again.loc[again["pdelta_fvd_best/ucf101"] == 0.0, "method"].tolist()
    assert best and "none" not in best
