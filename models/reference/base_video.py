"""Reference base video: a template scene's clip looped to the speech and fitted to the output
frame (its tracked actor's landmarks travel with it), or the cameo's calibration footage
re-framed as a presenter over a background image or colour, cut out by person segmentation
(MediaPipe's selfie-segmentation network)."""

from __future__ import annotations

import cv2
import numpy as np
from cameofarm.models.contracts import SceneGenerator
from cameofarm.models.data import (
    BackgroundVideo,
    FrameSpec,
    PresenterSource,
    TemplateSource,
    VideoChunk,
)
from cameofarm.models.media import read_frames
from cameofarm.models.reference.presenters import PresenterCache
from cameofarm.models.reference.segmentation import SelfieSegmenter

DEFAULT_BACKGROUND = (38, 52, 74)  # dark slate blue, RGB


def cover_window(
    size: tuple[int, int], width: int, height: int, centre: tuple[float, float] | None = None
) -> tuple[float, int, int]:
    """How to cover width×height with an image of `size` (w, h): (scale, x0, y0) of the crop
    in the scaled image, centred on `centre` (source pixels; the middle when None)."""
    w, h = size
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    cx, cy = (w / 2, h / 2) if centre is None else centre
    x0 = int(min(max(0.0, cx * scale - width / 2), sw - width))
    y0 = int(min(max(0.0, cy * scale - height / 2), sh - height))
    return scale, x0, y0


def cover(image: np.ndarray, width: int, height: int, window: tuple[float, int, int]) -> np.ndarray:
    """Scale and crop an image to width×height by a `cover_window`."""
    scale, x0, y0 = window
    h, w = image.shape[:2]
    resized = cv2.resize(
        image,
        (max(width, round(w * scale)), max(height, round(h * scale))),
        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
    )
    return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])


def fit_background(background: np.ndarray | None, width: int, height: int) -> np.ndarray:
    """Return background cover-cropped to width×height, or the default colour."""
    if background is None:
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = DEFAULT_BACKGROUND
        return frame
    bh, bw = background.shape[:2]
    return cover(background, width, height, cover_window((bw, bh), width, height))


def presenter_box(
    face_box: tuple[int, int, int, int], width: int, height: int
) -> tuple[int, int, int, int]:
    """Return a head-and-shoulders crop (x0, y0, x1, y1) around a face box, clamped to frame."""
    x0, y0, x1, y1 = face_box
    fh = y1 - y0
    cx = (x0 + x1) / 2
    box_h = min(height, 3.4 * fh)
    box_w = min(width, box_h * 0.8)
    top = max(0.0, y0 - 0.9 * fh)
    bottom = min(float(height), top + box_h)
    top = max(0.0, bottom - box_h)
    left = min(max(0.0, cx - box_w / 2), width - box_w)
    return (int(left), int(top), int(left + box_w), int(bottom))


