"""Config node of the sweeper, stored as `hydra/sweeper: rank_sweep`.

No `from __future__ import annotations` in this package: Hydra execs plugin modules
without registering them in sys.modules, and dataclasses then cannot resolve string
annotations.
"""

from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore


@dataclass
class RankSweepSweeperConf:
    _target_: str = "hydra_plugins.rank_sweep_sweeper.sweeper.RankSweepSweeper"
    # Sweep values given in config instead of on the command line (as BasicSweeper's).
    params: Optional[dict[str, str]] = None
    # Module that tells the sweeper what an arm is and where its rung records live
    # (describe, record_path, budget, stop_override, on_decision, on_final).
    protocol: str = "rank_sweep.prune.rung"


ConfigStore.instance().store(
    group="hydra/sweeper", name="rank_sweep", node=RankSweepSweeperConf, provider="rank_sweep"
)
