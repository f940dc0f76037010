"""Two-stage recipe: stage views, per-stage trainable modules, global steps, resume across
the stage boundary (bitwise on CPU, like the one-stage loop)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train_script import build_model, make_data, train_cfg
from omegaconf import OmegaConf

from rank_sweep.model.adapters import trainable_state_dict
from rank_sweep.model.spec import forward_batch
from rank_sweep.train.loop import TrainHooks
from rank_sweep.train.stages import (
    Stage,
    describe,
    parse_stages,
    set_trainable,
    train_stages,
    view_item,
)

STAGES = [
    {"name": "style", "view": "stills", "steps": 3, "target_modules": ["attn1.to_q", "attn1.to_v"]},
    {"name": "motion", "view": "clips", "steps": 3, "target_modules": ["ffn.net.0.proj"]},
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw):
    base = OmegaConf.structured(train_cfg(steps=6, grad_accum=1, checkpoint_every=1, **kw))
    return OmegaConf.merge(base, {"stages": STAGES})  # as a Hydra override would


def test_parse_and_views():
    cfg = _cfg()
    stages = parse_stages(cfg)
    assert [s.name for s in stages] == ["style", "motion"]
    assert describe(stages) == "style:stills:0-3|motion:clips:3-6"
    cfg.steps = 7
    with pytest.raises(ValueError, match="sum of train.stages"):
        parse_stages(cfg)
    cfg.steps, cfg.stages[0].view = 6, "frames"
    with pytest.raises(ValueError, match="view"):
        parse_stages(cfg)
    item = make_data(1, frames=3)[0]
    still = view_item(item, Stage("s", "stills", 1))
    assert still["latents"].shape[1] == 1 and not still["cond"].any()
    assert torch.equal(still["latents"], item["latents"][:, :1])
    win = view_item(item, Stage("w", "window", 1, latent_frames=2))
    assert torch.equal(win["cond"], item["cond"][:, :2]) and win["text_emb"] is item["text_emb"]
    assert view_item(item, Stage("c", "clips", 1)) is item


def test_set_trainable_selects_stage_modules():
    model = build_model("lora", rank=2)
    n = set_trainable(model, "lora", ("attn1.to_q",))
    on = [k for k, p in model.named_parameters() if p.requires_grad]
    assert on and all(".attn1.to_q.lora_" in k for k in on)
    assert n == sum(p.numel() for p in model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="select no"):
        set_trainable(model, "lora", ("no_such_module",))
    set_trainable(model, "lora", None)
    assert all(("lora_" in k) == p.requires_grad for k, p in model.named_parameters())


def _run(tmp: Path, die_at: int = 0):
    torch.manual_seed(0)
    model, data = build_model("lora", rank=2), make_data(3, frames=2)
    cfg = _cfg()
    steps: list[int] = []
    marks: list[tuple[int, int]] = []
    snapshots: dict[int, dict] = {}

    def on_log(m: dict, step: int) -> None:
        if die_at and step == die_at:
            raise RuntimeError("killed")
        if "train/loss" in m:
            steps.append(step)

    def on_stage(k: int, stage: Stage, offset: int) -> None:
        marks.append((k, offset))
        snapshots[k] = {n: p.detach().clone() for n, p in model.named_parameters()
                        if "lora_" in n}  # fmt: skip

    res = train_stages(model, data, cfg, parse_stages(cfg), method="lora", lr=1e-2,
                       state_dir=tmp, forward_fn=forward_batch, shift=3.0,
                       hooks=TrainHooks(on_log=on_log), on_stage=on_stage)  # fmt: skip
    return res, model, steps, marks, snapshots


def test_two_stages_continue_the_adapter_and_resume_across_the_boundary(tmp_path: Path):
    res, model, steps, marks, snaps = _run(tmp_path / "a")
    assert res.steps_done == 6 and not res.stopped_early
    assert steps == [1, 2, 3, 4, 5, 6] and marks == [(1, 0), (2, 3)]  # global steps, boundary
    final = {n: p.detach() for n, p in model.named_parameters() if "lora_" in n}
    for name, before in snaps[1].items():
        after_style, end = snaps[2][name], final[name]
        if ".attn1.to_q." in name or ".attn1.to_v." in name:  # trained in stage 1 only
            assert not torch.equal(before, after_style) and torch.equal(after_style, end)
        elif ".ffn.net.0.proj." in name:  # trained in stage 2 only, from stage 1's adapter
            assert torch.equal(before, after_style) and not torch.equal(after_style, end)
        else:
            assert torch.equal(before, end)
    # killed in stage 2 (global step 5), then rerun: the same weights, bit for bit
    with pytest.raises(RuntimeError, match="killed"):
        _run(tmp_path / "b", die_at=5)
    res2, model2, steps2, marks2, _ = _run(tmp_path / "b")
    assert res2.steps_done == 6 and steps2 == [5, 6] and marks2 == [(1, 0), (2, 3)]
    set_trainable(model, "lora", None)
    set_trainable(model2, "lora", None)
    a, b = trainable_state_dict(model), trainable_state_dict(model2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stop_asked_at_a_stage_end_ends_the_run(tmp_path: Path):
    """The loop ignores a stop at its own last step: the stage runner must honour it."""
    model, data = build_model("lora", rank=2), make_data(2, frames=2)
    cfg = _cfg()
    marks: list[int] = []
    res = train_stages(model, data, cfg, parse_stages(cfg), method="lora", lr=1e-2,
                       state_dir=tmp_path, forward_fn=forward_batch, shift=3.0,
                       on_stage=lambda k, s, off: marks.append(k),
                       stop_requested=lambda: True)  # fmt: skip
    assert (res.steps_done, res.stopped_early, res.stop_step, marks) == (3, True, 3, [1])
