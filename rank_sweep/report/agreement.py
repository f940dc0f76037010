"""Does the metric the sweep prunes by track the one it is judged by?

Every rung compares the runs on validation loss (cheap, per item, paired); the report ranks
them on final FVD. Where the two disagree, pruning can drop a rank FVD would have kept, so
the report says how far they agree over the runs that reached the final eval:

- Spearman(final validation loss, final FVD) over the fine-tunes (ranks and full);
- of the pairs of runs whose FVDs the paired 95% interval separates, how many the loss
  orders the same way (Spearman also scores runs FVD cannot tell apart, where the order is
  a coin toss; these pairs are where a loss-ranked sweep could truly contradict FVD);
- whether the rank with the lowest loss (what a loss-ranked sweep ends with) is tied with
  the rank FVD puts first (full fine-tuning is a reference, not a candidate).

Runs pruned before the final eval have no final FVD: with pruning on, this reads the
survivors only (`prune=none` reads the whole grid). In the embedded world the two metrics
disagree systematically on some pairs (full fine-tuning vs the largest ranks; RESULTS.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rank_sweep.report.table import arm_name, is_base
from rank_sweep.track import contract as C

LEVEL = 0.95


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation with tied values sharing their mean rank; nan below 3 points or when
    either side is constant (no order to compare)."""
    from scipy.stats import rankdata

    if len(a) != len(b):
        raise ValueError(f"spearman needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 3:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    if np.ptp(ra) == 0 or np.ptp(rb) == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def loss_pick(lora: list[str], rows: dict) -> str | None:
    """The rank a sweep ranked by validation loss ends with (lowest final loss; full is a
    reference, never a candidate); None when no rank has a loss."""
    scored = [n for n in lora if rows[n]["val_loss"] is not None]
    return min(scored, key=lambda n: rows[n]["val_loss"]) if scored else None


def separated_pairs(tuned: list[str], rows: dict, reps: np.ndarray, level: float = LEVEL) -> dict:
    """Pairs of runs (columns of `reps`, shared-resample FVD replicates) whose final FVDs the
    paired interval tells apart, and how many of them validation loss orders alike."""
    from rank_sweep.eval.stats import paired_delta

    sep, agree, against = 0, 0, []
    for i, a in enumerate(tuned):
        for k, b in enumerate(tuned[i + 1 :], start=i + 1):
            if None in (rows[a]["val_loss"], rows[b]["val_loss"]):
                continue
            ci = paired_delta(rows[a]["fvd"], rows[b]["fvd"], reps[:, i], reps[:, k], level)
            if ci.lo <= 0 <= ci.hi:
                continue
            sep += 1
            if (rows[a]["val_loss"] < rows[b]["val_loss"]) == (ci.point < 0):
                agree += 1
            else:
                against.append(f"{a} vs {b}")
    return {"separated": sep, "agree": agree, "against": against}


@dataclass
class Agreement:
    dataset: str
    runs: list[str]  # the fine-tunes read (completed, with a final FVD and a loss)
    rho: float
    separated: int
    agree: int
    against: list[str] = field(default_factory=list)
    pick: str | None = None  # lowest validation loss among the ranks
    pick_tied: bool | None = None  # is its FVD tied with the best rank's (paired interval)?
    unread: int = 0  # fine-tunes without a final FVD or loss (pruned, failed, running)


def agreement(
    df: pd.DataFrame, feats: dict, ds: str, *, n_boot: int = 200, seed: int = 0
) -> Agreement | None:
    """The agreement of validation loss and FVD on `ds` over the pairable completed runs of
    `df` (after `paired.add_paired`, whose resamples this repeats: same spec, same draws)."""
    from rank_sweep.eval.stats import paired_delta
    from rank_sweep.report.paired import pairable_rows, replicates

    col = f"fvd/{ds}"
    if col not in df or "val_loss" not in df:
        return None
    pairable, _ = pairable_rows(df, feats, ds, "fvd")
    keep = [
        i for i in pairable
        if not is_base(df.loc[i]) and df.at[i, "status"] == "completed"
        and pd.notna(df.at[i, "val_loss"])
    ]  # fmt: skip
    if len(keep) < 3:
        return None
    names = [arm_name(df.loc[i]) for i in keep]
    if len(set(names)) < len(names):  # several runs of a setting (seeds): tell them apart
        names = [f"{n} ({_which(df.loc[i])})" for n, i in zip(names, keep)]
    rows = {
        n: {"fvd": float(df.at[i, col]), "val_loss": float(df.at[i, "val_loss"])}
        for n, i in zip(names, keep)
    }
    ids = [str(df.at[i, "run_id"]) for i in keep]
    reps = replicates(df, feats, "fvd", ds, ids, n_boot=n_boot, seed=seed, level=LEVEL)
    pairs = separated_pairs(names, rows, reps)
    lora = [n for n, i in zip(names, keep) if df.at[i, "method"] == C.METHOD_LORA]
    pick = loss_pick(lora, rows)
    pick_tied = None
    if pick is not None:  # against the best *rank*: full is a reference, never a pick
        best = min(lora, key=lambda n: rows[n]["fvd"])
        k, b = names.index(pick), names.index(best)
        ci = paired_delta(rows[pick]["fvd"], rows[best]["fvd"], reps[:, k], reps[:, b], LEVEL)
        pick_tied = not ci.excludes_zero
    return Agreement(
        dataset=ds,
        runs=names,
        rho=spearman([rows[n]["val_loss"] for n in names], [rows[n]["fvd"] for n in names]),
        separated=pairs["separated"],
        agree=pairs["agree"],
        against=pairs["against"],
        pick=pick,
        pick_tied=pick_tied,
        unread=sum(not is_base(r) for _, r in df.iterrows()) - len(keep),
    )


def _which(r: pd.Series) -> str:
    seed = r.get("seed")
    return f"seed {int(seed)}" if seed is not None and pd.notna(seed) else str(r["run_id"])[:8]


def sections(df: pd.DataFrame, feats: dict) -> tuple[list, list[str]]:
    """(report sections, warnings): one table over the datasets with FVD, and a warning where
    the loss's pick is not tied with FVD's best rank (pruning by the loss would miss it)."""
    from rank_sweep.report.extra import Section

    datasets = sorted(c.split("/", 1)[1] for c in df.columns if c.startswith("fvd/"))
    found = [a for ds in datasets if (a := agreement(df, feats, ds)) is not None]
    if not found:
        return [], []
    headers = [
        "dataset", "runs read", "Spearman(val loss, FVD)",
        "FVD-separated pairs ordered alike by val loss", "ordered the other way",
        "lowest val loss (ranks)", "tied with the best rank's FVD",
    ]  # fmt: skip
    rows, warnings = [], []
    for a in found:
        rho = "–" if math.isnan(a.rho) else f"{a.rho:.2f}"
        tied = "–" if a.pick_tied is None else ("yes" if a.pick_tied else "no")
        rows.append([a.dataset, str(len(a.runs)), rho, f"{a.agree}/{a.separated}",
                     "; ".join(a.against) or "none", a.pick or "–", tied])  # fmt: skip
        if a.pick_tied is False:
            warnings.append(
                f"{a.dataset}: the rank with the lowest validation loss ({a.pick}) has a worse "
                "FVD than the best rank beyond the paired interval: the rungs rank by the "
                "loss, so pruning can keep a rank FVD rejects; see 'Validation loss vs final FVD'"
            )
    unread = max(a.unread for a in found)
    note = (
        "Rungs rank runs by validation loss; the sweep is judged on final FVD. Pairs count only "
        f"differences FVD resolves (paired {LEVEL:.0%} interval over the shared clips), so "
        "they show where a loss-ranked sweep can contradict FVD; Spearman also scores runs FVD "
        "cannot tell apart."
    )
    if unread:
        note += (
            f" {unread} fine-tune(s) without a final FVD or loss (pruned, failed or running) "
            "are not read: with pruning this covers the survivors; prune=none reads the grid."
        )
    return [Section("Validation loss vs final FVD", headers, rows, note)], warnings
