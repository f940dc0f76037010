"""`python -m rank_sweep.eval` with a dataset split as --real: layout detection, counts,
and one-line errors for bad input (exit status 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rank_sweep.eval.cli import main
from rank_sweep.eval.clip_sources import CliError, detect_layout, resolve_real

SMALL = ["--height", "32", "--width", "32", "--size", "32", "--frame-size", "75"]


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three noise clips (16 x 32 x 32) written as real files, plus one unreadable file."""
    from rank_sweep.data.video import write_video

    out = tmp_path_factory.mktemp("fake")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_video(out / f"gen_{i}.mp4", rng.integers(0, 256, (16, 32, 32, 3), np.uint8), 8)
    (out / "broken.mp4").write_bytes(b"not a video")
    return out


def _ucf_test_count(root: Path, fold: int = 1) -> int:
    text = (root / "ucfTrainTestlist" / f"testlist0{fold}.txt").read_text()
    return sum(1 for line in text.splitlines() if line.strip())


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_detect_layout(synth_ucf101: Path, synth_kinetics400: Path, synth_folder: Path) -> None:
    assert detect_layout(synth_ucf101) == "ucf101"
    assert detect_layout(synth_kinetics400) == "kinetics400"
    assert detect_layout(synth_folder) == "folder"
    with pytest.raises(CliError, match="does not exist"):
        detect_layout(synth_folder / "nope")


def test_resolve_real_defaults(synth_kinetics400: Path, synth_ucf101: Path) -> None:
    k400 = resolve_real(
        synth_kinetics400, "auto", None, None, frames=16, height=32, width=32, limit=None
    )
    assert k400.split == "validate" and k400.resolution == "32x32"
    rows = (synth_kinetics400 / "annotations" / "validate.csv").read_text().splitlines()
    assert len(k400) == len(rows) - 1  # minus the header
    clip = k400.load(0)
    assert clip is not None and clip.shape == (16, 32, 32, 3) and clip.dtype == np.uint8
    capped = resolve_real(
        synth_ucf101, "ucf101", "train", 2, frames=16, height=32, width=32, limit=2
    )
    assert len(capped) == 2 and capped.split == "train2"
    with pytest.raises(CliError, match="multiple of 16"):
        resolve_real(synth_ucf101, "auto", None, None, frames=16, height=40, width=32, limit=None)


def test_cli_ucf101_split_vs_folder(
    synth_ucf101: Path, fake_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    rc, out, err = _run(
        ["--real", str(synth_ucf101), "--fake", str(fake_dir), *SMALL, "--kid-subsets", "3",
         "--json"],
        capsys,
    )  # fmt: skip
    assert rc == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    n_test = _ucf_test_count(synth_ucf101)
    assert result["n_real"] == n_test and result["real_skipped"] == 0
    assert result["n_fake"] == 3 and result["fake_skipped"] == 1  # broken.mp4 skipped, counted
    m = result["metrics"]
    assert np.isfinite(m["fvd"]) and m["fvd"] > 0 and np.isfinite(m["kid"])
    stamp = result["stamp"]
    assert stamp["eval.split"] == "test1" and stamp["eval.resolution"] == "32x32"
    assert stamp["eval.dataset"].startswith("ucf101:") and stamp["eval.n_real"] == str(n_test)
    assert "skipped 1" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--real-layout", "hmdb51"], "--real-layout must be one of auto, folder, ucf101"),
        (["--real-split", "validate"], "UCF-101 split must be one of"),
        (["--real-fold", "7"], "UCF-101 fold must be 1, 2 or 3"),
        (["--height", "40"], "--height must be a positive multiple of 16"),
        (["--metrics", "fid"], "--metrics 'fid' invalid"),
    ],
)
def test_cli_bad_input_one_line(
    synth_ucf101: Path,
    fake_dir: Path,
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture,
) -> None:
    rc, out, err = _run(["--real", str(synth_ucf101), "--fake", str(fake_dir), *extra], capsys)
    assert rc == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_cli_bad_paths(
    tmp_path: Path, synth_folder: Path, fake_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    rc, _, err = _run(["--real", str(tmp_path / "absent"), "--fake", str(fake_dir)], capsys)
    assert rc == 2 and err == f"error: {tmp_path / 'absent'} does not exist or is not a directory\n"
    # A plain folder forced into a dataset layout: its split files are missing.
    rc, _, err = _run(
        ["--real", str(synth_folder), "--real-layout", "ucf101", "--fake", str(fake_dir)], capsys
    )
    assert rc == 2 and err.startswith("error: UCF-101 split files not found")
    rc, _, err = _run(
        ["--real", str(synth_folder), "--real-split", "test", "--fake", str(fake_dir)], capsys
    )
    assert rc == 2 and "need a dataset layout" in err and err.count("\n") == 1
    lists = tmp_path / "k400" / "annotations"
    lists.mkdir(parents=True)
    (lists / "train.csv").write_text("label,youtube_id,time_start,time_end,split\n")
    rc, _, err = _run(["--real", str(lists.parent), "--fake", str(fake_dir)], capsys)
    assert rc == 2 and "annotation file not found" in err and "validate.csv" in err
