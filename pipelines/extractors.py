"""Enrollment's extractors, chosen by config: face analyzers (the first finds the faces the
checks use; each stores its own identity), the voice profiler and the mouth model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cameofarm.configs import AnalyzerConfig, EnrollmentConfig, FarmConfig
from cameofarm.models.contracts import FaceAnalyzer, MouthModel, SpeakerEncoder, VoiceProfiler
from cameofarm.models.data import IdentityEmbedding
from cameofarm.models.placement import backend_context
from cameofarm.models.registry import (
    build_analyzer,
    build_mouth_model,
    build_profiler,
    build_speaker_encoder,
)
from cameofarm.models.store import ModelStore
from cameofarm.storage import FarmStorage


@dataclass(frozen=True)
class Extractors:
    """What enrollment runs on a recording."""

    analyzers: tuple[FaceAnalyzer, ...]
    profiler: VoiceProfiler
    mouth_model: MouthModel
    speaker: SpeakerEncoder

    @property
    def primary(self) -> FaceAnalyzer:
        """The analyzer whose faces, landmarks and 5 points the checks and the atlas use."""
        return self.analyzers[0]


def needs_models(cfg: EnrollmentConfig) -> bool:
    """Whether any configured extractor loads models from the model store."""
    extractors = (*cfg.analyzers, cfg.voice_profiler, cfg.mouth_model, cfg.speaker_encoder)
    return any(o.models for o in extractors)


def analyzer_same_person(spec: AnalyzerConfig, cfg: EnrollmentConfig) -> float | None:
    """The analyzer's same-person distance: its own setting, the reference analyzer's the
    enrollment's max_identity_distance, else the model's own (None)."""
    return spec.same_person or (cfg.max_identity_distance if spec.backend == "reference" else None)


def _analyzer(
    spec: AnalyzerConfig, cfg: EnrollmentConfig, store: ModelStore | None, keys_dir: Path
) -> FaceAnalyzer:
    same = analyzer_same_person(spec, cfg)
    return build_analyzer(
        spec.backend, backend_context(spec, keys_dir, [], store, same_person=same)
    )


_PRIMARY: dict[str, FaceAnalyzer] = {}


def primary_analyzer(config: FarmConfig, storage: FarmStorage | None) -> FaceAnalyzer:
    """The farm's primary face analyzer (the first in enrollment.analyzers: the one scenes
    are tracked and outputs measured by), built once per process."""
    spec = config.enrollment.analyzers[0]
    key = f"{config.data_dir}|{config.enrollment.max_identity_distance}|{spec.model_dump_json()}"
    if key not in _PRIMARY:
        store = ModelStore(storage.objects) if storage is not None else None
        keys_dir = Path(config.data_dir) / "keys"
        _PRIMARY[key] = _analyzer(spec, config.enrollment, store, keys_dir)
    return _PRIMARY[key]


def primary_analyzer_name(config: FarmConfig, storage: FarmStorage | None) -> str:
    """The name the primary analyzer tags identities with. The reference analyzer's is fixed,
    so it is read without loading dlib's models (~120 MB, about 2 s during which Python's
    other threads barely run: in the scheduler's process that held up dispatch); a neural
    analyzer's depends on its model version, known once it is built."""
    if config.enrollment.analyzers[0].backend == "reference":
        from cameofarm.models.reference.face import DlibFaceAnalyzer

        return DlibFaceAnalyzer.name
    return primary_analyzer(config, storage).name


