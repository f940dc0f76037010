"""The job side of a rung: pause knob, bitwise resume, per-item metric, fingerprint, schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _train_script import build_model, make_data, train_cfg

from rank_sweep.model.adapters import trainable_state_dict
from rank_sweep.model.spec import forward_batch
from rank_sweep.prune.rung import RungRecord, read_record, record_file, write_record
from rank_sweep.prune.schedule import PruneSettings, rung_steps
from rank_sweep.train.loop import train
from rank_sweep.train.steps import per_item_val_losses, validation_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(state: Path, model, **kw):
    return train(
        model, make_data(4), train_cfg(**kw), lr=1e-3, state_dir=state,
        forward_fn=forward_batch, shift=3.0,
    )  # fmt: skip


def test_paused_twice_and_resumed_is_bitwise_the_uninterrupted_run(tmp_path: Path) -> None:
    # checkpoint_every=0: the pauses checkpoint anyway, nothing else does
    ref_model = build_model("lora", rank=4)
    ref = _train(tmp_path / "ref", ref_model, steps=6, checkpoint_every=0)
    assert not ref.paused and ref.steps_done == 6

    state = tmp_path / "paused"
    first = _train(state, build_model("lora", rank=4), steps=6, checkpoint_every=0, stop_at=2)
    assert first.paused and first.steps_done == 2
    again = _train(state, build_model("lora", rank=4), steps=6, checkpoint_every=0, stop_at=2)
    assert again.paused and again.steps_done == 2  # a rerun of a finished rung trains nothing
    second = _train(state, build_model("lora", rank=4), steps=6, checkpoint_every=0, stop_at=4)
    assert second.paused and second.steps_done == 4
    model = build_model("lora", rank=4)
    last = _train(state, model, steps=6, checkpoint_every=0)
    assert not last.paused and last.steps_done == 6
    a, b = trainable_state_dict(ref_model), trainable_state_dict(model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_per_item_losses_average_to_the_validation_loss() -> None:
    model, val, cfg = build_model("lora", rank=4), make_data(3, seed=4), train_cfg()
    cpu = torch.device("cpu")
    items = per_item_val_losses(model, val, forward_batch, cfg, 3.0, cpu, None)
    assert len(items) == 3 * len(cfg.val_quantiles)
    assert sum(items) / len(items) == pytest.approx(
        validation_loss(model, val, forward_batch, cfg, 3.0, cpu, None), rel=1e-12
    )
    assert items == per_item_val_losses(model, val, forward_batch, cfg, 3.0, cpu, None)
    other = per_item_val_losses(
        build_model("lora", rank=8), val, forward_batch, cfg, 3.0, cpu, None
    )
    assert other != items


def test_record_round_trip_and_scalar_metric(tmp_path: Path) -> None:
    path = record_file(tmp_path, 12)
    assert read_record(path) is None
    rec = RungRecord("lora-r8", 12, False, {"val_loss": [1.0, 2.0]}, {"fvd/synthetic": 30.0})
    write_record(path, rec)
    back = read_record(path)
    assert back == rec and back.values("val_loss") == [1.0, 2.0]
    assert back.values("fvd/synthetic") == [30.0]
    with pytest.raises(KeyError, match="kid/synthetic"):
        back.values("kid/synthetic")


def test_stop_knob_and_prune_settings_are_not_in_the_fingerprint(compose) -> None:
    from rank_sweep.job.identity import fingerprint

    base = fingerprint(compose(["lora.rank=8"]))
    assert fingerprint(compose(["lora.rank=8", "train.stop_at=6"])) == base
    assert fingerprint(compose(["lora.rank=8", "prune=asha"])) == base
    assert fingerprint(compose(["lora.rank=8", "prune.eta=3", "prune.rungs=[0.5,1.0]"])) == base
    assert fingerprint(compose(["lora.rank=16"])) != base
    assert fingerprint(compose(["lora.rank=8", "train.steps=48"])) != base


def test_default_config_prunes_with_sha(compose) -> None:
    cfg = compose(["lora.rank=8"])
    s = PruneSettings.from_cfg(cfg.prune)
    assert s.pruner == "sha" and s.synchronous and s.rungs == (0.25, 0.5, 1.0)
    assert PruneSettings.from_cfg(compose(["prune=none"]).prune).rungs == (1.0,)
    assert not PruneSettings.from_cfg(compose(["prune=asha"]).prune).synchronous


def test_rung_steps_and_bad_settings() -> None:
    assert rung_steps((0.25, 0.5, 1.0), 24) == [6, 12, 24]
    assert rung_steps((0.01, 0.02, 1.0), 10) == [1, 10]  # rounding merges rungs
    for bad in ([0.5, 0.25, 1.0], [0.5], [0.0, 1.0]):
        with pytest.raises(ValueError, match="prune.rungs"):
            PruneSettings.from_cfg({"pruner": "sha", "rungs": bad})
    with pytest.raises(ValueError, match="eta"):
        PruneSettings.from_cfg({"pruner": "sha", "eta": 1})
