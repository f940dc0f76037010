"""Typed schema of every config group. Hydra merges conf/*.yaml onto these dataclasses,
so a key that is not declared here, or a value of the wrong type, is rejected.

Range checks that a type cannot express live in `validate.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from rank_sweep.model.blocks import WAN_ATTENTION_LINEARS, WAN_BLOCK_LINEARS
from rank_sweep.paths import job_dirname


@dataclass
class ModelConfig:
    name: str = "tiny_wan"
    # wan2.1_i2v | wan2.2_i2v_a14b (two experts) | wan2.2_ti2v_5b: picks the tiny preset
    # when path is null, and is checked against the dir's model_index.json otherwise.
    arch: str = "wan2.1_i2v"
    # Local diffusers-format WanImageToVideoPipeline dir; null = the tiny model, written to
    # the cache on first use and loaded with from_pretrained like a real checkpoint.
    path: Optional[str] = None
    flow_shift: float = 3.0  # 3.0 for 480p, 5.0 for 720p (Wan's sampling shift)
    dtype: str = "float32"  # weight dtype of the frozen parts: float32 | bfloat16 | float16
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
    method: str = "lora"  # lora | full: same loop, optimizer and schedule; none: the untrained base
    lr: float = 3e-5  # peak AdamW lr; full fine-tuning usually wants less than LoRA
    save_dtype: str = "bfloat16"  # dtype of the saved LoRA files: bfloat16 | float32


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
    # Wan2.2 A14B: train the high-noise expert, the low-noise one, or both (also for
    # finetune=full); one-transformer models take `both`.
    experts: str = "both"


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
    eval_split: str = "test"  # the final tier only; "<split>#val" = the carved slice
    # Validation slice carved from train_split (loss, periodic metrics, pruning, selection):
    # by group gXX (UCF-101), youtube id (Kinetics-400), file (folder); see data/splits.py.
    val_fraction: float = 0.1
    val_rule: str = "auto"  # auto | group | youtube_id | file
    fold: int = 1  # UCF-101 split fold 1..3
    frames: int = 9  # training clip length, must be 4k+1 (VAE temporal stride 4)
    height: int = 32  # training resolution, multiple of 16
    width: int = 32
    fps: Optional[float] = None  # resample to this fps; null keeps the native rate
    stride: int = 1  # take every stride-th frame after fps resampling
    max_train_clips: Optional[int] = None  # cap the training set (small-data recipes)
    synth: SynthConfig = field(default_factory=SynthConfig)


@dataclass
class StageConfig:
    """One stage of `train.stages` (see rank_sweep/train/stages.py)."""

    name: str = "stage"
    view: str = "clips"  # clips | window (first latent_frames latent frames) | stills
    latent_frames: int = 1  # window: latent frames kept (pixel frames 4(k-1)+1)
    steps: int = 0  # the stages' steps must add up to train.steps
    lr: Optional[float] = None  # null = finetune.lr * train.lr_scale
    target_modules: Optional[list[str]] = None  # null = every adapted module


@dataclass
class EarlyStopConfig:
    metric: Optional[str] = None  # e.g. lpips/<data.name> or val/loss; null = no early stop
    patience: int = 3  # evaluations without improvement before stopping
    min_delta: float = 0.0  # an improvement must beat the best by more than this
    mode: str = "auto"  # auto (clipsim* max, others min) | min | max


@dataclass
class TrainConfig:
    steps: int = 4000  # optimizer steps (each = micro_batch * grad_accum clips per rank)
    micro_batch: int = 1  # clips per forward; memory grows linearly
    grad_accum: int = 4  # micro-batches per optimizer step (ignored when global_batch is set)
    # Samples per optimizer step over all ranks; accumulation = global_batch / (micro_batch
    # x world size), so a recipe means the same on 1 or 8 GPUs. null: micro_batch x
    # grad_accum per rank (the global batch then grows with the world size).
    global_batch: Optional[int] = None
    lr_scale: float = (
        1.0  # multiplies finetune.lr; the CPU recipe raises it so few steps move the tiny model
    )
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05  # linear warm-up share of steps before cosine decay
    max_grad_norm: float = 1.0  # clip; 0 disables
    # The one precision knob: loop autocast, FSDP2 param dtype, DeepSpeed bf16.
    mixed_precision: str = "auto"  # auto (bf16 where supported) | bf16 | no
    activation_checkpointing: bool = True  # trade ~30% compute for O(layers) less activation memory
    timestep_sampling: str = "logit_normal"  # uniform | logit_normal
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: Optional[float] = None  # timestep shift; null = model.flow_shift
    seed: int = 0
    checkpoint_every: int = 500  # steps between atomic checkpoints (resume granularity)
    keep_checkpoints: int = (
        0  # after completion: 0 final weights + summary, 1 + Adam state, 2 + previous
    )
    log_every: int = 10
    val_clips: int = 4  # held-out clips for the validation loss
    val_quantiles: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9])
    val_every: int = 0  # 0 = only at eval steps and the end
    # Pause knob: stop at this step with a checkpoint (the sweeper's rungs set it); the LR
    # schedule still comes from `steps`. Not part of the job fingerprint.
    stop_at: Optional[int] = None
    stages: list[StageConfig] = field(default_factory=list)  # [] = one stage (the whole recipe)
    early_stop: EarlyStopConfig = field(default_factory=EarlyStopConfig)


@dataclass
class DistConfig:
    backend: str = "single"  # single | fsdp | deepspeed
    zero_stage: int = 0  # deepspeed ZeRO stage (2 or 3); unused otherwise
    nproc_per_node: int = 1  # workers per job; >1 and not under torchrun: the job spawns them
    nodes: int = 1  # >1: one SLURM task per GPU; rendezvous from the SLURM environment
    reshard_after_forward: bool = True  # FSDP2: free gathered params after forward (ZeRO-3-like)
    comm_backend: str = "auto"  # auto (nccl on GPU, gloo on CPU) | nccl | gloo


@dataclass
class PeriodicEvalConfig:
    """Tier `periodic` (during training, on the validation slice carved from train)."""

    metrics: list[str] = field(default_factory=list)  # [] = val loss only; [fvd, kid] = light
    num_clips: int = 16  # val-slice clips for the light FVD/KID (real and generated)
    sample_steps: int = 10  # fewer sampler steps than the final tier


@dataclass
class FinalEvalConfig:
    """Tier `final` (once, at the end of a completed run, on data.eval_split)."""

    batch_size: int = 4  # clips generated and scored together; host memory ~ batch, not N


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
    trust_torchscript: bool = (
        False  # load TorchScript detector files of unknown sha256 (can run code)
    )
    negative_prompt: str = ""  # CFG negative prompt (guidance_scale > 1); stamped
    cov_ddof: int = 0  # FVD covariance: 0 = biased, as StyleGAN-V's fvd2048_16f; stamped
    interval_level: float = 0.95  # level of the per-run and paired intervals
    periodic: PeriodicEvalConfig = field(default_factory=PeriodicEvalConfig)
    final: FinalEvalConfig = field(default_factory=FinalEvalConfig)
    # CLIP-SIM (img: frame vs condition, temporal: consecutive frames, text: prompt vs frame)
    # and LPIPS (generated vs real frames of the same clip); [] disables them.
    extra_metrics: list[str] = field(
        default_factory=lambda: ["clipsim_img", "clipsim_temporal", "clipsim_text", "lpips"]
    )
    extra_periodic: bool = True  # also at periodic evals (else only at the final one)
    clip_path: Optional[str] = None  # transformers CLIPModel dir (text-frame); null = tiny random
    lpips_path: Optional[str] = None  # dir with <net>.pth (lpips v0.1) + backbone; null = random
    lpips_net: str = "alex"  # alex | vgg


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
    pruner: str = "sha"  # sha (synchronous, by the sweeper) | none | asha | median (async)
    rungs: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])  # sha: of train.steps
    eta: int = 2  # sha: keep the top ceil(n/eta) arms per rung (plus arms tied with the best)
    delta_min: float = 0.0  # sha: an arm within delta_min of the best is never pruned
    confidence: float = 0.95  # sha: level of the paired interval of arm - best
    rung_metric: str = "val_loss"  # sha: per-item validation loss, or a logged eval metric
    metric: Optional[str] = None  # async pruners' objective; null = val_fvd/<data.name> when
    # the periodic tier scores FVD, else val/loss (minimized); never a final-tier (test) metric
    storage: Optional[str] = None  # null = sqlite:///<repo>/optuna.db; journal:///path; any RDB URL
    min_resource: int = 1  # evals before ASHA may prune (explicit: "auto" needs finished trials)
    reduction_factor: int = 2  # ASHA: keep 1/reduction_factor per rung
    n_warmup_steps: int = 0  # median: evals before pruning starts
    n_startup_trials: int = 2  # median: completed trials before pruning starts


@dataclass
class PlanConfig:
    """Assumptions of the cost plan (`python -m rank_sweep.plan`); not part of job identity."""

    gpu: str = (
        "auto"  # a100_40gb | a100_80gb | h100 | h200 | cpu; auto = launcher constraint or h100
    )
    train_util: Optional[float] = None  # FLOP utilization of training; null = measured or 0.45
    sample_util: Optional[float] = None  # ... of I2V sampling; null = measured or 0.37
    figures: Optional[str] = None  # bench_gpu figures JSON; null = benchmarks/gpu_figures.json
    refuse: bool = True  # a sweep whose plan refuses a job does not start


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
    plan: PlanConfig = field(default_factory=PlanConfig)
    sweep_name: str = "default"  # names the MLflow parent run and the Optuna study
    device: str = "auto"  # auto | cpu | cuda
    dry_run: bool = False  # validate and print the plan, do no work
    output_dir: Optional[str] = None  # job dir; null = Hydra's run dir
    state_dir: Optional[str] = (
        None  # resumable job state keyed by config fingerprint; null = <cache>/jobs
    )
    extras: dict[str, Any] = field(default_factory=dict)  # free-form notes logged as params


# Config resolvers naming model facts, so conf/ refers to them instead of copying them:
# `lora.target_modules: ${wan_block_linears:}`.
RESOLVERS = {
    "wan_block_linears": lambda: list(WAN_BLOCK_LINEARS),
    "wan_attention_linears": lambda: list(WAN_ATTENTION_LINEARS),
    "job_dirname": lambda overrides: job_dirname(str(overrides)),
}


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="rank_sweep_schema", node=RootConfig)
    for name, fn in RESOLVERS.items():
        OmegaConf.register_new_resolver(name, fn, replace=True)
