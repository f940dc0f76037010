"""Official layouts: UCF-101 folds and labels, Kinetics CSVs with missing clips, folders."""

from __future__ import annotations

import csv
import shutil

import pytest

from rank_sweep.config.schema import DataConfig, SynthConfig
from rank_sweep.data import DataError, build_dataset
from rank_sweep.data.layouts import (
    LAYOUTS,
    index_folder,
    index_kinetics400,
    index_layout,
    index_ucf101,
)
from rank_sweep.data.render import caption_for, readable
from rank_sweep.data.synth import ucf_group_clip, ucf_test_groups, write_synthetic


def _group(path) -> int:
    return int(path.stem.split("_g")[1][:2])


def test_every_layout_indexes_its_synthetic_copy(synth):
    layout, root = synth  # once per layout
    assert layout in LAYOUTS
    listing = index_layout(layout, root, "train", 1)
    assert listing.entries and not listing.missing and not listing.skipped
    assert all(e.path.is_file() and e.path.is_relative_to(root) for e in listing.entries)
    if layout != "folder":  # a folder of clips has captions but no classes
        assert len({e.label for e in listing.entries}) == 3  # conftest writes 3 classes


@pytest.mark.parametrize("fold", [1, 2, 3])
def test_ucf101_folds_split_by_official_groups(synth_ucf101, fold):
    train = index_ucf101(synth_ucf101, "train", fold)
    test = index_ucf101(synth_ucf101, "test", fold)
    groups = ucf_test_groups(fold)
    assert all(_group(e.path) in groups for e in test.entries)
    assert all(_group(e.path) not in groups for e in train.entries)
    assert len(train.entries) + len(test.entries) == 3 * 4  # conftest: 3 classes x 4 videos
    # Every class has train and test clips in every fold.
    assert {e.label for e in train.entries} == {e.label for e in test.entries} == {0, 1, 2}
    for e in train.entries + test.entries:
        assert e.path.parent.name == e.class_name == train.class_names[e.label]
        assert e.path.name.startswith(f"v_{e.class_name}_g")
        assert e.caption == caption_for(e.class_name)


def test_ucf101_label_parsing_both_line_forms(tmp_path):
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\r\n2 YoYo\r\n")
    for cls in ("ApplyEyeMakeup", "YoYo"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / f"v_{cls}_g08_c01.avi").write_bytes(b"x")
        (tmp_path / cls / f"v_{cls}_g01_c01.avi").write_bytes(b"x")
    (lists / "trainlist01.txt").write_text(
        "YoYo/v_YoYo_g08_c01.avi 2\r\nApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
    )
    (lists / "testlist01.txt").write_text("YoYo/v_YoYo_g01_c01.avi\r\nyoyo/v_YoYo_g99_c01.avi\r\n")
    tr = index_ucf101(tmp_path, "train", 1)
    assert [(e.label, e.class_name) for e in tr.entries] == [(1, "YoYo"), (0, "ApplyEyeMakeup")]
    assert tr.entries[1].caption == "a video of apply eye makeup"
    te = index_ucf101(tmp_path, "test", 1)
    assert [e.label for e in te.entries] == [1] and len(te.missing) == 1
    (lists / "testlist02.txt").write_text("Nope/v_Nope_g01_c01.avi\n")
    with pytest.raises(DataError, match="malformed line 1 in testlist02.txt"):
        index_ucf101(tmp_path, "test", 2)


def test_readable_names():
    assert readable("ApplyEyeMakeup") == "apply eye makeup"
    assert readable("HandstandPushups") == "handstand pushups"
    assert readable("playing guitar") == "playing guitar"
    assert readable("MovingSquareB") == "moving square b"


def test_ucf_group_assignment_is_unique_and_covers_folds():
    pairs = [ucf_group_clip(v) for v in range(60)]
    assert len(set(pairs)) == 60 and all(1 <= g <= 25 for g, _ in pairs)
    for fold in (1, 2, 3):
        assert any(g in ucf_test_groups(fold) for g, _ in pairs[:3])


@pytest.mark.parametrize(
    "split,fold,match",
    [("val", 1, "split must be one of"), ("train", 4, "fold must be 1, 2 or 3")],
)
def test_ucf101_bad_split_or_fold(synth_ucf101, split, fold, match):
    with pytest.raises(DataError, match=match):
        index_ucf101(synth_ucf101, split, fold)


