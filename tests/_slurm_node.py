"""One SLURM task of a simulated multi-node job, for tests/test_train_multinode.py: the
environment SLURM would give the task (no RANK/MASTER_* at all), then the project's own
rendezvous (`init_distributed`), FSDP2 over gloo and the training loop."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def slurm_task(env: dict[str, str], state_dir: str, out_dir: str, steps: int) -> None:
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        os.environ.pop(key, None)
    os.environ.update(env)
    import torch.distributed as tdist
    from _train_script import build_model, make_data, train_cfg
    from safetensors.torch import save_file

    from rank_sweep.config.schema import DistConfig
    from rank_sweep.model.spec import forward_batch
    from rank_sweep.train.dist import init_distributed, wrap_model
    from rank_sweep.train.loop import train
    from rank_sweep.train.state import trainable_weights

    torch.set_num_threads(1)
    dcfg = DistConfig(backend="fsdp", nproc_per_node=1, nodes=2)
    ctx = init_distributed(dcfg)
    seen = {
        k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    cfg = train_cfg(steps=steps, micro_batch=1, grad_accum=5, global_batch=2)
    model = wrap_model(build_model("lora", rank=4), dcfg, ctx, cfg)
    result = train(
        model, make_data(4), cfg, lr=1e-3, state_dir=Path(state_dir), forward_fn=forward_batch,
        shift=3.0, val_set=make_data(3, seed=2), dist=ctx,
    )  # fmt: skip
    weights = trainable_weights(model)  # collective
    out = Path(out_dir)
    (out / f"rank{ctx.rank}.json").write_text(
        json.dumps(
            {"env": seen, "rank": ctx.rank, "world": ctx.world_size, "steps": result.steps_done}
        )
    )
    if ctx.is_main:
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / "weights.safetensors"))
    tdist.destroy_process_group()


def spawned_worker(state_dir: str, out: str, steps: int, sleep: float) -> dict:
    """One of the workers a job spawns (`launch`): FSDP2 over gloo, slowed forwards."""
    import time

    from _train_script import build_model, make_data, train_cfg
    from safetensors.torch import save_file

    from rank_sweep.config.schema import DistConfig
    from rank_sweep.model.spec import forward_batch
    from rank_sweep.train.dist import init_distributed, wrap_model
    from rank_sweep.train.loop import train
    from rank_sweep.train.state import trainable_weights

    torch.set_num_threads(1)
    dcfg = DistConfig(backend="fsdp", nproc_per_node=2)
    ctx = init_distributed(dcfg)
    cfg = train_cfg(steps=steps, micro_batch=1, global_batch=2)
    model = wrap_model(build_model("lora", rank=4), dcfg, ctx, cfg)

    def slow(m, batch, noisy, t):
        time.sleep(sleep)
        return forward_batch(m, batch, noisy, t)

    result = train(
        model, make_data(4), cfg, lr=1e-3, state_dir=Path(state_dir), forward_fn=slow,
        shift=3.0, dist=ctx,
    )  # fmt: skip
    weights = trainable_weights(model)
    if ctx.is_main:
        save_file({k: v.contiguous() for k, v in weights.items()}, out)
    return {"steps": result.steps_done}


if __name__ == "__main__":  # a job that spawns 2 workers, as `python -m rank_sweep` does
    import argparse
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    ap = argparse.ArgumentParser()
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--sleep", type=float, default=0.0)
    a = ap.parse_args()
    from rank_sweep.train.dist import launch

    launch(spawned_worker, 2, a.state_dir, a.out, a.steps, a.sleep)
