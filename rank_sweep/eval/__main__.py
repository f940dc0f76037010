"""python -m rank_sweep.eval: see rank_sweep/eval/cli.py."""

from rank_sweep.eval.cli import main

raise SystemExit(main())