def load_extractors(
    cfg: EnrollmentConfig, storage: FarmStorage | None, keys_dir: Path
) -> Extractors:
    """Build the configured extractors on this process's device, models from the store."""
    store = ModelStore(storage.objects) if storage is not None else None
    analyzers = [_analyzer(a, cfg, store, keys_dir) for a in cfg.analyzers]
    names = [a.name for a in analyzers]
    if len(set(names)) != len(names):
        raise ValueError(f"enrollment.analyzers: each analyzer may appear once, got {names}")
    if analyzers[0].landmark_count != 68:
        raise ValueError(
            f"enrollment.analyzers: the first analyzer finds the faces the recording checks and "
            f"liveness measure, which need 68-point landmarks; {names[0]} gives "
            f"{analyzers[0].landmark_count}. Put the reference analyzer first"
        )
    profiler = build_profiler(
        cfg.voice_profiler.backend, backend_context(cfg.voice_profiler, keys_dir, [], store)
    )
    mouth = build_mouth_model(
        cfg.mouth_model.backend, backend_context(cfg.mouth_model, keys_dir, [], store)
    )
    return Extractors(tuple(analyzers), profiler, mouth, speaker_encoder(cfg, store, keys_dir))


def speaker_encoder(
    cfg: EnrollmentConfig, store: ModelStore | None, keys_dir: Path
) -> SpeakerEncoder:
    """The farm's speaker encoder (enrollment.speaker_encoder): enrollment's same-speaker
    check, and every output's "sounds like the cameo" score (pipelines.quality)."""
    spk = cfg.speaker_encoder
    same = spk.same_person or (cfg.max_speaker_distance if spk.backend == "reference" else None)
    return build_speaker_encoder(
        spk.backend, backend_context(spk, keys_dir, [], store, same_person=same)
    )


def farm_extractors(config: FarmConfig, storage: FarmStorage | None) -> Extractors:
    """The extractors a farm's enrollment config names (storage: for their models)."""
    return load_extractors(config.enrollment, storage, Path(config.data_dir) / "keys")


def embed_photo(ex: Extractors, rgb: np.ndarray) -> dict[str, IdentityEmbedding]:
    """Every analyzer's embedding of the one face in a photo (ValueError if not one face)."""
    faces = ex.primary.detect(rgb)
    if len(faces) != 1:
        raise ValueError(f"the photo must show exactly one face; found {len(faces)}")
    return {a.name: a.embed(rgb, faces[0]) for a in ex.analyzers}


def as_extractors(value: Extractors | FaceAnalyzer) -> Extractors:
    """Extractors as given, or one face analyzer with the reference voice profiler, mouth
    model and speaker encoder."""
    if isinstance(value, Extractors):
        return value
    from cameofarm.models.reference.lip_sync import AtlasMouthModel
    from cameofarm.models.reference.speech import Ge2eSpeakerEncoder
    from cameofarm.models.reference.unit_voice import WorldFramesProfiler

    return Extractors((value,), WorldFramesProfiler(), AtlasMouthModel(), Ge2eSpeakerEncoder())


# --- identities in a cameo's summary -------------------------------------------------------


def identities_to_summary(embeddings: dict[str, IdentityEmbedding]) -> dict[str, Any]:
    """The JSON form stored in a cameo's summary under "identities"."""
    return {
        tag: {
            "metric": e.metric,
            "same_person": e.same_person,
            "vector": [round(float(v), 6) for v in e.vector],
        }
        for tag, e in sorted(embeddings.items())
    }


def identities_of(summary: dict[str, Any]) -> dict[str, IdentityEmbedding]:
    """A cameo's identities by analyzer (summaries written before tagging hold one dlib vector)."""
    stored = summary.get("identities")
    if stored is None and summary.get("embedding") is not None:
        from cameofarm.models.codec import LEGACY_DLIB

        tag, metric, same = LEGACY_DLIB
        stored = {tag: {"metric": metric, "same_person": same, "vector": summary["embedding"]}}
    return {
        tag: IdentityEmbedding(
            tag, np.asarray(e["vector"], np.float32), e["metric"], float(e["same_person"])
        )
        for tag, e in (stored or {}).items()
    }


def closest_match(
    mine: dict[str, IdentityEmbedding], theirs: dict[str, IdentityEmbedding]
) -> tuple[str, float] | None:
    """The analyzer and distance of the first analyzer both were embedded by that calls them
    one person (None: no shared analyzer says so). Only like is compared with like."""
    for tag in sorted(set(mine) & set(theirs)):
        d = mine[tag].distance(theirs[tag])
        if d <= mine[tag].same_person:
            return tag, d
    return None
