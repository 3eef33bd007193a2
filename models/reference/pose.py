"""Head pose from 68 landmarks with OpenCV solvePnP against a generic 3D face."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Generic 3D positions (mm) of: nose tip, chin, left eye outer corner, right eye outer corner,
# left mouth corner, right mouth corner — the usual six-point model.
_MODEL = np.array(
    [
        [0.0, 0.0, 0.0],
        [0.0, -330.0, -65.0],
        [-225.0, 170.0, -135.0],
        [225.0, 170.0, -135.0],
        [-150.0, -150.0, -125.0],
        [150.0, -150.0, -125.0],
    ],
    dtype=np.float64,
)
_POINTS = [30, 8, 36, 45, 48, 54]


@dataclass(frozen=True)
class HeadPose:
    """Degrees; yaw > 0 means the head turned to the person's left (image right)."""

    yaw: float
    pitch: float
    roll: float


def head_pose(landmarks: np.ndarray, frame_size: tuple[int, int]) -> HeadPose:
    """Estimate yaw/pitch/roll of a face from its 68 landmarks in a (width, height) frame."""
    w, h = frame_size
    camera = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], dtype=np.float64)
    image = landmarks[_POINTS].astype(np.float64)
    ok, rvec, _ = cv2.solvePnP(_MODEL, image, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("head pose could not be solved from these landmarks")
    rot, _ = cv2.Rodrigues(rvec)
    sy = float(np.hypot(rot[0, 0], rot[1, 0]))
    pitch = float(np.degrees(np.arctan2(rot[2, 1], rot[2, 2])))
    yaw = float(np.degrees(np.arctan2(-rot[2, 0], sy)))
    roll = float(np.degrees(np.arctan2(rot[1, 0], rot[0, 0])))
    # The model's x axis points to image right with y up, so pitch comes out near ±180 for
    # an upright face; fold it into [-90, 90].
    if pitch > 90:
        pitch -= 180
    elif pitch < -90:
        pitch += 180
    return HeadPose(yaw, pitch, roll)
