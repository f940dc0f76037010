"""Optuna study/trial handling on real SQLite and journal storages."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from rank_sweep.config.schema import PruneConfig
from rank_sweep.prune.study import default_storage, make_pruner, make_storage, open_study
from rank_sweep.prune.trial import JobTrial

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def storage_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'optuna.db'}"


def _open(url: str, study: str, pruner, rank: int, prunable: bool = True, method: str = "lora"):
    return JobTrial.open(
        url,
        study,
        pruner,
        params={"method": method, "lora_rank": rank},
        fingerprint=f"fp-{method}-{rank}",
        prunable=prunable,
    )


def test_make_pruner_kinds() -> None:
    asha = make_pruner(PruneConfig(pruner="asha", min_resource=3, reduction_factor=4))
    assert isinstance(asha, optuna.pruners.SuccessiveHalvingPruner)
    assert asha._min_resource == 3 and asha._reduction_factor == 4
    med = make_pruner(PruneConfig(pruner="median", n_startup_trials=5, n_warmup_steps=2))
    assert isinstance(med, optuna.pruners.MedianPruner)
    assert isinstance(make_pruner(PruneConfig(pruner="none")), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="prune.pruner='hyperband'"):
        make_pruner(PruneConfig(pruner="hyperband"))
    assert default_storage().startswith("sqlite:///") and default_storage().endswith("optuna.db")
    with pytest.raises(ValueError, match="prune.storage="):
        make_storage("optuna.db")


def test_params_fixed_and_states(storage_url: str) -> None:
    pruner = make_pruner(PruneConfig(pruner="none"))
    open_study(storage_url, "states", pruner, create=True)
    a = _open(storage_url, "states", pruner, 4)
    b = _open(storage_url, "states", pruner, 64)
    full = _open(storage_url, "states", pruner, 0, prunable=False, method="full")
    assert len({a.number, b.number, full.number}) == 3
    a.report(3.0, 1)
    a.complete(2.5)
    b.fail("RuntimeError: boom")
    full.report(1.0, 1)
    full.prune()
    study = open_study(storage_url, "states", pruner, create=False)
    by_num = {t.number: t for t in study.get_trials(deepcopy=False)}
    assert by_num[a.number].params == {"method": "lora", "lora_rank": 4}
    assert by_num[b.number].params == {"method": "lora", "lora_rank": 64}
    assert by_num[full.number].params == {"method": "full", "lora_rank": 0}
    assert by_num[a.number].state == TrialState.COMPLETE and by_num[a.number].value == 2.5
    assert by_num[a.number].intermediate_values == {1: 3.0}
    assert by_num[b.number].state == TrialState.FAIL
    assert by_num[b.number].user_attrs["error"] == "RuntimeError: boom"
    assert by_num[full.number].state == TrialState.PRUNED
    assert by_num[full.number].user_attrs["curve"] == {"1": 1.0}
    with pytest.raises(KeyError, match="not found"):
        open_study(storage_url, "missing", pruner, create=False)


def test_asha_prunes_worse_trial_while_both_run(storage_url: str) -> None:
    pruner = make_pruner(PruneConfig(pruner="asha", min_resource=1, reduction_factor=2))
    open_study(storage_url, "asha", pruner, create=True)
    good = _open(storage_url, "asha", pruner, 8)
    bad = _open(storage_url, "asha", pruner, 4)
    full = _open(storage_url, "asha", pruner, 0, prunable=False, method="full")
    # Interleaved like parallel jobs: nobody has completed.
    assert good.report(10.0, 1) is False
    assert full.report(500.0, 1) is False  # the baseline is never pruned
    assert bad.report(100.0, 1) is True
    assert good.report(9.0, 2) is False


def test_median_never_prunes_without_completed_trials(storage_url: str) -> None:
    pruner = make_pruner(PruneConfig(pruner="median", n_startup_trials=0, n_warmup_steps=0))
    open_study(storage_url, "median", pruner, create=True)
    a = _open(storage_url, "median", pruner, 8)
    b = _open(storage_url, "median", pruner, 4)
    assert a.report(10.0, 1) is False
    assert b.report(100.0, 1) is False  # much worse, but nothing completed yet
    a.complete(10.0)
    c = _open(storage_url, "median", pruner, 16)
    assert c.report(100.0, 1) is True  # now there is a completed trial to compare with


def test_prunable_false_never_pruned(storage_url: str) -> None:
    pruner = make_pruner(PruneConfig(pruner="asha", min_resource=1, reduction_factor=2))
    open_study(storage_url, "baseline", pruner, create=True)
    best = _open(storage_url, "baseline", pruner, 8)
    assert best.report(1.0, 1) is False
    full = _open(storage_url, "baseline", pruner, 0, prunable=False, method="full")
    assert [full.report(1000.0 + s, s) for s in (1, 2, 3)] == [False, False, False]


def test_resumed_job_reattaches_to_its_trial(storage_url: str) -> None:
    pruner = make_pruner(PruneConfig(pruner="asha", min_resource=1, reduction_factor=2))
    open_study(storage_url, "resume", pruner, create=True)
    first = _open(storage_url, "resume", pruner, 32)
    first.report(5.0, 1)
    first.report(4.0, 2)
    # Killed; the rerun opens again with the same fingerprint and replays step 2.
    again = _open(storage_url, "resume", pruner, 32)
    assert again.resumed and again.number == first.number
    again.report(4.5, 2)  # already reported: kept as the first value, no error
    again.report(3.0, 3)
    again.complete(3.0)
    study = open_study(storage_url, "resume", pruner, create=False)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 1
    assert trials[0].intermediate_values == {1: 5.0, 2: 4.0, 3: 3.0}
    # A finished trial is not re-attached: a new job with that fingerprint gets a new one.
    assert not _open(storage_url, "resume", pruner, 32).resumed


def test_journal_storage(tmp_path: Path) -> None:
    url = f"journal://{tmp_path / 'optuna.log'}"  # journal:///tmp/.../optuna.log
    pruner = make_pruner(PruneConfig(pruner="asha", min_resource=1, reduction_factor=2))
    open_study(url, "journal", pruner, create=True)
    good = _open(url, "journal", pruner, 8)
    bad = _open(url, "journal", pruner, 4)
    assert good.report(1.0, 1) is False
    assert bad.report(50.0, 1) is True
    bad.prune()
    good.complete(1.0)
    study = open_study(url, "journal", pruner, create=False)
    assert sorted(t.state.name for t in study.get_trials()) == ["COMPLETE", "PRUNED"]
    assert (tmp_path / "optuna.log").stat().st_size > 0
