"""`python -m rank_sweep.data check|synth`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from rank_sweep.data.__main__ import main


def test_check_reports_corrupt_files_and_counts_good_clips(synth_ucf101_corrupt):
    c = synth_ucf101_corrupt
    env = dict(os.environ)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "rank_sweep.data",
            "check",
            "--layout",
            "ucf101",
            "--root",
            str(c["root"]),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert "unreadable" in out.stdout and lines[0].startswith("ucf101 at ")
    res = json.loads(lines[-1])
    bad = {item["path"]: item["reason"] for item in res["unreadable"]}
    assert set(bad) == {str(p) for p in c["bad"].values()}
    assert bad[str(c["bad"]["zero"])] == "zero-byte file"
    # Every good clip counted: 3 classes x 4 videos, fold 1 train + test.
    assert res["clips"] == 12 and res["classes"] == 3 and res["missing"] == 1
    assert res["splits"]["train"]["clips"] == 9 and res["splits"]["test"]["clips"] == 3


def test_check_one_split_and_errors(synth_kinetics400, tmp_path, capsys):
    assert (
        main(
            [
                "check",
                "--layout",
                "kinetics400",
                "--root",
                str(synth_kinetics400),
                "--split",
                "validate",
                "--json",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["clips"] == 3 and res["unreadable"] == [] and res["missing"] == 0
    assert main(["check", "--layout", "ucf101", "--root", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: UCF-101 root does not exist") and "\n" not in err


def test_synth_cli_then_check(tmp_path, capsys):
    root = tmp_path / "f"
    args = [
        "--classes",
        "2",
        "--videos-per-class",
        "2",
        "--frames",
        "18",
        "--height",
        "32",
        "--width",
        "32",
    ]
    assert main(["synth", "--layout", "folder", "--root", str(root), "--metadata-csv", *args]) == 0
    assert (root / "metadata.csv").is_file()
    assert main(["check", "--layout", "folder", "--root", str(root), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["clips"] == 4 and res["classes"] == 0
