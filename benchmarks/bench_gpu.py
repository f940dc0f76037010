"""Calibrate the cost plan on a GPU: LoRA (and optionally full) training steps of the Wan2.1
I2V-14B transformer at 480p x 81 frames through the project's real job path, and the
denoising forward that evaluation sampling repeats; writes the measured utilization where
`python -m rank_sweep.plan` reads it (benchmarks/gpu_figures.json, per GPU kind, with the
device, torch version and date recorded).

Job path: the 14B config (rank_sweep.model.meta.WAN_I2V_14B_CONFIG) with random weights
created in bf16 on the GPU (the frozen base as `model.dtype=bfloat16` loads it; no
download), LoRA via `apply_finetune`, adapters upcast to fp32 (`precision.upcast_trainable`,
as the runner does), `rank_sweep.train.loop.train` with bf16 autocast, activation
checkpointing and AdamW; sampling forwards under `precision.sampling_autocast`.
Latents 16 x 21 x 60 x 104 (81 frames, 480 x 832), text 512 x 4096, image 257 x 1280.

Utilization = FLOPs executed (rank_sweep.plan.flops, recompute included) / (seconds x
peak dense bf16 FLOP/s of the kind). The plan divides by exactly these numbers.

No GPU: the same code at a small shape on CPU (2 layers, dim 256), which only checks the
code path; it says so and writes figures only when --figures is given.

    .venv/bin/python benchmarks/bench_gpu.py [--ranks 8 32 128] [--steps 5] [--full]
        [--sample-calls 3] [--figures PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import torch

from rank_sweep.model.meta import WAN_I2V_14B_CONFIG
from rank_sweep.model.spec import forward_batch
from rank_sweep.model.tiny import i2v_transformer_config
from rank_sweep.plan.flops import IMAGE_TOKENS, TEXT_TOKENS, Arch, ClipShape
from rank_sweep.plan.hardware import GPUS, gpu_kind_of, save_figures

SMALL_CONFIG = i2v_transformer_config(
    heads=2, head_dim=128, ffn_dim=512, text_dim=64, image_dim=64, freq_dim=64
)
GPU_CLIP = ClipShape(81, 480, 832)  # latents 21 x 60 x 104
CPU_CLIP = ClipShape(9, 128, 128)  # latents 3 x 16 x 16


def build(cfg: dict, device: torch.device, dtype: torch.dtype, rank: int | None) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    from rank_sweep.config.schema import LoraConfig
    from rank_sweep.model.adapters import apply_finetune
    from rank_sweep.train.precision import upcast_trainable

    torch.manual_seed(0)
    conf = dict(cfg, patch_size=tuple(cfg["patch_size"]))
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random weights created in the base dtype on the device
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**conf)
    finally:
        torch.set_default_dtype(before)
    method = "full" if rank is None else "lora"
    apply_finetune(model, method, LoraConfig(rank=rank or 1, alpha=float(rank or 1)))
    upcast_trainable(model)  # fp32 adapters (LoRA) / fp32 master weights (full)
    return model


def batch(cfg: dict, arch: Arch, clip: ClipShape) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    t, h, w = arch.latent_shape(clip)
    return {
        "latents": torch.randn(16, t, h, w, generator=g),
        "cond": torch.randn(20, t, h, w, generator=g),
        "text_emb": torch.randn(TEXT_TOKENS, cfg["text_dim"], generator=g),
        "image_emb": torch.randn(IMAGE_TOKENS, cfg["image_dim"], generator=g),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_train(cfg: dict, arch: Arch, clip: ClipShape, device, rank: int | None, steps: int) -> dict:
    from rank_sweep.config.schema import TrainConfig
    from rank_sweep.train.loop import train

    base = torch.bfloat16 if device.type == "cuda" and rank is not None else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = build(cfg, device, base, rank)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tcfg = TrainConfig(
        steps=steps, micro_batch=1, grad_accum=1, global_batch=1, mixed_precision="auto",
        activation_checkpointing=True, checkpoint_every=0, log_every=1,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        res = train(
            model, [batch(cfg, arch, clip)], tcfg, lr=1e-4, state_dir=Path(d),
            forward_fn=forward_batch, shift=3.0,
        )  # fmt: skip
    del model
    gc.collect()
    flops = arch.train_flops(clip, rank, recompute=True)
    return {
        "rank": rank, "trainable": trainable, "s_per_sample": res.step_time_s,
        "peak_gb": res.peak_mem_mb * 2**20 / 1e9, "flops": flops, "loss": res.final_train_loss,
    }  # fmt: skip


@torch.no_grad()
def run_sample(cfg: dict, arch: Arch, clip: ClipShape, device, calls: int) -> dict:
    """Seconds per denoising forward of the bf16 base with a LoRA, as evaluation runs it."""
    from rank_sweep.train.precision import sampling_autocast

    base = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build(cfg, device, base, 32).eval()
    b = {k: v[None].to(device) for k, v in batch(cfg, arch, clip).items()}
    noisy, ts = b["latents"], torch.tensor([500.0], device=device)
    times = []
    for _ in range(calls + 1):  # the first call is warm-up
        _sync(device)
        t0 = time.perf_counter()
        with sampling_autocast(device):
            forward_batch(model, b, noisy, ts)
        _sync(device)
        times.append(time.perf_counter() - t0)
    del model
    gc.collect()
    s = sum(times[1:]) / max(1, len(times) - 1)
    return {"s_per_forward": s, "flops": arch.forward_flops(clip)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps (first 2 not timed)")
    ap.add_argument("--full", action="store_true", help="also full fine-tuning (> 80 GB unsharded)")
    ap.add_argument("--sample-calls", type=int, default=3, help="timed sampling forwards")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU run only)")
    ap.add_argument("--figures", type=Path, help="figures JSON to write (GPU default: the plan's)")
    args = ap.parse_args()

    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        name = torch.cuda.get_device_name(device)
        kind = gpu_kind_of(name)
        cfg, clip = dict(WAN_I2V_14B_CONFIG), GPU_CLIP
        print(f"device: {name} -> plan kind {kind}; torch {torch.__version__}; Wan2.1 I2V-14B")
    else:
        device, name, kind = torch.device("cpu"), "cpu", "cpu"
        torch.set_num_threads(args.threads)
        cfg, clip = SMALL_CONFIG, CPU_CLIP
        print(
            "device: cpu -- NO GPU: the same code at a SMALL shape (2 layers, dim 256); these "
            "numbers only check the code path, not the 14B figures"
        )
    arch = Arch.from_config(cfg)
    peak = GPUS[kind].peak_bf16_flops if kind else None
    print(f"clip {clip}, {arch.tokens(clip)} tokens; checkpointing on; bf16 where supported\n")
    print(f"{'config':<10}{'trainable':>15}{'s/sample':>10}{'peak GB':>9}{'PFLOP':>8}{'util':>7}")
    rows = []
    for rank in list(args.ranks) + ([None] if args.full else []):
        row = run_train(cfg, arch, clip, device, rank, args.steps)
        row["util"] = row["flops"] / row["s_per_sample"] / peak if peak else None
        rows.append(row)
        label = "full" if rank is None else f"lora r{rank}"
        util = f"{row['util']:.1%}" if row["util"] is not None else "n/a"
        print(
            f"{label:<10}{row['trainable']:>15,}{row['s_per_sample']:>10.3f}"
            f"{row['peak_gb']:>9.2f}{row['flops'] / 1e15:>8.3f}{util:>7}"
        )
    smp = run_sample(cfg, arch, clip, device, args.sample_calls)
    smp_util = smp["flops"] / smp["s_per_forward"] / peak if peak else None
    print(
        f"\nsampling forward: {smp['s_per_forward']:.3f} s"
        + (f", utilization {smp_util:.1%}" if smp_util else "")
    )
    lora = [r for r in rows if r["rank"] is not None and r["util"] is not None]
    if kind and kind != "cpu" and lora and smp_util:
        entry = {
            "device": name, "torch": torch.__version__,
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "train_util": round(sum(r["util"] for r in lora) / len(lora), 4),
            "sample_util": round(smp_util, 4),
            "clip": [clip.frames, clip.height, clip.width],
            "rows": [{k: v for k, v in r.items() if k != "loss"} for r in rows],
            "s_per_forward": smp["s_per_forward"],
        }  # fmt: skip
        path = save_figures(kind, entry, args.figures)
        print(f"figures for {kind} written to {path}: the plan now uses them")
    elif args.figures:
        path = save_figures(kind or "cpu", {"device": name, "rows": rows, **smp}, args.figures)
        print(f"smoke figures written to {path} (not used by the plan for GPUs)")
    else:
        print("no GPU: nothing written (the plan keeps its assumed utilization)")


if __name__ == "__main__":
    main()
