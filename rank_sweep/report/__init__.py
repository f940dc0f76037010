"""rank_sweep.report."""
