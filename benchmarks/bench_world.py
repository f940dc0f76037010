"""Does fine-tuning measurably matter in the embedded world? Runs the demo sweep through the
real CLI (`python -m rank_sweep -m +experiment=demo`: world, jobs, sweeper, MLflow, the
final tier) into a private store, reads it back with the report's own loader and paired
bootstrap, and prints the issue-11 checks:

1. on the demo sweep (pruned as `make demo` prunes): every completed fine-tune has a lower
   final FVD than the untrained base ("base, no fine-tune") beyond the paired interval;
2. without pruning (`prune=none`), per training seed: full fine-tuning and the best rank are
   separated from the worst rank beyond the paired interval;
3. Spearman(final validation loss, final FVD) over the ranks and full >= 0.7;
4. over --seeds training seeds, the same rank (or one tied with it) wins >= 4/5;
plus the world build time and each sweep's wall time.

Paired intervals are the report's (`report/paired.py`): one bootstrap of the real and the
generated clip indices shared by all runs of a sweep, centred on the point difference.

    python benchmarks/bench_world.py                     # demo sweep + 5 unpruned seeds
    python benchmarks/bench_world.py --seeds 1 --steps 60   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from rank_sweep.report.agreement import loss_pick, separated_pairs, spearman  # noqa: E402


def seed_mean_spearman(seeds: list[dict]) -> tuple[float, dict[str, tuple[float, float]]]:
    """Spearman over the arms' seed means of (val loss, FVD): ranks 16..64 often sit within
    one FVD interval of each other, so one seed's order among them is partly noise; the
    means over training seeds say whether the two metrics order the arms alike."""
    arms = [n for n in seeds[0]["rows"] if not n.startswith("base")]
    arms = [n for n in arms if all(n in s["rows"] and s["rows"][n]["val_loss"] is not None
                                   for s in seeds)]  # fmt: skip
    means = {n: (float(np.mean([s["rows"][n]["val_loss"] for s in seeds])),
                 float(np.mean([s["rows"][n]["fvd"] for s in seeds]))) for n in arms}  # fmt: skip
    if len(arms) < 3:
        return float("nan"), means
    return spearman([v for v, _ in means.values()], [f for _, f in means.values()]), means


def run_sweep(tmp: Path, name: str, extra: list[str]) -> float:
    """The demo sweep through the CLI into `tmp`'s own stores; returns its wall seconds."""
    cmd = [
        sys.executable, "-m", "rank_sweep", "-m", "+experiment=demo", f"sweep_name={name}",
        f"track.uri=sqlite:///{tmp}/mlflow.db", f"prune.storage=sqlite:///{tmp}/optuna.db",
        f"hydra.sweep.dir={tmp}/multirun/{name}", f"state_dir={tmp}/jobs", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    with open(tmp / f"{name}.log", "w") as logf:
        proc = subprocess.run(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"sweep {name} failed (exit {proc.returncode}); log: {tmp}/{name}.log")
    return time.perf_counter() - t0


def analyse(tmp: Path, name: str, boot: int) -> dict:
    """The sweep's runs with the report's paired columns, plus worst-rank separation."""
    from rank_sweep.eval.stats import paired_delta
    from rank_sweep.report import load_runs
    from rank_sweep.report.paired import add_paired, artifact_owners, download_features, replicates
    from rank_sweep.report.table import arm_name

    uri = f"sqlite:///{tmp}/mlflow.db"
    df = load_runs(uri, sweep_id=_sweep_id(uri, name), borrow_baseline=False)
    feats = download_features(uri, list(df["run_id"]), artifact_owners(df))
    df, _ = add_paired(df, feats, n_boot=boot)
    ds = "synthetic"
    col = f"fvd/{ds}"
    done = df[(df["status"] == "completed") & df[col].notna()]
    rows = {}
    for _, r in done.iterrows():
        rows[arm_name(r)] = {
            "fvd": float(r[col]),
            "val_loss": None if np.isnan(r["val_loss"]) else float(r["val_loss"]),
            "vs_base": [float(r.get(f"pdelta_fvd_base{s}/{ds}", np.nan)) for s in ("", "_lo", "_hi")],
            "tied_best": bool(r.get(f"tied_best_fvd/{ds}", False)),
            "kid": float(r.get(f"kid/{ds}", np.nan)),
            "kid_vs_base": [float(r.get(f"pdelta_kid_base{s}/{ds}", np.nan)) for s in ("", "_lo", "_hi")],
            "run_id": r["run_id"],
        }  # fmt: skip
    tuned = [n for n in rows if not n.startswith("base")]
    lora = [n for n in tuned if n.startswith("lora")]
    out = {"rows": rows, "pruned": sorted(arm_name(r) for _, r in df.iterrows()
                                          if r["status"] == "pruned")}  # fmt: skip
    out["beat_base"] = all(rows[n]["vs_base"][2] < 0 for n in tuned)
    # KID (frame detector) must order the runs as FVD (video detector) does: a random-init
    # Inception scored the untrained base best here (RESULTS.md, session 7)
    out["kid_beat_base"] = all(rows[n]["kid_vs_base"][2] < 0 for n in tuned)
    arms = [n for n in rows if not np.isnan(rows[n]["kid"])]
    out["rho_kid_fvd"] = (spearman([rows[n]["kid"] for n in arms], [rows[n]["fvd"] for n in arms])
                          if len(arms) > 2 else float("nan"))  # fmt: skip
    out["rho_kid_fvd_tuned"] = (
        spearman([rows[n]["kid"] for n in tuned], [rows[n]["fvd"] for n in tuned])
        if len(tuned) > 2 and set(tuned) <= set(arms) else float("nan")
    )  # fmt: skip
    if lora:
        best = min(lora, key=lambda n: rows[n]["fvd"])
        worst = max(lora, key=lambda n: rows[n]["fvd"])
        # worst-rank separation: the same shared-resample bootstrap as the report's columns
        ids = [rows[n]["run_id"] for n in tuned]
        reps = replicates(df, feats, "fvd", ds, ids, n_boot=boot)  # add_paired's own draws
        k_w = tuned.index(worst)
        sep = {}
        for n in {"full", best} - {worst}:
            if n not in tuned:
                continue
            k = tuned.index(n)
            ci = paired_delta(rows[n]["fvd"], rows[worst]["fvd"], reps[:, k], reps[:, k_w], 0.95)
            sep[n] = [ci.point, ci.lo, ci.hi]
        vals = [rows[n]["val_loss"] for n in tuned]
        rho = (
            spearman(vals, [rows[n]["fvd"] for n in tuned])
            if None not in vals and len(tuned) > 2
            else float("nan")
        )
        # ranks tied with the best rank (the report's tied set is against the best run,
        # which may be full fine-tuning)
        k_b = tuned.index(best)
        tied = sorted(
            n for n in lora
            if paired_delta(rows[n]["fvd"], rows[best]["fvd"], reps[:, tuned.index(n)],
                            reps[:, k_b], 0.95).lo <= 0
        )  # fmt: skip
        pairs = separated_pairs(tuned, rows, reps)
        vbest = loss_pick(lora, rows)
        out.update(best=best, worst=worst, sep=sep, rho=rho, tied=tied, pairs=pairs,
                   vbest=vbest, vbest_tied=vbest in tied)  # fmt: skip
    return out


def _sweep_id(uri: str, name: str) -> str:
    from mlflow.tracking import MlflowClient

    from rank_sweep.track import contract as C

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rank_sweep")
    runs = client.search_runs([exp.experiment_id], f"tags.`{C.TAG_ROLE}` = 'sweep'")
    ids = [r.data.tags[C.TAG_SWEEP_ID] for r in runs if name in r.data.tags[C.TAG_SWEEP_ID]]
    return ids[0]


def show(title: str, res: dict, seconds: float) -> None:
    print(f"\n== {title} ({seconds:.0f} s) ==")
    print(f"{'run':22s} {'val loss':>9s} {'FVD':>8s}  {'FVD - base [paired 95% CI]':28s} "
          f"{'KID':>8s}  KID - base [paired 95% CI]")  # fmt: skip
    for n, r in res["rows"].items():
        vl = "-" if r["val_loss"] is None else f"{r['val_loss']:.4f}"
        cells = [
            "(reference)" if n.startswith("base") else f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]"
            for d in (r["vs_base"], r.get("kid_vs_base", [np.nan] * 3))
        ]
        print(f"{n:22s} {vl:>9s} {r['fvd']:8.2f}  {cells[0]:28s} {r.get('kid', np.nan):8.3f}  "
              f"{cells[1]}")  # fmt: skip
    if res["pruned"]:
        print(f"pruned: {', '.join(res['pruned'])}")
    print(f"every completed fine-tune beats the base beyond its paired CI: {res['beat_base']}")
    if "kid_beat_base" in res:
        print(f"... on KID too: {res['kid_beat_base']}; Spearman(KID, FVD) over every run "
              f"{res['rho_kid_fvd']:.2f}, over the fine-tunes {res['rho_kid_fvd_tuned']:.2f}")  # fmt: skip
    for n, (d, lo, hi) in res.get("sep", {}).items():
        print(f"{n} vs worst ({res['worst']}): {d:+.2f} [{lo:+.2f}, {hi:+.2f}] "
              f"separated={hi < 0}")  # fmt: skip
    if "rho" in res:
        print(f"Spearman(val loss, FVD) over ranks+full: {res['rho']:.2f} (goal >= 0.7)")
        print(f"best {res['best']}; tied with it: {res['tied']}")
        print(
            f"best rank by validation loss: {res['vbest']} "
            f"({'in' if res['vbest_tied'] else 'NOT in'} FVD's tied-best set)"
        )
    if "pairs" in res:
        p = res["pairs"]
        print(f"FVD-separated pairs: {p['separated']}; validation loss orders {p['agree']} of them "
              f"alike{'; not: ' + ', '.join(p['against']) if p['against'] else ''}")  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5, help="unpruned sweeps, train.seed=0..N-1")
    p.add_argument("--steps", type=int, default=None, help="train.steps (default: the demo's)")
    p.add_argument("--boot", type=int, default=200)
    p.add_argument("--skip-pruned", action="store_true", help="only the unpruned seeds")
    p.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    p.add_argument("--keep", type=Path, default=None, help="stores here instead of a temp dir")
    p.add_argument("--analyse-only", action="store_true",
                   help="no sweeps: read the stores a run left in --keep")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra Hydra override for every sweep (repeatable), e.g. "
                        "eval.sample_steps=8: what-if runs of the protocol")  # fmt: skip
    args = p.parse_args()
    os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO))
    from rank_sweep.world import ensure_world

    t0 = time.perf_counter()
    world = ensure_world("demo", 0)
    info = world.info()
    print(f"world {world.fingerprint}: ready in {time.perf_counter() - t0:.1f} s (build itself "
          f"{info['timings_s']['total_s']} s); metrics {info['metrics']}")  # fmt: skip
    extra = ([f"train.steps={args.steps}"] if args.steps else []) + list(args.set)
    out: dict = {"world": info["fingerprint"], "build_s": info["timings_s"], "seeds": []}
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="bench_world-"))
    tmp.mkdir(parents=True, exist_ok=True)

    def sweep(name: str, overrides: list[str]) -> float:
        return 0.0 if args.analyse_only else run_sweep(tmp, name, overrides)

    if not args.skip_pruned:
        s = sweep("pruned", extra)
        res = analyse(tmp, "pruned", args.boot)
        show("demo sweep, pruned (prune=sha), seed 0", res, s)
        out["pruned"] = {**res, "seconds": s}
    winners = []
    for seed in range(args.seeds):
        name = f"grid-s{seed}"
        s = sweep(name, [*extra, "prune=none", f"train.seed={seed}"])
        res = analyse(tmp, name, args.boot)
        show(f"seed {seed}, no pruning", res, s)
        winners.append((res["best"], res["tied"]))
        out["seeds"].append({"seed": seed, **res, "seconds": s})
    if winners:
        modal = Counter(w for w, _ in winners).most_common(1)[0][0]
        agree = sum(1 for w, tied in winners if w == modal or modal in tied)
        seps = sum(all(v[2] < 0 for v in r["sep"].values()) for r in out["seeds"])
        rhos = [round(r["rho"], 2) for r in out["seeds"]]
        mean_rho, means = seed_mean_spearman(out["seeds"])
        print(f"\nover {len(winners)} seeds: {modal} (or tied) wins {agree}/{len(winners)}; "
              f"full and best separated from the worst on {seps}/{len(winners)} seeds; "
              f"Spearman per seed {rhos} ({sum(r >= 0.7 for r in rhos)}/{len(rhos)} >= 0.7)")  # fmt: skip
        print("means over seeds (arm: val loss, FVD): " + ", ".join(
            f"{n}: {v:.4f}, {f:.2f}" for n, (v, f) in means.items()))  # fmt: skip
        print(f"Spearman(mean val loss, mean FVD) over ranks+full: {mean_rho:.2f} (goal >= 0.7)")
        n_sep = sum(r["pairs"]["separated"] for r in out["seeds"])
        n_agree = sum(r["pairs"]["agree"] for r in out["seeds"])
        print(f"over all seeds: {n_sep} FVD-separated pairs, validation loss agrees on {n_agree}")
        n_in = sum(bool(r.get("vbest_tied")) for r in out["seeds"])
        print(
            f"validation loss's best rank is in FVD's tied-best set on {n_in}/{len(winners)} seeds"
        )
        out.update(winner=modal, agreement=f"{agree}/{len(winners)}", separated=seps, rhos=rhos,
                   mean_rho=mean_rho, means=means)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    print(f"stores and logs: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
