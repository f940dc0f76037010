"""The training loop on a tiny Wan I2V transformer (diffusers + peft, CPU, fp32)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _train_script import build_model, make_data, train_cfg

from rank_sweep.model.adapters import trainable_state_dict
from rank_sweep.model.spec import forward_batch
from rank_sweep.train.checkpoint import STATE, WEIGHTS, find_checkpoint
from rank_sweep.train.loop import NonFiniteLossError, TrainHooks, TrainResult, train
from rank_sweep.train.steps import DataPos, cosine_warmup_factor, next_indices

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _run(
    tmp: Path, model=None, data=None, lr: float = 1e-3, **cfg_kw
) -> tuple[TrainResult, torch.nn.Module]:
    model = model or build_model("lora", rank=4)
    result = train(
        model,
        data if data is not None else make_data(4),
        train_cfg(**cfg_kw),
        lr=lr,
        state_dir=tmp,
        forward_fn=forward_batch,
        shift=3.0,
    )
    return result, model


@pytest.mark.parametrize(("method", "lr", "ratio"), [("full", 2e-3, 0.75), ("lora", 1e-2, 0.9)])
def test_converges_on_a_tiny_fixed_batch(
    tmp_path: Path, method: str, lr: float, ratio: float
) -> None:
    from rank_sweep.train.steps import validation_loss

    logs: list[tuple[int, dict]] = []
    model, data = build_model(method, rank=8), make_data(1)
    cfg = train_cfg(steps=40, grad_accum=1, warmup_ratio=0.0, checkpoint_every=100)
    before = validation_loss(model, data, forward_batch, cfg, 1.0, torch.device("cpu"), None)
    result = train(
        model, data, cfg, lr=lr, state_dir=tmp_path, forward_fn=forward_batch, shift=1.0, val_set=data,
        hooks=TrainHooks(on_log=lambda m, s: logs.append((s, m))),
    )  # fmt: skip
    assert result.final_val_loss < ratio * before, (before, result.final_val_loss)
    losses = [m["train/loss"] for _, m in logs if "train/loss" in m]
    assert len(losses) == 40 and all(math.isfinite(v) for v in losses)
    assert sum(losses[-10:]) < sum(losses[:10])
    assert result.steps_done == 40 and result.step_time_s > 0 and result.peak_mem_mb > 0
    assert all("train/grad_norm" in m for _, m in logs if "train/loss" in m)


@pytest.mark.parametrize("method", ["lora", "full"])
def test_lora_and_full_through_the_same_loop(tmp_path: Path, method: str) -> None:
    model = build_model(method, rank=4)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    before = {k: v.clone() for k, v in trainable_state_dict(model).items()}
    result, model = _run(tmp_path, model=model, steps=3, activation_checkpointing=True)
    after = trainable_state_dict(model)
    assert result.steps_done == 3 and math.isfinite(result.final_train_loss)
    assert all(not torch.equal(before[k], after[k]) for k in before if k.endswith("weight"))
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(frozen[n], p), n
    if method == "lora":
        assert frozen and all("lora_" in k for k in before)
    else:
        assert not frozen


def test_nan_loss_raises_before_touching_weights(tmp_path: Path) -> None:
    data = make_data(4)
    data[2]["latents"][0, 0, 0, 0] = float("nan")
    model = build_model("lora", rank=4)
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss nan at step \d+"):
        _run(tmp_path, model=model, data=data, steps=8, grad_accum=1, checkpoint_every=100)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_nan_gradient_with_finite_loss_raises(tmp_path: Path) -> None:
    def nan_grad_forward(model, batch, noisy, t):
        out = forward_batch(model, batch, noisy, t)
        # forward picks `out` (finite loss); backward through sqrt(<0) is NaN * 0 = NaN
        return torch.where(torch.ones_like(out, dtype=torch.bool), out, torch.sqrt(-(out**2) - 1))

    model = build_model("lora", rank=4)
    before = {k: v.clone() for k, v in trainable_state_dict(model).items()}
    with pytest.raises(NonFiniteLossError, match="non-finite gradient norm nan at step 1"):
        train(
            model, make_data(2), train_cfg(steps=2, grad_accum=1), lr=1e-3, state_dir=tmp_path,
            forward_fn=nan_grad_forward, shift=3.0,
        )  # fmt: skip
    after = trainable_state_dict(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_grad_accumulation_equals_larger_micro_batch(tmp_path: Path) -> None:
    _, a = _run(tmp_path / "a", steps=3, micro_batch=1, grad_accum=2)
    _, b = _run(tmp_path / "b", steps=3, micro_batch=2, grad_accum=1)
    sa, sb = trainable_state_dict(a), trainable_state_dict(b)
    assert max((sa[k] - sb[k]).abs().max().item() for k in sa) < 1e-5
    assert any(not torch.equal(sa[k], build_model("lora", rank=4).state_dict()[k]) for k in sa)


def test_cosine_warmup_lr_values(tmp_path: Path) -> None:
    assert cosine_warmup_factor(0, 100, 5) == 0.0
    assert cosine_warmup_factor(5, 100, 5) == 1.0
    assert cosine_warmup_factor(100, 100, 5) == pytest.approx(0.0, abs=1e-12)
    assert cosine_warmup_factor(5 + 95 // 2, 100, 5) == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 47 / 95))
    )
    lrs: list[float] = []
    train(
        build_model("lora", rank=4),
        make_data(4),
        train_cfg(steps=8, warmup_ratio=0.25, grad_accum=1, checkpoint_every=100),
        lr=1e-3,
        state_dir=tmp_path,
        forward_fn=forward_batch,
        shift=3.0,
        hooks=TrainHooks(on_log=lambda m, s: lrs.append(m["train/lr"])),
    )
    want = [1e-3 * cosine_warmup_factor(k, 8, 2) for k in range(8)]
    assert lrs == pytest.approx(want)
    assert lrs[:3] == pytest.approx([0.0, 5e-4, 1e-3])


def test_data_order_is_a_seeded_permutation_per_epoch() -> None:
    pos, seen = DataPos(), []
    for _ in range(6):  # 3 full epochs of 4 clips, 2 per call
        idx, pos = next_indices(pos, 4, 2, seed=7)
        seen.append(idx)
    epochs = [sorted(seen[i] + seen[i + 1]) for i in (0, 2, 4)]
    assert all(e == [0, 1, 2, 3] for e in epochs) and pos == DataPos(2, 4)
    assert seen[0] + seen[1] != seen[2] + seen[3] or seen[2] + seen[3] != seen[4] + seen[5]
    with pytest.raises(ValueError, match="fewer than one micro-batch"):
        next_indices(DataPos(), 2, 3, seed=0)


def test_hooks_eval_stop_validation_and_extra_state(tmp_path: Path) -> None:
    evals: list[tuple[int, float | None]] = []
    logged: list[tuple[int, dict]] = []
    history: list[int] = []

    def on_eval(step: int, val: float | None) -> bool:
        evals.append((step, val))
        history.append(step)
        return step >= 4  # "pruned" at the second eval

    hooks = TrainHooks(
        on_log=lambda m, s: logged.append((s, m)),
        on_eval=on_eval,
        get_extra=lambda: {"history": list(history)},
        set_extra=lambda d: history.extend(d["history"]),
    )
    val = make_data(2, seed=9)
    model = build_model("lora", rank=4)
    res = train(
        model, make_data(4), train_cfg(steps=8, checkpoint_every=100), lr=1e-3, state_dir=tmp_path,
        forward_fn=forward_batch, shift=3.0, val_set=val, eval_every=2, hooks=hooks,
    )  # fmt: skip
    assert res.stopped_early and res.stop_step == 4 and res.steps_done == 4
    assert [s for s, _ in evals] == [2, 4]
    assert all(v is not None and math.isfinite(v) for _, v in evals)
    assert res.final_val_loss == evals[-1][1]
    assert [s for s, m in logged if "val/loss" in m] == [2, 4]
    assert {"train/loss", "train/lr", "train/grad_norm"} <= set(logged[0][1])
    # checkpoint written on stop; a rerun returns the saved result at once, extra restored
    ckpt = find_checkpoint(tmp_path)
    assert ckpt is not None and (ckpt / WEIGHTS).is_file() and (ckpt / STATE).is_file()
    state = torch.load(ckpt / STATE, weights_only=True)
    assert state["step"] == 4 and state["extra"]["history"] == [2, 4]
    history.clear()
    evals.clear()
    again = train(
        build_model("lora", rank=4), make_data(4), train_cfg(steps=8, checkpoint_every=100), lr=1e-3,
        state_dir=tmp_path, forward_fn=forward_batch, shift=3.0, val_set=val, eval_every=2, hooks=hooks,
    )  # fmt: skip
    assert again == res and evals == [] and history == [2, 4]


def test_validation_loss_is_fixed_for_fixed_weights(tmp_path: Path) -> None:
    from rank_sweep.train.steps import validation_loss

    model = build_model("lora", rank=4)
    val, cfg = make_data(3, seed=4), train_cfg()
    a = validation_loss(model, val, forward_batch, cfg, 3.0, torch.device("cpu"), None)
    b = validation_loss(model, val, forward_batch, cfg, 3.0, torch.device("cpu"), None)
    assert a == b and math.isfinite(a) and a > 0


def test_in_process_resume_matches_uninterrupted(tmp_path: Path) -> None:
    _, full = _run(tmp_path / "full", steps=6, checkpoint_every=2)

    # the first process "dies" (an exception out of a hook) during step 5, after the
    # step-4 checkpoint; the rerun resumes from it
    class Killed(Exception):
        pass

    def die(m: dict, s: int) -> None:
        if s == 5:
            raise Killed

    with pytest.raises(Killed):
        train(
            build_model("lora", rank=4), make_data(4), train_cfg(steps=6, checkpoint_every=2), lr=1e-3,
            state_dir=tmp_path / "part", forward_fn=forward_batch, shift=3.0, hooks=TrainHooks(on_log=die),
        )  # fmt: skip
    assert torch.load(find_checkpoint(tmp_path / "part") / STATE, weights_only=True)["step"] == 4
    res, resumed = _run(tmp_path / "part", steps=6, checkpoint_every=2)
    assert res.steps_done == 6
    sf, sr = trainable_state_dict(full), trainable_state_dict(resumed)
    assert all(torch.equal(sf[k], sr[k]) for k in sf)


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
def test_mixed_precision_choice_and_bf16_autocast_step(tmp_path: Path) -> None:
    from rank_sweep.train.loop import amp_dtype_for

    cpu = torch.device("cpu")
    assert amp_dtype_for("auto", cpu) is None and amp_dtype_for("no", cpu) is None
    assert amp_dtype_for("bf16", cpu) is torch.bfloat16
    with pytest.raises(ValueError, match="auto, bf16, no"):
        amp_dtype_for("fp8", cpu)
    res, _ = _run(tmp_path, steps=2, grad_accum=1, mixed_precision="bf16")
    assert res.steps_done == 2 and math.isfinite(res.final_train_loss)


def test_unreadable_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    from rank_sweep.train.checkpoint import CheckpointError

    _run(tmp_path, steps=2, grad_accum=1)
    (find_checkpoint(tmp_path) / STATE).write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="cannot be read"):
        _run(tmp_path, steps=4, grad_accum=1)
