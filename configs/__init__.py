"""Typed farm configuration: YAML defaults in this folder, validated by `schema`."""

from cameofarm.configs.loader import ConfigError, load_config
from cameofarm.configs.schema import (
    AnalyzerConfig,
    ApiConfig,
    BackendOptions,
    ClusterConfig,
    ConsentConfig,
    ContentConfig,
    ContentRule,
    DatabaseConfig,
    EnrollmentConfig,
    FarmConfig,
    PoolConfig,
    PromptScenesConfig,
    SchedulerConfig,
    StageName,
    StorageConfig,
    TierConfig,
    WebhookConfig,
)

__all__ = [
    "AnalyzerConfig",
    "ApiConfig",
    "BackendOptions",
    "ClusterConfig",
    "ConfigError",
    "ConsentConfig",
    "ContentConfig",
    "ContentRule",
    "DatabaseConfig",
    "EnrollmentConfig",
    "FarmConfig",
    "PoolConfig",
    "PromptScenesConfig",
    "SchedulerConfig",
    "StageName",
    "StorageConfig",
    "TierConfig",
    "WebhookConfig",
    "load_config",
]
