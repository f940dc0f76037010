"""The cost plan: exact parameter counts and public FLOP/time figures of Wan2.1 I2V-14B,
the shipped 14B experiments fit memory and time and cost at most 3x their training,
refusals say what to change, and train.global_batch means the same on any world size."""

from __future__ import annotations

import json

import pytest

from rank_sweep.model.meta import WAN_I2V_14B_CONFIG
from rank_sweep.plan.__main__ import main
from rank_sweep.plan.flops import Arch, ClipShape
from rank_sweep.plan.hardware import Figures, resolve_gpu, save_figures
from rank_sweep.plan.job import Launcher, count_starts, plan_job
from rank_sweep.train.dist import grad_accum_for

CLIP_480P = ClipShape(81, 480, 832)
ARCH = Arch.from_config(WAN_I2V_14B_CONFIG)


def test_14b_counts_and_public_figures() -> None:
    assert ARCH.total_params() == 16_394_878_784
    assert ARCH.tokens(CLIP_480P) == 21 * 30 * 52
    pflop = ARCH.train_flops(CLIP_480P, 32, recompute=True) / 1e15
    assert 5.7 < pflop < 6.2  # public: ~5.9 PFLOP per training sample with recompute
    h100, a100, h200 = (resolve_gpu(k) for k in ("h100", "a100_80gb", "h200"))
    step = ARCH.train_flops(CLIP_480P, 32, True) / (h100.peak_bf16_flops * h100.train_util)
    assert 10 <= step <= 15  # public: ~10-15 s per sample on H100
    step_a100 = ARCH.train_flops(CLIP_480P, 32, True) / (a100.peak_bf16_flops * a100.train_util)
    assert 35 <= step_a100 <= 45  # public: ~40 s on A100
    sample = ARCH.sample_flops(CLIP_480P, 40, 5.0) / (h200.peak_bf16_flops * h200.sample_util)
    assert abs(sample - 366) / 366 < 0.05  # public: ~366 s per 40-step CFG sample on H200
    # no CFG halves it; fewer frames cost less than proportionally less (attention)
    assert ARCH.sample_flops(CLIP_480P, 40, 1.0) * 2 == ARCH.sample_flops(CLIP_480P, 40, 5.0)
    short = ARCH.forward_flops(ClipShape(17, 480, 832))
    assert short < ARCH.forward_flops(CLIP_480P) * 5 / 21


def test_tiny_param_count_matches_the_real_model() -> None:
    from rank_sweep.model.meta import build_transformer_meta, total_params
    from rank_sweep.model.tiny import TRANSFORMER_CONFIG

    tiny = Arch.from_config(TRANSFORMER_CONFIG)
    assert tiny.total_params() == total_params(build_transformer_meta(TRANSFORMER_CONFIG))


