"""Reference lip sync: phonemes → visemes → the cameo's own mouth shapes (from enrollment),
aligned into each frame by a similarity transform and Poisson-blended over the mouth."""

from __future__ import annotations

import cv2
import numpy as np
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import (
    FaceObservation,
    MouthAtlas,
    MouthShape,
    PhonemeTiming,
    SpeechTrack,
    VideoChunk,
)
from cameofarm.models.reference.warp import (
    CANONICAL_SIZE,
    MOUTH,
    blend_roi,
    match_colour,
    similarity_to_canonical,
    transform_points,
)

VISEMES = ("rest", "open", "wide", "round", "mid")
# Visemes by IPA symbol (the farm's one phoneme alphabet), first matching prefix wins.
_CLOSED = ("_", "p", "b", "m", "ʔ")
_MID = ("f", "v")
_OPEN = ("a", "ɑ", "æ", "ʌ", "ɐ", "ɒ", "ɛ", "aɪ", "aʊ")
_ROUND = ("u", "ʊ", "o", "ɔ", "w", "ɜ", "ɹ", "r", "ʁ", "y", "ø", "œ", "ʃ", "ʒ", "tʃ", "dʒ")
_WIDE = ("i", "ɪ", "e", "s", "z", "t", "d", "n", "k", "ɡ", "g", "j", "θ", "ð", "l", "h", "ŋ", "ç")


def viseme_of(symbol: str) -> str:
    """Map an IPA phoneme (stress and length marks allowed) to one of VISEMES."""
    s = symbol.lstrip("ˈˌ'%=").rstrip("ːˑ̩")
    if not s or s.startswith(_CLOSED):
        return "rest"
    for visemes, name in ((_MID, "mid"), (_OPEN, "open"), (_ROUND, "round"), (_WIDE, "wide")):
        if s.startswith(visemes):
            return name
    return "mid"


def viseme_track(phonemes: tuple[PhonemeTiming, ...], fps: int, n_frames: int) -> list[str]:
    """Return the viseme to show at every output frame (rest after the speech ends)."""
    track = ["rest"] * n_frames
    for ph in phonemes:
        first = int(np.floor(ph.start * fps))
        last = max(first + 1, int(np.ceil(ph.end * fps)))
        vis = viseme_of(ph.symbol)
        for f in range(max(first, 0), min(last, n_frames)):
            track[f] = vis
    return track


def mouth_features(landmarks: np.ndarray) -> tuple[float, float]:
    """Return (openness, width) of a mouth, scale-free: inner-lip gap and width over eye gap."""
    eye_gap = float(np.linalg.norm(landmarks[36:42].mean(0) - landmarks[42:48].mean(0))) + 1e-6
    width = float(np.linalg.norm(landmarks[54] - landmarks[48]))
    gap = float(
        np.mean(
            [np.linalg.norm(landmarks[a] - landmarks[b]) for a, b in ((61, 67), (62, 66), (63, 65))]
        )
    )
    return gap / eye_gap, width / eye_gap


