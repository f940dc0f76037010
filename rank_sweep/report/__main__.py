"""`python -m rank_sweep.report [--tracking-uri URI] [--experiment NAME] [--sweep ID] [--out DIR]`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: the report never opens a window

from rank_sweep.paths import ENV_TRACKING_URI, reports_dir  # noqa: E402
from rank_sweep.report import build_report, load_runs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rank_sweep.report", description=__doc__)
    p.add_argument(
        "--tracking-uri",
        default=None,
        help=f"MLflow store; default ${ENV_TRACKING_URI} or sqlite:///<repo>/mlflow.db",
    )
    p.add_argument("--experiment", default="rank_sweep", help="MLflow experiment name")
    p.add_argument("--sweep", default=None, help="sweep id; default the most recent sweep")
    p.add_argument("--out", type=Path, default=None, help="default reports/<sweep_id>/")
    p.add_argument("--title", default=None, help="report title")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    try:
        df = load_runs(args.tracking_uri, args.experiment, args.sweep)
    except (FileNotFoundError, ValueError) as exc:  # bad store/experiment/sweep: one line, exit 2
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if df.empty:
        print("no runs found: nothing to report", file=sys.stderr)
        return 1
    out = args.out or reports_dir() / (df.attrs.get("sweep_id") or "unparented")
    paths = build_report(df, out, title=args.title)
    print(f"{len(df)} runs -> {paths.out_dir}")
    for f in (paths.html, paths.markdown, paths.csv, *paths.plots.values()):
        print(f"  {f}")
    if paths.warnings:
        print(f"{len(paths.warnings)} warning(s), see the report:")
        for w in paths.warnings:
            print(f"  ! {w}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
