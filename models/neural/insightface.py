"""Face analysis and swap on insightface through onnxruntime: SCRFD detection (box + 5
points), ArcFace identity (512-d, cosine) and INSwapper-128, with a masked, colour-matched
paste-back. Models come from the model store in their published ONNX format."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import cv2
import numpy as np
from cameofarm.models.data import FaceIdentity, FaceObservation, IdentityEmbedding, VideoChunk
from cameofarm.models.neural.onnx import providers_for
from cameofarm.models.reference.warp import match_colour
from cameofarm.models.registry import BackendContext, ModelFiles

# ArcFace embeddings of one person sit at cosine similarity ~0.4 and above in insightface's
# published verification practice; this is that, as a distance. Not measured here (no real
# weights can be brought to this machine): set `same_person` in the analyzer's config.
ARCFACE_SAME_PERSON = 0.6
DETECT_SIZE = (640, 640)
# SCRFD returns only faces at or over its own threshold (0.5, insightface's default), so
# enrollment's human-face check adds nothing to it. Not measured on animals here (no real
# weights on this machine).
SCRFD_HUMAN_FACE = 0.5
MAX_FACES = 8  # faces kept per frame, the largest and most central first


def _load(model: ModelFiles, ctx: BackendContext, kind: str) -> tuple[Any, str]:
    """An insightface model object for one ONNX file, checked to be the expected kind."""
    from insightface.model_zoo import get_model

    providers, provider = providers_for(ctx, model)
    loaded = get_model(str(model.path(".onnx")), providers=providers)
    got = type(loaded).__name__ if loaded is not None else "nothing insightface recognises"
    if got != kind:
        raise ValueError(
            f"model {model.name}@{model.version} is {got}, not {kind}: insightface tells models "
            "apart by their ONNX inputs and outputs; import the right file under this role"
        )
    return loaded, provider


class InsightfaceAnalyzer:
    """SCRFD finds faces and their 5 points; ArcFace embeds faces aligned by those points."""

    landmark_count = 5
    metric = "cosine"
    human_face = SCRFD_HUMAN_FACE

    def __init__(self, ctx: BackendContext) -> None:
        detector = ctx.model("detector", "insightface")
        recognizer = ctx.model("recognizer", "insightface")
        self.detector, det_provider = _load(detector, ctx, "SCRFD")
        self.recognizer, self.provider = _load(recognizer, ctx, "ArcFaceONNX")
        if det_provider != self.provider:
            self.provider = f"{det_provider} + {self.provider}"
        self.name = f"insightface:{recognizer.name}@{recognizer.version}"
        self.embedding_size = int(self.recognizer.output_shape[-1])
        self.same_person = ctx.same_person or ARCFACE_SAME_PERSON
        self._lock = threading.Lock()  # the detector caches sessions per input size

    def detect(self, frame: np.ndarray) -> list[FaceObservation]:
        """Every face in an RGB frame, largest first, with SCRFD's 5 points as landmarks."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame, got {frame.shape} {frame.dtype}")
        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        with self._lock:
            boxes, points = self.detector.detect(bgr, input_size=DETECT_SIZE, max_num=MAX_FACES)
        h, w = frame.shape[:2]
        faces = []
        for (x0, y0, x1, y1, score), kps in zip(boxes, points, strict=True):
            box = (
                int(np.clip(x0, 0, w - 1)),
                int(np.clip(y0, 0, h - 1)),
                int(np.clip(x1, 0, w)),
                int(np.clip(y1, 0, h)),
            )
            kps = kps.astype(np.float32)
            faces.append(FaceObservation(box, kps, kps, float(score)))
        faces = [f for f in faces if f.area > 0]
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def embed(self, frame: np.ndarray, face: FaceObservation) -> IdentityEmbedding:
        """ArcFace's L2-normalised embedding of the face aligned by its 5 points."""
        from insightface.utils import face_align

        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        size = int(self.recognizer.input_size[0])
        aligned = face_align.norm_crop(bgr, landmark=face.points5, image_size=size)
        vector = np.asarray(self.recognizer.get_feat(aligned), np.float32).reshape(-1)
        vector /= float(np.linalg.norm(vector)) + 1e-12
        return IdentityEmbedding(self.name, vector, self.metric, self.same_person)


