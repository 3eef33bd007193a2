"""Typed farm configuration: YAML defaults in this folder, validated by `schema`."""

from cameofarm.configs.loader import ConfigError, load_config
from cameofarm.configs.schema import (
    ClusterConfig,
    DatabaseConfig,
    EnrollmentConfig,
    FarmConfig,
    PoolConfig,
    SchedulerConfig,
    StageName,
    StorageConfig,
    TierConfig,
)

__all__ = [
    "ClusterConfig",
    "ConfigError",
    "DatabaseConfig",
    "EnrollmentConfig",
    "FarmConfig",
    "PoolConfig",
    "SchedulerConfig",
    "StageName",
    "StorageConfig",
    "TierConfig",
    "load_config",
]
