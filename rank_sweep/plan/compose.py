"""Compose the jobs of a command line exactly as `python -m rank_sweep -m ...` would:
the repo's conf with the experiments search path, the experiment's
`hydra.sweeper.params` crossed with the command line's sweep overrides."""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _parse(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def expand(base: list[str], sweeper_params: dict[str, str] | None) -> list[list[str]]:
    """Override lists of every job: sweeper params first, the command line wins a key."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    batches = BasicSweeper.split_arguments(_parse(params + list(base)), None)
    return [list(job) for batch in batches for job in batch]


def compose_jobs(
    overrides: list[str], multirun: bool = True
) -> tuple[list[DictConfig], DictConfig]:
    """(job configs, hydra config of the first job). Sweep overrides (a=1,2) need
    multirun; the experiment's sweeper params are expanded when multirun is on."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from rank_sweep.config import register_configs
    from rank_sweep.paths import CONF_DIR, REPO_ROOT

    os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO_ROOT))
    register_configs()
    parsed = _parse(overrides)
    sweeping = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeping and not multirun:
        raise ValueError(f"sweep overrides {sweeping} need -m (multirun)")
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]

    def _compose_all() -> tuple[list[DictConfig], DictConfig]:
        first = compose(config_name="config", overrides=fixed, return_hydra_config=True)
        params = OmegaConf.select(first, "hydra.sweeper.params", default=None)
        params = OmegaConf.to_container(params) if params is not None and multirun else None
        job_overrides = expand(list(overrides), params) if multirun else [fixed]
        return [compose(config_name="config", overrides=o) for o in job_overrides], first.hydra

    if GlobalHydra.instance().is_initialized():  # inside a running app (the sweep callback)
        return _compose_all()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return _compose_all()
    finally:
        GlobalHydra.instance().clear()
