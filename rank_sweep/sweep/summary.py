"""The short table a sweep prints when it ends: one line per job, best first."""

from __future__ import annotations

import math
from typing import Any

from rank_sweep.track import contract as C


def _wall_s(run: Any) -> float | None:
    end = getattr(run, "end_time", None)
    start = getattr(run, "start_time", None)
    if not end or not start:
        return None
    return (end - start) / 1000.0


def summary_rows(runs: list[Any], metric: str) -> list[dict[str, Any]]:
    """Rows (label, status, metric, wall) from RunInfo-like objects; sorted: finished runs by
    metric (lower is better), then the rest."""
    rows = []
    for r in runs:
        method = r.tags.get(C.TAG_METHOD, "?")
        if method == C.METHOD_LORA:
            label = f"lora r{r.tags.get(C.TAG_LORA_RANK, '?')}"
        else:
            label = "base (no fine-tune)" if method == C.METHOD_NONE else method
        status = r.status
        if status == "pruned" and r.tags.get(C.TAG_PRUNED_STEP):
            status += f" @ {r.tags[C.TAG_PRUNED_STEP]}"
        value = r.metrics.get(metric)
        rows.append({"run": label, "status": status, metric: value, "wall_s": _wall_s(r)})

    def key(row: dict[str, Any]) -> tuple:
        v = row[metric]
        return (v is None or (isinstance(v, float) and math.isnan(v)), v if v is not None else 0.0)

    return sorted(rows, key=key)


def format_summary(rows: list[dict[str, Any]], metric: str) -> str:
    if not rows:
        return "(no jobs recorded)"
    header = ["run", "status", metric, "wall s"]
    body = [
        [
            r["run"],
            r["status"],
            "–" if r[metric] is None else f"{r[metric]:.4g}",
            "–" if r["wall_s"] is None else f"{r['wall_s']:.0f}",
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, body)])
