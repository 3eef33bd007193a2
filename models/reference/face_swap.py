"""Reference face swap: dlib landmarks, Delaunay triangle warp of the cameo's reference face,
LAB colour correction and Poisson blending, limited to the face's bounding box."""

from __future__ import annotations

import cv2
import numpy as np
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import FaceIdentity, VideoChunk
from cameofarm.models.reference.warp import blend_roi, delaunay, match_colour, warp_triangles

# Warp the inner face only (brows, eyes, nose, mouth and the lower jaw line); the outer jaw
# and forehead stay the target's so head shape and hairline are kept.
SWAP_POINTS = list(range(2, 15)) + list(range(17, 68))


class TriangleFaceSwap:
    """Swaps the identity's reference face onto the largest face in every frame."""

    identity_analyzer: str | None = None  # it warps the reference crop; no embedding needed

    def __init__(self, analyzer: FaceAnalyzer) -> None:
        self.analyzer = analyzer
        self._triangles: dict[bytes, np.ndarray] = {}

    def prepare(self, identity: FaceIdentity) -> FaceIdentity:
        """Check the identity's reference landmarks are in this analyzer's 68-point scheme."""
        if identity.reference_landmarks.shape != (68, 2):
            raise ValueError(
                f"the reference face swap warps 68-point landmarks; this cameo's reference face "
                f"has {len(identity.reference_landmarks)} ({identity.landmarks_by}); re-enroll "
                "it with the reference face analyzer first in enrollment.analyzers"
            )
        return identity

    def _triangulation(self, identity: FaceIdentity) -> np.ndarray:
        key = identity.reference_landmarks.tobytes()  # by content: ids are reused after GC
        if key not in self._triangles:
            self._triangles = {key: delaunay(identity.reference_landmarks[SWAP_POINTS])}
        return self._triangles[key]

    def swap_frame(self, frame: np.ndarray, landmarks: np.ndarray, identity: FaceIdentity) -> None:
        """Warp the identity's face onto the given landmarks, in place on a writable frame."""
        tris = self._triangulation(identity)
        src_pts = identity.reference_landmarks[SWAP_POINTS]
        dst_pts = landmarks[SWAP_POINTS]
        h, w = frame.shape[:2]
        x, y, bw, bh = cv2.boundingRect(dst_pts.astype(np.float32))
        pad = 12
        x0, y0 = max(x - pad, 0), max(y - pad, 0)
        x1, y1 = min(x + bw + pad, w), min(y + bh + pad, h)
        if x1 - x0 < 16 or y1 - y0 < 16:
            return
        local = dst_pts - [x0, y0]
        warped = warp_triangles(identity.reference_image, src_pts, local, tris, (y1 - y0, x1 - x0))
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        hull = cv2.convexHull(np.round(local).astype(np.int32))
        cv2.fillConvexPoly(mask, hull, 255)
        mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
        roi = frame[y0:y1, x0:x1]
        blend_roi(frame, match_colour(warped, roi, mask), mask, (x0, y0))

    def swap(self, chunk: VideoChunk, identity: FaceIdentity) -> VideoChunk:
        """Swap every frame of the chunk; frames without a face pass through unchanged."""
        out = chunk.frames.copy()  # frames from Ray's object store are read-only
        marks = np.full((len(chunk), 68, 2), np.nan, np.float32)
        for i, frame in enumerate(out):
            faces = self.analyzer.detect(frame)
            if faces:
                marks[i] = faces[0].landmarks
                self.swap_frame(frame, faces[0].landmarks, identity)
        return VideoChunk(chunk.index, chunk.start, out, marks, self.analyzer.name)
