"""Report parts of issue 17 as pure functions of a run table: CLIP-SIM/LPIPS section with
paired deltas vs full, one- vs two-stage section, plateau status apart from pruning."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rank_sweep.eval.extra_metrics import paired_interval
from rank_sweep.report.extra import quality_section, recipe_section, status_text


def _row(run_id, method, rank, recipe, status, lp, **kw):
    rec = {"run_id": run_id, "run_name": run_id, "method": method, "rank": rank,
           "recipe": recipe, "stages": "", "status": status, "steps_done": 8,
           "pruned_step": kw.get("pruned_step"), "plateau_step": kw.get("plateau_step"),
           "fvd/ds": 10.0 + len(run_id), "lpips/ds": float(np.mean(lp)),
           "lpips_ci_lo/ds": float(np.min(lp)), "lpips_ci_hi/ds": float(np.max(lp)),
           "extra_per_clip": {"ds": {"lpips": list(lp)}}}  # fmt: skip
    return rec


def test_sections():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.4, 12)
    one = base + 0.05 + rng.normal(0, 0.001, 12)
    two = one - 0.02 + rng.normal(0, 0.001, 12)
    df = pd.DataFrame([
        _row("full0", "full", None, "one_stage", "completed", base),
        _row("one4", "lora", 4, "one_stage", "completed", one),
        _row("two4", "lora", 4, "two_stage", "stopped_plateau", two, plateau_step=6),
        _row("one8", "lora", 8, "one_stage", "pruned", one, pruned_step=4),
    ])  # fmt: skip
    df["rank"] = df["rank"].astype("Int64")
    q = quality_section(df)
    assert q is not None and "LPIPS ds [95% CI]" in q.headers
    col = q.headers.index("ΔLPIPS ds vs full [paired 95% CI]")
    cells = {r[0].split(" [")[0]: r for r in q.rows}
    assert cells["full"][col] == "(baseline)"
    d, lo, hi = paired_interval(one, base, 1000, seed=0)
    assert cells["lora r=4"][col] == f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]" and lo > 0
    assert cells["lora r=4 (two-stage)"][1] == "stopped_plateau @ 6"
    assert cells["lora r=8"][1] == "pruned @ 4"
    r = recipe_section(df)
    assert r is not None
    ranks = [row[1] for row in r.rows]
    assert ranks == ["4", "4", ""]  # rank 8 has one recipe only: not compared
    diff = r.rows[2]
    lcol = r.headers.index("lpips/ds")
    d2, lo2, hi2 = paired_interval(two, one, 1000, seed=0)
    assert diff[2] == "two-stage − one-stage" and hi2 < 0
    assert diff[lcol] == f"{d2:+.3g} [{lo2:+.3g}, {hi2:+.3g}]"
    assert diff[r.headers.index("fvd/ds")] == "+0"  # plain difference, no per-clip values
    assert status_text(pd.Series({"status": "completed"})) == "completed"
    assert recipe_section(df[df["recipe"] == "one_stage"]) is None
