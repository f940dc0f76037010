"""Soak test of the failure paths, through the real CLI (slow: ~15 min on 2 CPU cores).

    python benchmarks/soak.py [--seed 0] [--keep DIR]

Cases, one line each (what was lost must be nothing):
  kill      a sweep (ranks 4,8) killed with SIGKILL at 5 random points, each time rerun;
            final adapters compared bitwise with an uninterrupted sweep, MLflow metric
            histories checked for duplicate steps, one run per job
  twins     the same sweep command started twice at once on one store: two parents, two
            studies, each with only its own children and trials
  same-job  the same job started twice at once: one run, no duplicate points
  corrupt   newest checkpoint truncated after a kill: resumed from the previous one,
            final adapter bitwise equal to the uninterrupted one
Everything (cache, stores, state, outputs) lives in a temp dir.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import load_file

from rank_sweep.track import contract as C

REPO = Path(__file__).resolve().parent.parent
log = logging.getLogger("soak")

TINY = [
    "train.steps=6", "train.checkpoint_every=1", "eval.every=2", "eval.metrics=[fvd]",
    "eval.num_real=6", "eval.num_fake=4", "eval.sample_steps=2", "eval.bootstrap=10",
    "eval.log_videos=0", "track.system_metrics=false", "prune=none",
]  # fmt: skip
RANKS = "lora.rank=4,8"
ADAPTER = "adapter/pytorch_lora_weights.safetensors"


class Soak:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "RANK_SWEEP_CACHE": str(root / "cache"),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "TQDM_DISABLE": "1",
            "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "false",
            "HYDRA_FULL_ERROR": "1",
        }
        (root / "logs").mkdir(parents=True, exist_ok=True)
        self.n = 0

    # -- processes --------------------------------------------------------------------------
    def args(self, name: str, *extra: str, sweep_dir: bool = True) -> list[str]:
        d = self.root / name
        out = [
            sys.executable, "-m", "rank_sweep", *TINY,
            f"track.uri=sqlite:///{d}/mlflow.db", f"prune.storage=sqlite:///{d}/optuna.db",
            f"state_dir={d}/state", f"hydra.run.dir={d}/run/${{now:%H%M%S%f}}",
            "hydra.sweep.subdir=${hydra.job.num}", *extra,
        ]  # fmt: skip
        if sweep_dir:
            out.append(f"hydra.sweep.dir={d}/sweep")
        return out

    def start(self, cmd: list[str], tag: str, **env: str) -> subprocess.Popen:
        self.n += 1
        logf = open(self.root / "logs" / f"{self.n:02d}-{tag}.log", "w")  # noqa: SIM115
        return subprocess.Popen(
            cmd, cwd=self.root, env={**self.env, **env}, stdout=logf, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill -9 reaches every worker
        )  # fmt: skip

    def finish(self, proc: subprocess.Popen, timeout: float = 1800) -> int:
        rc = proc.wait(timeout=timeout)
        if rc != 0:
            raise RuntimeError(f"command failed (exit {rc}); see {self.root / 'logs'}")
        return rc

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    # -- inspection -------------------------------------------------------------------------
    @staticmethod
    def progress(state: Path) -> int:
        """Sum over jobs of the newest checkpointed step (read from the weights header)."""
        total = 0
        for job in state.glob("*-*"):
            best = 0
            for name in ("checkpoint", "checkpoint.old"):
                f = job / name / "trainable.safetensors"
                try:
                    with safe_open(str(f), "pt") as fh:
                        best = max(best, int(fh.metadata()["step"]))
                except Exception:  # absent or mid-write: not progress yet
                    continue
            total += best
        return total

    @staticmethod
    def adapters(sweep_or_runs: Path) -> dict[int, dict]:
        out = {}
        for f in sorted(sweep_or_runs.glob(f"*/{ADAPTER}")):
            rank = int(OmegaConf.load(f.parent.parent / "config.yaml").lora.rank)
            out[rank] = load_file(str(f))
        return out

    @staticmethod
    def equal(a: dict[int, dict], b: dict[int, dict]) -> bool:
        import torch

        return a.keys() == b.keys() and all(
            a[r].keys() == b[r].keys() and all(torch.equal(a[r][k], b[r][k]) for k in a[r])
            for r in a
        )

    @staticmethod
    def store(name_dir: Path) -> tuple[list, int]:
        """(runs, duplicate metric steps over all runs and keys) of a case's MLflow store."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"sqlite:///{name_dir}/mlflow.db")
        exp = client.get_experiment_by_name("rank_sweep")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        dups = 0
        for r in runs:
            for key in r.data.metrics:
                steps = [m.step for m in client.get_metric_history(r.info.run_id, key)]
                dups += len(steps) - len(set(steps))
        return runs, dups

    # -- cases --------------------------------------------------------------------------------
    def reference(self) -> tuple[dict[int, dict], float]:
        t0 = time.time()
        self.finish(self.start(self.args("ref", "-m", RANKS), "ref"))
        return self.adapters(self.root / "ref" / "sweep"), time.time() - t0

    def case_kill(self, ref: dict[int, dict]) -> str:
        state = self.root / "kill" / "state"
        total = 2 * 6  # checkpointed steps when done (two ranks x 6 steps)
        details = []
        for i in range(5):
            before = self.progress(state)
            advance = self.rng.choice([1, 2])  # checkpoints to wait for, then a random delay
            extra = self.rng.uniform(0.0, 2.5)
            proc = self.start(self.args("kill", "-m", RANKS), f"kill{i + 1}")
            while proc.poll() is None and self.progress(state) < before + advance:
                time.sleep(0.05)
            time.sleep(extra)
            if proc.poll() is not None:
                details.append(f"#{i + 1} finished before the kill")
                continue
            self.kill(proc)
            details.append(f"#{i + 1} at step {self.progress(state)}/{total}(+{extra:.1f}s)")
        self.finish(self.start(self.args("kill", "-m", RANKS), "kill-final"))
        got = self.adapters(self.root / "kill" / "sweep")
        runs, dups = self.store(self.root / "kill")
        children = [r for r in runs if r.data.tags.get(C.TAG_ROLE) != "sweep"]
        parents = [r for r in runs if r.data.tags.get(C.TAG_ROLE) == "sweep"]
        killed = sum("at step" in d for d in details)
        same = self.equal(ref, got)
        ok = same and dups == 0 and killed == 5 and len(children) == 2 and len(parents) == 1
        return (
            f"kill: {killed}/5 random SIGKILLs resumed ({'; '.join(details)}); final adapters "
            f"bitwise-equal to uninterrupted: {same} ({len(got)}/{len(ref)} ranks); "
            f"duplicate metric steps: {dups}; runs: {len(parents)} parent, {len(children)} "
            f"children; lost: {'nothing' if ok else 'SEE ABOVE'}"
        )

    def case_twins(self) -> str:
        # Default sweep dir (no hydra.sweep.dir): both resolve it in the same second.
        cmd = self.args("twins", "-m", RANKS, "sweep_name=twins", sweep_dir=False)
        procs = [self.start(cmd, "twinA"), self.start(cmd, "twinB")]
        for p in procs:
            self.finish(p)
        import optuna

        runs, dups = self.store(self.root / "twins")
        parents = [r for r in runs if r.data.tags.get(C.TAG_ROLE) == "sweep"]
        storage = f"sqlite:///{self.root}/twins/optuna.db"
        studies = optuna.get_all_study_names(storage)
        parts = []
        ok = len(parents) == 2 and len(studies) == 2 and dups == 0
        for p in parents:
            sid = p.data.tags[C.TAG_SWEEP_ID]
            kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]
            own = all(k.data.tags.get(C.TAG_SWEEP_ID) == sid for k in kids)
            ranks = sorted(int(k.data.tags[C.TAG_LORA_RANK]) for k in kids)
            trials = (
                optuna.load_study(study_name=sid, storage=storage).trials if sid in studies else []
            )
            t_ranks = sorted(int(t.params["lora_rank"]) for t in trials)
            ok = (
                ok and own and ranks == [4, 8] and t_ranks == [4, 8] and p.info.status == "FINISHED"
            )
            parts.append(
                f"{sid}: {p.info.status}, children ranks {ranks} (own: {own}), trials {t_ranks}"
            )
        dirs = sorted(d.name for d in (self.root / "multirun" / "twins").iterdir())
        return (
            f"twins: {len(parents)} parents, {len(studies)} studies, sweep dirs {len(dirs)} "
            f"({', '.join(dirs)}); {'; '.join(parts)}; duplicate metric steps: {dups}; "
            f"lost: {'nothing' if ok else 'SEE ABOVE'}"
        )

    def case_same_job(self) -> str:
        cmd = self.args("samejob", "lora.rank=4")
        a = self.start(cmd, "sameA")
        time.sleep(0.5)
        b = self.start(cmd, "sameB")
        self.finish(a)
        self.finish(b)
        runs, dups = self.store(self.root / "samejob")
        logs = sorted((self.root / "logs").glob("*-same*.log"))
        waited = sum("already running" in f.read_text() for f in logs)
        reused = sum("reusing finished run" in f.read_text() for f in logs)
        ok = len(runs) == 1 and dups == 0 and waited == 1 and reused == 1
        return (
            f"same-job: 2 processes -> {len(runs)} MLflow run(s); second waited: {waited == 1}, "
            f"reused the first's run: {reused == 1}; duplicate metric steps: {dups}; "
            f"lost: {'nothing' if ok else 'SEE ABOVE'}"
        )

    def case_corrupt(self, ref: dict[int, dict]) -> str:
        state = self.root / "corrupt" / "state"
        cmd = self.args("corrupt", "lora.rank=8")
        # Hold the job right after the step-4 swap (checkpoint + checkpoint.old), kill it there.
        proc = self.start(cmd, "corrupt1", RANK_SWEEP_CKPT_PAUSE="4:after:600")
        while proc.poll() is None and self.progress(state) < 4:
            time.sleep(0.05)
        time.sleep(1.0)
        self.kill(proc)
        (job,) = state.glob("lora-r8-*")
        newest = job / "checkpoint" / "state.pt"
        data = newest.read_bytes()
        newest.write_bytes(data[: len(data) // 3])  # a truncated write
        self.finish(self.start(cmd, "corrupt2"))
        text = sorted((self.root / "logs").glob("*-corrupt2.log"))[0].read_text()
        fell_back = "resuming from the previous checkpoint" in text
        resumed = [ln for ln in text.splitlines() if "resumed from step" in ln]
        got = self.adapters(self.root / "corrupt" / "run")
        same = 8 in got and self.equal({8: ref[8]}, {8: got[8]})
        runs, dups = self.store(self.root / "corrupt")
        ok = fell_back and same and dups == 0 and len(runs) == 1
        step = resumed[0].split("resumed from step")[1].split()[0] if resumed else "?"
        return (
            f"corrupt: newest checkpoint (step 4) truncated -> resumed from the previous one: "
            f"{fell_back} (step {step}); final adapter bitwise-equal: {same}; runs: {len(runs)}; "
            f"duplicate metric steps: {dups}; lost: {'nothing' if ok else 'SEE ABOVE'}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    p.add_argument("--keep", type=Path, default=None, help="work here and keep it (default: tmp)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.keep or Path(tempfile.mkdtemp(prefix="rank_sweep_soak-"))
    root.mkdir(parents=True, exist_ok=True)
    soak = Soak(root.resolve(), args.seed)
    t0 = time.time()
    ref, t_ref = soak.reference()
    print(
        f"reference: uninterrupted sweep {RANKS} in {t_ref:.0f}s ({len(ref)} adapters)", flush=True
    )
    lines = [soak.case_kill(ref), soak.case_twins(), soak.case_same_job(), soak.case_corrupt(ref)]
    for line in lines:
        print(line, flush=True)
    print(f"soak done in {time.time() - t0:.0f}s; files in {root}")
    if any("SEE ABOVE" in ln for ln in lines):
        sys.exit(1)


if __name__ == "__main__":
    main()
