"""LoRA training steps of the Wan2.1 I2V-14B transformer at 480p x 81 frames: s/step, peak
memory and MFU, per rank, through the project's training loop (`rank_sweep.train.loop.train`:
flow-matching step, AdamW, clipping, bf16 autocast, activation checkpointing).

GPU: the 14B config (rank_sweep.model.meta.WAN_I2V_14B_CONFIG) built directly on the GPU with
random bf16 weights (no download; LoRA weights fp32 as diffusers' scripts keep them),
latents 16 x 21 x 60 x 104 (480 x 832, 81 frames), text 512 x 4096, image 257 x 1280.
No GPU: the same code at a small shape on CPU (2 layers, dim 256, latents 16 x 3 x 16 x 16),
which only checks the code path; it says so.

FLOP count (model FLOPs of one training step, multiply-add = 2 FLOPs):
  S = T' * (H'/2) * (W'/2) video tokens, d = heads * head_dim, F = ffn_dim, L = num_layers,
  Ct = 512 text tokens, Ci = 257 image tokens, r = LoRA rank.
  Forward per block:
    linear_fwd = 2*S*d*d*4            self-attn q, k, v, out
               + 2*S*d*d*2            cross-attn q, out
               + 2*Ct*d*d*2           cross-attn k, v on text
               + 2*Ci*d*d*2           add_k_proj, add_v_proj on image (added_kv_proj_dim = d)
               + 2*S*d*F*2            ffn up, down
    attn_fwd   = 4*S*S*d + 4*S*(Ct+Ci)*d     QK^T and PV, self and cross
  Outside the blocks (frozen, forward + input-grad): patch embed 2*S*(36*4)*d, proj_out
    2*S*d*(16*4), text embedder 2*Ct*(text_dim*d + d*d), image embedder
    2*Ci*(image_dim^2 + image_dim*d).
  Training (LoRA, base frozen): frozen linears cost forward + input gradient = 2 x forward;
    attention matmuls 3 x forward (dQ, dK, dV); each adapted Linear with N input tokens adds
    3 * 2*N*r*(in+out) (forward, input grad, weight grads).
  Full fine-tuning: 3 x forward everywhere.
  MFU = model FLOPs / (s/step * peak dense bf16 FLOP/s). Activation checkpointing recomputes
  the block forwards once more; HFU counts that recompute too.

    .venv/bin/python benchmarks/bench_gpu.py [--ranks 8 32 128] [--steps 5] [--full]
"""

from __future__ import annotations

import argparse
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

TEXT_TOKENS, IMAGE_TOKENS = 512, 257
SMALL_CONFIG = i2v_transformer_config(
    heads=2, head_dim=128, ffn_dim=512, text_dim=64, image_dim=64, freq_dim=64
)
GPU_LATENTS = (16, 21, 60, 104)  # 81 frames -> 21, 480 x 832 -> 60 x 104 (VAE stride 4, 8, 8)
CPU_LATENTS = (16, 3, 16, 16)
# Peak dense bf16 tensor FLOP/s (no sparsity), from the vendors' datasheets.
PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
]


def peak_flops(name: str) -> float | None:
    for key, value in PEAK_BF16:
        if key.lower() in name.lower():
            return value
    return None


