"""Typed, strictly validated configs loaded from YAML (official I-JEPA / V-JEPA files load unchanged)."""

from jepa.config.pretrain import PretrainConfig, dump_config, load_pretrain_config
from jepa.config.strict import ConfigError, apply_overrides, from_dict, to_dict

__all__ = [
    "ConfigError",
    "PretrainConfig",
    "apply_overrides",
    "dump_config",
    "from_dict",
    "load_pretrain_config",
    "to_dict",
]
