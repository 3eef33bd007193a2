"""The likeness registry: cameo records, their status and its history."""

from cameofarm.cameos.registry import (
    CameoRecord,
    CameoStatus,
    CameoUnavailableError,
    UnknownCameoError,
    create_cameo,
    get_cameo,
    list_cameos,
    require_usable,
    transition_cameo,
)

__all__ = [
    "CameoRecord",
    "CameoStatus",
    "CameoUnavailableError",
    "UnknownCameoError",
    "create_cameo",
    "get_cameo",
    "list_cameos",
    "require_usable",
    "transition_cameo",
]
