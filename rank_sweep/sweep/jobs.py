"""Which jobs of a multirun are distinct: the cartesian product of the overrides can name
one job several times (`-m finetune=lora,full lora.rank=4,8,16` asks for the full
baseline once per rank, though full fine-tuning ignores the rank). Jobs are the same
when their fingerprints are (job.identity), so only the first of each is launched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class DistinctJobs:
    kept: list[list[str]] = field(default_factory=list)
    dropped: list[tuple[list[str], list[str]]] = field(default_factory=list)  # (job, same as)


def distinct_jobs(
    jobs: Sequence[Sequence[str]], fingerprint_of: Callable[[Sequence[str]], str]
) -> DistinctJobs:
    """Keep the first job of each fingerprint, in order; say which later ones repeat it."""
    out = DistinctJobs()
    first: dict[str, list[str]] = {}
    for job in jobs:
        fp = fingerprint_of(job)
        if fp in first:
            out.dropped.append((list(job), first[fp]))
        else:
            first[fp] = list(job)
            out.kept.append(list(job))
    if out.dropped:
        common = set.intersection(*(set(j) for j in jobs))  # say only what tells jobs apart

        def name(job: list[str]) -> str:
            return " ".join(o for o in job if o not in common)

        log.info(
            "%d job configs, %d distinct; not launching: %s",
            len(jobs),
            len(out.kept),
            "; ".join(f"{name(j)} (same job as {name(s)})" for j, s in out.dropped),
        )
    return out
