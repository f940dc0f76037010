"""Blind A/B votes -> win rates per run with 95% intervals and a Bradley-Terry ranking.

Win rate of a run = (wins + ties/2) / comparisons it took part in; its 95% interval is
Wilson's score interval on that share (ties count half, so it is approximate with ties).
Bradley-Terry strengths p_i (P(i beats j) = p_i / (p_i + p_j)) are fitted with Hunter's
MM iteration on the same half-tie counts plus a 0.5 pseudo-win each way for every pair
that met, which keeps a run that won every vote finite. Strengths are normalised to a
geometric mean of 1; the ranking orders by strength.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Outcome:
    """One comparison as the math needs it: a vs b, score of a in {1, 0.5, 0}."""

    a: str
    b: str
    score_a: float


def outcomes(votes: Sequence) -> list[Outcome]:
    """store.Vote rows -> outcomes (left as a)."""
    table = {"left": 1.0, "right": 0.0, "same": 0.5}
    return [Outcome(v.left_run, v.right_run, table[v.choice]) for v in votes]


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def bradley_terry(
    outs: Sequence[Outcome], prior: float = 0.5, iters: int = 2000, tol: float = 1e-10
) -> dict[str, float]:
    runs = sorted({o.a for o in outs} | {o.b for o in outs})
    idx = {r: i for i, r in enumerate(runs)}
    n = len(runs)
    wins = np.zeros((n, n))  # wins[i, j]: (half-)wins of i over j
    for o in outs:
        i, j = idx[o.a], idx[o.b]
        wins[i, j] += o.score_a
        wins[j, i] += 1.0 - o.score_a
    games = wins + wins.T
    met = games > 0
    wins = wins + prior * met
    games = wins + wins.T
    p = np.ones(n)
    for _ in range(iters):
        denom = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new = np.where(denom > 0, wins.sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
        new = new / math.exp(np.log(new).mean())
        if np.max(np.abs(new - p)) < tol:
            p = new
            break
        p = new
    return {r: float(p[idx[r]]) for r in runs}


def win_table(votes: Sequence, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per run that was voted on, best Bradley-Terry strength first."""
    outs = outcomes(votes)
    cols = ["run_id", "run", "comparisons", "wins", "ties", "losses", "win_rate", "ci_lo",
            "ci_hi", "bt_strength", "bt_rank"]  # fmt: skip
    if not outs:
        return pd.DataFrame(columns=cols)
    strength = bradley_terry(outs)
    rows = []
    for run in strength:
        mine = [(o.score_a if o.a == run else 1 - o.score_a) for o in outs if run in (o.a, o.b)]
        w, t = sum(s == 1.0 for s in mine), sum(s == 0.5 for s in mine)
        score = w + 0.5 * t
        lo, hi = wilson(score, len(mine))
        rows.append({"run_id": run, "run": (labels or {}).get(run, run[:8]),
                     "comparisons": len(mine), "wins": w, "ties": t, "losses": len(mine) - w - t,
                     "win_rate": score / len(mine), "ci_lo": lo, "ci_hi": hi,
                     "bt_strength": strength[run]})  # fmt: skip
    df = pd.DataFrame(rows, columns=cols[:-1]).sort_values("bt_strength", ascending=False)
    df["bt_rank"] = range(1, len(df) + 1)
    return df.reset_index(drop=True)


def display_rows(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    headers = ["BT rank", "run", "comparisons", "wins", "ties", "losses",
               "win rate [95% CI]", "BT strength"]  # fmt: skip
    rows = [
        [str(r.bt_rank), str(r.run), str(r.comparisons), str(r.wins), str(r.ties), str(r.losses),
         f"{r.win_rate:.3f} [{r.ci_lo:.3f}, {r.ci_hi:.3f}]", f"{r.bt_strength:.3g}"]
        for r in table.itertuples()
    ]  # fmt: skip
    return headers, rows
