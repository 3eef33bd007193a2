"""The likeness registry: cameo records, their status and its history."""

from cameofarm.cameos.registry import (
    CameoRecord,
    CameoStatus,
    UnknownCameoError,
    create_cameo,
    expire_lapsed,
    get_cameo,
    list_cameos,
    set_cameo_status,
    transition_cameo,
)

__all__ = [
    "CameoRecord",
    "CameoStatus",
    "UnknownCameoError",
    "create_cameo",
    "expire_lapsed",
    "get_cameo",
    "list_cameos",
    "set_cameo_status",
    "transition_cameo",
]
