"""Does fine-tuning measurably matter in the embedded world? Runs the demo's arms (the
untrained base, LoRA ranks, full fine-tuning) through the project's own pieces (world,
datasets, latent precompute, adapters, the one training loop, the evaluator's sampling and
detector) without tracking or pruning, and prints the issue-11 checks:

1. every fine-tune has a lower final FVD than the untrained base, beyond the paired interval
   (bootstrap of the FVD difference resampling the same real and generated clip indices);
2. full and the best rank are separated from the worst rank beyond the paired interval;
3. Spearman(final val loss, final FVD) over the ranks and full >= 0.7;
4. over --seeds training seeds, the same rank (or one tied with it) wins >= 4/5;
plus the world build time and the time of each arm.

    python benchmarks/bench_world.py                       # demo scale (slow on 2 cores)
    python benchmarks/bench_world.py --steps 60 --ranks 4,64 --seeds 1   # quick look
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
log = logging.getLogger("bench_world")


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rank_sweep.config import register_configs
    from rank_sweep.paths import CONF_DIR

    os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO))
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def paired_diff_ci(real, fa, fb, n_boot: int, seed: int) -> tuple[float, float, float]:
    """FVD(a) - FVD(b) and its 95% percentile interval, resampling the same real and the
    same generated clip indices for both arms (clip i of every arm shares frame and noise)."""
    from rank_sweep.eval.metrics import fvd_from_features as fvd

    rng = np.random.default_rng(seed)
    vals = np.empty(n_boot)
    for b in range(n_boot):
        ir = rng.integers(0, len(real), len(real))
        jf = rng.integers(0, len(fa), len(fa))
        vals[b] = fvd(real[ir], fa[jf]) - fvd(real[ir], fb[jf])
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return fvd(real, fa) - fvd(real, fb), float(lo), float(hi)


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def run_seed(args, seed: int, ranks: list[int]) -> dict:
    from rank_sweep.data import build_dataset
    from rank_sweep.eval.evaluator import Evaluator
    from rank_sweep.eval.metrics import fvd_from_features
    from rank_sweep.model.adapters import apply_finetune
    from rank_sweep.model.precompute import cache_key, precompute
    from rank_sweep.model.spec import WanSpec, forward_batch
    from rank_sweep.paths import cache_dir
    from rank_sweep.train.loop import train

    overrides = [
        "+experiment=demo", "track=off", "prune=none", f"model.world={args.preset}",
        f"train.seed={seed}", f"train.steps={args.steps}", "train.checkpoint_every=0",
        f"eval.num_real={args.clips}", f"eval.num_fake={args.clips}",
    ]  # fmt: skip
    cfg = compose(overrides)
    d = cfg.data
    size = dict(frames=int(d.frames), height=int(d.height), width=int(d.width))
    train_set = build_dataset(d, d.train_split, train=True, seed=seed, **size)
    val_set = build_dataset(d, d.eval_split, train=False, max_clips=cfg.train.val_clips, **size)
    eval_frames = max(int(cfg.eval.sample_frames or d.frames), int(cfg.eval.frames))
    eval_set = build_dataset(
        d, d.eval_split, train=False, max_clips=args.clips, **dict(size, frames=eval_frames)
    )
    spec = WanSpec.from_config(cfg.model, device=torch.device("cpu"))
    spec.load_encoders()
    lat = cache_dir() / "latents"
    train_pre = precompute(
        spec, train_set, lat / cache_key(spec.path, train_set.fingerprint(), **size)
    )
    val_pre = precompute(spec, val_set, lat / cache_key(spec.path, val_set.fingerprint(), **size))
    ev = Evaluator(cfg, spec, eval_set, torch.device("cpu"))
    ev.prepare()
    spec.free_encoders()
    real = ev.real["video"]
    det = ev.detectors["video"]
    frames = int(cfg.eval.frames)

    arms: dict[str, dict] = {}
    plan = [("base", None)] + [(f"lora r{r}", r) for r in ranks] + [("full", "full")]
    for name, what in plan:
        t0 = time.perf_counter()
        tr = spec.load_transformer()
        val_loss = None
        if what is not None:
            # the arm's own composed config: finetune group (lr) and rank, as a sweep job
            arm = ["finetune=full"] if what == "full" else [f"lora.rank={what}"]
            acfg = compose(overrides + arm)
            apply_finetune(tr, str(acfg.finetune.method), acfg.lora)
            lr = float(acfg.finetune.lr) * float(acfg.train.lr_scale)
            with tempfile.TemporaryDirectory() as sd:
                res = train(tr, train_pre, acfg.train, lr=lr, state_dir=Path(sd),
                            forward_fn=forward_batch, shift=float(cfg.model.flow_shift),
                            val_set=val_pre, eval_every=0)  # fmt: skip
            val_loss = res.final_val_loss
        clips = ev.generate(tr)
        feats = det.features(clips[:, :frames])
        arms[name] = {
            "feats": feats, "val_loss": val_loss, "fvd": fvd_from_features(real, feats),
            "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        log.info("seed %d %-8s FVD %.3f val %s (%.0f s)", seed, name, arms[name]["fvd"],
                 val_loss, arms[name]["seconds"])  # fmt: skip
    return {"real": real, "arms": arms}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--steps", type=int, default=240)
    p.add_argument("--ranks", default="4,8,16,32,64")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--clips", type=int, default=24)
    p.add_argument("--boot", type=int, default=200)
    p.add_argument("--json", type=Path, default=None, help="write the numbers here too")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    from rank_sweep.world import ensure_world

    t0 = time.perf_counter()
    world = ensure_world(args.preset, 0)
    build_s = time.perf_counter() - t0
    info = world.info()
    print(f"world {world.fingerprint} ({args.preset}): ready in {build_s:.1f} s "
          f"(build itself {info['timings_s']['total_s']} s); metrics {info['metrics']}")  # fmt: skip
    ranks = [int(r) for r in args.ranks.split(",")]
    out: dict = {"world": info["fingerprint"], "build_s": info["timings_s"], "seeds": []}
    winners = []
    for seed in range(args.seeds):
        t = time.perf_counter()
        res = run_seed(args, seed, ranks)
        real, arms = res["real"], res["arms"]
        base = arms["base"]["feats"]
        print(f"\n== seed {seed} ({time.perf_counter() - t:.0f} s) ==")
        print(f"{'arm':10s} {'val loss':>9s} {'FVD':>8s}  FVD - base [95% paired CI]")
        rows = {}
        for name, a in arms.items():
            diff = (
                paired_diff_ci(real, a["feats"], base, args.boot, seed) if name != "base" else None
            )
            rows[name] = {"fvd": a["fvd"], "val_loss": a["val_loss"], "vs_base": diff,
                          "seconds": round(a["seconds"], 1)}  # fmt: skip
            vl = f"{a['val_loss']:.4f}" if a["val_loss"] is not None else "-"
            ds = (
                f"{diff[0]:+.3f} [{diff[1]:+.3f}, {diff[2]:+.3f}]"
                if diff
                else "(base, no fine-tune)"
            )
            print(f"{name:10s} {vl:>9s} {a['fvd']:8.3f}  {ds}")
        tuned = [n for n in arms if n != "base"]
        beat = all(rows[n]["vs_base"][2] < 0 for n in tuned)
        lora = [n for n in tuned if n != "full"]
        best = min(lora, key=lambda n: arms[n]["fvd"])
        worst = max(lora, key=lambda n: arms[n]["fvd"])
        sep = {
            n: paired_diff_ci(real, arms[n]["feats"], arms[worst]["feats"], args.boot, seed)
            for n in ("full", best) if n != worst
        }  # fmt: skip
        rho = spearman([arms[n]["val_loss"] for n in tuned], [arms[n]["fvd"] for n in tuned])
        tied = [n for n in lora if n == best or paired_diff_ci(
            real, arms[n]["feats"], arms[best]["feats"], args.boot, seed)[1] <= 0]  # fmt: skip
        winners.append((best, tied))
        print(f"every fine-tune beats the base beyond its paired CI: {beat}")
        for n, (dv, lo, hi) in sep.items():
            print(f"{n} vs worst ({worst}): {dv:+.3f} [{lo:+.3f}, {hi:+.3f}] separated={hi < 0}")
        print(f"Spearman(val loss, FVD) over ranks+full: {rho:.2f}")
        print(f"winner {best}; tied with it: {tied}")
        out["seeds"].append({"seed": seed, "rows": rows, "beat_base": beat, "rho": rho,
                             "best": best, "worst": worst, "tied": tied,
                             "sep": {k: list(v) for k, v in sep.items()}})  # fmt: skip
    if winners:
        from collections import Counter

        modal = Counter(w for w, _ in winners).most_common(1)[0][0]
        agree = sum(1 for w, tied in winners if w == modal or modal in tied)
        print(
            f"\nwinner agreement over {len(winners)} seeds: {modal} (or tied) wins {agree}/{len(winners)}"
        )
        out["winner"], out["agreement"] = modal, f"{agree}/{len(winners)}"
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
