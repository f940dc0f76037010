"""MLflow runs of a sweep -> one-row-per-run table -> results.csv, report.md/.html, plots."""

import os

# The report reads dozens of tiny artifacts (features, per-clip values, samples); MLflow
# draws a progress bar for each (3 lines per artifact in a log). The report shows one bar
# over the runs instead. A user's own setting wins.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from rank_sweep.paths import tracking_uri as default_tracking_uri
from rank_sweep.report.build import ReportPaths, build_report
from rank_sweep.report.load import load_runs, metric_history
from rank_sweep.report.table import (
    check_protocols,
    datasets,
    long_metrics,
    random_init,
    report_warnings,
)

__all__ = [
    "ReportPaths",
    "build_report",
    "check_protocols",
    "datasets",
    "default_tracking_uri",
    "load_runs",
    "long_metrics",
    "metric_history",
    "random_init",
    "report_warnings",
]
