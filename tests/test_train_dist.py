"""2-process CPU (gloo) runs on the tiny Wan transformer, spawned by `launch`: FSDP2 in the
fast tier (resuming a single-process checkpoint, i.e. a world-size change), DeepSpeed
ZeRO-2 in `slow` (its first initialize builds ops), interrupted after a checkpoint and
resumed from the engine's own state."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _train_script import build_model, dist_worker, failing_worker, make_data, train_cfg
from safetensors.torch import load_file

from rank_sweep.model.adapters import trainable_state_dict
from rank_sweep.model.spec import forward_batch
from rank_sweep.train.checkpoint import find_checkpoint, read_checkpoint
from rank_sweep.train.dist import launch
from rank_sweep.train.loop import TrainHooks, train

STEPS = 4


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _single(state: Path, hooks: TrainHooks | None = None) -> dict[str, torch.Tensor]:
    """micro_batch 2 in one process = micro_batch 1 on each of 2 ranks (same samples, noise)."""
    model = build_model("lora", rank=4)
    train(
        model, make_data(4), train_cfg(steps=STEPS, micro_batch=2, grad_accum=1, activation_checkpointing=True),
        lr=1e-3, state_dir=state, forward_fn=forward_batch, shift=3.0, val_set=make_data(3, seed=2), hooks=hooks,
    )  # fmt: skip
    return {k: v.clone() for k, v in trainable_state_dict(model).items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return _single(tmp_path_factory.mktemp("single"))


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> float:
    assert a.keys() == b.keys() and a
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_fsdp2_two_processes_resume_single_checkpoint(tmp_path: Path, reference) -> None:
    class Killed(Exception):
        pass

    def die(m: dict, step: int) -> None:
        if step == 3:
            raise Killed

    state = tmp_path / "state"
    with pytest.raises(Killed):  # single process writes the step-2 checkpoint, then dies
        _single(state, TrainHooks(on_log=die))
    assert read_checkpoint(find_checkpoint(state)).state["step"] == 2

    out = tmp_path / "fsdp.safetensors"
    result = launch(dist_worker, 2, "fsdp", str(state), str(out), STEPS)
    assert result["world_size"] == 2 and result["steps_done"] == STEPS
    assert math.isfinite(result["final_train_loss"]) and math.isfinite(result["final_val_loss"])
    got = load_file(str(out))
    assert _close(reference, got, 1e-5) < 1e-5
    saved = read_checkpoint(find_checkpoint(state))  # written by rank 0 from gathered shards
    assert saved.state["step"] == STEPS
    assert all(torch.equal(saved.weights[k], got[k]) for k in got)


def test_launch_reraises_a_worker_failure(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="rank 1 broke"):
        launch(failing_worker, 2, "rank 1 broke")


@pytest.mark.slow
def test_deepspeed_zero2_two_processes_with_resume(tmp_path: Path, reference) -> None:
    out, state = tmp_path / "ds.safetensors", str(tmp_path / "state")
    with pytest.raises(Exception, match="worker died at step 3"):
        launch(dist_worker, 2, "deepspeed", state, str(out), STEPS, 3)
    assert read_checkpoint(find_checkpoint(Path(state))).state["step"] == 2
    result = launch(dist_worker, 2, "deepspeed", state, str(out), STEPS)
    assert result["steps_done"] == STEPS and math.isfinite(result["final_train_loss"])
    assert _close(reference, load_file(str(out)), 1e-4) < 1e-4
