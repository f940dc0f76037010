"""rank_sweep.data."""
