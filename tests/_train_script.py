"""Tiny Wan I2V training used by the train tests, importable and runnable as a script
(the resume test trains in a subprocess it can SIGKILL).

    python tests/_train_script.py --state-dir D --out W.safetensors [--steps N] [--sleep S]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rank_sweep.model.spec import forward_batch
from rank_sweep.model.tiny import i2v_transformer_config

TEXT_LEN = 512  # Wan treats the last 512 context tokens as text: keep the real split
TINY = i2v_transformer_config(heads=2, head_dim=16, ffn_dim=64, text_dim=32, image_dim=32)


def build_model(method: str = "lora", rank: int = 4, seed: int = 0) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    from rank_sweep.config.schema import LoraConfig
    from rank_sweep.model.adapters import apply_finetune

    torch.manual_seed(seed)
    model = WanTransformer3DModel(**TINY)
    apply_finetune(model, method, LoraConfig(rank=rank, alpha=float(rank)))
    if method == "lora":  # peft zero-inits B; give it values so LoRA changes outputs at once
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    return model


def make_data(n: int, seed: int = 1, frames: int = 2, hw: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "latents": torch.randn(16, frames, hw, hw, generator=g),
            "cond": torch.randn(20, frames, hw, hw, generator=g),
            "text_emb": torch.randn(TEXT_LEN, 32, generator=g),
            "image_emb": torch.randn(5, 32, generator=g),
        }
        for _ in range(n)
    ]


def train_cfg(**kw):
    from rank_sweep.config.schema import TrainConfig

    base = dict(
        steps=8,
        micro_batch=1,
        grad_accum=2,
        warmup_ratio=0.25,
        mixed_precision="no",
        activation_checkpointing=False,
        checkpoint_every=2,
        log_every=1,
        val_quantiles=[0.25, 0.75],
    )
    base.update(kw)
    return TrainConfig(**base)


def dist_worker(backend: str, state_dir: str, out: str, steps: int, die_at: int = 0) -> dict:
    """One rank of a 2-process CPU job (launched by rank_sweep.train.dist.launch); with
    die_at > 0 rank 0 raises in its log hook at that step (after earlier checkpoints)."""
    from dataclasses import asdict

    from safetensors.torch import save_file

    from rank_sweep.config.schema import DistConfig
    from rank_sweep.train.dist import init_distributed, wrap_model
    from rank_sweep.train.loop import TrainHooks, train
    from rank_sweep.train.state import trainable_weights, unsharded_copy

    torch.set_num_threads(1)
    dcfg = DistConfig(
        backend=backend, nproc_per_node=2, zero_stage=2 if backend == "deepspeed" else 0
    )
    ctx = init_distributed(dcfg)
    cfg = train_cfg(steps=steps, micro_batch=1, grad_accum=1, activation_checkpointing=True)
    model = wrap_model(build_model("lora", rank=4), dcfg, ctx, cfg)

    def on_log(metrics: dict, step: int) -> None:
        if step == die_at:
            raise RuntimeError(f"worker died at step {step}")

    result = train(
        model, make_data(4), cfg, lr=1e-3, state_dir=Path(state_dir), forward_fn=forward_batch,
        shift=3.0, val_set=make_data(3, seed=2), dist=ctx, hooks=TrainHooks(on_log=on_log),
    )  # fmt: skip
    weights = trainable_weights(model)  # collective: every rank gathers, rank 0 gets them
    plain = unsharded_copy(model, lambda: build_model("lora", rank=4, seed=0), ctx)
    if ctx.is_main:
        save_file({k: v.contiguous() for k, v in weights.items()}, out)
        from rank_sweep.model.adapters import trainable_state_dict

        copied = trainable_state_dict(plain)
        assert copied.keys() == weights.keys()
        assert all(torch.equal(copied[k], weights[k]) for k in weights), "unsharded copy differs"
    else:
        assert plain is None
    return {**asdict(result), "world_size": ctx.world_size}


def failing_worker(message: str) -> None:
    raise ValueError(message)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds per forward (kill window)")
    args = ap.parse_args()
    from safetensors.torch import save_file

    from rank_sweep.model.adapters import trainable_state_dict
    from rank_sweep.train.loop import train

    model = build_model("lora", rank=4, seed=0)

    def slow_forward(m, batch, noisy, t):
        if args.sleep:
            time.sleep(args.sleep)
        return forward_batch(m, batch, noisy, t)

    result = train(
        model,
        make_data(6),
        train_cfg(steps=args.steps, activation_checkpointing=True),
        lr=1e-3,
        state_dir=Path(args.state_dir),
        forward_fn=slow_forward,
        shift=3.0,
        val_set=make_data(2, seed=2),
    )
    sd = {k: v.contiguous() for k, v in trainable_state_dict(model).items()}
    save_file(sd, args.out, metadata={"steps": str(result.steps_done)})


if __name__ == "__main__":
    main()