def step_flops(cfg: dict, latents: tuple[int, ...], rank: int | None) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs incl. checkpoint recompute) of one training step; rank
    None = full fine-tuning. See the module docstring for the formula."""
    _, t, h, w = latents
    pt, ph, pw = cfg["patch_size"]
    s = (t // pt) * (h // ph) * (w // pw)
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    f, n_layers = cfg["ffn_dim"], cfg["num_layers"]
    ct, ci = TEXT_TOKENS, IMAGE_TOKENS
    kv = cfg["added_kv_proj_dim"]
    linear = 2 * s * d * d * 4 + 2 * s * d * d * 2 + 2 * ct * d * d * 2 + 2 * ci * kv * d * 2
    linear += 2 * s * d * f * 2
    attn = 4 * s * s * d + 4 * s * (ct + ci) * d
    outside = 2 * s * (36 * 4) * d + 2 * s * d * (16 * 4)
    outside += 2 * ct * (cfg["text_dim"] * d + d * d)
    outside += 2 * ci * (cfg["image_dim"] ** 2 + cfg["image_dim"] * d)
    block_fwd = linear + attn
    if rank is None:
        model = 3 * (n_layers * block_fwd + outside)
    else:
        # (tokens, in, out) of every adapted Linear in one block
        adapted = [(s, d, d)] * 6 + [(ct, d, d)] * 2 + [(ci, kv, d)] * 2 + [(s, d, f), (s, f, d)]
        lora = sum(3 * 2 * n * rank * (i + o) for n, i, o in adapted)
        model = n_layers * (2 * linear + 3 * attn + lora) + 2 * outside
    return float(model), float(model + n_layers * block_fwd)


def build(cfg: dict, device: torch.device, dtype: torch.dtype, rank: int | None) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    from rank_sweep.config.schema import LoraConfig
    from rank_sweep.model.adapters import apply_finetune

    torch.manual_seed(0)
    conf = dict(cfg, patch_size=tuple(cfg["patch_size"]))
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # random weights created in bf16 directly on the device
    try:
        with torch.device(device):
            model = WanTransformer3DModel(**conf)
    finally:
        torch.set_default_dtype(before)
    apply_finetune(
        model,
        "full" if rank is None else "lora",
        LoraConfig(rank=rank or 1, alpha=float(rank or 1)),
    )
    for p in model.parameters():
        if p.requires_grad:  # trainable weights in fp32 (AdamW on bf16 weights loses updates)
            p.data = p.data.float()
    return model


def batch(cfg: dict, latents: tuple[int, ...]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    c, t, h, w = latents
    return {
        "latents": torch.randn(c, t, h, w, generator=g),
        "cond": torch.randn(20, t, h, w, generator=g),
        "text_emb": torch.randn(TEXT_TOKENS, cfg["text_dim"], generator=g),
        "image_emb": torch.randn(IMAGE_TOKENS, cfg["image_dim"], generator=g),
    }


def run_one(cfg: dict, latents, device: torch.device, rank: int | None, steps: int) -> dict:
    from rank_sweep.config.schema import TrainConfig
    from rank_sweep.train.loop import train

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    model = build(cfg, device, dtype, rank)
    build_s = time.perf_counter() - t0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tcfg = TrainConfig(
        steps=steps,
        micro_batch=1,
        grad_accum=1,
        mixed_precision="auto",  # bf16 autocast on GPUs that have it
        activation_checkpointing=True,
        checkpoint_every=0,
        log_every=1,
    )
    with tempfile.TemporaryDirectory() as d:
        res = train(
            model,
            [batch(cfg, latents)],
            tcfg,
            lr=1e-4,
            state_dir=Path(d),
            forward_fn=forward_batch,
            shift=3.0,
        )
    del model
    gc.collect()
    model_flops, hw_flops = step_flops(cfg, latents, rank)
    return {
        "rank": rank,
        "trainable": trainable,
        "build_s": build_s,
        "s_per_step": res.step_time_s,
        "peak_gib": res.peak_mem_mb / 1024,
        "tflops": model_flops / res.step_time_s / 1e12,
        "model_flops": model_flops,
        "hw_flops": hw_flops,
        "loss": res.final_train_loss,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 32, 128])
    ap.add_argument(
        "--steps", type=int, default=5, help="optimizer steps per rank (first 2 not timed)"
    )
    ap.add_argument(
        "--full", action="store_true", help="also full fine-tuning (needs > 80 GB unsharded)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (CPU run only)")
    ap.add_argument("--peak-tflops", type=float, help="override the device's peak bf16 TFLOP/s")
    args = ap.parse_args()

    if torch.cuda.is_available():
        device = torch.device("cuda", 0)
        name = torch.cuda.get_device_name(device)
        cfg, latents = dict(WAN_I2V_14B_CONFIG), GPU_LATENTS
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        print(
            f"device: {name} ({total:.0f} GiB), torch {torch.__version__}; Wan2.1 I2V-14B, random bf16 weights"
        )
    else:
        device = torch.device("cpu")
        name = "cpu"
        torch.set_num_threads(args.threads)
        cfg, latents = SMALL_CONFIG, CPU_LATENTS
        print(
            "device: cpu -- NO GPU: running the same code at a SMALL shape (2 layers, dim 256); "
            "these numbers only check the code path, not the 14B figures"
        )
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(name)
    print(
        f"latents {latents}, text {TEXT_TOKENS} x {cfg['text_dim']}, image {IMAGE_TOKENS} x {cfg['image_dim']}"
    )
    print("activation checkpointing on; bf16 autocast where supported\n")
    print(
        f"{'config':<10}{'trainable':>15}{'s/step':>10}{'peak GiB':>10}{'TFLOP/s':>10}{'MFU':>8}{'HFU':>8}"
    )
    ranks: list[int | None] = list(args.ranks) + ([None] if args.full else [])
    for rank in ranks:
        row = run_one(cfg, latents, device, rank, args.steps)
        mfu = f"{row['tflops'] * 1e12 / peak:.1%}" if peak else "n/a"
        hfu = f"{row['hw_flops'] / row['s_per_step'] / peak:.1%}" if peak else "n/a"
        label = "full" if rank is None else f"lora r{rank}"
        print(
            f"{label:<10}{row['trainable']:>15,}{row['s_per_step']:>10.3f}{row['peak_gib']:>10.2f}"
            f"{row['tflops']:>10.3f}{mfu:>8}{hfu:>8}"
        )
    if device.type == "cpu":
        print(
            "\nGPU figures: open (no GPU in this run); peak is process RSS, MFU needs a GPU peak."
        )


if __name__ == "__main__":
    main()
