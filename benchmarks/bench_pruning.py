"""Does Optuna pruning make the sweep cheaper without changing its answer?

Runs the same small embedded-default sweep (ranks 4..64, tiny Wan, synthetic data, CPU)
with prune=none and prune=asha for 3 seeds, each into fresh SQLite stores, then prints
the total training steps with pruning / without and whether the best rank by final FVD is
the same. Goal: ratio <= 0.5 with the same winner. Ratio printed last.

    python benchmarks/bench_pruning.py [--seeds 0 1 2] [--ranks 4,8,16,32,64] [--steps 24]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from rank_sweep.track import contract as C

REPO = Path(__file__).resolve().parent.parent


def run_sweep(work: Path, pruner: str, seed: int, ranks: str, steps: int, every: int) -> Path:
    name = f"bench-{pruner}-s{seed}"
    cmd = [
        sys.executable, "-m", "rank_sweep", "-m",
        f"lora.rank={ranks}", f"prune={pruner}", f"train.seed={seed}", f"sweep_name={name}",
        f"train.steps={steps}", f"eval.every={every}", "train.checkpoint_every=1000",
        "prune.min_resource=1", "prune.reduction_factor=3", "track.system_metrics=false",
        f"track.uri=sqlite:///{work}/mlflow.db", f"prune.storage=sqlite:///{work}/optuna.db",
        f"hydra.sweep.dir={work}/multirun/{name}", f"state_dir={work}/jobs",
    ]  # fmt: skip
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sweep {name} failed:\n{proc.stderr[-4000:]}")
    print(f"  {name}: {time.time() - t0:.0f} s", flush=True)
    return work


def summarize(uri: str, sweep_prefix: str) -> tuple[int, int | None, dict[int, str]]:
    """(total training steps, best rank by final FVD among completed runs, status by rank)."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("rank_sweep")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [
        r
        for r in runs
        if r.data.tags.get(C.TAG_SWEEP_ID, "").startswith(sweep_prefix + "-")
        and r.data.tags.get(C.TAG_ROLE) != "sweep"
    ]
    steps = sum(int(r.data.metrics.get("train/steps_done", 0)) for r in children)
    completed = [r for r in children if r.data.tags.get(C.TAG_STATUS) == "completed"]
    best = min(completed, key=lambda r: r.data.metrics["fvd/synthetic"], default=None)
    status = {int(r.data.tags[C.TAG_LORA_RANK]): r.data.tags[C.TAG_STATUS] for r in children}
    return steps, (int(best.data.tags[C.TAG_LORA_RANK]) if best else None), status


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ranks", default="4,8,16,32,64")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--every", type=int, default=4, help="eval (and ASHA rung) interval")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    total = {"none": 0, "asha": 0}
    same = []
    with tempfile.TemporaryDirectory(prefix="bench_pruning_") as tmp:
        work = Path(tmp)
        # Every job shares the cache (tiny model, synthetic data, latents, real features).
        os.environ.setdefault("RANK_SWEEP_CACHE", str(work / "cache"))
        for seed in args.seeds:
            winners = {}
            for pruner in ("none", "asha"):
                run_sweep(work, pruner, seed, args.ranks, args.steps, args.every)
                steps, best, status = summarize(
                    f"sqlite:///{work}/mlflow.db", f"bench-{pruner}-s{seed}"
                )
                total[pruner] += steps
                winners[pruner] = best
                print(
                    f"seed {seed} prune={pruner:4s}: steps={steps:4d} best rank={best} status={status}"
                )
            same.append(winners["none"] == winners["asha"])
    print(f"same winner in {sum(same)}/{len(same)} seeds")
    print(f"total training steps: asha {total['asha']} / none {total['none']}")
    print(f"ratio (goal <= 0.5): {total['asha'] / max(total['none'], 1):.3f}")


if __name__ == "__main__":
    main()
