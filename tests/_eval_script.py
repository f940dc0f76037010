"""Final-tier eval of the tiny Wan model on the synthetic set, importable and runnable as a
script (the resume test SIGKILLs it mid-way; the data-parallel test spawns it twice).

    python tests/_eval_script.py --state-dir D --out-dir O [--slow S] [override ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

# Small final tier: 3 real / 3 generated clips in batches of 1, 2 sampler steps.
OVERRIDES = [
    "eval.num_real=3",
    "eval.num_fake=3",
    "eval.final.batch_size=1",
    "eval.sample_steps=2",
    "eval.bootstrap=20",
    "eval.kid_subsets=4",
    "eval.kid_subset_size=3",
    "eval.log_videos=0",
    "eval.periodic.metrics=[]",
    "eval.detector_size=32",
]


def compose(overrides: list[str]) -> Any:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rank_sweep.config import register_configs
    from rank_sweep.paths import CONF_DIR, REPO_ROOT

    os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO_ROOT))
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*OVERRIDES, *overrides])


def setup(cfg: Any, state_dir: Path, ctx: Any = None, max_clips: int = 3) -> tuple[Any, Any]:
    """(evaluator, transformer) as the job builds them (CPU)."""
    from rank_sweep.data import build_dataset
    from rank_sweep.eval.evaluator import Evaluator
    from rank_sweep.model.spec import WanSpec

    torch.manual_seed(0)
    d, e = cfg.data, cfg.eval
    frames = max(int(e.sample_frames or d.frames), int(e.frames))
    eval_set = build_dataset(
        d, d.eval_split, train=False, max_clips=max_clips, frames=frames,
        height=int(d.height), width=int(d.width),
    )  # fmt: skip
    spec = WanSpec.from_config(cfg.model, device=torch.device("cpu"))
    spec.load_encoders()
    ev = Evaluator(cfg, spec, eval_set, torch.device("cpu"), state_dir=state_dir, dist_ctx=ctx)
    ev.prepare()
    spec.free_encoders()
    return ev, spec.load_transformer()


def final_eval(state_dir: Path, out_dir: Path, overrides: list[str], ctx: Any = None) -> dict:
    ev, transformer = setup(compose(overrides), state_dir, ctx)
    result = ev.evaluate(transformer, 4, final=True, out_dir=out_dir)
    return result.metrics


def dist_worker(state_dir: str, out_dir: str, overrides: list[str]) -> dict:
    """One rank of a gloo data-parallel eval (spawned by rank_sweep.train.dist.launch)."""
    import torch.distributed as tdist

    from rank_sweep.train.dist import DistContext

    torch.set_num_threads(1)
    tdist.init_process_group("gloo")
    rank, world = tdist.get_rank(), tdist.get_world_size()
    ctx = DistContext(rank=rank, world_size=world, local_rank=rank, is_main=rank == 0)
    metrics = final_eval(Path(state_dir), Path(out_dir), overrides, ctx)
    return metrics


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--state-dir", required=True, type=Path)
    p.add_argument("--out-dir", required=True, type=Path)
    p.add_argument("--slow", type=float, default=0.0, help="seconds of sleep after each batch")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.slow > 0:  # stand-in for a 14B batch: the kill lands between batches
        from rank_sweep.eval import generation

        real = generation.GenerationJob.run_batch

        def slow(self, b):  # type: ignore[no-untyped-def]
            out = real(self, b)
            time.sleep(args.slow)
            return out

        generation.GenerationJob.run_batch = slow  # type: ignore[method-assign]
    print(json.dumps(final_eval(args.state_dir, args.out_dir, args.overrides)))


if __name__ == "__main__":
    main()
