"""MLflow runs of a sweep -> one-row-per-run table -> results.csv, report.md/.html, plots."""

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
