"""Multi-node jobs: rendezvous from the SLURM environment (node list in its compressed
forms, task ids, a port derived from the job id) and a two-node simulation -- two
processes with the environments SLURM gives tasks on two nodes, gloo, FSDP2 -- that
trains to the same weights as one process with the same global batch."""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
from pathlib import Path

import pytest
import torch
from _slurm_node import slurm_task
from _train_script import build_model, make_data, train_cfg
from safetensors.torch import load_file

from rank_sweep.model.adapters import trainable_state_dict
from rank_sweep.model.spec import forward_batch
from rank_sweep.train.dist import expand_nodelist, slurm_rendezvous
from rank_sweep.train.loop import train

STEPS = 3


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("node01", ["node01"]),
        ("node[01-03]", ["node01", "node02", "node03"]),
        ("gpu[7,9-10],login", ["gpu7", "gpu9", "gpu10", "login"]),
        ("a[1-2]-ib,b[08-09]", ["a1-ib", "a2-ib", "b08", "b09"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ],
)
def test_expand_nodelist(nodelist: str, hosts: list[str]) -> None:
    assert expand_nodelist(nodelist) == hosts


def test_slurm_rendezvous_variables() -> None:
    env = {
        "SLURM_NTASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
        "SLURM_NTASKS_PER_NODE": "8", "SLURM_JOB_NODELIST": "gpu-[012-013]", "SLURM_JOB_ID": "734001",
    }  # fmt: skip
    got = slurm_rendezvous(env)
    assert got == {
        "RANK": "9", "WORLD_SIZE": "16", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8",
        "MASTER_ADDR": "gpu-012", "MASTER_PORT": str(15000 + 734001 % 20000),
    }  # fmt: skip
    assert slurm_rendezvous({**env, "MASTER_PORT": "29500"})["MASTER_PORT"] == "29500"
    assert slurm_rendezvous({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == {}
    with pytest.raises(RuntimeError, match="NODELIST"):
        slurm_rendezvous({"SLURM_NTASKS": "2", "SLURM_PROCID": "0"})


def _job_id_with_free_port() -> int:
    """A job id whose derived port (15000 + id % 20000) is free on this machine."""
    for port in range(21000 + (hash(Path.cwd()) % 5000), 35000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port - 15000
    raise RuntimeError("no free port")


def test_two_node_simulation_matches_one_process(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    ref_model = build_model("lora", rank=4)
    train(
        ref_model, make_data(4), train_cfg(steps=STEPS, micro_batch=1, global_batch=2),
        lr=1e-3, state_dir=tmp_path / "single", forward_fn=forward_batch, shift=3.0,
        val_set=make_data(3, seed=2),
    )  # fmt: skip
    ref = trainable_state_dict(ref_model)

    job = _job_id_with_free_port()
    ctx = mp.get_context("spawn")
    procs = []
    for node in range(2):  # one task per node: what srun gives `--nodes=2 --ntasks-per-node=1`
        env = {
            "SLURM_JOB_ID": str(job), "SLURM_NTASKS": "2", "SLURM_NNODES": "2",
            "SLURM_PROCID": str(node), "SLURM_NODEID": str(node), "SLURM_LOCALID": "0",
            "SLURM_NTASKS_PER_NODE": "1", "SLURM_JOB_NODELIST": "127.0.0.[1-2]",
        }  # fmt: skip
        p = ctx.Process(
            target=slurm_task, args=(env, str(tmp_path / "state"), str(tmp_path), STEPS)
        )
        p.start()
        procs.append(p)
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0, f"task exited with {p.exitcode}"
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, info in enumerate(infos):
        assert info["rank"] == r and info["world"] == 2 and info["steps"] == STEPS
        assert info["env"]["MASTER_ADDR"] == "127.0.0.1"  # first host of the node list
        assert info["env"]["MASTER_PORT"] == str(15000 + job % 20000)
    got = load_file(str(tmp_path / "weights.safetensors"))
    assert got.keys() == ref.keys() and got
    diff = max((got[k] - ref[k]).abs().max().item() for k in ref)
    assert diff < 1e-5, diff
    init = trainable_state_dict(build_model("lora", rank=4))
    moved = max((ref[k] - init[k]).abs().max().item() for k in ref)
    assert moved > 100 * diff  # training moved the weights far more than the two runs differ
