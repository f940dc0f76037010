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
