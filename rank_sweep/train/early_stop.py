"""Early stop on a plateau of a validation metric (`train.early_stop.{metric,patience,min_delta}`).

A pure function of the metric's history: the run stops when `patience` consecutive
evaluations have not improved on the best value by more than `min_delta`. The direction
follows the metric (loss, LPIPS, FVD, KID: lower is better; CLIP-SIM: higher), or
`mode: min | max`. The stop is recorded as status `stopped_plateau` with its step, apart
from pruning (a sweeper's decision about other runs) in the report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rank_sweep.track import contract as C

STATUS_PLATEAU = C.STOPPED_PLATEAU
TAG_PLATEAU_STEP = C.TAG_PLATEAU_STEP  # the step the plateau stopped the run
MODES = ("auto", "min", "max")
_HIGHER_IS_BETTER_PREFIXES = ("clipsim",)


@dataclass(frozen=True)
class PlateauDecision:
    stop: bool
    best_step: int | None
    best_value: float | None
    stale: int  # evaluations since the last improvement


def metric_mode(metric: str, mode: str = "auto") -> str:
    """'min' or 'max' for `metric` (`auto` reads the metric family before the slash)."""
    if mode not in MODES:
        raise ValueError(f"train.early_stop.mode={mode!r}; allowed: {', '.join(MODES)}")
    if mode != "auto":
        return mode
    return "max" if metric.split("/", 1)[0].startswith(_HIGHER_IS_BETTER_PREFIXES) else "min"


def plateau(
    history: Sequence[tuple[int, float]], *, patience: int, min_delta: float = 0.0,
    mode: str = "min",
) -> PlateauDecision:  # fmt: skip
    """Decide from (step, value) pairs in evaluation order. NaN values never improve."""
    if patience < 1:
        raise ValueError(f"train.early_stop.patience must be >= 1, got {patience}")
    if min_delta < 0:
        raise ValueError(f"train.early_stop.min_delta must be >= 0, got {min_delta}")
    sign = 1.0 if mode == "min" else -1.0
    best: float | None = None
    best_step: int | None = None
    stale = 0
    for step, value in history:
        v = float(value)
        if math.isfinite(v) and (best is None or sign * (best - v) > min_delta):
            best, best_step, stale = v, int(step), 0
        else:
            stale += 1
    return PlateauDecision(stop=stale >= patience, best_step=best_step, best_value=best,
                           stale=stale)  # fmt: skip


@dataclass
class PlateauWatch:
    """The runner's small stateful hook: feed each eval's metrics, ask whether to stop."""

    metric: str
    patience: int
    min_delta: float = 0.0
    mode: str = "auto"

    def __post_init__(self) -> None:
        self.mode = metric_mode(self.metric, self.mode)
        self.history: list[tuple[int, float]] = []
        self.stopped_at: int | None = None

    @classmethod
    def from_config(cls, cfg: Any) -> PlateauWatch | None:
        """None when `train.early_stop` is absent or its metric is null."""
        es = getattr(cfg, "early_stop", None) if cfg is not None else None
        if es is None or not es.get("metric"):
            return None
        return cls(str(es.metric), int(es.get("patience", 3)), float(es.get("min_delta", 0.0)),
                   str(es.get("mode", "auto")))  # fmt: skip

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        if self.metric not in metrics:
            raise KeyError(
                f"train.early_stop.metric={self.metric!r} is not produced by eval "
                f"(got {sorted(metrics)})"
            )
        self.history.append((int(step), float(metrics[self.metric])))
        d = plateau(self.history, patience=self.patience, min_delta=self.min_delta, mode=self.mode)
        if d.stop and self.stopped_at is None:
            self.stopped_at = int(step)
        return d.stop

    def state(self) -> dict[str, Any]:
        return {"history": self.history, "stopped_at": self.stopped_at}

    def load(self, state: dict[str, Any]) -> None:
        self.history = [(int(s), float(v)) for s, v in state.get("history", [])]
        self.stopped_at = state.get("stopped_at")
