"""The synchronous successive-halving sweeper on planted curves, through the real Hydra
sweeper plugin and real launchers (basic, joblib): order independence, barrier under
parallel slow starters, all-tied prunes nothing, kill + rerun replays and retrains nothing.

Many sweeps run in one subprocess (`PLANTED_RUNS`), so Python and Hydra start once.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from rank_sweep.prune.decide import decide

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
APP = TESTS / "_planted_app.py"
sys.path.insert(0, str(TESTS))
import _planted_app as planted  # noqa: E402


def _env(runs: list[list[str]] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PLANTED_RUNS", None)
    if runs is not None:
        env["PLANTED_RUNS"] = json.dumps(runs)
    return env


def _argv(tmp: Path, name: str, ranks: str, *extra: str) -> list[str]:
    return [
        "-m", f"rank={ranks}", f"hydra.sweep.dir={tmp}/{name}/sweep",
        f"state_root={tmp}/{name}/state", "hydra.sweeper.protocol=_planted_app",
        f"prune.storage=journal://{tmp}/{name}/optuna.log", "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled", "hydra.output_subdir=null", *extra,
    ]  # fmt: skip


def _run(runs: list[list[str]], timeout: int = 600) -> None:
    proc = subprocess.run(
        [sys.executable, str(APP)], env=_env(runs), capture_output=True, text=True,
        timeout=timeout, cwd=TESTS,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]


def _doc(tmp: Path, name: str) -> dict:
    return json.loads((tmp / name / "sweep" / "decisions.json").read_text())


def _outcome(doc: dict) -> dict:
    """Everything decided, without what names the run (sweep id, override paths)."""
    rungs = [{k: v for k, v in r.items() if k != "sweep_id"} for r in doc["rungs"]]
    return {"rungs": rungs, "final": doc["final"], "baselines": doc["baselines"]}


def _steps(tmp: Path, name: str) -> Counter:
    lines = (tmp / name / "state" / "steps.log").read_text().split("\n")
    return Counter(tuple(ln.split()[:2]) for ln in lines if ln.strip())


def _expected_rungs(ranks: list[int], steps: list[int], eta: int = 2) -> list[tuple]:
    """The decisions the planted values imply, computed here without the sweeper."""
    alive = sorted(ranks)
    out = []
    for k, step in enumerate(steps[:-1]):
        metrics = {f"r{r}": planted.item_values(r, step, "planted", 0.01) for r in alive}
        d = decide("x", k, step, metrics, eta=eta)
        out.append((list(d.kept), list(d.pruned)))
        alive = [r for r in alive if f"r{r}" in d.kept]
    return out


def test_every_permutation_same_decisions_and_baseline_once(tmp_path: Path) -> None:
    ranks = [4, 16, 64]
    perms = list(itertools.permutations(ranks))
    runs = [
        _argv(tmp_path, f"p{i}", ",".join(map(str, p)), "method=lora,full")
        for i, p in enumerate(perms)
    ]
    _run(runs)
    docs = [_doc(tmp_path, f"p{i}") for i in range(len(perms))]
    ref = _outcome(docs[0])
    for d in docs[1:]:
        assert _outcome(d) == ref
    got = [(r["kept"], r["pruned"]) for r in ref["rungs"]]
    assert got == _expected_rungs(ranks, [2, 4, 8])
    assert any(r["pruned"] for r in ref["rungs"])  # the planted curves do separate
    assert "full" in ref["baselines"] and all("full" not in r["arms"] for r in ref["rungs"])
    for i in range(len(perms)):
        steps = _steps(tmp_path, f"p{i}")
        assert max(steps.values()) == 1  # no step trained twice (pauses resume)
        assert sum(1 for a, _ in steps if a == "full") == 8  # baseline once, full budget
    # Optuna: pruned trials are PRUNED with their rung values; the rest COMPLETE.
    study = optuna.load_study(
        study_name=docs[0]["sweep_id"],
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(tmp_path / "p0" / "optuna.log"))
        ),
    )
    states = {t.user_attrs["arm"]: t for t in study.get_trials()}
    pruned = {a for r in ref["rungs"] for a in r["pruned"]}
    assert pruned and all(states[a].state.name == "PRUNED" for a in pruned)
    assert all(states[a].intermediate_values for a in pruned)
    assert all(states[a].state.name == "COMPLETE" for a in states if a not in pruned)
    assert study.user_attrs["rank_sweep.decision.rung0"]["pruned"] == ref["rungs"][0]["pruned"]


def test_all_tied_prunes_nothing(tmp_path: Path) -> None:
    _run([_argv(tmp_path, "tied", "4,8,16,32,64", "curve=tied")])
    doc = _doc(tmp_path, "tied")
    assert [r["pruned"] for r in doc["rungs"]] == [[], []]
    assert sorted(doc["final"]["tied_with_best"]) == sorted(f"r{r}" for r in (4, 8, 16, 32, 64))


def test_joblib_parallel_slow_starters_match_basic(tmp_path: Path) -> None:
    """Two workers, jobs of uneven wall time: the barrier makes decisions the same as
    the sequential launcher's, in either launch order."""
    joblib = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "slow=0.05"]
    _run(
        [
            _argv(tmp_path, "basic", "4,8,16,32,64"),
            _argv(tmp_path, "jl_fwd", "4,8,16,32,64", *joblib),
            _argv(tmp_path, "jl_rev", "64,32,16,8,4", *joblib),
        ]
    )
    ref = _outcome(_doc(tmp_path, "basic"))
    assert [(r["kept"], r["pruned"]) for r in ref["rungs"]] == _expected_rungs(
        [4, 8, 16, 32, 64], [2, 4, 8]
    )
    for name in ("jl_fwd", "jl_rev"):
        assert _outcome(_doc(tmp_path, name)) == ref
        pids = {
            ln.split()[2]
            for ln in (tmp_path / name / "state" / "steps.log").read_text().split("\n")
            if ln
        }
        assert len(pids) >= 2  # really ran in parallel worker processes


