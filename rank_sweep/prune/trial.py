"""One job's Optuna trial: fixed params, intermediate reports, its own final state.

A job is not sampled by Optuna: its params (method, LoRA rank) come from Hydra and are
written into the trial as fixed values. The job's config fingerprint is a user attr, so
a killed job that is rerun re-attaches to its RUNNING trial instead of adding another.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from rank_sweep.prune.study import make_storage, open_study
from rank_sweep.track import contract as C

log = logging.getLogger(__name__)

# Optuna refuses a categorical whose choices differ between trials of a study, so a
# string param needs one fixed vocabulary; strings of other keys become user attrs only.
# (The order is part of stored studies' distributions: keep it.)
CATEGORIES: dict[str, tuple[str, ...]] = {
    C.TRIAL_PARAM_METHOD: (C.METHOD_FULL, C.METHOD_LORA, C.METHOD_NONE)
}

FINGERPRINT_ATTR = C.TRIAL_ATTR_FINGERPRINT


def fixed_distribution(name: str, value: Any) -> BaseDistribution | None:
    """A distribution under which `value` is fixed: a single-point int/float range (Optuna
    only checks kind and log across trials), or the key's categorical vocabulary."""
    if isinstance(value, bool) or isinstance(value, str):
        choices = CATEGORIES.get(name)
        if choices is None:
            return None
        if value not in choices:
            raise ValueError(f"trial param {name}={value!r} not allowed; use one of {choices}")
        return CategoricalDistribution(choices)
    if isinstance(value, int):
        return IntDistribution(value, value)
    if isinstance(value, float):
        return FloatDistribution(value, value)
    raise TypeError(f"trial param {name}={value!r}: only int, float and str values are supported")


@dataclass
class JobTrial:
    study: optuna.Study
    trial: optuna.Trial
    prunable: bool
    fingerprint: str
    resumed: bool

    @classmethod
    def open(
        cls,
        storage_url: str,
        study_name: str,
        pruner: optuna.pruners.BasePruner,
        *,
        params: dict[str, Any],
        fingerprint: str,
        prunable: bool,
    ) -> JobTrial:
        """Re-attach to this fingerprint's RUNNING trial, or create a new trial."""
        study = open_study(make_storage(storage_url), study_name, pruner, create=True)
        # The study's own (cached) storage must do the writes, or its cache goes stale.
        storage = study._storage
        study_id = study._study_id
        running = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get(FINGERPRINT_ATTR) == fingerprint
        ]
        if running:
            number = max(t.number for t in running)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
            log.info("re-attached to running Optuna trial %d of %s", number, study_name)
            return cls(study, optuna.Trial(study, trial_id), prunable, fingerprint, True)

        trial = _create_trial(study, params, fingerprint, prunable)
        log.info("opened Optuna trial %d of %s with %s", trial.number, study_name, params)
        return cls(study, trial, prunable, fingerprint, False)

    @property
    def number(self) -> int:
        return self.trial.number

    def _frozen(self) -> optuna.trial.FrozenTrial:
        return self.study._storage.get_trial(self.trial._trial_id)

    def report(self, value: float, step: int) -> bool:
        """Record the objective at `step` (eval index or training step: ASHA's min_resource
        is in the same unit); True means stop. A non-prunable trial (the full baseline)
        keeps its curve in a user attr, so it neither gets pruned nor prunes others."""
        step = int(step)
        if not self.prunable:
            curve = dict(self._frozen().user_attrs.get("curve", {}))
            curve.setdefault(str(step), float(value))
            self.trial.set_user_attr("curve", curve)
            return False
        if step in self._frozen().intermediate_values:
            log.debug("trial %d: step %d already reported (resumed job)", self.number, step)
        else:
            self.trial.report(float(value), step)
        return bool(self.trial.should_prune())

    def complete(self, value: float) -> None:
        self.study.tell(self.number, float(value))

    def prune(self) -> None:
        self.study.tell(self.number, state=TrialState.PRUNED)

    def fail(self, error: str) -> None:
        self.trial.set_user_attr("error", error[:1000])
        self.study.tell(self.number, state=TrialState.FAIL)


def _create_trial(
    study: optuna.Study, params: dict[str, Any], fingerprint: str, prunable: bool
) -> optuna.Trial:
    """A RUNNING trial whose params are fixed to `params` (not sampled)."""
    storage = study._storage  # the study's own (cached) storage must do the writes
    trial_id = storage.create_new_trial(study._study_id)
    # Optuna's enqueue_trial fixes params the same way; enqueue itself would let a
    # parallel job pop our waiting trial.
    storage.set_trial_system_attr(trial_id, "fixed_params", dict(params))
    storage.set_trial_user_attr(trial_id, FINGERPRINT_ATTR, fingerprint)
    storage.set_trial_user_attr(trial_id, "prunable", bool(prunable))
    trial = optuna.Trial(study, trial_id)
    for name, value in params.items():
        dist = fixed_distribution(name, value)
        if dist is None:
            trial.set_user_attr(name, value)
        elif isinstance(dist, CategoricalDistribution):
            trial.suggest_categorical(name, dist.choices)
        elif isinstance(dist, IntDistribution):
            trial.suggest_int(name, dist.low, dist.high)
        else:
            trial.suggest_float(name, dist.low, dist.high)
    return trial


@dataclass
class ArmTrials:
    """The synchronous sweeper's trials: one per arm, owned by the sweeper (jobs do not
    open trials under `sha`/`none`). Found again on a rerun by the arm's fingerprint."""

    study: optuna.Study

    def ensure(self, key: str, params: dict[str, Any], fingerprint: str, prunable: bool) -> int:
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get(FINGERPRINT_ATTR) == fingerprint and t.user_attrs.get("arm") == key:
                return t.number
        trial = _create_trial(self.study, params, fingerprint, prunable)
        trial.set_user_attr("arm", key)
        return trial.number

    def _frozen(self, number: int) -> optuna.trial.FrozenTrial:
        return self.study.get_trials(deepcopy=False)[number]

    def report(self, number: int, step: int, value: float) -> None:
        """The rung value as an intermediate value at its training step (once)."""
        t = self._frozen(number)
        if t.state != TrialState.RUNNING or int(step) in t.intermediate_values:
            return
        storage = self.study._storage
        storage.set_trial_intermediate_value(t._trial_id, int(step), float(value))

    def prune(self, number: int, reason: str) -> None:
        t = self._frozen(number)
        if t.state == TrialState.RUNNING:
            self.study._storage.set_trial_user_attr(t._trial_id, "pruned_reason", reason[:1000])
            self.study.tell(number, state=TrialState.PRUNED)

    def complete(self, number: int, value: float) -> None:
        if self._frozen(number).state == TrialState.RUNNING:
            self.study.tell(number, float(value))

    def fail(self, number: int, error: str) -> None:
        t = self._frozen(number)
        if t.state == TrialState.RUNNING:
            self.study._storage.set_trial_user_attr(t._trial_id, "error", error[:1000])
            self.study.tell(number, state=TrialState.FAIL)
