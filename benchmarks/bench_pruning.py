"""Does synchronous successive halving make the rank sweep cheaper without changing its answer?

On the embedded world (tiny Wan I2V, synthetic videos, CPU) and for every seed, the same
rank sweep runs twice through the project's sweeper, each from fresh job state:
`prune=none` (the full grid) and `prune=sha` (rungs at fractions of train.steps, eta).
Both write `decisions.json`; from them this prints per seed

- training steps of the sweeper vs the grid (an arm pruned at a rung trained up to that
  rung's step, then nothing: paused jobs resume, never retrain);
- whether the grid has a separable winner (its final tied-with-best set is one rank) and
  whether the sweeper's pick is in the grid's tied-with-best set;
- regret: the grid's final metric of the sweeper's pick minus the grid's best (the final
  paired per-item validation loss, the metric both the grid and the sweeper rank by);

and, for one seed, whether the decisions are identical with the rank list reversed and
under the joblib launcher (n_jobs=2), each again from fresh state.

    python benchmarks/bench_pruning.py [--seeds 0 1 2 3 4] [--ranks 1,2,4,8,16] [--steps 24]
        [--override eval.num_fake=4 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFS = ("full", "base")
# The demo's arms (experiments/experiment/demo.yaml) without its sweep params: target
# domain data, alpha = 2 x rank; `--no-demo` runs the plain embedded default instead.
DEMO = [
    "data.synth.domain=target",
    "data.synth.videos_per_class=96",
    "data.max_train_clips=64",
    "lora=ratio",
]


@dataclass
class SweepResult:
    doc: dict
    steps: int
    wall_s: float


def run_sweep(work: Path, name: str, args: argparse.Namespace, *extra: str) -> SweepResult:
    """One sweep from fresh job state and its own MLflow store (so no finished run of
    another sweep is reused: every step counted here was trained by this sweep)."""
    cmd = [
        sys.executable, "-m", "rank_sweep", "-m", f"lora.rank={args.ranks}",
        f"train.steps={args.steps}", f"eval.every={args.steps}", f"train.checkpoint_every={args.steps}",
        f"train.val_clips={args.val_clips}", f"prune.eta={args.eta}",
        f"prune.rungs=[{','.join(str(r) for r in args.rungs)}]", "track.system_metrics=false",
        "track.log_artifacts=false", f"track.uri=sqlite:///{work}/mlflow-{name}.db",
        f"prune.storage=sqlite:///{work}/optuna.db", f"hydra.sweep.dir={work}/multirun/{name}",
        f"state_dir={work}/jobs/{name}", f"sweep_name=bench-{name}",
        *(DEMO if args.demo else []), *args.override, *extra,
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sweep {name} failed:\n{proc.stderr[-4000:]}")
    doc = json.loads((work / "multirun" / name / "decisions.json").read_text())
    res = SweepResult(doc, trained_steps(doc, args.steps), time.time() - t0)
    print(f"  {name}: {res.wall_s:.0f} s, {res.steps} steps", flush=True)
    return res


def trained_steps(doc: dict, budget: int) -> int:
    """Steps each ranked arm trained: the step of the rung that pruned it, else the budget
    (the references, full fine-tune and untrained base, are never ranked)."""
    arms = [a for a in doc["arms"] if a not in doc.get("baselines", {}) and a not in REFS]
    pruned_at = {k: r["step"] for r in doc["rungs"] for k in r["pruned"]}
    return sum(pruned_at.get(a, budget) for a in arms)


def outcome(doc: dict) -> list:
    rungs = [(r["step"], r["kept"], r["pruned"]) for r in doc["rungs"]]
    return [rungs, doc["final"]["best"], doc["final"]["tied_with_best"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--ranks", default="1,2,4,8,16")  # the demo's grid
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--rungs", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    ap.add_argument("--eta", type=int, default=2)
    ap.add_argument("--val-clips", type=int, default=4, help="validation clips (items x 5 sigmas)")
    ap.add_argument(
        "--order-seed", type=int, default=None, help="seed for the order/launcher check"
    )
    ap.add_argument("--override", nargs="*", default=[], help="more overrides for every sweep")
    ap.add_argument("--no-demo", dest="demo", action="store_false", help="not the demo's arms")
    ap.add_argument("--work", type=Path, default=None, help="keep everything here (default: temp)")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    order_seed = args.seeds[0] if args.order_seed is None else args.order_seed
    with tempfile.TemporaryDirectory(prefix="bench_pruning_") as tmp:
        work = args.work or Path(tmp)
        os.environ.setdefault("RANK_SWEEP_CACHE", str(work / "cache"))  # shared model/data/latents
        rows, same = [], []
        for seed in args.seeds:
            s = f"train.seed={seed}"
            grid = run_sweep(work, f"none-s{seed}", args, "prune=none", s)
            sha = run_sweep(work, f"sha-s{seed}", args, "prune=sha", s)
            final = grid.doc["final"]
            pick = sha.doc["final"]["best"]
            regret = final["arms"][pick]["mean"] - final["arms"][final["best"]]["mean"]
            rows.append(
                {
                    "seed": seed,
                    "sha_steps": sha.steps,
                    "grid_steps": grid.steps,
                    "separable": len(final["tied_with_best"]) == 1,
                    "first_rung_pruned": bool(sha.doc["rungs"] and sha.doc["rungs"][0]["pruned"]),
                    "grid_best": final["best"],
                    "grid_tied": final["tied_with_best"],
                    "pick": pick,
                    "pick_tied": pick in final["tied_with_best"],
                    "regret": regret,
                }
            )
            r = rows[-1]
            print(
                f"seed {seed}: steps {r['sha_steps']}/{r['grid_steps']} "
                f"({r['sha_steps'] / r['grid_steps']:.2f}); grid best {r['grid_best']} tied "
                f"{r['grid_tied']}; sha pick {pick} (in tied set: {r['pick_tied']}); "
                f"regret {regret:+.5f}; pruned "
                f"{[(d['step'], d['pruned']) for d in sha.doc['rungs']]}",
                flush=True,
            )
            if seed == order_seed:
                rev = ",".join(reversed(args.ranks.split(",")))
                flip = argparse.Namespace(**{**vars(args), "ranks": rev})
                reversed_ = run_sweep(work, f"sha-rev-s{seed}", flip, "prune=sha", s)
                joblib = run_sweep(
                    work, f"sha-joblib-s{seed}", args, "prune=sha", s,
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                )  # fmt: skip
                same = [outcome(x.doc) == outcome(sha.doc) for x in (reversed_, joblib)]
    sep = [r for r in rows if r["separable"]]
    cut = [r for r in rows if r["first_rung_pruned"]]
    total_sha = sum(r["sha_steps"] for r in rows)
    total_grid = sum(r["grid_steps"] for r in rows)
    print()
    print(
        f"decisions identical with the rank list reversed: {same[0]}, under joblib n_jobs=2: {same[1]}"
    )
    print(
        f"seeds where the grid has a separable winner: {len(sep)}/{len(rows)}; sweeper's pick "
        f"in the grid's tied-with-best set on {sum(r['pick_tied'] for r in sep)}/{len(sep)} of them "
        f"(all seeds: {sum(r['pick_tied'] for r in rows)}/{len(rows)})"
    )
    print(f"regret (final val loss, pick - grid best): max {max(r['regret'] for r in rows):.5f}")
    if cut:
        ratio_cut = sum(r["sha_steps"] for r in cut) / sum(r["grid_steps"] for r in cut)
        print(
            f"steps ratio on the {len(cut)} seed(s) where a rank separated at the first rung: {ratio_cut:.3f}"
        )
    print(f"total training steps: sha {total_sha} / grid {total_grid}")
    print(
        f"ratio (goal <= 0.6 when a rank separates at the first rung): {total_sha / max(total_grid, 1):.3f}"
    )


if __name__ == "__main__":
    main()
