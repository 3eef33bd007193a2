"""One Protocol per stage and per enrollment extractor. Every backend implements exactly its
contract, and the farm talks to backends only through these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from cameofarm.models.data import (
    AnyVoiceProfile,
    BackgroundVideo,
    Cue,
    FaceIdentity,
    FaceObservation,
    FrameSpec,
    GenerationRequest,
    IdentityEmbedding,
    MouthAtlas,
    PresenterSource,
    ProvenanceClaim,
    SpeechTrack,
    TemplateSource,
    VideoChunk,
)

# --- enrollment extractors -----------------------------------------------------------------


class FaceAnalyzer(Protocol):
    """Finds faces (landmarks of its own scheme + 5 alignment points) and embeds identity.

    `name` is "<analyzer>@<model version>": embeddings are compared only within one name.
    """

    name: str
    landmark_count: int
    embedding_size: int
    metric: str  # how its vectors are compared: "euclidean" or "cosine"
    same_person: float  # distance at or under which two faces are one person
    human_face: float  # detection score at or over which a face is a human one, not an animal

    def detect(self, frame: np.ndarray) -> list[FaceObservation]: ...
    def embed(self, frame: np.ndarray, face: FaceObservation) -> IdentityEmbedding: ...


class VoiceProfiler(Protocol):
    """Turns a cameo's enrolled speech into the profile its voice backend speaks from."""

    name: str

    def profile(self, samples: np.ndarray, sample_rate: int) -> AnyVoiceProfile: ...


class SpeakerEncoder(Protocol):
    """Embeds who is speaking in a stretch of speech (vectors compared by cosine distance)."""

    name: str
    same_speaker: float  # cosine distance at or under which two stretches are one speaker

    def embed(self, samples: np.ndarray, sample_rate: int) -> np.ndarray: ...


class MouthModel(Protocol):
    """Builds a cameo's mouth atlas from frames of its recording and the faces found there."""

    name: str

    def build(self, frames: list[np.ndarray], faces: list[FaceObservation]) -> MouthAtlas: ...


# --- render stages -------------------------------------------------------------------------


class VoiceBackend(Protocol):
    """Speaks a script in a cameo's voice, with word and phoneme (IPA) timings, from the
    profile its own `profiler` makes (a cameo's stored profile of another kind is re-derived
    from the enrolled speech with it), its prosody coloured by an emotion (neutral, joy,
    sad)."""

    profiler: VoiceProfiler

    def languages(self) -> tuple[str, ...]: ...

    def synthesize(
        self, script: str, profile: AnyVoiceProfile, language: str = "en", emotion: str = "neutral"
    ) -> SpeechTrack: ...


class SceneGenerator(Protocol):
    """Generates a scene's frames from a text prompt (text-to-video), at its own rate."""

    name: str  # "<model>@<version>"
    sha256: str  # the model version's digest: generated scenes are cached by it

    def generate(self, request: GenerationRequest) -> np.ndarray: ...


class BaseVideoBackend(Protocol):
    """Produces the scene's frames [start, start+count) at the output format: a template
    scene's (with its tracked actor's landmarks on the chunk) or a presenter's. `generator`
    makes prompt scenes (None: this backend has no text-to-video model)."""

    generator: SceneGenerator | None

    def template(
        self, source: TemplateSource, spec: FrameSpec, index: int, start: int, count: int
    ) -> VideoChunk: ...

    def render(
        self,
        source: PresenterSource,
        background: np.ndarray | BackgroundVideo | None,
        spec: FrameSpec,
        index: int,
        start: int,
        count: int,
    ) -> VideoChunk: ...


class FaceSwapBackend(Protocol):
    """Puts the cameo's face onto the person in each frame; returns landmarks it found.

    `identity_analyzer` names the analyzer whose embedding of the cameo it needs (None: it
    works from the reference crop alone); `prepare` adds that embedding to an identity
    enrolled without it, from the identity's own reference crop.
    """

    identity_analyzer: str | None

    def prepare(self, identity: FaceIdentity) -> FaceIdentity: ...
    def swap(self, chunk: VideoChunk, identity: FaceIdentity) -> VideoChunk: ...


class LipSyncBackend(Protocol):
    """Drives the mouth in each frame from the speech's phoneme timings."""

    def sync(
        self, chunk: VideoChunk, speech: SpeechTrack, fps: int, atlas: MouthAtlas
    ) -> VideoChunk: ...


class CompositorBackend(Protocol):
    """Encodes watermarked chunks (captions burned in when cues are given) and assembles the
    signed, muxed MP4."""

    def encode(self, chunk: VideoChunk, spec: FrameSpec, cues: Sequence[Cue] = ()) -> bytes: ...
    def assemble(
        self, segments: list[bytes], speech: SpeechTrack, spec: FrameSpec, claim: ProvenanceClaim
    ) -> bytes: ...


StageBackend = (
    VoiceBackend | BaseVideoBackend | FaceSwapBackend | LipSyncBackend | CompositorBackend
)