def test_killed_after_first_decision_rerun_replays_and_retrains_nothing(tmp_path: Path) -> None:
    ref_argv = _argv(tmp_path, "ref", "4,8,16,32,64")
    _run([ref_argv])
    argv = _argv(tmp_path, "kill", "4,8,16,32,64", "slow=0.2")
    proc = subprocess.Popen(
        [sys.executable, str(APP), *argv], env=_env(), cwd=TESTS,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    decisions = tmp_path / "kill" / "sweep" / "decisions.json"
    deadline = time.time() + 300
    while not decisions.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert decisions.exists(), "the sweep never reached its first decision"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep, mid rung 1 or just before it
    proc.wait()
    first = json.loads(decisions.read_text())
    assert len(first["rungs"]) == 1 and first["final"] is None
    before = _steps(tmp_path, "kill")
    _run([argv])
    after = _steps(tmp_path, "kill")
    assert max(after.values()) == 1  # no step of any arm trained twice
    rung0 = {(a, s) for (a, s) in before if int(s) <= 2}
    assert all(after[k] == 1 for k in rung0)
    assert _outcome(_doc(tmp_path, "kill")) == _outcome(_doc(tmp_path, "ref"))
    assert set(after) == set(_steps(tmp_path, "ref"))  # exactly the uninterrupted sweep's steps


@pytest.mark.slow
def test_all_permutations_of_five_ranks(tmp_path: Path) -> None:
    ranks = [4, 8, 16, 32, 64]
    perms = list(itertools.permutations(ranks))
    _run([_argv(tmp_path, f"p{i}", ",".join(map(str, p))) for i, p in enumerate(perms)], 3000)
    ref = _outcome(_doc(tmp_path, "p0"))
    assert all(_outcome(_doc(tmp_path, f"p{i}")) == ref for i in range(len(perms)))
