"""Compose and validate every job of a command line before Hydra starts any work.

Hydra's own errors are multi-line and do not say what is allowed; here each problem
becomes one line: `error: <key>=<value>: <what is wrong>; allowed: <what is allowed>`.
With HYDRA_FULL_ERROR=1 the original exception propagates with its traceback.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Iterator, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from rank_sweep.config.paths_check import check_paths
from rank_sweep.config.schema import RootConfig, register_configs
from rank_sweep.config.validate import ConfigError, validate
from rank_sweep.paths import CONF_DIR, EXPERIMENTS_DIR

MAX_VALIDATED_JOBS = 256

# What a type error on these keys should say is allowed (the rest is derived from types).
ALLOWED = {
    "lora.rank": "an int in [1, 1024]",
    "lora.alpha": "a number > 0",
    "data.frames": "4k+1 frames (1, 5, 9, ..., 81)",
    "data.height": "a positive multiple of 16",
    "data.width": "a positive multiple of 16",
}


class PreflightError(ValueError):
    """One-line description of a bad command line."""


def _schema_field(dotted: str) -> tuple[type | None, list[str]]:
    """(type of the field, sibling keys) for a dotted key of RootConfig."""
    node: typing.Any = RootConfig
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(node):
            return None, []
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None, sorted(hints)
        if i == len(parts) - 1:
            return hints[part], sorted(hints)
        node = hints[part]
    return None, []


def _allowed_for(key: str) -> str:
    if key in ALLOWED:
        return ALLOWED[key]
    typ, _ = _schema_field(key)
    text = str(typ).replace("typing.", "")
    for name, desc in (("bool", "true | false"), ("int", "an int"), ("float", "a number")):
        if typ is not None and re.search(rf"\b{name}\b", text):
            return desc + (" or null" if "Optional" in text or "None" in text else "")
    return f"a value of type {text}" if typ is not None else "see `python -m rank_sweep --cfg job`"


def _group_options(group: str) -> list[str]:
    opts: set[str] = set()
    for root in (CONF_DIR, EXPERIMENTS_DIR):
        d = root / group
        if d.is_dir():
            opts.update(p.stem for p in d.glob("*.yaml"))
    return sorted(opts)


def explain(exc: BaseException, override_strs: Sequence[str]) -> str:
    """Turn a Hydra/OmegaConf/validation exception into one line."""
    if isinstance(exc, ConfigError):
        return str(exc)
    msg = str(exc)
    causes = [exc]
    while causes[-1].__cause__ is not None:
        causes.append(causes[-1].__cause__)
    full = " ".join(str(c) for c in causes)

    m = re.search(r"Could not find '([^']+)/([^']+)'", full)
    if isinstance(exc, MissingConfigException) or m:
        if m:
            group, option = m.group(1), m.group(2)
            return (
                f"{group}={option}: unknown option for group '{group}'; "
                f"allowed: {' | '.join(_group_options(group)) or '(none found)'}"
            )
    m = re.search(r"Could not override '([^']+)'", full) or re.search(
        r"Key '([^']+)' (?:is )?not in struct", full
    )
    if m and ("not in" in full or "Could not override" in full):
        key = m.group(1)
        value = next((o.split("=", 1)[1] for o in override_strs if o.startswith(key + "=")), "?")
        parent, _, leaf = key.rpartition(".")
        _, siblings = _schema_field(key)
        where = f"'{parent}'" if parent else "the root config"
        return (
            f"{key}={value}: unknown key '{leaf}' in {where}; allowed keys: {', '.join(siblings)}"
        )
    m = re.search(r"Error merging override (\S+?)=(\S*)", full)
    if m:
        key, value = m.group(1), m.group(2)
        return f"{key}={value!r} is invalid: allowed {_allowed_for(key)}"
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    return first


def expand_jobs(overrides: Sequence[str], multirun: bool) -> Iterator[list[str]]:
    """Every job's override list (the cartesian product of sweep values under -m)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    if not multirun:
        yield list(overrides)
        return
    for batch in BasicSweeper.split_arguments(parsed, None):
        yield from batch


def compose_job(overrides: Sequence[str]) -> DictConfig:
    os.environ.setdefault("RANK_SWEEP_ROOT", str(CONF_DIR.parent))
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def preflight(overrides: Sequence[str], multirun: bool) -> int:
    """Compose + validate each job; return the number of jobs. Raises PreflightError."""
    n = 0
    try:
        for job in expand_jobs(overrides, multirun):
            n += 1
            if n > MAX_VALIDATED_JOBS:
                continue
            cfg = compose_job(job)
            validate(cfg)
            if not cfg.dry_run:  # a plan may be made away from the data
                check_paths(cfg)  # model/data/detector/state paths, one line each
    except (HydraException, OmegaConfBaseException, ConfigError) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        raise PreflightError(explain(exc, overrides)) from exc
    return n
