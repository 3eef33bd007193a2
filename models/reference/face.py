"""dlib face detection, 68-point landmarks and 128-d identity embedding (real weights from PyPI)."""

from __future__ import annotations

import threading
import warnings

import cv2
import numpy as np
from cameofarm.models.data import FaceObservation, IdentityEmbedding

# dlib's documented same-person distance is 0.6; measured on this farm's fixtures: same
# person p95 0.53 / max 0.60, different people min 0.65 (README), hence 0.62.
DLIB_SAME_PERSON = 0.62
# The HOG detector's score (its SVM margin) is how human a face looks to it. Measured here
# (README): people talking to camera score 0.96 or more per frame (medians 1.7-2.1), photos of
# people 1.4-2.7; a capuchin monkey 0.18 and a dog 0.0. Drawn and painted faces score like
# people (a 3D cartoon 1.64, paintings 1.7-2.8, a statue 1.52): this detector cannot tell those.
DLIB_HUMAN_FACE = 0.8


def points5_from_68(marks: np.ndarray) -> np.ndarray:
    """The 5 alignment points (eyes' centres, nose tip, mouth corners) of 68 iBUG landmarks."""
    return np.stack(
        [marks[36:42].mean(0), marks[42:48].mean(0), marks[30], marks[48], marks[54]]
    ).astype(np.float32)


def _model_paths() -> tuple[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
        import face_recognition_models as frm

    return frm.pose_predictor_model_location(), frm.face_recognition_model_location()


class DlibFaceAnalyzer:
    """HOG face detector on a downscaled frame, then landmarks and embedding at full size."""

    name = "dlib@resnet-v1"
    landmark_count = 68
    embedding_size = 128
    metric = "euclidean"
    human_face = DLIB_HUMAN_FACE

    def __init__(self, detect_side: int = 480, same_person: float = DLIB_SAME_PERSON) -> None:
        self.same_person = same_person
        import dlib

        landmarks_path, embedding_path = _model_paths()
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(landmarks_path)
        self._encoder = dlib.face_recognition_model_v1(embedding_path)
        self._rect = dlib.rectangle
        self._detect_side = detect_side
        self._lock = threading.Lock()  # dlib objects are not safe across threads

    def detect(self, frame: np.ndarray) -> list[FaceObservation]:
        """Return every face in an RGB frame, largest first."""
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 frame, got {frame.shape} {frame.dtype}")
        h, w = frame.shape[:2]
        scale = min(1.0, self._detect_side / float(max(h, w)))
        small = cv2.resize(
            frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
        )
        with self._lock:
            rects, scores, _ = self._detector.run(small, 0, 0.0)
            if len(rects) == 0:
                rects, scores, _ = self._detector.run(small, 1, 0.0)
            faces = []
            for r, score in zip(rects, scores, strict=True):
                box = (
                    int(r.left() / scale),
                    int(r.top() / scale),
                    int(r.right() / scale),
                    int(r.bottom() / scale),
                )
                shape = self._predictor(frame, self._rect(*box))
                pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
                faces.append(FaceObservation(box, pts, points5_from_68(pts), float(score)))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces

    def embed(self, frame: np.ndarray, face: FaceObservation) -> IdentityEmbedding:
        """Return the 128-d dlib identity embedding of one detected face."""
        with self._lock:
            shape = self._predictor(frame, self._rect(*face.box))
            vec = self._encoder.compute_face_descriptor(frame, shape)
        vector = np.asarray(vec, dtype=np.float32)
        return IdentityEmbedding(self.name, vector, self.metric, self.same_person)
