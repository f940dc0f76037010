"""rank_sweep.train."""
