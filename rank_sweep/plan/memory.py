"""Memory per GPU of one job: weights, gradients, optimizer state, activations (with and
without activation checkpointing) and the sampling peak, for single / fsdp / ZeRO-2 /
ZeRO-3. Bytes are decimal GB (1e9) like nvidia-smi's capacity.

Precision as the job runs it: a LoRA job's frozen base in `model.dtype` (bf16 at scale),
adapter weights, their gradients and AdamW moments in fp32; full fine-tuning keeps fp32
master weights, fp32 gradients and AdamW moments (16 B/param) sharded over the ranks,
plus the bf16 copies FSDP2/ZeRO-3 gather for the blocks in flight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rank_sweep.plan.flops import Arch, ClipShape

GB = 1e9
RUNTIME_GB = 3.0  # CUDA context, cuBLAS/NCCL workspaces, allocator slack
VAE_GB = 0.5  # the Wan VAE stays loaded for evaluation (127M params, fp32)


@dataclass
class MemoryPlan:
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float  # as configured (checkpointing on or off)
    activations_ckpt_gb: float  # with activation checkpointing
    activations_no_ckpt_gb: float  # without
    sampling_gb: float  # peak while generating eval clips
    runtime_gb: float
    peak_gb: float

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in asdict(self).items()}


def shards(backend: str, zero_stage: int, world: int) -> tuple[int, int, int]:
    """(params, grads, optimizer) shard factors of the backend."""
    if world <= 1 or backend == "single":
        return 1, 1, 1
    if backend == "fsdp":
        return world, world, world
    if backend == "deepspeed":
        return (world if zero_stage >= 3 else 1), world, world
    raise ValueError(f"dist.backend={backend!r} is not supported")


def plan_memory(
    arch: Arch,
    clip: ClipShape,
    *,
    method: str,
    trainable: int,
    base_dtype_bytes: int,
    micro_batch: int,
    checkpointing: bool,
    backend: str,
    zero_stage: int,
    world: int,
    sample_clip: ClipShape,
) -> MemoryPlan:
    total = arch.total_params()
    ps, gs, os_ = shards(backend, zero_stage, world)
    block = arch.block_params()
    if method == "lora":
        weights = total * base_dtype_bytes / ps + trainable * 4 / ps
        grads = trainable * 4 / gs
        optimizer = trainable * 8 / os_
    else:
        master = total * 4 / ps
        # sharded backends gather ~2 blocks (current + prefetch) in bf16 for compute
        gathered = 2 * block * 2 if ps > 1 else 0
        weights = master + gathered
        grads = total * 4 / gs
        optimizer = total * 8 / os_
    per_block = arch.block_activation_bytes(clip) * micro_batch
    hidden = arch.tokens(clip) * arch.dim * 2 * micro_batch  # block input kept per layer
    act_ckpt = arch.layers * hidden + 2 * per_block  # + one block recomputed and its grads
    act_full = arch.layers * per_block
    activations = act_ckpt if checkpointing else act_full
    # sampling: weights as stored on the GPU, one block's inference tensors, VAE decode
    # (causal, 4 pixel frames at a time at ~96 channels in fp32)
    infer = arch.tokens(sample_clip) * (4 * arch.dim + arch.ffn) * 2
    decode = sample_clip.height * sample_clip.width * 96 * 4 * 12
    sample_weights = weights if method == "lora" else total * 2 / ps + 2 * block * 2
    sampling = sample_weights + infer + decode + RUNTIME_GB * GB + VAE_GB * GB
    train_peak = weights + grads + optimizer + activations + RUNTIME_GB * GB + VAE_GB * GB
    return MemoryPlan(
        weights_gb=weights / GB,
        grads_gb=grads / GB,
        optimizer_gb=optimizer / GB,
        activations_gb=activations / GB,
        activations_ckpt_gb=act_ckpt / GB,
        activations_no_ckpt_gb=act_full / GB,
        sampling_gb=sampling / GB,
        runtime_gb=RUNTIME_GB + VAE_GB,
        peak_gb=max(train_peak, sampling) / GB,
    )
