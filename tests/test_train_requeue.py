"""SLURM requeue: the job's requeue signal mid-training -> checkpoint at the step boundary
-> exit 75; the rerun resumes bitwise. A checkpoint is written before every eval, so a
job cut inside an eval reruns that eval (not the steps before it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _train_script import build_model, make_data, train_cfg
from safetensors.torch import load_file

from rank_sweep.model.adapters import trainable_state_dict
from rank_sweep.model.spec import forward_batch
from rank_sweep.train.checkpoint import find_checkpoint, read_checkpoint
from rank_sweep.train.loop import TrainHooks, train
from rank_sweep.train.requeue import REQUEUE_EXIT_CODE, SIGNALS_ENV

SCRIPT = Path(__file__).with_name("_train_script.py")
REPO = SCRIPT.parent.parent


def _start(state: Path, out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env[SIGNALS_ENV] = "USR1"
    cmd = [sys.executable, str(SCRIPT), "--state-dir", str(state), "--out", str(out), *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _step(state: Path) -> int:
    path = find_checkpoint(state)
    return int(read_checkpoint(path).state["step"]) if path else 0


def test_requeue_signal_checkpoints_exits_75_and_resumes_bitwise(tmp_path: Path) -> None:
    ref_out = tmp_path / "ref.safetensors"
    ref = _start(tmp_path / "ref_state", ref_out)
    state, out = tmp_path / "state", tmp_path / "out.safetensors"
    p = _start(state, out, "--sleep", "0.15")
    t0 = time.monotonic()
    while _step(state) < 2:  # mid-training: after the first periodic checkpoint
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 120, "no checkpoint within 120 s"
        time.sleep(0.02)
    p.send_signal(signal.SIGUSR1)
    _, err = p.communicate(timeout=120)
    assert p.returncode == REQUEUE_EXIT_CODE, err.decode()[-2000:]
    stopped = _step(state)
    assert 2 <= stopped < 8 and not out.exists()  # checkpointed where it stopped, not done
    rerun = _start(state, out)
    _, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err.decode()[-2000:]
    _, err = ref.communicate(timeout=180)
    assert ref.returncode == 0, err.decode()[-2000:]
    a, b = load_file(str(ref_out)), load_file(str(out))
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a), "requeued run differs from uninterrupted"


class CutInsideEval(Exception):
    pass


def _run(state: Path, cut_at: int | None, calls: list[int]) -> dict[str, torch.Tensor]:
    model = build_model("lora", rank=4)

    def on_eval(step: int, val_loss: float | None) -> bool:
        calls.append(step)
        if step == cut_at:
            raise CutInsideEval  # the time limit lands inside this eval
        return False

    cfg = train_cfg(steps=8, checkpoint_every=3)
    train(
        model, make_data(6), cfg, lr=1e-3, state_dir=state, forward_fn=forward_batch,
        shift=3.0, val_set=make_data(2, seed=2), eval_every=4, hooks=TrainHooks(on_eval=on_eval),
    )  # fmt: skip
    return {k: v.clone() for k, v in trainable_state_dict(model).items()}


def test_a_job_cut_inside_an_eval_reruns_that_eval_and_matches(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ref_calls: list[int] = []
    ref = _run(tmp_path / "ref", None, ref_calls)
    assert ref_calls == [4, 8]
    calls: list[int] = []
    with pytest.raises(CutInsideEval):
        _run(tmp_path / "cut", 4, calls)
    saved = read_checkpoint(find_checkpoint(tmp_path / "cut"))
    # written just before the eval (checkpoint_every=3 alone would have left step 3)
    assert saved.state["step"] == 4
    calls.clear()
    got = _run(tmp_path / "cut", None, calls)
    assert calls == [4, 8]  # the cut eval first, then training goes on
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)


@pytest.mark.slow
def test_a_job_that_spawned_workers_forwards_the_signal(tmp_path: Path) -> None:
    """SIGUSR1 to the job process (what SLURM signals): the spawned FSDP workers checkpoint,
    the job exits 75, the rerun finishes with the same weights as an uninterrupted job."""
    script = Path(__file__).with_name("_slurm_node.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), SIGNALS_ENV: "USR1"}

    def start(state: Path, out: Path, sleep: str) -> subprocess.Popen:
        cmd = [sys.executable, str(script), "--state-dir", str(state), "--out", str(out)]
        return subprocess.Popen(
            [*cmd, "--sleep", sleep], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    state, out = tmp_path / "state", tmp_path / "out.safetensors"
    p = start(state, out, "0.3")
    t0 = time.monotonic()
    while _step(state) < 2:
        assert p.poll() is None, p.stderr.read().decode()[-2000:]
        assert time.monotonic() - t0 < 300, "no checkpoint within 300 s"
        time.sleep(0.05)
    p.send_signal(signal.SIGUSR1)
    _, err = p.communicate(timeout=300)
    assert p.returncode == REQUEUE_EXIT_CODE, err.decode()[-3000:]
    assert 2 <= _step(state) < 6 and not out.exists()
    rerun = start(state, out, "0")
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-3000:]
    ref_out = tmp_path / "ref.safetensors"
    ref = start(tmp_path / "ref_state", ref_out, "0")
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err.decode()[-3000:]
    a, b = load_file(str(ref_out)), load_file(str(out))
    assert a.keys() == b.keys() and a
    assert all(torch.equal(a[k], b[k]) for k in a)
