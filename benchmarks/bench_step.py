"""Training-step overhead of the project's loop against a bare diffusers + peft step, and
step time / peak memory per LoRA rank and for full fine-tuning.

Part 1, same process, same tiny Wan I2V transformer (rank_sweep.model.tiny config), same
batch: the project step is `rank_sweep.train.loop.train` run for --steps optimizer steps
(its own timer: mean of steps after 2 warm-up steps; it includes per-sample seeded noise,
the NaN guard, gradient clipping, the lr schedule, metrics); the bare step is plain AdamW,
forward, MSE, backward, step with inline noise, timed the same way. Repeats interleave the
two; medians are compared. Both: LoRA r=8, micro-batch 1, no accumulation, fp32 on CPU.

Part 2, one fresh subprocess per configuration (peak RSS is a process high-water mark, so
each needs its own process): a wider transformer (dim 256, 2 layers) trained by the loop
for LoRA ranks 4..128 and full; prints step time, peak RSS and the optimizer-state bytes
(trainable params x 16: fp32 weight, grad, Adam m and v).

    .venv/bin/python benchmarks/bench_step.py [--repeats 7] [--steps 12] [--threads 1]

The last line is the ratio project/bare (goal <= 1.10).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # keep the output readable; the bar costs ~us/step

import torch

from rank_sweep.model.spec import forward_batch
from rank_sweep.model.tiny import i2v_transformer_config

TEXT_LEN = 512
WIDE = i2v_transformer_config(
    heads=4, head_dim=64, ffn_dim=1024, text_dim=64, image_dim=64, freq_dim=64
)
RANKS = [4, 8, 16, 32, 64, 128]


def build(config: dict, method: str, rank: int, seed: int = 0) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    from rank_sweep.config.schema import LoraConfig
    from rank_sweep.model.adapters import apply_finetune

    torch.manual_seed(seed)
    model = WanTransformer3DModel(**config)
    apply_finetune(model, method, LoraConfig(rank=rank, alpha=float(rank)))
    return model


def batch_for(config: dict, frames: int, hw: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "latents": torch.randn(16, frames, hw, hw, generator=g),
        "cond": torch.randn(20, frames, hw, hw, generator=g),
        "text_emb": torch.randn(TEXT_LEN, config["text_dim"], generator=g),
        "image_emb": torch.randn(257, config["image_dim"], generator=g),
    }


def recipe(steps: int):
    from rank_sweep.config.schema import TrainConfig

    return TrainConfig(
        steps=steps,
        micro_batch=1,
        grad_accum=1,
        mixed_precision="no",
        activation_checkpointing=False,
        checkpoint_every=0,  # no checkpoint writes inside the timed loop
        log_every=1,
    )


def project_step_time(model: torch.nn.Module, item: dict, steps: int) -> float:
    from rank_sweep.train.loop import train

    with tempfile.TemporaryDirectory() as d:
        res = train(
            model,
            [item],
            recipe(steps),
            lr=1e-4,
            state_dir=Path(d),
            forward_fn=forward_batch,
            shift=3.0,
        )
    return res.step_time_s


def bare_step_time(model: torch.nn.Module, item: dict, steps: int, warmup: int = 2) -> float:
    """The minimal diffusers + peft step: what any training script must do at least."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch = {k: v.unsqueeze(0) for k, v in item.items()}
    x0 = batch["latents"]
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        noise = torch.randn_like(x0)
        sigma = torch.rand(1)
        noisy = (1 - sigma) * x0 + sigma * noise
        pred = forward_batch(model, batch, noisy, sigma * 1000)
        loss = torch.nn.functional.mse_loss(pred.float(), noise - x0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return statistics.mean(times[warmup:])


def overhead(repeats: int, steps: int) -> float:
    from rank_sweep.model.tiny import TRANSFORMER_CONFIG

    base = build(TRANSFORMER_CONFIG, "lora", 8)
    item = batch_for(TRANSFORMER_CONFIG, frames=3, hw=8)
    proj, bare = [], []
    for i in range(repeats):  # interleaved, alternating which goes first
        order = [("project", proj), ("bare", bare)]
        for name, out in order if i % 2 == 0 else order[::-1]:
            model = copy.deepcopy(base)
            fn = project_step_time if name == "project" else bare_step_time
            out.append(fn(model, item, steps))
    mp, mb = statistics.median(proj), statistics.median(bare)
    print(f"tiny LoRA r=8 step, median of {repeats} x {steps} steps:")
    print(
        f"  project loop  {mp * 1e3:8.2f} ms   (all: {', '.join(f'{t * 1e3:.1f}' for t in proj)})"
    )
    print(
        f"  bare step     {mb * 1e3:8.2f} ms   (all: {', '.join(f'{t * 1e3:.1f}' for t in bare)})"
    )
    return mp / mb


def one(spec: str, steps: int) -> dict:
    """Child process: one configuration of the rank table."""
    from rank_sweep.train.loop import train

    method, _, rank = spec.partition(":")
    model = build(WIDE, method, int(rank or 0) or 1)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    item = batch_for(WIDE, frames=3, hw=16)
    with tempfile.TemporaryDirectory() as d:
        res = train(
            model,
            [item],
            recipe(steps),
            lr=1e-4,
            state_dir=Path(d),
            forward_fn=forward_batch,
            shift=3.0,
        )
    return {
        "config": spec,
        "trainable_params": trainable,
        "step_time_s": res.step_time_s,
        "peak_rss_mb": res.peak_mem_mb,
        "optimizer_state_mb": trainable * 16 / 2**20,
    }


def rank_table(steps: int, threads: int) -> None:
    specs = [f"lora:{r}" for r in RANKS] + ["full"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    print(f"\nwide transformer (dim 256, 2 layers, 192 video + 769 context tokens), {steps} steps:")
    print(
        f"  {'config':<10}{'trainable':>12}{'s/step':>10}{'peak RSS MiB':>14}{'opt state MiB':>15}"
    )
    for spec in specs:
        cmd = [
            sys.executable,
            __file__,
            "--one",
            spec,
            "--steps",
            str(steps),
            "--threads",
            str(threads),
        ]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  {row['config']:<10}{row['trainable_params']:>12,}{row['step_time_s']:>10.4f}"
            f"{row['peak_rss_mb']:>14.0f}{row['optimizer_state_mb']:>15.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable on a shared box)"
    )
    ap.add_argument("--skip-ranks", action="store_true", help="only the overhead ratio")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(args.one, args.steps)))
        return
    print(f"torch {torch.__version__}, {args.threads} thread(s), device cpu")
    ratio = overhead(args.repeats, args.steps)
    if not args.skip_ranks:
        rank_table(args.steps, args.threads)
    print(f"\nratio project/bare step time: {ratio:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
