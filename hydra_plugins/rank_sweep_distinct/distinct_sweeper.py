"""Hydra's basic sweeper, launching each distinct job once (rank_sweep.sweep.jobs).

Selected in conf/config.yaml with `override hydra/sweeper: rank_sweep_distinct`. Hydra
only instantiates sweepers that live in the `hydra_plugins` namespace package, hence
this thin module; the decision is `rank_sweep.sweep.jobs.distinct_jobs`.
"""

# No `from __future__ import annotations`: Hydra executes plugin modules outside
# sys.modules, where dataclasses cannot resolve string annotations.
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore


@dataclass
class DistinctSweeperConf:
    _target_: str = "hydra_plugins.rank_sweep_distinct.distinct_sweeper.DistinctSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[dict[str, str]] = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="rank_sweep_distinct",
    node=DistinctSweeperConf,
    provider="rank_sweep",
)


class DistinctSweeper(BasicSweeper):
    def split_arguments(self, overrides: Sequence[Any], max_batch_size: Optional[int]):  # type: ignore[override]
        from rank_sweep.job.identity import fingerprint
        from rank_sweep.sweep.jobs import distinct_jobs

        (jobs,) = BasicSweeper.split_arguments(list(overrides), None)
        loader = self.hydra_context.config_loader

        def fingerprint_of(job: Sequence[str]) -> str:
            return fingerprint(loader.load_sweep_config(self.config, list(job)))

        kept = distinct_jobs(jobs, fingerprint_of).kept
        if max_batch_size is None:
            return [kept]
        return [kept[i : i + max_batch_size] for i in range(0, len(kept), max_batch_size)]
