"""The pure rung decision: rule, ties, order independence, validation."""

from __future__ import annotations

import itertools
import random

import pytest

from rank_sweep.prune.decide import Decision, decide, paired_interval


def _arms(means: dict[str, float], n: int = 12, noise: float = 0.01, seed: int = 0):
    """Paired items: a shared per-item difficulty plus small arm-specific noise."""
    rng = random.Random(seed)
    base = [rng.gauss(1.0, 0.3) for _ in range(n)]
    out = {}
    for k, m in sorted(means.items()):
        r = random.Random(f"{seed}-{k}")
        out[k] = [b + m + r.gauss(0.0, noise) for b in base]
    return out


def test_separated_arms_are_pruned_and_top_kept() -> None:
    metrics = _arms({"r4": 0.0, "r8": 0.2, "r16": 0.4, "r32": 0.6, "r64": 0.8})
    d = decide("s", 0, 10, metrics, eta=2, delta_min=0.0)
    assert d.best == "r4"
    assert d.kept == ("r4", "r8", "r16")  # ceil(5/2) = 3, the others are separated
    assert d.pruned == ("r32", "r64")
    assert "worse than r4" in d.arms["r64"].reason
    assert d.arms["r64"].lo > 0


def test_tied_arm_outside_top_is_kept() -> None:
    # r64 is only 0.001 worse on average and the item noise is large: not separated.
    metrics = _arms({"r4": 0.0, "r8": 0.5, "r16": 0.6, "r64": 0.001}, noise=0.05)
    d = decide("s", 0, 10, metrics, eta=4, delta_min=0.0)
    assert d.best in ("r4", "r64")
    assert set(d.kept) == {"r4", "r64"}
    assert set(d.pruned) == {"r8", "r16"}


def test_delta_min_keeps_practically_equal_arms() -> None:
    metrics = _arms({"a": 0.0, "b": 0.05, "c": 0.5}, noise=0.001)
    strict = decide("s", 0, 1, metrics, eta=3, delta_min=0.0)
    loose = decide("s", 0, 1, metrics, eta=3, delta_min=0.1)
    assert strict.pruned == ("b", "c")
    assert loose.pruned == ("c",) and "tied" in loose.arms["b"].reason


def test_all_tied_prunes_nothing() -> None:
    same = [0.5, 0.7, 0.2, 0.9]
    d = decide("s", 1, 20, {k: list(same) for k in ("r4", "r8", "r16", "r32")}, eta=2)
    assert d.pruned == () and d.best == "r16"  # exact tie: smallest key string
    noisy = _arms({k: 0.0 for k in ("r4", "r8", "r16", "r32", "r64")}, noise=0.05)
    assert decide("s", 1, 20, noisy, eta=2).pruned == ()


def test_single_item_falls_back_to_delta_min() -> None:
    d = decide("s", 0, 5, {"a": [1.0], "b": [1.05], "c": [2.0]}, eta=3, delta_min=0.1)
    assert d.kept == ("a", "b") and d.pruned == ("c",)


def test_any_permutation_gives_the_same_decision() -> None:
    metrics = _arms({"r4": 0.1, "r8": 0.0, "r16": 0.02, "r32": 0.3, "r64": 0.31}, noise=0.03)
    ref = decide("s", 0, 7, metrics, eta=2, delta_min=0.01)
    for perm in itertools.permutations(metrics):
        d = decide("s", 0, 7, {k: metrics[k] for k in perm}, eta=2, delta_min=0.01)
        assert d == ref


def test_round_trip_and_outcome_excludes_sweep_id() -> None:
    d = decide("sweep-1", 2, 30, _arms({"a": 0.0, "b": 1.0}), eta=2)
    assert Decision.from_dict(d.to_dict()) == d
    other = decide("sweep-2", 2, 30, _arms({"a": 0.0, "b": 1.0}), eta=2)
    assert other.outcome() == d.outcome() and other != d


def test_paired_interval_matches_textbook_t() -> None:
    m, lo, hi = paired_interval([1.0, 2.0, 3.0, 4.0], 0.95)
    assert m == 2.5
    assert hi - m == pytest.approx(3.182446305 * (1.2909944487 / 2), rel=1e-6)
    assert lo == pytest.approx(2 * m - hi)


@pytest.mark.parametrize(
    ("metrics", "kw", "msg"),
    [
        ({"a": [1.0], "b": [1.0, 2.0]}, {"eta": 2}, "same non-zero number"),
        ({"a": [float("nan")]}, {"eta": 2}, "non-finite"),
        ({"a": [1.0]}, {"eta": 1}, "eta=1"),
        ({}, {"eta": 2}, "no arms"),
        ({"a": [1.0]}, {"eta": 2, "delta_min": -1.0}, "delta_min"),
    ],
)
def test_bad_inputs_raise(metrics, kw, msg) -> None:
    with pytest.raises(ValueError, match=msg):
        decide("s", 0, 1, metrics, **kw)
