"""`python -m rank_sweep --help` names every experiment with its one-line description."""

from __future__ import annotations

import subprocess
import sys

from rank_sweep.config.experiments import describe, list_experiments
from rank_sweep.paths import REPO_ROOT


def test_describe_takes_the_header_sentence(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("# @package _global_\n# A tiny thing. More words here.\n#\n# Launch: ...\na: 1\n")
    assert describe(f) == "A tiny thing"


def test_help_lists_every_experiment():
    out = subprocess.run(
        [sys.executable, "-m", "rank_sweep", "--help"],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=120, check=True,
    ).stdout  # fmt: skip
    names = [n for n, _ in list_experiments()]
    assert "demo" in names
    for name, desc in list_experiments():
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert desc[:40] in line
    assert "see experiments/" not in out
