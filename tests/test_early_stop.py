"""Plateau early stop: the pure decision and the runner-side watch."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from rank_sweep.train.early_stop import PlateauWatch, metric_mode, plateau


def test_plateau_pure_decision():
    falling = [(i, 1.0 / i) for i in range(1, 8)]
    assert not plateau(falling, patience=2, min_delta=0.0).stop
    flat = [(1, 1.0), (2, 0.5), (3, 0.499), (4, 0.4995), (5, 0.52)]
    d = plateau(flat, patience=3, min_delta=0.01)
    assert d.stop and d.best_step == 2 and d.best_value == 0.5 and d.stale == 3
    # the same history with min_delta 0 sees the tiny gain at step 3 as an improvement
    assert not plateau(flat, patience=3, min_delta=0.0).stop
    rising = [(1, 0.1), (2, 0.2), (3, 0.2), (4, 0.2)]
    assert plateau(rising, patience=2, mode="max").stop
    assert not plateau(rising, patience=3, mode="max").stop
    assert plateau([(1, float("nan")), (2, float("nan"))], patience=2).stop
    with pytest.raises(ValueError):
        plateau(flat, patience=0)


def test_metric_mode_and_watch_from_config():
    assert metric_mode("lpips/ucf101") == "min"
    assert metric_mode("clipsim_img/ucf101") == "max"
    assert metric_mode("val/loss", "max") == "max"
    assert PlateauWatch.from_config(OmegaConf.create({"early_stop": {"metric": None}})) is None
    cfg = OmegaConf.create({"early_stop": {"metric": "lpips/x", "patience": 2, "min_delta": 0.0}})
    w = PlateauWatch.from_config(cfg)
    planted = [0.5, 0.4, 0.3, 0.3, 0.3, 0.1]  # flattens after step 3
    stops = [w.update(s * 10, {"lpips/x": v}) for s, v in enumerate(planted, 1)]
    assert stops == [False, False, False, False, True, False]  # the runner stops at the first
    assert w.stopped_at == 50
    w2 = PlateauWatch.from_config(cfg)
    w2.load(w.state())
    assert w2.history == w.history and w2.stopped_at == 50
    with pytest.raises(KeyError, match="early_stop.metric"):
        w.update(70, {"fvd/x": 1.0})
