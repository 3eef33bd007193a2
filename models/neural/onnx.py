"""onnxruntime sessions on the replica's device: TensorRT where it imports (engines cached by
model sha256 + GPU name + TensorRT version), CUDA where onnxruntime has it, CPU otherwise."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from cameofarm.models.registry import BackendContext, ModelFiles

log = logging.getLogger(__name__)


def gpu_name(index: int) -> str:
    """The NVIDIA driver's name for a GPU (for cache keys), or "unknown"."""
    folders = sorted(Path("/proc/driver/nvidia/gpus").glob("*"))
    if index < len(folders):
        info = folders[index] / "information"
        for line in info.read_text(errors="replace").splitlines() if info.is_file() else []:
            if line.startswith("Model:"):
                return "-".join(line.split(":", 1)[1].split())
    return "unknown"


def _tensorrt_version() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


def providers_for(ctx: BackendContext, model: ModelFiles) -> tuple[list[Any], str]:
    """onnxruntime providers for the context's device and a short name of the one used."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    if not ctx.device.startswith("cuda"):
        return ["CPUExecutionProvider"], "CPU"
    index = int(ctx.device.split(":", 1)[1])
    cuda = ("CUDAExecutionProvider", {"device_id": index})
    trt = _tensorrt_version()
    if trt is not None and "TensorrtExecutionProvider" in available:
        from cameofarm.models.placement import node_model_cache

        engines = (
            node_model_cache().root
            / "tensorrt"
            / f"{model.sha256[:16]}-{gpu_name(index)}-trt{trt}-{ctx.precision}"
        )
        engines.mkdir(parents=True, exist_ok=True)
        options = {
            "device_id": index,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(engines),
            "trt_fp16_enable": ctx.precision == "fp16",
        }
        return [("TensorrtExecutionProvider", options), cuda, "CPUExecutionProvider"], "TensorRT"
    if "CUDAExecutionProvider" in available:
        if trt is None:
            log.info("tensorrt does not import here: %s runs on onnxruntime's CUDA", model.name)
        return [cuda, "CPUExecutionProvider"], "CUDA"
    log.warning(
        "%s: onnxruntime has no CUDA provider (install onnxruntime-gpu); running on CPU",
        model.name,
    )
    return ["CPUExecutionProvider"], "CPU (onnxruntime has no CUDA provider)"
