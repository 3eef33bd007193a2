"""One Protocol per stage. Every backend implements exactly its stage's contract."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from cameofarm.models.data import (
    FaceIdentity,
    FaceObservation,
    FrameSpec,
    MouthAtlas,
    PresenterSource,
    ProvenanceClaim,
    SpeechTrack,
    VideoChunk,
    VoiceProfile,
)


class FaceAnalyzer(Protocol):
    """Finds faces with landmarks and embeds their identity."""

    name: str
    embedding_size: int

    def detect(self, frame: np.ndarray) -> list[FaceObservation]: ...
    def embed(self, frame: np.ndarray, face: FaceObservation) -> np.ndarray: ...


class VoiceBackend(Protocol):
    """Speaks a script in a cameo's voice, with phoneme timings."""

    def synthesize(self, script: str, profile: VoiceProfile) -> SpeechTrack: ...


class BaseVideoBackend(Protocol):
    """Produces the scene's frames [start, start+count) at the output format."""

    def render(
        self,
        source: PresenterSource,
        background: np.ndarray | None,
        spec: FrameSpec,
        index: int,
        start: int,
        count: int,
    ) -> VideoChunk: ...


class FaceSwapBackend(Protocol):
    """Puts the cameo's face onto the person in each frame; returns landmarks it found."""

    def swap(self, chunk: VideoChunk, identity: FaceIdentity) -> VideoChunk: ...


class LipSyncBackend(Protocol):
    """Drives the mouth in each frame from the speech's phoneme timings."""

    def sync(
        self, chunk: VideoChunk, phonemes: tuple[object, ...], fps: int, atlas: MouthAtlas
    ) -> VideoChunk: ...


class CompositorBackend(Protocol):
    """Encodes watermarked chunks and assembles the signed, muxed MP4."""

    def encode(self, chunk: VideoChunk, spec: FrameSpec) -> bytes: ...
    def assemble(
        self, segments: list[bytes], speech: SpeechTrack, spec: FrameSpec, claim: ProvenanceClaim
    ) -> bytes: ...
