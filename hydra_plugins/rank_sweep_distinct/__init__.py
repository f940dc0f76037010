"""rank_sweep's Hydra sweeper: the basic sweeper launching each distinct job once."""
