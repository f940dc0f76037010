"""rank_sweep's Hydra Sweeper: synchronous successive halving over any Hydra launcher.

Hydra finds it because `hydra_plugins` is a namespace package (no `__init__.py` at that
level) shipped in the rank_sweep wheel; `hydra/sweeper: rank_sweep` selects it.
"""
