"""Prune settings as the sweeper reads them, and the rung schedule in training steps.

`prune.pruner`:
- `sha`   synchronous successive halving by the project's sweeper: rungs at fractions of
          `train.steps`, one launcher batch per rung (a barrier), decisions by
          `rank_sweep.prune.decide` from paired per-item metrics. The default.
- `none`  the full grid through the same sweeper (one rung at 1.0, nothing pruned).
- `asha`  Optuna's asynchronous successive halving, asked by each job itself. Decisions
          depend on launch order and timing (a trial is only compared with the values
          already reported at its rung); for clusters that cannot wait at barriers.
- `median` Optuna's median rule, also asynchronous (compares with completed trials only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SYNC_PRUNERS = ("sha", "none")  # decided by the sweeper; jobs do not open Optuna trials
ASYNC_PRUNERS = ("asha", "median")  # decided inside each job by an Optuna pruner
ALL_PRUNERS = (*SYNC_PRUNERS, *ASYNC_PRUNERS)


@dataclass(frozen=True)
class PruneSettings:
    pruner: str
    rungs: tuple[float, ...]
    eta: int
    delta_min: float
    confidence: float
    rung_metric: str
    storage: str | None

    @classmethod
    def from_cfg(cls, prune: Any) -> PruneSettings:
        """From a `prune` config node (missing keys take the `sha` defaults)."""
        get = prune.get if hasattr(prune, "get") else lambda k, d=None: getattr(prune, k, d)
        pruner = str(get("pruner", "sha"))
        if pruner not in ALL_PRUNERS:
            raise ValueError(f"prune.pruner={pruner!r} not allowed; use one of {ALL_PRUNERS}")
        rungs = tuple(float(r) for r in (get("rungs", None) or (1.0,)))
        if pruner == "none":
            rungs = (1.0,)
        s = cls(
            pruner=pruner,
            rungs=rungs,
            eta=int(get("eta", 2)),
            delta_min=float(get("delta_min", 0.0)),
            confidence=float(get("confidence", 0.95)),
            rung_metric=str(get("rung_metric", "val_loss")),
            storage=get("storage", None),
        )
        s.check()
        return s

    def check(self) -> None:
        r = self.rungs
        if not r or any(not 0.0 < x <= 1.0 for x in r) or list(r) != sorted(set(r)):
            raise ValueError(
                f"prune.rungs={list(r)}: increasing fractions of train.steps in (0, 1]"
            )
        if r[-1] != 1.0:
            raise ValueError(f"prune.rungs={list(r)} must end at 1.0 (the full budget)")
        if self.eta < 2:
            raise ValueError(f"prune.eta={self.eta} must be >= 2")
        if self.delta_min < 0:
            raise ValueError(f"prune.delta_min={self.delta_min} must be >= 0")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"prune.confidence={self.confidence} must be in (0, 1)")

    @property
    def synchronous(self) -> bool:
        return self.pruner in SYNC_PRUNERS


def rung_steps(rungs: tuple[float, ...], budget: int) -> list[int]:
    """Training step of each rung: round(fraction * budget), at least 1, strictly
    increasing, the last one the budget. Rungs that round onto the same step merge."""
    if budget < 1:
        raise ValueError(f"train.steps={budget} must be >= 1")
    steps: list[int] = []
    for frac in rungs:
        s = min(budget, max(1, round(frac * budget)))
        if not steps or s > steps[-1]:
            steps.append(s)
    if steps[-1] != budget:
        steps.append(budget)
    return steps
