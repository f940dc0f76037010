"""The rung decision of synchronous successive halving, as a pure function.

`decide(sweep_id, rung, step, metrics, eta, delta_min)` looks only at its arguments: the
per-item values of every arm at one rung (lower is better; the same items, noise and
timesteps for every arm, so values are paired item by item). It never looks at the order
in which arms were launched or reported: arms are handled in sorted-key order and ties in
the mean are broken by the key, so any permutation of the same metrics gives the same
decision.

Rule (issue 12):
- the best arm is the one with the lowest mean (ties: smallest key);
- keep the top ceil(n / eta) arms by mean;
- also keep every arm that is not separated from the best: its paired interval of
  (arm - best) has a lower bound <= delta_min, i.e. the data do not exclude that it is
  within delta_min of the best;
- prune the rest. If nothing is separated from the best, nothing is pruned.

The paired interval is a two-sided t interval of the mean per-item difference at
`confidence` (default 95%). With fewer than two items there is no interval: an arm is then
tied iff its difference to the best is <= delta_min (the practical-equivalence margin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# the t quantile from scipy.special: scipy.stats costs ~1 s of import in every job process
from scipy.special import stdtrit

__all__ = ["ArmFigures", "Decision", "decide", "paired_interval"]


@dataclass(frozen=True)
class ArmFigures:
    """What one arm looked like at the rung, relative to the best arm."""

    mean: float
    diff: float  # mean of (arm - best) over items; 0 for the best itself
    lo: float  # paired interval of diff
    hi: float
    n_items: int
    position: int  # 0 = best, by (mean, key)
    kept: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    sweep_id: str
    rung: int
    step: int
    eta: int
    delta_min: float
    confidence: float
    best: str
    kept: tuple[str, ...]
    pruned: tuple[str, ...]
    arms: dict[str, ArmFigures] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kept"], d["pruned"] = list(self.kept), list(self.pruned)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decision:
        d = dict(d)
        d["kept"], d["pruned"] = tuple(d["kept"]), tuple(d["pruned"])
        d["arms"] = {k: ArmFigures(**v) for k, v in d.get("arms", {}).items()}
        return cls(**d)

    def outcome(self) -> dict[str, Any]:
        """The parts that must not depend on how the sweep was launched (no sweep id)."""
        d = self.to_dict()
        d.pop("sweep_id")
        return d


def paired_interval(diffs: Sequence[float], confidence: float) -> tuple[float, float, float]:
    """(mean, lo, hi) of per-item differences: two-sided t interval; (m, m, m) for n < 2."""
    n = len(diffs)
    if n == 0:
        raise ValueError("paired_interval needs at least one item")
    mean = math.fsum(diffs) / n
    if n < 2:
        return mean, mean, mean
    var = math.fsum((x - mean) ** 2 for x in diffs) / (n - 1)
    half = float(stdtrit(n - 1, 0.5 + confidence / 2)) * math.sqrt(var / n)
    return mean, mean - half, mean + half


def decide(
    sweep_id: str,
    rung: int,
    step: int,
    metrics: Mapping[str, Sequence[float]],
    *,
    eta: int,
    delta_min: float = 0.0,
    confidence: float = 0.95,
) -> Decision:
    """Which arms go on to the next rung. `metrics[arm]` are its per-item values (lower is
    better), item i of every arm measured on the same item, noise and timestep."""
    if int(eta) < 2:
        raise ValueError(f"prune.eta={eta} must be >= 2 (keep 1/eta of the arms per rung)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"prune.confidence={confidence} must be in (0, 1)")
    if delta_min < 0:
        raise ValueError(f"prune.delta_min={delta_min} must be >= 0")
    if not metrics:
        raise ValueError(f"rung {rung}: no arms to decide on")
    values = {str(k): [float(x) for x in v] for k, v in metrics.items()}
    lengths = {len(v) for v in values.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(
            f"rung {rung}: arms must have the same non-zero number of paired items, got "
            + ", ".join(f"{k}={len(v)}" for k, v in sorted(values.items()))
        )
    for k, v in values.items():
        if not all(math.isfinite(x) for x in v):
            raise ValueError(f"rung {rung}: arm {k} has a non-finite metric value")

    means = {k: math.fsum(v) / len(v) for k, v in values.items()}
    order = sorted(values, key=lambda k: (means[k], k))  # the key breaks exact ties
    best = order[0]
    n_top = math.ceil(len(order) / int(eta))
    arms: dict[str, ArmFigures] = {}
    for pos, k in enumerate(order):
        diffs = [a - b for a, b in zip(values[k], values[best])]
        diff, lo, hi = paired_interval(diffs, confidence)
        if k == best:
            diff = lo = hi = 0.0
        tied = lo <= delta_min
        if k == best:
            kept, reason = True, "best"
        elif pos < n_top:
            kept, reason = True, f"top {n_top} of {len(order)} (eta={eta})"
        elif tied:
            kept = True
            reason = f"tied with best: paired lower bound {lo:.4g} <= delta_min {delta_min:g}"
        else:
            kept = False
            reason = (
                f"worse than {best}: paired {confidence:.0%} interval of the difference "
                f"[{lo:.4g}, {hi:.4g}] lies above delta_min {delta_min:g}"
            )
        arms[k] = ArmFigures(means[k], diff, lo, hi, len(values[k]), pos, kept, reason)
    return Decision(
        sweep_id=str(sweep_id),
        rung=int(rung),
        step=int(step),
        eta=int(eta),
        delta_min=float(delta_min),
        confidence=float(confidence),
        best=best,
        kept=tuple(k for k in order if arms[k].kept),
        pruned=tuple(k for k in order if not arms[k].kept),
        arms={k: arms[k] for k in sorted(arms)},
    )
