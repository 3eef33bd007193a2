"""Backend registry: (stage, backend name) → a factory that loads the backend once, typed by
the stage's contract; the same for enrollment's extractors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cameofarm.configs import StageName
from cameofarm.models.contracts import (
    BaseVideoBackend,
    CompositorBackend,
    FaceAnalyzer,
    FaceSwapBackend,
    LipSyncBackend,
    MouthModel,
    SpeakerEncoder,
    StageBackend,
    VoiceBackend,
    VoiceProfiler,
)


@dataclass(frozen=True)
class ModelFiles:
    """One model version present on this node: its verified files in `folder`."""

    name: str
    version: str
    folder: Path
    files: tuple[str, ...]
    sha256: str  # the manifest's digest over its files

    def path(self, suffix: str = "") -> Path:
        """The one file of this model ending in suffix (".onnx", ".nemo"), or a clear error."""
        found = [f for f in self.files if f.endswith(suffix)]
        if len(found) != 1:
            raise ValueError(
                f"model {self.name}@{self.version} has {len(found)} files ending in "
                f"{suffix!r} ({', '.join(self.files)}); it needs exactly one"
            )
        return self.folder / found[0]


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory may need: where keys live, where it runs (device, precision,
    batch size, from the pool's typed options) and its models, by role, fetched and verified."""

    keys_dir: Path
    device: str = "cpu"  # "cpu" or "cuda:N" (N counts the GPUs this replica was given)
    precision: str = "fp32"
    batch_size: int = 8
    models: Mapping[str, ModelFiles] = field(default_factory=dict)
    same_person: float | None = None  # an analyzer's threshold from config (None: its own)

    def model(self, role: str, backend: str) -> ModelFiles:
        """The model for a role, or an error naming the pool option that must set it."""
        if role not in self.models:
            raise ValueError(
                f"backend {backend!r} needs a {role!r} model: set models: {{{role}: NAME}} in "
                "its pool (or analyzer) config, after `cameofarm models import PATH --name NAME`"
            )
        return self.models[role]


T = TypeVar("T")
Factory = Callable[[BackendContext], T]


def _reference_analyzer(ctx: BackendContext) -> FaceAnalyzer:
    from cameofarm.models.reference.face import DLIB_SAME_PERSON, DlibFaceAnalyzer

    return DlibFaceAnalyzer(same_person=ctx.same_person or DLIB_SAME_PERSON)


def _insightface_analyzer(ctx: BackendContext) -> FaceAnalyzer:
    from cameofarm.models.neural.insightface import InsightfaceAnalyzer

    return InsightfaceAnalyzer(ctx)


def _reference_voice(_: BackendContext) -> VoiceBackend:
    from cameofarm.models.reference.unit_voice import UnitVoiceBackend

    return UnitVoiceBackend()


def _world_voice(_: BackendContext) -> VoiceBackend:
    from cameofarm.models.reference.voice import WorldVoiceBackend

    return WorldVoiceBackend()


def _nemo_voice(ctx: BackendContext) -> VoiceBackend:
    from cameofarm.models.neural.nemo import NemoVoice

    return NemoVoice(ctx)


def _nemo_profiler(ctx: BackendContext) -> VoiceProfiler:
    from cameofarm.models.neural.nemo import reference_profiler

    return reference_profiler(ctx)


def _reference_profiler(_: BackendContext) -> VoiceProfiler:
    from cameofarm.models.reference.unit_voice import WorldFramesProfiler

    return WorldFramesProfiler()


def _world_profiler(_: BackendContext) -> VoiceProfiler:
    from cameofarm.models.reference.voice import WorldVoiceProfiler

    return WorldVoiceProfiler()


def _reference_speaker(ctx: BackendContext) -> SpeakerEncoder:
    from cameofarm.models.reference.speech import Ge2eSpeakerEncoder

    return Ge2eSpeakerEncoder(ctx.same_person or 0.32)


def _mfcc_speaker(ctx: BackendContext) -> SpeakerEncoder:
    from cameofarm.models.reference.voice import MfccSpeakerEncoder

    return MfccSpeakerEncoder(ctx.same_person or 0.3)


def _titanet_speaker(ctx: BackendContext) -> SpeakerEncoder:
    from cameofarm.models.neural.nemo import TitanetSpeakerEncoder

    return TitanetSpeakerEncoder(ctx)


def _reference_mouth_model(_: BackendContext) -> MouthModel:
    from cameofarm.models.reference.lip_sync import AtlasMouthModel

    return AtlasMouthModel()


def _reference_base_video(_: BackendContext) -> BaseVideoBackend:
    from cameofarm.models.reference.base_video import ReferenceBaseVideo

    return ReferenceBaseVideo()


def _diffusers_base_video(ctx: BackendContext) -> BaseVideoBackend:
    from cameofarm.models.neural.diffusers_video import DiffusersBaseVideo

    return DiffusersBaseVideo(ctx)


def _reference_face_swap(ctx: BackendContext) -> FaceSwapBackend:
    from cameofarm.models.reference.face_swap import TriangleFaceSwap

    return TriangleFaceSwap(_reference_analyzer(ctx))