@pytest.mark.parametrize(
    "experiment", ["ucf101_rank_sweep_14b", "kinetics400_rank_sweep_14b", "cinematic_small_data"]
)
def test_shipped_14b_experiments_fit_and_finish(experiment: str, capsys) -> None:
    rc = main([f"+experiment={experiment}", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0, out["sweep"]["refusals"]
    sweep, jobs = out["sweep"], out["jobs"]
    assert len(jobs) >= 5 and not sweep["refusals"]
    assert sweep["gpu_hours"] <= 3 * sweep["train_gpu_hours"]  # evaluation no longer dominates
    total = sum(j["train_gpu_hours"] + j["eval_gpu_hours"] for j in jobs)
    assert sweep["gpu_hours"] == pytest.approx(total, rel=1e-3)  # nothing pruned: every job
    limit = out["launcher"]["time_limit_h"]
    for j in jobs:
        assert j["peak_mem_gb"] <= 0.95 * out["gpu"]["memory_gb"]
        assert j["global_batch"] == 4 and j["samples_seen"] == 16_000
        assert 1 <= j["starts"] <= 1 + out["launcher"]["max_requeues"]
        assert all(t["wall_h_per_run"] < limit for t in j["tiers"] if t["runs"])
        base_gb = j["memory"]["weights_gb"] - j["trainable_params"] * 4 / 1e9  # fp32 adapter
        assert base_gb == pytest.approx(16.39 * 2, abs=0.05)  # the frozen base in bf16


def test_the_documented_baseline_and_rank_128_commands_fit(capsys) -> None:
    base = ["+experiment=ucf101_rank_sweep_14b", "--single", "--json"]
    full = ["finetune=full", "dist=fsdp", "dist.nproc_per_node=4", "plan.gpu=h200"]
    full += ["hydra.launcher.gpus_per_node=4", "hydra.launcher.constraint=h200"]
    r128 = ["lora.rank=128", "dist=fsdp", "dist.nproc_per_node=2"]
    r128 += ["hydra.launcher.gpus_per_node=2"]
    for extra in (full, r128):
        assert main(base + extra) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["sweep"]["gpu_hours"] <= 3 * out["sweep"]["train_gpu_hours"]


def test_refusals_say_what_to_change(capsys, monkeypatch) -> None:
    from rank_sweep.eval import evaluator

    # rank 128 on one H100: adapter state + activations do not fit next to the bf16 base
    assert main(["+experiment=ucf101_rank_sweep_14b", "--single", "lora.rank=128"]) == 2
    assert "dist=fsdp" in capsys.readouterr().out
    # the old recipe: fp32 base, 2048 clips every 500 steps, every rank generating
    monkeypatch.setattr(evaluator, "SHARDED_GENERATION", False)
    old = ["model.dtype=float32", "eval.every=500", "eval.num_fake=2048", "dist=fsdp"]
    old += ["eval.periodic.metrics=[fvd,kid]", "eval.periodic.num_clips=2048"]
    old += ["eval.periodic.sample_steps=40"]
    old += ["dist.nproc_per_node=8", "train.global_batch=null", "hydra.launcher.gpus_per_node=8"]
    assert main(["+experiment=ucf101_rank_sweep_14b", "--single", *old, "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    reasons = " ".join(out["sweep"]["refusals"])
    assert "eval takes" in reasons and "time limit" in reasons and "eval.num_fake" in reasons
    job = out["jobs"][0]
    assert job["global_batch"] == 32 and job["samples_seen"] == 128_000
    assert job["eval_gpu_hours"] > 20 * job["train_gpu_hours"]
    # full fine-tuning on one GPU: 16 B/param of fp32 state
    assert main(["+experiment=ucf101_rank_sweep_14b", "--single", "finetune=full"]) == 2
    assert "deepspeed_zero3" in capsys.readouterr().out


def test_bf16_base_halves_lora_weights(compose) -> None:
    cfg = compose(["+experiment=ucf101_rank_sweep_14b", "lora.rank=8"])
    h100 = resolve_gpu("h100")
    bf16 = plan_job(cfg, h100).memory
    cfg.model.dtype = "float32"
    fp32 = plan_job(cfg, h100).memory
    assert fp32.weights_gb == pytest.approx(2 * bf16.weights_gb, rel=0.01)
    assert bf16.activations_ckpt_gb < bf16.activations_no_ckpt_gb / 5


def test_count_starts_keeps_evals_whole() -> None:
    assert count_starts(10, [], 5, None) == 1
    assert count_starts(40, [], 5, 48) == 1
    # 45 h of training leaves too little for a 5 h eval: it reruns in a 2nd allocation
    assert count_starts(45, [], 5, 48) == 2
    assert count_starts(100, [], 1, 48) == 3
    assert count_starts(10, [], 50, 48) == 0  # never fits


def test_launcher_and_figures(tmp_path, compose) -> None:
    cfg = compose(["+experiment=ucf101_rank_sweep_14b", "lora.rank=8"])
    assert Launcher.from_hydra(None).time_limit_h is None
    path = tmp_path / "figures.json"
    save_figures("h100", {"train_util": 0.3, "sample_util": 0.2, "device": "NVIDIA H100"}, path)
    gpu = resolve_gpu("h100", Figures.load(path))
    assert gpu.train_util == 0.3 and "measured" in gpu.source
    slow = plan_job(cfg, gpu)
    fast = plan_job(cfg, resolve_gpu("h100"))
    assert slow.train_gpu_hours == pytest.approx(fast.train_gpu_hours * 0.45 / 0.3)


def test_global_batch_derives_accumulation() -> None:
    from rank_sweep.config.schema import TrainConfig

    cfg = TrainConfig(micro_batch=1, grad_accum=7, global_batch=8)
    assert [grad_accum_for(cfg, w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(ValueError, match="train.global_batch=8"):
        grad_accum_for(cfg, 3)
    with pytest.raises(ValueError, match="multiple"):
        grad_accum_for(cfg, 16)
    assert grad_accum_for(TrainConfig(grad_accum=7, global_batch=None), 8) == 7


def test_embedded_default_plans_on_cpu(capsys) -> None:
    assert main(["--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu"]["kind"] == "cpu" and len(out["jobs"]) == 1


def test_a_refused_sweep_stops_before_any_job(tmp_path) -> None:
    """The sweep callback plans the multirun first: a refusal ends the command with the
    reason before the sweep store or any job exists."""
    import subprocess
    import sys

    from rank_sweep.paths import REPO_ROOT

    sweep_dir = tmp_path / "sweep"
    cmd = [
        sys.executable, "-m", "rank_sweep", "-m", "lora.rank=4,8", "track=off",
        "hydra/launcher=slurm", "hydra.launcher.timeout_min=1",
        f"prune.storage=sqlite:///{tmp_path}/optuna.db", f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "time limit" in proc.stdout + proc.stderr
    assert not (sweep_dir / "sweep.json").exists()


def test_successive_halving_schedule_costs_only_finalists(compose) -> None:
    """With synchronous halving rungs (prune.rungs, prune.eta) the plan trains the mean arm
    over the surviving fractions and runs the final tier for the finalists only."""
    from omegaconf import OmegaConf

    from rank_sweep.plan.sweep import plan_sweep, rung_schedule

    jobs = []
    for r in (4, 8, 16, 32, 64):
        cfg = compose(["+experiment=ucf101_rank_sweep_14b", f"lora.rank={r}", "prune=asha"])
        cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # untyped copy
        cfg.prune.rungs, cfg.prune.eta = [0.25, 0.5], 2  # the synchronous sweeper's keys
        jobs.append(cfg)
    assert rung_schedule(jobs[0], 5) == ([0.25, 0.5, 1.0], [5, 3, 2])
    plan = plan_sweep(jobs, None, resolve_gpu("h100"))
    assert plan.finalists == 2
    mean_train = sum(j.train_gpu_hours for j in plan.jobs) / 5
    assert plan.train_gpu_hours == pytest.approx(mean_train * (5 * 0.25 + 3 * 0.25 + 2 * 0.5))
    assert plan.gpu_hours < plan.gpu_hours_no_pruning


def test_eval_tier_nodes_and_sharding_are_read(compose, monkeypatch) -> None:
    """A config with eval.periodic / eval.final nodes is costed from them, and a sharding
    evaluator divides generation over the ranks instead of repeating it."""
    from omegaconf import OmegaConf

    from rank_sweep.eval import evaluator
    from rank_sweep.plan.tiers import generation_tiers

    cfg = compose(["+experiment=ucf101_rank_sweep_14b", "lora.rank=8", "eval.every=1000"])
    flat = {t.name: t for t in generation_tiers(cfg)}
    periodic_clips = int(cfg.eval.periodic.num_clips) if cfg.eval.periodic.metrics else 0
    assert flat["periodic"].clips == periodic_clips
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # untyped copy
    cfg.eval.periodic = {"num_fake": 32, "sample_steps": 20}
    cfg.eval.final = {"num_fake": 2048}
    tiers = {t.name: t for t in generation_tiers(cfg)}
    assert (tiers["periodic"].clips, tiers["periodic"].steps) == (32, 20)
    assert (tiers["final"].clips, tiers["final"].steps, tiers["final"].runs) == (2048, 40, 1)

    cfg = compose(["+experiment=ucf101_rank_sweep_14b", "lora.rank=8", "dist=fsdp"])
    cfg.dist.nproc_per_node = 2
    monkeypatch.setattr(evaluator, "SHARDED_GENERATION", False, raising=False)
    unsharded = plan_job(cfg, resolve_gpu("h100"))
    monkeypatch.setattr(evaluator, "SHARDED_GENERATION", True, raising=False)
    sharded = plan_job(cfg, resolve_gpu("h100"))
    assert sharded.final_gpu_hours == pytest.approx(unsharded.final_gpu_hours / 2)
    assert sharded.tiers[1].wall_h_per_run == pytest.approx(unsharded.tiers[1].wall_h_per_run / 2)


def test_the_untrained_base_costs_one_final_eval(compose) -> None:
    """finetune=none trains nothing and runs no periodic tier: its cost is the final tier."""
    from rank_sweep.plan.job import plan_job

    gpu = resolve_gpu("h100")
    base = plan_job(compose(["+experiment=ucf101_rank_sweep_14b", "finetune=none"]), gpu)
    lora = plan_job(compose(["+experiment=ucf101_rank_sweep_14b", "lora.rank=16"]), gpu)
    assert base.label == "base" and base.trainable_params == 0
    assert base.train_gpu_hours == 0 and base.val_gpu_hours == 0
    assert [t.name for t in base.tiers] == ["final"]
    assert base.gpu_hours == pytest.approx(lora.final_gpu_hours)
    assert base.peak_mem_gb <= lora.peak_mem_gb and not base.refusals
