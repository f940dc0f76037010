"""bench_world's statistics on planted rows (the sweeps themselves are the benchmark's job)."""

from __future__ import annotations

import importlib.util
import math

from rank_sweep.paths import REPO_ROOT


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_world", REPO_ROOT / "benchmarks" / "bench_world.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _seed(rows: dict[str, tuple[float | None, float]]) -> dict:
    return {"rows": {n: {"val_loss": v, "fvd": f} for n, (v, f) in rows.items()}}


def test_seed_means_order_arms_that_single_seeds_swap() -> None:
    bw = _bench()
    base = ("base, no fine-tune", (1.7, 110.0))
    # two seeds swap r16/r32 on FVD; their means agree with the loss order
    s0 = _seed(dict([base, ("full", (0.10, 30.0)), ("lora r=4", (0.30, 40.0)),
                     ("lora r=16", (0.20, 34.0)), ("lora r=32", (0.15, 35.0))]))  # fmt: skip
    s1 = _seed(dict([base, ("full", (0.10, 30.0)), ("lora r=4", (0.30, 40.0)),
                     ("lora r=16", (0.20, 37.0)), ("lora r=32", (0.15, 31.0))]))  # fmt: skip
    assert bw.spearman([0.1, 0.3, 0.2, 0.15], [30.0, 40.0, 34.0, 35.0]) < 1.0
    rho, means = bw.seed_mean_spearman([s0, s1])
    assert math.isclose(rho, 1.0)
    assert "base, no fine-tune" not in means  # the reference is not a ranked arm
    assert means["lora r=16"] == (0.20, 35.5)


def test_seed_means_skip_an_arm_without_a_loss_on_some_seed() -> None:
    bw = _bench()
    s0 = _seed({"full": (0.1, 30.0), "lora r=4": (0.3, 40.0), "lora r=8": (0.2, 35.0),
                "lora r=64": (None, 20.0)})  # fmt: skip
    s1 = _seed({"full": (0.1, 31.0), "lora r=4": (0.3, 41.0), "lora r=8": (0.2, 36.0),
                "lora r=64": (0.05, 21.0)})  # fmt: skip
    rho, means = bw.seed_mean_spearman([s0, s1])
    assert set(means) == {"full", "lora r=4", "lora r=8"} and math.isclose(rho, 1.0)
    # an inverted planting is caught, not averaged away
    s2 = _seed({"full": (0.1, 41.0), "lora r=4": (0.3, 30.0), "lora r=8": (0.2, 35.0)})
    assert math.isclose(bw.seed_mean_spearman([s2])[0], -1.0)


def test_separated_pairs_count_only_what_fvd_resolves() -> None:
    import numpy as np

    bw = _bench()
    rng = np.random.default_rng(0)
    tuned = ["full", "lora r=4", "lora r=16", "lora r=64"]
    fvd = {"full": 30.0, "lora r=4": 40.0, "lora r=16": 35.0, "lora r=64": 35.2}
    loss = {"full": 0.18, "lora r=4": 0.22, "lora r=16": 0.19, "lora r=64": 0.17}
    rows = {n: {"fvd": fvd[n], "val_loss": loss[n]} for n in tuned}
    # replicates: a shared resample effect (cancels in pairs) plus 0.1 of run noise, so the
    # 0.2 gap of r16/r64 is unresolved and the 5-10 FVD gaps are resolved
    shared = rng.normal(0, 3.0, size=(400, 1))
    reps = np.array([fvd[n] for n in tuned]) + shared + rng.normal(0, 0.1, size=(400, 4))
    reps[:, 2:] += rng.normal(0, 0.5, size=(400, 1))  # r16 and r64 wobble together
    reps[:, 3] += rng.normal(0, 0.5, size=400)
    got = bw.separated_pairs(tuned, rows, reps)
    # resolved: full-r4, full-r16, full-r64, r4-r16, r4-r64 (r16-r64 is inside its interval)
    assert got["separated"] == 5
    # val loss puts r64 ahead of full while FVD puts full 5 ahead: the one disagreement
    assert got["agree"] == 4 and got["against"] == ["full vs lora r=64"]
    rows["lora r=64"]["val_loss"] = None  # no loss: not counted either way
    assert bw.separated_pairs(tuned, rows, reps)["separated"] == 3


def test_loss_pick_is_the_lowest_loss_rank_with_a_loss() -> None:
    bw = _bench()
    rows = {"lora r=4": {"val_loss": 0.22}, "lora r=32": {"val_loss": 0.17},
            "lora r=64": {"val_loss": None}, "full": {"val_loss": 0.10}}  # fmt: skip
    # full is a reference, not a candidate; a rank without a loss cannot be picked
    assert bw.loss_pick(["lora r=4", "lora r=32", "lora r=64"], rows) == "lora r=32"
    assert bw.loss_pick(["lora r=64"], rows) is None
