"""GPU utilisation and memory from NVML, for the GPUs a replica holds; which node it is on.

Readings come only from NVML (nvidia-ml-py) on a node with an NVIDIA driver. On a node with
none (a CPU machine declaring logical GPUs), `read_gpus` returns nothing and the farm exports
no GPU series: an absent series says "not measured", a zero would lie.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from typing import Any, TypedDict

log = logging.getLogger("cameofarm.metrics")
_lock = threading.Lock()
_nvml: Any = None  # the initialised pynvml module, False when NVML is not there


class GpuReading(TypedDict):
    """One GPU as NVML sees it now."""

    node: str
    index: int
    uuid: str
    name: str
    utilization: float  # 0..1 over NVML's last sample period
    memory_used: int  # bytes
    memory_total: int  # bytes


def _init() -> Any:
    global _nvml
    with _lock:
        if _nvml is None:
            try:
                import pynvml

                pynvml.nvmlInit()
                _nvml = pynvml
            except Exception as exc:  # no driver, no library, no device: nothing to read
                log.debug("NVML not available: %s", exc)
                _nvml = False
        return _nvml


def read_gpus(indices: Sequence[int], nvml: Any = None) -> list[GpuReading]:
    """Read the GPUs with these NVML indices (Ray's GPU ids on this node); [] without NVML.
    An index the node does not have (a logical GPU) is skipped."""
    nv = nvml if nvml is not None else _init()
    if not nv or not indices:
        return []
    node = socket.gethostname()
    out: list[GpuReading] = []
    try:
        count = nv.nvmlDeviceGetCount()
    except Exception as exc:
        log.warning("NVML could not count GPUs: %s", exc)
        return []
    for index in indices:
        if not 0 <= index < count:
            continue
        try:
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            util = nv.nvmlDeviceGetUtilizationRates(handle)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            name = nv.nvmlDeviceGetName(handle)
            uuid = nv.nvmlDeviceGetUUID(handle)
        except Exception as exc:  # a GPU that fell off the bus says so, the rest still report
            log.warning("NVML could not read GPU %d: %s", index, exc)
            continue
        out.append(
            GpuReading(
                node=node,
                index=index,
                uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                name=name.decode() if isinstance(name, bytes) else str(name),
                utilization=float(util.gpu) / 100.0,
                memory_used=int(memory.used),
                memory_total=int(memory.total),
            )
        )
    return out


def node_address() -> str:
    """The address of the Ray node this process runs on ("local" outside Ray)."""
    import ray

    return str(ray.util.get_node_ip_address()) if ray.is_initialized() else "local"
