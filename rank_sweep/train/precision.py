"""The one precision knob, `train.mixed_precision`: what the training loop autocasts to,
what FSDP2 gathers parameters in and what DeepSpeed enables, all from the same rule."""

from __future__ import annotations

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