def pingpong(i: int, n: int) -> int:
    """Map an ever-increasing index onto 0..n-1 going back and forth (no jump at the loop)."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    k = i % period
    return k if k < n else period - k


class ReferenceBaseVideo:
    """Template scenes fitted to the frame; presenters, cut out by person segmentation, scaled
    to 92 % of the frame height over the background."""

    def __init__(
        self, presenter_height: float = 0.92, segmenter: SelfieSegmenter | None = None
    ) -> None:
        self.presenter_height = presenter_height
        self.generator: SceneGenerator | None = None  # no text-to-video model here
        self._segmenter = segmenter  # loaded on the first presenter frame when not given
        self._edges: dict[int, np.ndarray] = {}
        # A replica's prepared footage (cuts and masks made once per cameo); None: every
        # chunk decodes and segments its frames itself.
        self.presenters: PresenterCache | None = None

    @property
    def segmenter(self) -> SelfieSegmenter:
        if self._segmenter is None:
            self._segmenter = SelfieSegmenter()
        return self._segmenter

    def _person(self, crop: np.ndarray) -> np.ndarray:
        """The person's alpha in a presenter crop (see `_soften`)."""
        return self._soften(self.segmenter.mask(crop))

    def _soften(self, mask: np.ndarray) -> np.ndarray:
        """The person's alpha from a mask at the crop's size: softened by a pixel or two, and
        faded out over the crop's left and right edges (a shoulder cut by the crop then ends
        softly instead of in a hard vertical seam)."""
        alpha = cv2.GaussianBlur(mask, (0, 0), 1.2)
        w = mask.shape[1]
        if w not in self._edges:
            ramp = max(2, int(0.04 * w))
            fade = np.ones(w, np.float32)
            fade[:ramp] = np.linspace(0.0, 1.0, ramp)
            fade[-ramp:] = np.linspace(1.0, 0.0, ramp)
            self._edges = {w: fade}
        return (alpha * self._edges[w])[..., None]

    def template(
        self, source: TemplateSource, spec: FrameSpec, index: int, start: int, count: int
    ) -> VideoChunk:
        """Return output frames [start, start+count) of the scene: its clip at the output
        rate, going back and forth past its end (no jump), cropped around the actor."""
        if count <= 0:
            raise ValueError("count must be positive")
        step = source.fps / spec.fps
        wanted = [pingpong(round((start + i) * step), source.frame_count) for i in range(count)]
        decoded = read_frames(source.path, sorted(set(wanted)))
        h, w = decoded[wanted[0]].shape[:2]
        tracks = (source.track, *source.others)
        every = np.concatenate([t.landmarks.reshape(-1, 2) for t in tracks])
        centre = np.nanmedian(every, axis=0)  # between the actors of a two-person scene
        window = cover_window((w, h), spec.width, spec.height, (float(centre[0]), float(centre[1])))
        scale, x0, y0 = window
        frames = np.empty((count, spec.height, spec.width, 3), np.uint8)
        marks = [np.empty((count, *t.landmarks.shape[1:]), np.float32) for t in tracks]
        for i, k in enumerate(wanted):
            frames[i] = cover(decoded[k], spec.width, spec.height, window)
            for track, out in zip(tracks, marks, strict=True):
                out[i] = track.landmarks[min(k, len(track.landmarks) - 1)] * scale - (x0, y0)
        others = tuple((m, t.landmarks_by) for m, t in zip(marks[1:], tracks[1:], strict=True))
        return VideoChunk(index, start, frames, marks[0], tracks[0].landmarks_by, others)

    def _backgrounds(
        self,
        background: np.ndarray | BackgroundVideo | None,
        spec: FrameSpec,
        start: int,
        count: int,
    ) -> list[np.ndarray]:
        """The background of each output frame: one image, or a video's frames at the output
        rate going back and forth past its end."""
        if not isinstance(background, BackgroundVideo):
            return [fit_background(background, spec.width, spec.height)] * count
        step = background.fps / spec.fps
        wanted = [pingpong(round((start + i) * step), background.frame_count) for i in range(count)]
        decoded = read_frames(background.path, sorted(set(wanted)))
        h, w = decoded[wanted[0]].shape[:2]
        window = cover_window((w, h), spec.width, spec.height)
        fitted = {k: cover(frame, spec.width, spec.height, window) for k, frame in decoded.items()}
        return [fitted[k] for k in wanted]

    def render(
        self,
        source: PresenterSource,
        background: np.ndarray | BackgroundVideo | None,
        spec: FrameSpec,
        index: int,
        start: int,
        count: int,
    ) -> VideoChunk:
        """Return output frames [start, start+count) of the presenter over the background."""
        if count <= 0:
            raise ValueError("count must be positive")
        step = source.fps / spec.fps
        first = min(max(0, source.first_frame), max(0, source.frame_count - 2))
        usable = source.frame_count - first
        wanted = [first + pingpong(round((start + i) * step), usable) for i in range(count)]
        backgrounds = self._backgrounds(background, spec, start, count)
        x0, y0, x1, y1 = source.box
        ph = int(spec.height * self.presenter_height) // 2 * 2
        pw = min(spec.width, round((x1 - x0) * ph / max(1, (y1 - y0))))
        ox, oy = (spec.width - pw) // 2, spec.height - ph
        frames = np.empty((count, spec.height, spec.width, 3), np.uint8)
        cuts: dict[int, tuple[np.ndarray, np.ndarray | None]]
        if self.presenters is not None and source.key:  # cut and masked once per cameo
            cuts = dict(self.presenters.cuts(source, sorted(set(wanted))))
        else:
            decoded = read_frames(source.path, wanted)
            cuts = {k: (decoded[k][y0:y1, x0:x1], None) for k in set(wanted)}
        for i, src_idx in enumerate(wanted):
            crop, small = cuts[src_idx]
            person = cv2.resize(crop, (pw, ph), interpolation=cv2.INTER_LINEAR)
            if small is None:
                alpha = self._person(person)
            else:
                alpha = self._soften(SelfieSegmenter.grow(small, pw, ph))
            frame = backgrounds[i].copy()
            region = frame[oy : oy + ph, ox : ox + pw].astype(np.float32)
            frame[oy : oy + ph, ox : ox + pw] = (person * alpha + region * (1 - alpha)).astype(
                np.uint8
            )
            frames[i] = frame
        return VideoChunk(index=index, start=start, frames=frames)
