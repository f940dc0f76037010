"""Typed schema of every config group. Hydra merges conf/*.yaml onto these dataclasses,
so a key that is not declared here, or a value of the wrong type, is rejected.

Range checks that a type cannot express live in `validate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

WAN_BLOCK_LINEARS = [
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "attn2.add_k_proj", "attn2.add_v_proj",
    "ffn.net.0.proj", "ffn.net.2",
]  # fmt: skip


@dataclass
class ModelConfig:
    name: str = "tiny_wan"
    # Local diffusers-format WanImageToVideoPipeline dir; null = the tiny model, written to
    # the cache on first use and loaded with from_pretrained like a real checkpoint.
    path: Optional[str] = None
    flow_shift: float = 3.0  # 3.0 for 480p, 5.0 for 720p (Wan's sampling shift)
    dtype: str = "float32"  # weight dtype of the frozen parts: float32 | bfloat16
    tiny_seed: int = 0  # seed of the tiny model's random weights (and of its world)
    # Embedded world preset (demo | smoke; rank_sweep/world): the tiny model is the world's
    # trained VAE + pretrained base, built once on first use. null = random tiny weights.
    world: Optional[str] = None
    # The clip shape the checkpoint was trained for; real-data configs default to it.
    native_frames: int = 9  # 81 for Wan2.1 I2V-14B (5 s at 16 fps)
    native_height: int = 32  # 480 (480p) or 720 (720p)
    native_width: int = 32  # 832 (480p) or 1280 (720p)
    native_fps: float = 16.0


@dataclass
class FinetuneConfig:
    method: str = "lora"  # lora | full: same loop, optimizer and schedule for both
    lr: float = 3e-5  # peak AdamW lr; full fine-tuning usually wants less than LoRA


@dataclass
class LoraConfig:
    rank: int = 8  # adapter rank r: trainable params grow linearly with r
    alpha: float = 16.0  # scale numerator; with alpha_mode=fixed the step size shrinks as r grows
    alpha_mode: str = (
        "fixed"  # fixed (alpha/r) | ratio (alpha=ratio*r, scale const) | rslora (alpha/sqrt(r))
    )
    alpha_ratio: float = 2.0  # used when alpha_mode=ratio
    dropout: float = 0.0  # LoRA dropout: regularizes tiny datasets, costs a little speed
    target_modules: list[str] = field(default_factory=lambda: list(WAN_BLOCK_LINEARS))


@dataclass
class SynthConfig:
    classes: int = 4  # distinct motion/appearance classes written
    videos_per_class: int = 10  # more videos: better FVD statistics, slower first run
    frames: int = 24  # frames per written video (must cover the sampled clip)
    height: int = 48
    width: int = 64
    fps: int = 8
    seed: int = 0
    # all: legacy class list; base | target: the embedded world's two distributions (the
    # base model is pretrained on base, fine-tuning targets target; see rank_sweep/world)
    domain: str = "all"


@dataclass
class DataConfig:
    name: str = "synthetic"  # dataset tag in metric names: fvd/<name>, kid/<name>
    layout: str = "ucf101"  # ucf101 | kinetics400 | folder
    root: Optional[str] = None  # dataset root; null only for the synthetic set (cache dir)
    train_split: str = "train"  # ucf101: train|test; kinetics400: train|validate|test
    eval_split: str = "test"
    fold: int = 1  # UCF-101 split fold 1..3
    frames: int = 9  # training clip length, must be 4k+1 (VAE temporal stride 4)
    height: int = 32  # training resolution, multiple of 16
    width: int = 32
    fps: Optional[float] = None  # resample to this fps; null keeps the native rate
    stride: int = 1  # take every stride-th frame after fps resampling
    max_train_clips: Optional[int] = None  # cap the training set (small-data recipes)
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class TrainConfig:
    steps: int = 4000  # optimizer steps (each = micro_batch * grad_accum clips per rank)
    micro_batch: int = 1  # clips per forward; memory grows linearly
    grad_accum: int = 4  # micro-batches per optimizer step
    lr_scale: float = (
        1.0  # multiplies finetune.lr; the CPU recipe raises it so few steps move the tiny model
    )
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05  # linear warm-up share of steps before cosine decay
    max_grad_norm: float = 1.0  # clip; 0 disables
    mixed_precision: str = "auto"  # auto (bf16 where supported) | bf16 | no
    activation_checkpointing: bool = True  # trade ~30% compute for O(layers) less activation memory
    timestep_sampling: str = "logit_normal"  # uniform | logit_normal
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: Optional[float] = None  # timestep shift; null = model.flow_shift
    seed: int = 0
    checkpoint_every: int = 500  # steps between atomic checkpoints (resume granularity)
    log_every: int = 10
    val_clips: int = 4  # held-out clips for the validation loss
    val_quantiles: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    val_every: int = 0  # 0 = only at eval steps and the end


@dataclass
class DistConfig:
    backend: str = "single"  # single | fsdp | deepspeed
    zero_stage: int = 0  # deepspeed ZeRO stage (2 or 3); unused otherwise
    nproc_per_node: int = 1  # workers per job; >1 and not under torchrun: the job spawns them
    mixed_precision: str = "bf16"  # FSDP2 param dtype for compute where supported
    reshard_after_forward: bool = True  # FSDP2: free gathered params after forward (ZeRO-3-like)
    comm_backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | nccl | gloo


@dataclass
class EvalConfig:
    metrics: list[str] = field(default_factory=lambda: ["fvd", "kid"])  # fvd | kid | kvd
    every: int = 500  # steps between evaluations (also the pruning resource unit)
    num_real: int = 2048  # real clips for statistics (StyleGAN-V fvd2048_16f)
    num_fake: int = 2048  # generated clips per eval; dominates eval cost
    frames: int = 16  # frames per clip fed to the detector
    sample_frames: Optional[int] = None  # frames generated per clip; null = data.frames
    sample_steps: int = 40  # sampler steps per generated clip
    guidance_scale: float = 5.0  # classifier-free guidance; 1.0 disables (half the cost)
    seed: int = 0  # same noise for every rank, so ranks are compared on equal footing
    i3d_path: Optional[str] = (
        None  # i3d_torchscript.pt or i3d_pretrained_400.pt; null = random-init
    )
    inception_path: Optional[str] = (
        None  # inception-2015-12-05.pt or FID state dict; null = random-init
    )
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    bootstrap: int = 200  # bootstrap resamples for 95% CIs at the final eval (0 disables)
    log_videos: int = 2  # sample mp4s logged per eval
    detector_size: int = 224  # frames resized to this before I3D (protocol: 224)
    inception_size: int = 299  # frames resized to this before Inception (FID protocol: 299; >= 75)


@dataclass
class TrackConfig:
    enabled: bool = True
    uri: Optional[str] = (
        None  # null = sqlite:///<repo>/mlflow.db; http://host:5000 for a team server
    )
    experiment: str = "rank_sweep"
    system_metrics: bool = True  # CPU/GPU/memory sampled by MLflow in the background
    log_artifacts: bool = True


@dataclass
class PruneConfig:
    pruner: str = "asha"  # asha | median | none
    metric: Optional[str] = None  # objective; null = fvd/<data.name> (minimized)
    storage: Optional[str] = None  # null = sqlite:///<repo>/optuna.db; journal:///path; any RDB URL
    min_resource: int = 1  # evals before ASHA may prune (explicit: "auto" needs finished trials)
    reduction_factor: int = 2  # ASHA: keep 1/reduction_factor per rung
    n_warmup_steps: int = 0  # median: evals before pruning starts
    n_startup_trials: int = 2  # median: completed trials before pruning starts


@dataclass
class RootConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    sweep_name: str = "default"  # names the MLflow parent run and the Optuna study
    device: str = "auto"  # auto | cpu | cuda
    dry_run: bool = False  # validate and print the plan, do no work
    output_dir: Optional[str] = None  # job dir; null = Hydra's run dir
    state_dir: Optional[str] = (
        None  # resumable job state keyed by config fingerprint; null = <cache>/jobs
    )
    extras: dict[str, Any] = field(default_factory=dict)  # free-form notes logged as params


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="rank_sweep_schema", node=RootConfig)
