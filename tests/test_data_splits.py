"""The validation slice carved from train: whole units (UCF group, YouTube id, file),
deterministic, stable when clips go missing, never touching test."""

from __future__ import annotations

from pathlib import Path

import pytest

from rank_sweep.config.schema import DataConfig
from rank_sweep.data import DataError, build_dataset
from rank_sweep.data.splits import SplitName, carve, rule_for, unit_of


def test_units_per_layout() -> None:
    assert unit_of(Path("A/v_ApplyEyeMakeup_g08_c01.avi"), "group") == "g08"
    assert unit_of(Path("k/ab_c-dEf_000010_000020.mp4"), "youtube_id") == "ab_c-dEf"
    assert unit_of(Path("clips/shot_3.mp4"), "file") == "shot_3"
    assert [rule_for(x) for x in ("ucf101", "kinetics400", "folder")] == [
        "group",
        "youtube_id",
        "file",
    ]
    with pytest.raises(DataError, match="val_rule"):
        rule_for("ucf101", "random")
    with pytest.raises(DataError, match="group"):
        unit_of(Path("x/noname.avi"), "group")
    assert SplitName.parse("train#val") == SplitName("train", "val")
    assert SplitName.parse("test") == SplitName("test", None)
    with pytest.raises(DataError, match="part after"):
        SplitName.parse("train#holdout")


def test_carve_keeps_units_whole_and_is_stable() -> None:
    paths = [Path(f"C{c}/v_C{c}_g{g:02d}_c{k:02d}.avi") for c in range(3)
             for g in range(8, 26) for k in range(1, 4)]  # fmt: skip
    cut = carve(paths, "group", 0.1)
    val_groups = {unit_of(paths[i], "group") for i in cut.val}
    fit_groups = {unit_of(paths[i], "group") for i in cut.fit}
    assert val_groups and not val_groups & fit_groups
    assert len(cut.val) >= 0.1 * len(paths) and len(cut.val) + len(cut.fit) == len(paths)
    # A clip going missing (or a reordered listing) does not move the slice.
    fewer = [p for p in reversed(paths) if p.name != paths[0].name]
    again = carve(fewer, "group", 0.1)
    assert {unit_of(fewer[i], "group") for i in again.val} == val_groups
    with pytest.raises(DataError, match="val_fraction"):
        carve(paths, "group", 1.0)
    with pytest.raises(DataError, match="1 unit"):
        carve(paths[:3], "group", 0.5)


def test_dataset_parts_partition_train_and_never_test(synth_ucf101) -> None:
    cfg = DataConfig(layout="ucf101", root=str(synth_ucf101), val_fraction=0.2)
    kw = dict(train=False, frames=8, height=32, width=32)
    full = build_dataset(cfg, "train", **kw)
    fit = build_dataset(cfg, "train#fit", **kw)
    val = build_dataset(cfg, "train#val", **kw)
    test = build_dataset(cfg, "test", **kw)
    paths = lambda ds: {str(e.path) for e, _ in ds.clips}  # noqa: E731
    assert paths(fit) | paths(val) == paths(full) and not paths(fit) & paths(val)
    assert not paths(val) & paths(test) and len(val) >= 2
    groups = lambda ds: {e.path.stem.split("_g")[1][:2] for e, _ in ds.clips}  # noqa: E731
    assert not groups(fit) & groups(val)
    assert "by group" in val.meta["split_rule"]
    assert val.fingerprint() != full.fingerprint() != fit.fingerprint()


def test_folder_and_kinetics_carve(synth_folder, synth_kinetics400) -> None:
    kw = dict(train=False, frames=8, height=32, width=32)
    folder = DataConfig(name="f", layout="folder", root=str(synth_folder), val_fraction=0.2)
    val = build_dataset(folder, "train#val", **kw)
    fit = build_dataset(folder, "train#fit", **kw)
    assert len(val) >= 2 and len(fit) > len(val)
    k400 = DataConfig(name="k", layout="kinetics400", root=str(synth_kinetics400))
    kval = build_dataset(k400, "train#val", **kw)
    kfit = build_dataset(k400, "train#fit", **kw)
    ids = lambda ds: {e.path.stem.rsplit("_", 2)[0] for e, _ in ds.clips}  # noqa: E731
    assert not ids(kval) & ids(kfit)


def test_preflight_rejects_bad_tier_settings(compose) -> None:
    from rank_sweep.config.validate import ConfigError, validate

    validate(compose([]))
    for override, key in (
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("eval.cov_ddof=2", "eval.cov_ddof"),
        ("eval.final.batch_size=0", "eval.final.batch_size"),
        ("prune.metric=fvd/synthetic", "prune.metric"),  # a test-split metric for pruning
    ):
        with pytest.raises(ConfigError, match=key):
            validate(compose([override]))
