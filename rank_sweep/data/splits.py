"""The validation slice, carved deterministically from the training split.

Model selection (validation loss, periodic metrics, pruning, "best") must never see the
test split, and must not see near-copies of training clips either. So the slice is cut by
the unit that makes clips alike:

* UCF-101: by group `gXX` (clips of one group come from one long video: same actors,
  background, viewpoint). The group number is taken across classes, as the official
  train/test lists do, so no group sits on both sides.
* Kinetics-400: by YouTube id (several clips may be cut from one video).
* folder: by file (each clip its own unit), a stated fraction.

Units are ordered by a hash of their name (not by listing order or availability, so the
slice does not move when a clip goes missing) and taken until the slice holds at least
`fraction` of the clips. A split name `"<split>#val"` is the slice, `"<split>#fit"` the rest.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rank_sweep.data.errors import DataError

log = logging.getLogger(__name__)

PARTS = ("fit", "val")
RULES = ("auto", "group", "youtube_id", "file")
_UCF_GROUP = re.compile(r"_g(\d+)_c\d+$")


@dataclass(frozen=True)
class SplitName:
    base: str  # the on-disk split (train, test, validate, ...)
    part: str | None  # None: the whole split; "fit" or "val": the carved sides

    @classmethod
    def parse(cls, split: str) -> SplitName:
        base, sep, part = str(split).partition("#")
        if not sep:
            return cls(base, None)
        if part not in PARTS:
            raise DataError(f"split {split!r}: part after '#' must be one of {PARTS}")
        return cls(base, part)


def rule_for(layout: str, rule: str = "auto") -> str:
    if rule not in RULES:
        raise DataError(f"data.val_rule must be one of {RULES}, got {rule!r}")
    if rule != "auto":
        return rule
    return {"ucf101": "group", "kinetics400": "youtube_id"}.get(layout, "file")


def unit_of(path: Path, rule: str) -> str:
    """The unit a clip belongs to under `rule` (see module doc)."""
    stem = Path(path).stem
    if rule == "group":
        m = _UCF_GROUP.search(stem)
        if m is None:
            raise DataError(f"UCF-101 clip name without a group (v_<Class>_gXX_cYY): {path}")
        return f"g{int(m.group(1)):02d}"
    if rule == "youtube_id":
        parts = stem.rsplit("_", 2)  # <youtube_id>_<start:06d>_<end:06d>; ids may hold "_"
        return parts[0] if len(parts) == 3 and parts[1].isdigit() else stem
    if rule == "file":
        return stem
    raise DataError(f"unknown validation rule {rule!r}; allowed: {RULES[1:]}")


def _rank(unit: str) -> str:
    return hashlib.sha256(f"rank_sweep.val:{unit}".encode()).hexdigest()


@dataclass(frozen=True)
class Carve:
    val: list[int]  # positions in the listing
    fit: list[int]
    val_units: list[str]
    rule: str
    fraction: float

    def describe(self) -> str:
        return (
            f"val carved from train by {self.rule}, fraction {self.fraction:g}: "
            f"{len(self.val)} clips in {len(self.val_units)} units; fit {len(self.fit)} clips"
        )


def carve(paths: Sequence[Path], rule: str, fraction: float) -> Carve:
    """Split positions of `paths` into fit/val by whole units; val holds >= fraction of the
    clips (and >= 2 clips) and never all units."""
    if not 0.0 < float(fraction) < 1.0:
        raise DataError(f"data.val_fraction must be in (0, 1), got {fraction}")
    units = [unit_of(p, rule) for p in paths]
    distinct = sorted(set(units), key=_rank)
    if len(distinct) < 2:
        raise DataError(
            f"cannot carve a validation slice by {rule}: the split has {len(distinct)} unit(s)"
        )
    count: dict[str, int] = {}
    for u in units:
        count[u] = count.get(u, 0) + 1
    # At least 2 clips: the slice must support a covariance (FVD) and a loss spread.
    need, chosen, have = max(float(fraction) * len(paths), 2.0), [], 0
    for u in distinct[:-1]:  # never every unit: training keeps at least one
        if have >= need:
            break
        chosen.append(u)
        have += count[u]
    picked = set(chosen)
    val = [i for i, u in enumerate(units) if u in picked]
    fit = [i for i, u in enumerate(units) if u not in picked]
    return Carve(val, fit, sorted(chosen), rule, float(fraction))


def select(
    entries: Sequence, part: str | None, rule: str, fraction: float, path_of: Callable
) -> tuple[list, Carve | None]:
    """Entries of one side of the carve (all of them for part None) and the carve itself."""
    if part is None:
        return list(entries), None
    c = carve([path_of(e) for e in entries], rule, fraction)
    keep = c.val if part == "val" else c.fit
    log.info("%s (using %s)", c.describe(), part)
    return [entries[i] for i in keep], c
