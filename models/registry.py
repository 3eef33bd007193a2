"""Backend registry: (stage, backend name) → a factory that loads the backend once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cameofarm.configs import StageName


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory may need: where the farm's keys and model weights live."""

    keys_dir: Path
    models_dir: Path


def _reference_voice(_: BackendContext) -> object:
    from cameofarm.models.reference.voice import WorldVoiceBackend

    return WorldVoiceBackend()


def _reference_base_video(_: BackendContext) -> object:
    from cameofarm.models.reference.base_video import PresenterBaseVideo

    return PresenterBaseVideo()


def _reference_face_swap(_: BackendContext) -> object:
    from cameofarm.models.reference.face import DlibFaceAnalyzer
    from cameofarm.models.reference.face_swap import TriangleFaceSwap

    return TriangleFaceSwap(DlibFaceAnalyzer())


def _reference_lip_sync(_: BackendContext) -> object:
    from cameofarm.models.reference.lip_sync import AtlasLipSync

    return AtlasLipSync()


def _reference_composite(ctx: BackendContext) -> object:
    from cameofarm.models.reference.compositor import FfmpegCompositor
    from cameofarm.models.reference.provenance import ensure_signing_chain

    return FfmpegCompositor(ensure_signing_chain(ctx.keys_dir))


_FACTORIES: dict[tuple[StageName, str], Callable[[BackendContext], object]] = {
    (StageName.VOICE, "reference"): _reference_voice,
    (StageName.BASE_VIDEO, "reference"): _reference_base_video,
    (StageName.FACE_SWAP, "reference"): _reference_face_swap,
    (StageName.LIP_SYNC, "reference"): _reference_lip_sync,
    (StageName.COMPOSITE, "reference"): _reference_composite,
}


def available_backends(stage: StageName) -> list[str]:
    """Return the backend names registered for a stage."""
    return sorted(name for (s, name) in _FACTORIES if s == stage)


def build_backend(stage: StageName, name: str, ctx: BackendContext) -> object:
    """Load and return the named backend for stage, or raise naming the available ones."""
    try:
        factory = _FACTORIES[(stage, name)]
    except KeyError:
        raise ValueError(
            f"no backend {name!r} for stage {stage.value}; available: {available_backends(stage)}"
        ) from None
    return factory(ctx)