def test_missing_root_and_split_files_are_one_clear_error(
    synth_ucf101, synth_kinetics400, tmp_path
):
    cfg = DataConfig(name="ucf101", layout="ucf101", root=str(tmp_path / "absent"))
    with pytest.raises(DataError, match="root does not exist") as e:
        build_dataset(cfg, "train", train=True, frames=9, height=32, width=32)
    assert "\n" not in str(e.value)
    copy = tmp_path / "ucf"
    shutil.copytree(synth_ucf101, copy)
    (copy / "ucfTrainTestlist" / "testlist02.txt").unlink()
    with pytest.raises(DataError, match="split file not found: .*testlist02.txt"):
        build_dataset(
            DataConfig(layout="ucf101", root=str(copy), fold=2),
            "test",
            train=False,
            frames=9,
            height=32,
            width=32,
        )
    shutil.rmtree(copy / "ucfTrainTestlist")
    with pytest.raises(DataError, match="split files not found"):
        index_ucf101(copy, "train", 1)
    with pytest.raises(DataError, match="split must be one of"):
        index_kinetics400(synth_kinetics400, "nope")
    with pytest.raises(DataError, match="annotation file not found: .*train.csv"):
        index_kinetics400(tmp_path, "train")
    with pytest.raises(DataError, match="only 'synthetic' may omit it"):
        build_dataset(
            DataConfig(name="ucf101", root=None), "train", train=True, frames=9, height=32, width=32
        )


def test_kinetics_splits_labels_and_missing_clips(synth_kinetics400, tmp_path):
    root = tmp_path / "k400"
    shutil.copytree(synth_kinetics400, root)
    train = index_kinetics400(root, "train")
    val = index_kinetics400(root, "val")  # alias of validate
    assert train.class_names == val.class_names == sorted(train.class_names)
    assert len(train.entries) == 6 and len(val.entries) == 3 and not train.missing
    for e in train.entries + val.entries:
        assert e.label == train.class_names.index(e.class_name)
        assert e.caption == f"a video of {e.class_name}"
        assert e.path.parent.name in ("train", "validate")
    # Real copies always miss some clips: listed rows without files are counted, not fatal.
    with open(root / "annotations" / "train.csv", "a", newline="") as f:
        w = csv.writer(f)
        w.writerow(["moving square", "AAAAAAAAAAA", 5, 15, "train"])
        w.writerow(["bouncing ball", "BBBBBBBBBBB", 0, 10, "train"])
    cfg = DataConfig(name="kinetics400", layout="kinetics400", root=str(root))
    ds = build_dataset(cfg, "train", train=True, frames=9, height=32, width=32)
    st = ds.stats()
    assert (st["clips"], st["missing"], st["unreadable"], st["classes"]) == (6, 2, 0, 3)
    assert str(root / "train" / "AAAAAAAAAAA_000005_000015.mp4") in ds.missing


def test_folder_with_txt_captions(synth_folder, tmp_path):
    listing = index_folder(synth_folder)
    assert len(listing.entries) == 12
    assert {e.path.suffix for e in listing.entries} == {".mp4", ".mkv", ".mov"}
    for e in listing.entries:
        assert e.caption == caption_for(e.path.stem.rsplit("_", 1)[0]) and e.label == -1
    root = tmp_path / "f"
    shutil.copytree(synth_folder, root)
    (root / "MovingSquare_000.txt").unlink()
    ds = build_dataset(
        DataConfig(name="folder", layout="folder", root=str(root)),
        "train",
        train=True,
        frames=9,
        height=32,
        width=32,
    )
    assert len(ds) == 11 and ds.skipped[0]["reason"].startswith("no caption")


def test_folder_with_metadata_csv(tmp_path):
    spec = SynthConfig(classes=2, videos_per_class=2, frames=12, height=32, width=48, fps=8, seed=1)
    root = write_synthetic("folder", tmp_path / "m", spec, metadata_csv=True)
    assert not list(root.glob("*.txt"))
    with open(root / "metadata.csv", "a") as f:
        f.write("gone.mp4,a video of nothing\n")
    cfg = DataConfig(name="folder", layout="folder", root=str(root))
    ds = build_dataset(cfg, "train", train=False, frames=9, height=32, width=32)
    assert len(ds) == 4 and ds.stats()["missing"] == 1
    assert sorted({ds[i]["caption"] for i in range(len(ds))}) == [
        "a video of bouncing ball",
        "a video of moving square",
    ]
