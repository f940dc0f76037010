"""Config schema (dataclasses in Hydra's ConfigStore) and cross-field validation."""

from rank_sweep.config.schema import RootConfig, register_configs

__all__ = ["RootConfig", "register_configs"]
