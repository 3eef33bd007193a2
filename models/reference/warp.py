"""Geometry and colour helpers shared by the reference face swap and lip sync."""

from __future__ import annotations

import cv2
import numpy as np

# 68-point indices (iBUG layout used by dlib).
JAW = list(range(0, 17))
LEFT_EYE = list(range(36, 42))
RIGHT_EYE = list(range(42, 48))
NOSE = list(range(27, 36))
MOUTH = list(range(48, 68))
INNER_MOUTH = list(range(60, 68))
STABLE = LEFT_EYE + RIGHT_EYE + NOSE  # points that do not move when speaking

# Canonical face frame (for a 256 px square) that aligned crops use.
CANONICAL_SIZE = 256


def canonical_points(size: int = CANONICAL_SIZE) -> np.ndarray:
    """Return template positions of the STABLE points in a size×size canonical face."""
    # Mean dlib landmark layout normalised to a unit box, eyes at ~38% height.
    template = np.array(
        [
            [0.25, 0.38],
            [0.29, 0.35],
            [0.34, 0.35],
            [0.38, 0.38],
            [0.34, 0.40],
            [0.29, 0.40],
            [0.62, 0.38],
            [0.66, 0.35],
            [0.71, 0.35],
            [0.75, 0.38],
            [0.71, 0.40],
            [0.66, 0.40],
            [0.50, 0.38],
            [0.50, 0.44],
            [0.50, 0.50],
            [0.50, 0.56],
            [0.44, 0.60],
            [0.47, 0.61],
            [0.50, 0.62],
            [0.53, 0.61],
            [0.56, 0.60],
        ],
        dtype=np.float32,
    )
    return template * size


def similarity_to_canonical(landmarks: np.ndarray, size: int = CANONICAL_SIZE) -> np.ndarray:
    """Return the 2×3 similarity transform from frame pixels to the canonical face frame."""
    matrix, _ = cv2.estimateAffinePartial2D(
        landmarks[STABLE].astype(np.float32), canonical_points(size), method=cv2.LMEDS
    )
    if matrix is None:
        raise ValueError("cannot align face: landmarks are degenerate")
    return matrix.astype(np.float32)


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (N, 2) points."""
    return (points @ matrix[:, :2].T + matrix[:, 2]).astype(np.float32)


def delaunay(points: np.ndarray) -> np.ndarray:
    """Return (T, 3) vertex-index triangles of the Delaunay triangulation of points."""
    from scipy.spatial import Delaunay

    return np.asarray(Delaunay(points.astype(np.float64)).simplices, dtype=np.int32)


def warp_triangles(
    src: np.ndarray,
    src_pts: np.ndarray,
    dst_pts: np.ndarray,
    triangles: np.ndarray,
    dst_shape: tuple[int, int],
) -> np.ndarray:
    """Piecewise-affine warp of src so that src_pts land on dst_pts (output dst_shape h×w)."""
    h, w = dst_shape
    out = np.zeros((h, w, 3), dtype=np.float32)
    srcf = src.astype(np.float32)
    for tri in triangles:
        s = src_pts[tri].astype(np.float32)
        d = dst_pts[tri].astype(np.float32)
        x, y, bw, bh = cv2.boundingRect(d)
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, w), min(y + bh, h)
        if x1 <= x0 or y1 <= y0:
            continue
        sx, sy, sw, sh = cv2.boundingRect(s)
        sx0, sy0 = max(sx - 1, 0), max(sy - 1, 0)
        sx1, sy1 = min(sx + sw + 1, src.shape[1]), min(sy + sh + 1, src.shape[0])
        if sx1 <= sx0 or sy1 <= sy0:
            continue
        patch = srcf[sy0:sy1, sx0:sx1]
        m = cv2.getAffineTransform(
            (s - [sx0, sy0]).astype(np.float32), (d - [x0, y0]).astype(np.float32)
        )
        warped = cv2.warpAffine(
            patch, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
        cv2.fillConvexPoly(mask, np.round(d - [x0, y0]).astype(np.int32), 1.0, cv2.LINE_AA)
        region = out[y0:y1, x0:x1]
        region *= (1.0 - mask)[..., None]
        region += warped * mask[..., None]
    return out


def match_colour(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift src's LAB mean/std inside mask to ref's (Reinhard colour transfer)."""
    sel = mask > 0
    if sel.sum() < 16:
        return src
    s = cv2.cvtColor(np.clip(src, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    r = cv2.cvtColor(ref.astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    for c in range(3):
        s_mean, s_std = s[..., c][sel].mean(), s[..., c][sel].std() + 1e-3
        r_mean, r_std = r[..., c][sel].mean(), r[..., c][sel].std() + 1e-3
        gain = float(np.clip(r_std / s_std, 0.5, 2.0))
        s[..., c] = (s[..., c] - s_mean) * gain + r_mean
    out = cv2.cvtColor(np.clip(s, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    return out


def blend_roi(
    dest: np.ndarray,
    patch: np.ndarray,
    mask: np.ndarray,
    origin: tuple[int, int],
    poisson: bool = True,
) -> None:
    """Blend an ROI-sized patch into dest (in place) where mask is set; origin = (x0, y0).

    Callers pad their ROI around the mask, so the ROI itself is the working area: no
    full-frame buffers are built and nothing outside the ROI is touched.
    """
    x0, y0 = origin
    h, w = mask.shape
    roi = dest[y0 : y0 + h, x0 : x0 + w]
    p = np.clip(patch, 0, 255).astype(np.uint8)
    if poisson and h > 8 and w > 8:
        m8 = np.where(mask > 0, 255, 0).astype(np.uint8)
        m8[:2, :] = 0  # seamlessClone needs the mask clear of the ROI's border
        m8[-2:, :] = 0
        m8[:, :2] = 0
        m8[:, -2:] = 0
        ys, xs = np.nonzero(m8)
        if len(xs) >= 16:
            bx, by = int(xs.min()), int(ys.min())
            center = (bx + (int(xs.max()) - bx + 1) // 2, by + (int(ys.max()) - by + 1) // 2)
            try:
                roi[:] = cv2.seamlessClone(
                    p, np.ascontiguousarray(roi), m8, center, cv2.NORMAL_CLONE
                )
                return
            except cv2.error:
                pass  # fall back to feathered alpha below
    alpha = cv2.GaussianBlur((mask > 0).astype(np.float32), (0, 0), 3)[..., None]
    roi[:] = (p * alpha + roi * (1 - alpha)).astype(np.uint8)