def target_face(faces: list[FaceObservation], tracked: np.ndarray | None) -> FaceObservation | None:
    """The detected face to swap: the one on the scene actor's tracked landmarks (a
    two-person scene has a face to leave alone), or the largest where nothing is tracked."""
    if tracked is None:
        return faces[0] if faces else None
    if np.isnan(tracked).any():
        return None
    x, y = tracked.mean(axis=0)
    on = [f for f in faces if f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3]]
    return min(on, key=lambda f: f.area) if on else None


class InswapperFaceSwap:
    """INSwapper-128 puts the cameo's ArcFace identity onto the largest face in each frame."""

    def __init__(self, ctx: BackendContext) -> None:
        self.analyzer = InsightfaceAnalyzer(ctx)
        self.swapper, swap_provider = _load(ctx.model("swapper", "insightface"), ctx, "INSwapper")
        self.provider = self.analyzer.provider
        if swap_provider != self.provider:
            self.provider = f"{self.provider} + {swap_provider}"
        self.identity_analyzer: str | None = self.analyzer.name

    def prepare(self, identity: FaceIdentity) -> FaceIdentity:
        """Add this analyzer's embedding of the cameo when enrollment did not store one: from
        the reference crop, aligned by its 5 points."""
        if self.analyzer.name in identity.embeddings:
            return identity
        h, w = identity.reference_image.shape[:2]
        face = FaceObservation((0, 0, w, h), identity.reference_points5, identity.reference_points5)
        embedding = self.analyzer.embed(identity.reference_image, face)
        return replace(identity, embeddings={**identity.embeddings, embedding.analyzer: embedding})

    def swap_frame(self, frame: np.ndarray, face: FaceObservation, latent: Any) -> None:
        """Swap one face in place: INSwapper on the aligned crop, colour matched to the
        target's skin, pasted back through a feathered mask."""
        from insightface.app.common import Face

        bgr = np.ascontiguousarray(frame[:, :, ::-1])
        target = Face(bbox=np.array(face.box, np.float32), kps=face.points5)
        fake_bgr, matrix = self.swapper.get(bgr, target, latent, paste_back=False)
        size = fake_bgr.shape[0]
        aligned = cv2.warpAffine(frame, matrix, (size, size), borderValue=0.0)
        inner = np.zeros((size, size), np.uint8)
        cv2.ellipse(
            inner,
            (size // 2, size // 2 + size // 16),
            (size * 3 // 8, size * 7 // 16),
            0,
            0,
            360,
            255,
            -1,
        )
        fake = match_colour(np.ascontiguousarray(fake_bgr[:, :, ::-1]), aligned, inner)
        h, w = frame.shape[:2]
        back = cv2.invertAffineTransform(matrix)
        fake_full = cv2.warpAffine(fake, back, (w, h), borderValue=0.0)
        blur = max(3, (size // 10) | 1)
        mask = cv2.GaussianBlur(inner.astype(np.float32) / 255.0, (blur, blur), 0)
        mask_full = cv2.warpAffine(mask, back, (w, h), borderValue=0.0)[..., None]
        merged = mask_full * fake_full + (1.0 - mask_full) * frame
        frame[:] = np.clip(np.rint(merged), 0, 255).astype(np.uint8)

    def swap(self, chunk: VideoChunk, identity: FaceIdentity) -> VideoChunk:
        """Swap every frame of the chunk; frames without a face pass through unchanged."""
        from insightface.app.common import Face

        identity = self.prepare(identity)
        source = Face(embedding=identity.embeddings[self.analyzer.name].vector)
        out = chunk.frames.copy()  # frames from Ray's object store are read-only
        marks = np.full((len(chunk), 5, 2), np.nan, np.float32)
        for i, frame in enumerate(out):
            tracked = None if chunk.landmarks is None else chunk.landmarks[i]
            face = target_face(self.analyzer.detect(frame), tracked)
            if face is not None:
                marks[i] = face.points5
                self.swap_frame(frame, face, source)
        return VideoChunk(chunk.index, chunk.start, out, marks, self.analyzer.name)
