"""Named data shapes exchanged between stages (frames are RGB uint8 numpy arrays)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class FaceObservation:
    """One detected face: box (x0, y0, x1, y1) and 68 landmarks (x, y) in frame pixels."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray  # (68, 2) float32

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


@dataclass(frozen=True)
class FaceIdentity:
    """Who the face is (embedding) and how it looks (an aligned reference crop)."""

    embedding: np.ndarray  # (D,) float32, D=128 for dlib, 512 for ArcFace
    reference_image: np.ndarray  # (H, W, 3) uint8 RGB crop around the face
    reference_landmarks: np.ndarray  # (68, 2) float32 in reference_image pixels
    backend: str = "dlib"


@dataclass(frozen=True)
class MouthShape:
    """One viseme: a canonical-frame face crop and its mouth landmarks."""

    viseme: str
    patch: np.ndarray  # (S, S, 3) uint8 canonical aligned face
    mouth: np.ndarray  # (20, 2) float32 mouth landmarks in canonical pixels


@dataclass(frozen=True)
class MouthAtlas:
    """The cameo's mouth shapes by viseme, all in one canonical face frame."""

    size: int
    shapes: dict[str, MouthShape]


@dataclass(frozen=True)
class VoiceProfile:
    """What the voice sounds like: pitch statistics and average spectral envelope."""

    sample_rate: int
    f0_log_mean: float
    f0_log_std: float
    f0_p5: float
    f0_p95: float
    envelope: np.ndarray  # (fft_size//2+1,) mean log power envelope of voiced speech
    fft_size: int
    speech_seconds: float
    speaker: np.ndarray = field(default_factory=lambda: np.zeros(38, np.float32))  # MFCC stats


@dataclass(frozen=True)
class PhonemeTiming:
    """A phoneme (espeak mnemonic) and when it sounds, in seconds."""

    symbol: str
    start: float
    end: float


@dataclass(frozen=True)
class SpeechTrack:
    """Synthesized speech: mono float32 samples in [-1, 1] with phoneme timings."""

    samples: np.ndarray
    sample_rate: int
    phonemes: tuple[PhonemeTiming, ...]

    @property
    def duration(self) -> float:
        return len(self.samples) / float(self.sample_rate)


@dataclass(frozen=True)
class PresenterSource:
    """The calibration footage a base-video backend re-frames as a presenter."""

    path: str
    fps: float
    frame_count: int
    box: tuple[int, int, int, int]  # head-and-shoulders crop in source pixels
    first_frame: int = 0  # where the usable footage starts (after liveness challenges)


@dataclass(frozen=True)
class FrameSpec:
    """The output format of a render: what every stage must produce."""

    width: int
    height: int
    fps: int
    video_bitrate_kbps: int = 4000


@dataclass(frozen=True)
class VideoChunk:
    """Consecutive frames [start, start+len) of one job, optionally with face landmarks."""

    index: int
    start: int
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB
    landmarks: np.ndarray | None = None  # (N, 68, 2) float32, NaN where no face

    def __len__(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class ProvenanceClaim:
    """What the signed C2PA manifest states about one output."""

    job_id: str
    tier: str
    cameo_ids: tuple[str, ...]
    title: str = "cameofarm render"
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProvenanceReport:
    """What verifying a file's C2PA manifest found."""

    valid: bool
    state: str
    signer: str | None
    job_id: str | None
    tier: str | None
    cameo_ids: tuple[str, ...]
    ai_generated: bool
    problems: tuple[str, ...]
