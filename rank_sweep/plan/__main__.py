"""`python -m rank_sweep.plan [overrides] [-m] [--json]`: the cost of a sweep before it
is launched. Exit status 2 when a job is refused (the reasons are printed, one a line)."""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(__doc__)
        return 0
    as_json = "--json" in args
    single = "--single" in args  # plan one job even if the experiment declares a sweep
    overrides = [a for a in args if a not in ("--json", "-m", "--multirun", "--single")]
    from rank_sweep.plan.compose import compose_jobs
    from rank_sweep.plan.report import format_plan
    from rank_sweep.plan.sweep import plan_sweep

    try:
        jobs, hydra_cfg = compose_jobs(overrides, multirun=not single)
        plan = plan_sweep(jobs, hydra_cfg)
    except ValueError as exc:  # config errors: one line, no traceback
        print(f"error: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(plan.to_dict(), indent=2, default=str))
    else:
        print(format_plan(plan))
    if as_json:  # the text form already lists them
        for r in plan.refusals:
            print(f"refused: {r}", file=sys.stderr)
    return 2 if plan.refusals else 0


if __name__ == "__main__":
    sys.exit(main())
