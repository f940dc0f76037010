"""SIGKILL at any point, rerun, same final weights as an uninterrupted run (bitwise, CPU).

Training runs in subprocesses (tests/_train_script.py). Kill points: mid-step after a
checkpoint, during a checkpoint write (files written, not yet swapped in) and inside the
swap (old checkpoint moved aside, new not yet in place); the last two are held open with
the RANK_SWEEP_CKPT_PAUSE fault-injection hook so the kill lands there deterministically.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from rank_sweep.train.checkpoint import OLD, PAUSE_ENV, WEIGHTS, find_checkpoint, tmp_dir

SCRIPT = Path(__file__).with_name("_train_script.py")
REPO = SCRIPT.parent.parent


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(PAUSE_ENV, None)
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}, **extra)
    return env


def _start(state: Path, out: Path, *args: str, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, str(SCRIPT), "--state-dir", str(state), "--out", str(out), *args]
    return subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]


def _ckpt_step(state: Path) -> int | None:
    path = find_checkpoint(state)
    if path is None:
        return None
    with safe_open(str(path / WEIGHTS), framework="pt") as f:
        return int(f.metadata()["step"])


def _kill_when(proc: subprocess.Popen, cond, what: str, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, (
            f"trainer exited before {what}: {proc.stderr.read().decode()[-2000:]}"
        )
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_anywhere_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    ref_out = tmp_path / "ref.safetensors"
    ref = _start(tmp_path / "ref_state", ref_out)

    state, out = tmp_path / "state", tmp_path / "out.safetensors"
    # 1) mid-step, after the step-2 checkpoint (forwards are slowed to widen the step)
    p = _start(state, out, "--sleep", "0.1")
    _kill_when(p, lambda: (_ckpt_step(state) or 0) >= 2, "first checkpoint")
    assert 2 <= _ckpt_step(state) < 8 and not out.exists()

    # 2) during the write of the step-6 checkpoint: the temp dir is complete, not swapped in
    p = _start(state, out, **{PAUSE_ENV: "6:write:120"})
    _kill_when(p, lambda: (tmp_dir(state, 6) / "state.pt").exists(), "step-6 write")
    assert _ckpt_step(state) == 4

    # 3) inside the swap of the step-8 checkpoint: only checkpoint.old exists
    p = _start(state, out, **{PAUSE_ENV: "8:swap:120"})
    _kill_when(p, lambda: (state / OLD).exists() and not (state / "checkpoint").exists(), "swap")
    assert find_checkpoint(state) == state / OLD and _ckpt_step(state) == 6

    _finish(_start(state, out))
    _finish(ref)
    assert _ckpt_step(state) == 8 and not list(state.glob(".checkpoint-tmp-*"))
    a, b = load_file(str(ref_out)), load_file(str(out))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from uninterrupted"
