"""rank_sweep.eval."""
