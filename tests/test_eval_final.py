"""The final tier at scale, on the tiny Wan model: batch-by-batch progress that survives a
SIGKILL (rerun == uninterrupted, only missing batches recomputed), and a 2-process gloo
data-parallel eval that gives the numbers of 1 process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _eval_script import dist_worker, final_eval

from rank_sweep.eval import generation
from rank_sweep.eval.tiers import FEATURES_ARTIFACT_DIR, GEN_FEATURES_FILE

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("uninterrupted")
    metrics = final_eval(d / "state", d / "out", [])
    return {"metrics": metrics, "out": d / "out"}


def _progress_files(state: Path) -> list[Path]:
    return sorted(state.glob("eval_progress/final-*/batch-*.npz"))


def test_intervals_contain_points_and_features_saved(uninterrupted: dict) -> None:
    m = uninterrupted["metrics"]
    for name in ("fvd", "kid"):
        assert (
            m[f"{name}_ci_lo/synthetic"] <= m[f"{name}/synthetic"] <= m[f"{name}_ci_hi/synthetic"]
        )
    with np.load(uninterrupted["out"] / FEATURES_ARTIFACT_DIR / GEN_FEATURES_FILE) as z:
        # 3 clips x the video detector's feature width (400 for I3D, 64 for the world's)
        assert z["fake_video"].shape[0] == 3 and z["real_video"].shape == z["fake_video"].shape
        assert z["fake_frame"].shape[0] == 3 and z["fake_frame"].ndim == 2  # one frame per clip
        assert z["real_frame"].shape == z["fake_frame"].shape
        stamp = json.loads(str(z["stamp"]))
    assert stamp["eval.tier"] == "final" and stamp["eval.cov_ddof"] == "0"
    assert stamp["eval.split"] == "test"


def test_killed_eval_resumes_to_the_same_number(
    tmp_path: Path, uninterrupted: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    cmd = [sys.executable, str(HERE / "_eval_script.py"), "--state-dir", str(state),
           "--out-dir", str(tmp_path / "out1"), "--slow", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while not _progress_files(state) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _progress_files(state), proc.communicate()[1][-3000:]
        os.kill(proc.pid, signal.SIGKILL)  # mid-eval: batch 1 is still "generating"
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    done = _progress_files(state)
    assert 1 <= len(done) < 3
    calls: list[int] = []
    real = generation.GenerationJob.run_batch

    def counting(self, b):  # type: ignore[no-untyped-def]
        calls.append(b)
        return real(self, b)

    monkeypatch.setattr(generation.GenerationJob, "run_batch", counting)
    resumed = final_eval(state, tmp_path / "out2", [])
    assert sorted(calls) == [b for b in range(3) if b >= len(done)]  # only the missing ones
    # Equal up to float rounding: the killed part ran in another process, whose thread
    # count can change the summation order inside the detector's convolutions.
    # FVD/KID (CLIP-SIM/LPIPS are scored from clips in memory: a resumed eval leaves them out)
    keys = {
        k
        for k in uninterrupted["metrics"]
        if k.split("_ci_")[0].split("/")[0] in ("fvd", "kid", "kid_std")
    }
    assert keys and keys <= resumed.keys()
    for k in keys:
        v = uninterrupted["metrics"][k]
        assert resumed[k] == pytest.approx(v, rel=1e-6, abs=1e-12), k


@pytest.mark.slow  # two spawned processes each load the model and detectors (~40 s)
def test_two_process_eval_equals_one_process(tmp_path: Path, uninterrupted: dict) -> None:
    from rank_sweep.train.dist import launch

    metrics = launch(dist_worker, 2, str(tmp_path / "state"), str(tmp_path / "out"), [])
    assert metrics == uninterrupted["metrics"]
    # Batches 0 and 2 ran on rank 0, batch 1 on rank 1; rank 0 holds all after the gather.
    assert len(_progress_files(tmp_path / "state")) == 3


def test_store_refuses_to_mix_protocols(tmp_path: Path) -> None:
    a = generation.BatchStore(tmp_path, {"n": 3, "steps": 2})
    a.save(0, {"video": np.ones((1, 4)), "index": np.arange(1)})
    assert generation.BatchStore(tmp_path, {"n": 3, "steps": 2}).load(0) is not None
    b = generation.BatchStore(tmp_path, {"n": 3, "steps": 4})  # another protocol: emptied
    assert b.load(0) is None and b.done() == []
    (tmp_path / "batch-000001.npz").write_bytes(b"garbage")
    assert b.load(1) is None  # unreadable: recomputed, never trusted
