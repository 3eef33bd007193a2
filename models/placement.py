"""Where a backend runs and what it loads: the device from the replica's GPU ids, models
from the model store through this node's verified cache, all into one BackendContext."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cameofarm.configs import BackendOptions
from cameofarm.models.registry import BackendContext, ModelFiles
from cameofarm.models.store import ModelCache, ModelStore, ModelStoreError, parse_ref


def node_model_cache() -> ModelCache:
    """This node's model cache (one per host, shared by its replicas)."""
    return ModelCache(Path(tempfile.gettempdir()) / "cameofarm-models")


def has_cuda_gpus() -> bool:
    """Whether this host has NVIDIA GPUs with a driver loaded (logical GPUs do not count)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def resolve_device(requested: str, gpu_ids: Sequence[object], cuda: bool | None = None) -> str:
    """ "cuda:N" for the first GPU the replica was given when the host has real GPUs (N counts
    within CUDA_VISIBLE_DEVICES, which Ray sets to the replica's ids), else "cpu"."""
    real = has_cuda_gpus() if cuda is None else cuda
    if requested == "cpu":
        return "cpu"
    if not gpu_ids or not real:
        if requested == "cuda":
            why = "it holds no GPU (num_gpus: 0)" if not gpu_ids else "this node has no CUDA GPU"
            raise ValueError(f"device cuda was asked for, but {why}; use device: auto or cpu")
        return "cpu"
    first = str(gpu_ids[0])
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    return f"cuda:{visible.index(first) if first in visible else first}"


def fetch_models(
    refs: dict[str, str], store: ModelStore, cache: ModelCache
) -> dict[str, ModelFiles]:
    """Fetch (once per node, verified by sha256) every model a backend names, by role."""
    models = {}
    for role, ref in sorted(refs.items()):
        name, version = parse_ref(ref)
        manifest, folder = cache.materialize(store, name, version)
        models[role] = ModelFiles(
            manifest.name,
            manifest.version,
            folder,
            tuple(f.path for f in manifest.files),
            manifest.sha256,
        )
    return models


def missing_models(refs: dict[str, str], store: ModelStore) -> list[str]:
    """A sentence for each named model the store does not hold (empty: all present)."""
    problems = []
    for role, ref in sorted(refs.items()):
        name, version = parse_ref(ref)
        try:
            store.get(name, version)
        except ModelStoreError as exc:  # it names the model and the import command
            problems.append(f"{role}: {exc}")
    return problems


def backend_context(
    options: BackendOptions,
    keys_dir: Path,
    gpu_ids: Sequence[object],
    store: ModelStore | None,
    same_person: float | None = None,
) -> BackendContext:
    """Everything a backend factory needs, resolved on the node where it will run."""
    models = {}
    if options.models:
        if store is None:
            raise ValueError("this backend names models but no model store was given")
        models = fetch_models(dict(options.models), store, node_model_cache())
    device = resolve_device(options.device, gpu_ids)
    return BackendContext(
        keys_dir=keys_dir,
        device=device,
        precision=options.precision if device != "cpu" else "fp32",
        batch_size=options.batch_size,
        models=models,
        same_person=same_person,
    )
