"""`python -m rank_sweep [-m] [overrides]`: check every job's config, then hand over to Hydra."""

from __future__ import annotations

import os
import sys

from rank_sweep.runtime import configure_threads_env

THREADS = configure_threads_env()  # before torch/OpenMP start: sized to the free cores

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from rank_sweep.config.experiments import register_help_resolvers  # noqa: E402
from rank_sweep.config.preflight import PreflightError, preflight  # noqa: E402
from rank_sweep.config.schema import register_configs  # noqa: E402
from rank_sweep.paths import CONF_DIR, REPO_ROOT  # noqa: E402

os.environ.setdefault("RANK_SWEEP_ROOT", str(REPO_ROOT))
register_configs()
register_help_resolvers()

# Flags after which Hydra prints something instead of running a job.
_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--shell-completion", "-sc"}
# Hydra flags followed by a value (`--cfg job`, `-cn NAME`, ...).
_VALUE_FLAGS = {
    "--cfg", "-c", "--package", "-p", "--config-name", "-cn", "--config-dir", "-cd",
    "--config-path", "-cp", "--experimental-rerun",
}  # fmt: skip


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from rank_sweep.app import run_job

    return run_job(cfg)


def _split_argv(argv: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun, info_only) from Hydra's command line."""
    overrides, multirun, info = [], False, False
    args = iter(argv)
    for arg in args:
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in _INFO_FLAGS or arg.startswith("--info="):
            info = True
        elif arg in _VALUE_FLAGS:
            next(args, None)  # the flag's value is not an override
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun, info


def cli() -> None:
    from rank_sweep.sweep.guard import new_launch_id

    new_launch_id()  # unique default sweep dir per command (see conf/config.yaml)
    overrides, multirun, info = _split_argv(sys.argv[1:])
    if multirun:  # argparse wants -m before the overrides; accept it anywhere
        rest = [a for a in sys.argv[1:] if a not in ("-m", "--multirun")]
        sys.argv[1:] = ["-m", *rest]
    if not info:
        try:
            preflight(overrides, multirun)
        except PreflightError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
    main()
    from rank_sweep.sweep.callbacks import FAILED_JOBS

    if FAILED_JOBS:
        print(f"error: {len(FAILED_JOBS)} job(s) of the sweep failed (see above)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
