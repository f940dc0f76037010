"""The ready experiments (`+experiment=NAME`) and their one-line descriptions, read from
the header comment of each file so `--help` and the docs never drift from the files."""

from __future__ import annotations

from pathlib import Path

from rank_sweep.paths import EXPERIMENTS_DIR

_PACKAGE_LINE = "# @package _global_"


def describe(path: Path) -> str:
    """First sentence of the file's header comment (after the package directive)."""
    words: list[str] = []
    for line in Path(path).read_text().splitlines():
        if line.strip() == _PACKAGE_LINE:
            continue
        if not line.startswith("#") or line.strip() == "#":
            break
        words.append(line.lstrip("#").strip())
    text = " ".join(words)
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 90 else first[:87].rstrip() + "..."


def list_experiments(root: Path = EXPERIMENTS_DIR / "experiment") -> list[tuple[str, str]]:
    return [(p.stem, describe(p)) for p in sorted(Path(root).glob("*.yaml"))]


def help_text() -> str:
    rows = list_experiments()
    if not rows:
        return "  (none found)"
    width = max(len(n) for n, _ in rows)
    return "\n".join(f"  {n.ljust(width)}  {d}" for n, d in rows)


def register_help_resolvers() -> None:
    """`${rank_sweep_experiments:}` in conf/config.yaml's help footer."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("rank_sweep_experiments"):
        OmegaConf.register_new_resolver("rank_sweep_experiments", help_text)
