"""The one precision knob, `train.mixed_precision`: what the training loop autocasts to,
what FSDP2 gathers parameters in and what DeepSpeed enables, all from the same rule.

Precision as practitioners run Wan fine-tuning.

- LoRA: the frozen base in `model.dtype` (bf16 at scale: 33 GB instead of 66 GB for the
  14B transformer), the adapter weights, their gradients and AdamW moments in fp32 (AdamW
  steps on bf16 weights lose small updates).
- Full fine-tuning: fp32 master weights whatever `model.dtype` says; bf16 compute comes
  from FSDP2's MixedPrecisionPolicy / DeepSpeed's bf16 mode / autocast (train.mixed_precision).
- Evaluation sampling: the transformer's own dtype, under bf16 autocast where the GPU has
  bf16 (the diffusers pipeline runs the bf16 model; fp32 master weights are cast per op).
- Saved LoRA files: `finetune.save_dtype` (bf16 by default, the community's file size).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch

PRECISIONS = ("auto", "bf16", "no")


def bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def amp_dtype_for(mixed_precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast: `auto` uses it only on GPUs that have bf16 (on CPU it is slow and
    would make CPU runs differ from fp32 references); `bf16` forces it; `no` disables."""
    if mixed_precision not in PRECISIONS:
        raise ValueError(
            f"train.mixed_precision={mixed_precision!r} is not supported; "
            f"allowed: {', '.join(PRECISIONS)}"
        )
    if mixed_precision == "no":
        return None
    if mixed_precision == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"train.mixed_precision=bf16 but {torch.cuda.get_device_name(device)} lacks bf16"
            )
        return torch.bfloat16
    return torch.bfloat16 if bf16_supported(device) else None


log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def base_dtype(cfg: Any) -> torch.dtype:
    """dtype to load the transformer in: model.dtype for LoRA, fp32 masters for full."""
    if str(cfg.finetune.method) == "full":
        return torch.float32
    return DTYPES[str(cfg.model.dtype)]


def upcast_trainable(model: torch.nn.Module) -> int:
    """Trainable parameters to fp32 in place (peft may create adapters in the base's
    dtype); returns how many tensors were cast."""
    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
            n += 1
    if n:
        log.info("cast %d trainable tensors to float32 (frozen base stays as loaded)", n)
    return n


def save_dtype(cfg: Any) -> torch.dtype:
    from omegaconf import OmegaConf

    return DTYPES[str(OmegaConf.select(cfg, "finetune.save_dtype", default="bfloat16"))]


def sampling_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for I2V sampling on GPUs that have bf16; a no-op elsewhere (CPU runs
    stay comparable with fp32 references)."""
    if bf16_supported(torch.device(device)):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
