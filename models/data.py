"""Named data shapes exchanged between stages (frames are RGB uint8 numpy arrays)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class FaceObservation:
    """One detected face in frame pixels: box (x0, y0, x1, y1), the analyzer's own landmarks
    (any count: 68 for dlib, 106 for insightface's 2d106) and the 5 alignment points every
    analyzer gives (left eye, right eye, nose tip, left and right mouth corner, as seen)."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray  # (K, 2) float32, K fixed per analyzer (`FaceAnalyzer.landmark_count`)
    points5: np.ndarray  # (5, 2) float32
    score: float = 1.0

    @property
    def area(self) -> int:
        return max(0, self.box[2] - self.box[0]) * max(0, self.box[3] - self.box[1])


@dataclass(frozen=True)
class IdentityEmbedding:
    """A face identity vector tagged with the analyzer (name@version) that made it. Vectors of
    different analyzers live in different spaces and are never compared."""

    analyzer: str
    vector: np.ndarray  # (D,) float32: D=128 for dlib, 512 for ArcFace
    metric: str  # "euclidean" or "cosine"
    same_person: float  # distance at or under which two vectors are one person

    def distance(self, other: IdentityEmbedding) -> float:
        """Distance to a vector of the same analyzer; ValueError for another analyzer's."""
        if other.analyzer != self.analyzer or other.vector.shape != self.vector.shape:
            raise ValueError(
                f"cannot compare identities of {self.analyzer} and {other.analyzer}: "
                "embeddings of different analyzers are different spaces"
            )
        a, b = self.vector.astype(np.float64), other.vector.astype(np.float64)
        if self.metric == "cosine":
            return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
        return float(np.linalg.norm(a - b))


@dataclass(frozen=True)
class FaceIdentity:
    """Who the face is (one embedding per analyzer) and how it looks (a reference crop with
    the enrolling analyzer's landmarks and the 5 alignment points, in crop pixels)."""

    reference_image: np.ndarray  # (H, W, 3) uint8 RGB crop around the face
    reference_landmarks: np.ndarray  # (K, 2) float32
    reference_points5: np.ndarray  # (5, 2) float32
    embeddings: dict[str, IdentityEmbedding] = field(default_factory=dict)
    landmarks_by: str = ""  # the analyzer whose landmark scheme reference_landmarks follow


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
    """The reference voice backend's profile: pitch statistics and average spectral envelope.
    Each voice backend speaks from the profile its own profiler makes; `profiler` says which
    made this one, so a backend never misreads another's."""

    sample_rate: int
    f0_log_mean: float
    f0_log_std: float
    f0_p5: float
    f0_p95: float
    envelope: np.ndarray  # (fft_size//2+1,) mean log power envelope of voiced speech
    fft_size: int
    speech_seconds: float
    speaker: np.ndarray = field(default_factory=lambda: np.zeros(38, np.float32))  # MFCC stats
    profiler: str = "world@1"  # the VoiceProfiler (name@version) that made it


@dataclass(frozen=True)
class SpeakerReference:
    """A neural voice backend's profile: a log-mel spectrogram of the cameo's own speech, in
    the features its model computes; its reference encoder conditions synthesis on it."""

    profiler: str  # the VoiceProfiler (name@version) that made it
    sample_rate: int
    mel: np.ndarray  # (n_mels, T) float32


@dataclass(frozen=True)
class VoiceFrames:
    """The reference voice's profile: the cameo's own enrolled speech as WORLD frames (5 ms:
    mel-cepstrum and coded aperiodicity, speech only), which synthesis draws its timbre from,
    and the pitch statistics it moves the base voice's pitch to."""

    profiler: str  # the VoiceProfiler (name@version) that made it
    sample_rate: int
    fft_size: int
    mcep: np.ndarray  # (N, D) float32 mel-cepstra of speech frames, in recording order
    coded_ap: np.ndarray  # (N, B) float32 band aperiodicity (pyworld's coding)
    voiced: np.ndarray  # (N,) bool
    f0_log_mean: float
    f0_log_std: float
    speech_seconds: float
    phones: np.ndarray  # (N,) int8: a recogniser's phone per frame (index into a phone set), -1
    timbre: float = 0.75  # share of the envelope renders take from these frames (calibrated)
    # How renders at `timbre` scored at calibration, over its scripts: speaker similarity to
    # the enrolled speech, gain over the stock voice, share of the words a recogniser
    # recovers. None: not measured (too little speech, or a profile from before calibration).
    calibrated: tuple[float, float, float] | None = None


AnyVoiceProfile = VoiceProfile | SpeakerReference | VoiceFrames


@dataclass(frozen=True)
class PhonemeTiming:
    """A phoneme in IPA (the one alphabet every voice backend speaks in) and when it sounds,
    in seconds. Silence is "_"."""

    symbol: str
    start: float
    end: float


@dataclass(frozen=True)
class WordTiming:
    """A word of the script and when it is spoken, in seconds."""

    text: str
    start: float
    end: float


@dataclass(frozen=True)
class Cue:
    """A caption shown from `start` to `end` seconds; `text` may hold one line break."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SpeechTrack:
    """Synthesized speech: mono float32 samples in [-1, 1] with phoneme and word timings."""

    samples: np.ndarray
    sample_rate: int
    phonemes: tuple[PhonemeTiming, ...]
    words: tuple[WordTiming, ...] = ()

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
    key: str = ""  # the recording's object key: what prepared footage is cached under


@dataclass(frozen=True)
class BackgroundVideo:
    """A video behind a presenter, looped back and forth to the output's length."""

    path: str
    fps: float
    frame_count: int


@dataclass(frozen=True)
class SceneTrack:
    """A template scene's stand-in actor, tracked through the whole clip once, at upload."""

    landmarks: np.ndarray  # (N, K, 2) float32 per clip frame, smoothed over time; gaps filled
    landmarks_by: str  # the analyzer (name@version) whose landmark scheme these follow
    found: np.ndarray  # (N,) bool: the face was detected in that frame (not filled in)
    actor: IdentityEmbedding  # the actor's identity, for the quality report's comparison


@dataclass(frozen=True)
class TemplateSource:
    """A template scene's clip and its tracked actor, which a base-video backend loops or
    trims to the speech and fits to the output frame."""

    path: str
    fps: float
    frame_count: int
    track: SceneTrack
    others: tuple[SceneTrack, ...] = ()  # a two-person scene's second actor


@dataclass(frozen=True)
class GenerationRequest:
    """What a text-to-video generator is asked for: the prompt as the pipeline reads it, the
    size and length at its own rate, and how hard to work (steps, guidance) from which seed."""

    prompt: str
    negative_prompt: str
    width: int
    height: int
    frames: int
    fps: int
    steps: int
    guidance: float
    seed: int


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
    landmarks: np.ndarray | None = None  # (N, K, 2) float32, NaN where no face
    landmarks_by: str = ""  # the analyzer (name@version) whose landmark scheme these follow
    # The scene's further actors (a two-person template), each as (landmarks, landmarks_by):
    # the stages act on `landmarks`; `focus` brings another actor's to the front.
    others: tuple[tuple[np.ndarray, str], ...] = ()

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def actors(self) -> int:
        return (self.landmarks is not None) + len(self.others)

    def focus(self, actor: int) -> VideoChunk:
        """The chunk with actor `actor`'s landmarks in front (actor 0 is the scene's first)."""
        if actor == 0:
            return self
        if self.landmarks is None or not 0 < actor < self.actors:
            raise ValueError(f"the scene has {self.actors} actor(s); there is no actor {actor}")
        marks = [(self.landmarks, self.landmarks_by), *self.others]
        front = marks.pop(actor)
        return replace(self, landmarks=front[0], landmarks_by=front[1], others=tuple(marks))

    def refocus(self, done: VideoChunk, actor: int) -> VideoChunk:
        """A stage's output `done` for this focused chunk, with actor 0 back in front."""
        if actor == 0:
            return replace(done, others=self.others)
        if done.landmarks is None:
            raise ValueError("a stage lost the landmarks of the actor it worked on")
        marks = list(self.others)
        marks.insert(actor, (done.landmarks, done.landmarks_by))
        first = marks.pop(0)
        return replace(done, landmarks=first[0], landmarks_by=first[1], others=tuple(marks))


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
    # The render assertion's other fields (the scene and its rights; a prompt, model and seed).
    extra: dict[str, Any] = field(default_factory=dict)
    manifest_id: str | None = None  # the active manifest's label (urn:c2pa:...)