def _insightface_face_swap(ctx: BackendContext) -> FaceSwapBackend:
    from cameofarm.models.neural.insightface import InswapperFaceSwap

    return InswapperFaceSwap(ctx)


def _reference_lip_sync(ctx: BackendContext) -> LipSyncBackend:
    from cameofarm.models.reference.lip_sync import AtlasLipSync

    return AtlasLipSync(_reference_analyzer(ctx))


def _wav2lip_lip_sync(ctx: BackendContext) -> LipSyncBackend:
    from cameofarm.models.neural.wav2lip import Wav2LipSync

    return Wav2LipSync(ctx, lambda: _reference_analyzer(ctx))


def _reference_composite(ctx: BackendContext) -> CompositorBackend:
    from cameofarm.models.reference.compositor import FfmpegCompositor
    from cameofarm.models.reference.provenance import ensure_signing_chain

    return FfmpegCompositor(ensure_signing_chain(ctx.keys_dir))


def _gfpgan_composite(ctx: BackendContext) -> CompositorBackend:
    from cameofarm.models.neural.gfpgan import RestoringCompositor

    return RestoringCompositor(ctx, _reference_composite(ctx), lambda: _reference_analyzer(ctx))


STAGES: dict[StageName, dict[str, Factory[StageBackend]]] = {
    # reference: the cameo's own speech frames rebuild a stock voice's timbre; world: only its
    # average envelope and pitch (the earlier reference, kept for comparison).
    StageName.VOICE: {"reference": _reference_voice, "world": _world_voice, "nemo": _nemo_voice},
    # diffusers: the reference's templates and presenters, plus text-to-video prompt scenes.
    StageName.BASE_VIDEO: {"reference": _reference_base_video, "diffusers": _diffusers_base_video},
    StageName.FACE_SWAP: {"reference": _reference_face_swap, "insightface": _insightface_face_swap},
    StageName.LIP_SYNC: {"reference": _reference_lip_sync, "wav2lip": _wav2lip_lip_sync},
    # gfpgan: faces restored (a GFPGAN-family network) before the reference's watermark.
    StageName.COMPOSITE: {"reference": _reference_composite, "gfpgan": _gfpgan_composite},
}
ANALYZERS: dict[str, Factory[FaceAnalyzer]] = {
    "reference": _reference_analyzer,
    "insightface": _insightface_analyzer,
}
PROFILERS: dict[str, Factory[VoiceProfiler]] = {
    "reference": _reference_profiler,
    "world": _world_profiler,
    "nemo": _nemo_profiler,
}
MOUTH_MODELS: dict[str, Factory[MouthModel]] = {"reference": _reference_mouth_model}
SPEAKER_ENCODERS: dict[str, Factory[SpeakerEncoder]] = {
    "reference": _reference_speaker,  # GE2E (resemblyzer), weights in its wheel
    "mfcc": _mfcc_speaker,  # MFCC statistics: tells a clearly different voice only
    "nemo": _titanet_speaker,
}


# Base-video backends that generate prompt scenes (known without loading a model: submit checks).
SCENE_GENERATORS = frozenset({"diffusers"})

# The languages each voice backend speaks, known without loading its model (submit checks).
VOICE_LANGUAGES: dict[str, Callable[[], tuple[str, ...]]] = {
    "reference": lambda: _espeak_languages(),
    "world": lambda: _espeak_languages(),
    "nemo": lambda: _nemo_languages(),
}


def _nemo_languages() -> tuple[str, ...]:
    from cameofarm.models.neural.nemo import NEMO_LANGUAGES  # imports no NeMo

    return NEMO_LANGUAGES


def _espeak_languages() -> tuple[str, ...]:
    from cameofarm.models.reference.languages import espeak_languages

    return espeak_languages()


def voice_languages(backend: str) -> tuple[str, ...]:
    """The languages a voice backend speaks (empty for an unknown backend)."""
    return VOICE_LANGUAGES[backend]() if backend in VOICE_LANGUAGES else ()


def available_backends(stage: StageName) -> list[str]:
    """Return the backend names registered for a stage."""
    return sorted(STAGES[stage])


def _build(table: Mapping[str, Factory[T]], what: str, name: str, ctx: BackendContext) -> T:
    try:
        factory = table[name]
    except KeyError:
        raise ValueError(f"no {what} backend {name!r}; available: {sorted(table)}") from None
    return factory(ctx)


def build_backend(stage: StageName, name: str, ctx: BackendContext) -> StageBackend:
    """Load and return the named backend for stage, or raise naming the available ones."""
    return _build(STAGES[stage], stage.value, name, ctx)


def build_analyzer(name: str, ctx: BackendContext) -> FaceAnalyzer:
    """Load the named face analyzer (enrollment, protected likenesses, verification)."""
    return _build(ANALYZERS, "face analyzer", name, ctx)


def build_profiler(name: str, ctx: BackendContext) -> VoiceProfiler:
    return _build(PROFILERS, "voice profiler", name, ctx)


def build_speaker_encoder(name: str, ctx: BackendContext) -> SpeakerEncoder:
    return _build(SPEAKER_ENCODERS, "speaker encoder", name, ctx)


def build_mouth_model(name: str, ctx: BackendContext) -> MouthModel:
    return _build(MOUTH_MODELS, "mouth model", name, ctx)