def choose_atlas_frames(features: np.ndarray) -> dict[str, int]:
    """Pick one sampled frame per viseme from (N, 2) mouth features (openness, width)."""
    openness, width = features[:, 0], features[:, 1]
    lo, hi = np.percentile(openness, 30), np.percentile(openness, 75)
    middle = np.flatnonzero((openness >= lo) & (openness <= hi))
    if len(middle) == 0:
        middle = np.arange(len(features))
    return {
        "rest": int(np.argmin(openness)),
        "open": int(np.argmax(openness)),
        "wide": int(middle[np.argmax(width[middle])]),
        "round": int(middle[np.argmin(width[middle])]),
        "mid": int(middle[np.argsort(openness[middle])[len(middle) // 2]]),
    }


def build_mouth_shape(viseme: str, frame: np.ndarray, landmarks: np.ndarray) -> MouthShape:
    """Cut one aligned canonical face crop and its mouth landmarks out of a frame."""
    matrix = similarity_to_canonical(landmarks)
    patch = cv2.warpAffine(
        frame,
        matrix,
        (CANONICAL_SIZE, CANONICAL_SIZE),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )
    return MouthShape(viseme, patch, transform_points(matrix, landmarks[MOUTH]))


class AtlasMouthModel:
    """The reference mouth model: one canonical crop per viseme, picked from the recording by
    how open and how wide the mouth is (68-point landmarks)."""

    name = "atlas@1"

    def build(self, frames: list[np.ndarray], faces: list[FaceObservation]) -> MouthAtlas:
        """Return the atlas; needs faces with dlib's 68-point landmarks."""
        if not faces or any(f.landmarks.shape != (68, 2) for f in faces):
            raise ValueError("the atlas mouth model needs 68-point landmarks (the dlib analyzer)")
        features = np.array([mouth_features(f.landmarks) for f in faces], np.float32)
        picks = choose_atlas_frames(features)
        shapes = {v: build_mouth_shape(v, frames[k], faces[k].landmarks) for v, k in picks.items()}
        return MouthAtlas(CANONICAL_SIZE, shapes)


class AtlasLipSync:
    """Replaces each frame's mouth with the atlas shape of the viseme spoken at that frame.

    It works on dlib's 68 landmarks: a chunk whose landmarks came from another analyzer (or
    none) has its faces found again here.
    """

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer

    def _landmarks(self, chunk: VideoChunk) -> np.ndarray:
        if chunk.landmarks is not None and chunk.landmarks_by == self.analyzer.name:
            return chunk.landmarks
        marks = np.full((len(chunk), 68, 2), np.nan, np.float32)
        for i, frame in enumerate(chunk.frames):
            faces = self.analyzer.detect(frame)
            if faces:
                marks[i] = faces[0].landmarks
        return marks

    def mouth_frame(self, frame: np.ndarray, landmarks: np.ndarray, shape: MouthShape) -> None:
        """Place the shape's mouth over the face at landmarks, in place on a writable frame."""
        to_canon = similarity_to_canonical(landmarks)
        to_frame = cv2.invertAffineTransform(to_canon)
        h, w = frame.shape[:2]
        mouth_pts = np.vstack([transform_points(to_frame, shape.mouth), landmarks[MOUTH]])
        x, y, bw, bh = cv2.boundingRect(mouth_pts.astype(np.float32))
        pad = int(0.6 * bh) + 6
        x0, y0 = max(x - pad, 0), max(y - pad, 0)
        x1, y1 = min(x + bw + pad, w), min(y + bh + pad, h)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return
        shift = np.array([[1, 0, -x0], [0, 1, -y0]], np.float32)
        local = np.vstack([to_frame, [0, 0, 1]])
        local = (np.vstack([shift, [0, 0, 1]]) @ local)[:2]
        patch = cv2.warpAffine(
            shape.patch,
            local,
            (x1 - x0, y1 - y0),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        hull = cv2.convexHull(np.round(mouth_pts - [x0, y0]).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
        grow = max(3, int(0.25 * bh))
        mask = cv2.dilate(mask, np.ones((grow, grow), np.uint8))
        blend_roi(frame, match_colour(patch, frame[y0:y1, x0:x1], mask), mask, (x0, y0))

    def sync(
        self, chunk: VideoChunk, speech: SpeechTrack, fps: int, atlas: MouthAtlas
    ) -> VideoChunk:
        """Drive every frame's mouth from the phonemes; frames without a face pass through."""
        landmarks = self._landmarks(chunk)
        track = viseme_track(speech.phonemes, fps, chunk.start + len(chunk))[chunk.start :]
        out = chunk.frames.copy()
        for i, vis in enumerate(track):
            marks = landmarks[i]
            if np.isnan(marks).any():
                continue
            shape = atlas.shapes.get(vis) or atlas.shapes["rest"]
            self.mouth_frame(out[i], marks, shape)
        return VideoChunk(chunk.index, chunk.start, out, landmarks, self.analyzer.name)
