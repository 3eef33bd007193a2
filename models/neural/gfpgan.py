"""Compositing with face restoration on a GFPGAN-family network through onnxruntime.

Face swap (INSwapper works at 128 px) and lip sync (Wav2Lip at 96 px) leave the face softer
than the frame around it. Before the reference compositor watermarks, encodes, muxes and signs
a chunk, this backend restores every face in it: the face is aligned by its 5 points to the
FFHQ template the network was trained on, run through the network, and pasted back through a
feathered mask.

The published ONNX format (GFPGAN v1.4 as exported for onnxruntime; GPEN-BFR has the same
signature): one input [1 or N, 3, S, S], RGB scaled to [-1, 1]; one output of the same shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import cv2
import numpy as np
from cameofarm.models.contracts import CompositorBackend, FaceAnalyzer
from cameofarm.models.data import Cue, FrameSpec, ProvenanceClaim, SpeechTrack, VideoChunk
from cameofarm.models.neural.onnx import providers_for
from cameofarm.models.reference.face import points5_from_68
from cameofarm.models.registry import BackendContext

# The 5 points (eyes' centres, nose tip, mouth corners) of the FFHQ face alignment GFPGAN was
# trained on, as fractions of the crop's side (facexlib's 512-px template divided by 512).
FFHQ_POINTS5 = np.array(
    [
        [0.37692, 0.46865],
        [0.62286, 0.46913],
        [0.50124, 0.61332],
        [0.39309, 0.72541],
        [0.61150, 0.72490],
    ],
    np.float32,
)


def face_mask(size: int) -> np.ndarray:
    """Where a restored crop replaces the frame: the face's oval in the FFHQ crop (forehead to
    chin, cheek to cheek), feathered; float32 (size, size) in [0, 1]."""
    mask = np.zeros((size, size), np.float32)
    centre = (size // 2, int(size * 0.58))
    cv2.ellipse(mask, centre, (int(size * 0.3), int(size * 0.36)), 0, 0, 360, 1.0, -1)
    blur = max(3, (size // 10) | 1)
    return cv2.GaussianBlur(mask, (blur, blur), 0)


def faces_in(
    chunk: VideoChunk, detect: Callable[[np.ndarray], Sequence[np.ndarray]]
) -> list[list[np.ndarray]]:
    """Each frame's faces as 5 alignment points: from the landmarks the chunk carries (the 5
    points themselves, or 68 iBUG landmarks), for every actor; found with `detect` when the
    chunk carries none, or another scheme."""
    carried = (
        [(chunk.landmarks, chunk.landmarks_by), *chunk.others]
        if chunk.landmarks is not None
        else []
    )
    schemes = {marks.shape[1] for marks, _ in carried}
    if not carried or not schemes <= {5, 68}:
        return [list(detect(frame)) for frame in chunk.frames]
    out = []
    for i in range(len(chunk)):
        points = []
        for marks, _ in carried:
            m = marks[i]
            if not np.isnan(m).any():
                points.append(m if len(m) == 5 else points5_from_68(m))
        out.append(points)
    return out


class RestoringCompositor:
    """The composite stage with face restoration in front of the reference compositor."""

    def __init__(
        self,
        ctx: BackendContext,
        compositor: CompositorBackend,
        analyzer: Callable[[], FaceAnalyzer],
    ) -> None:
        import onnxruntime as ort

        model = ctx.model("restorer", "gfpgan")
        providers, provider = providers_for(ctx, model)
        try:
            self.session = ort.InferenceSession(str(model.path(".onnx")), providers=providers)
        except Exception as exc:
            raise ValueError(
                f"model {model.name}@{model.version} does not load as ONNX: {exc}"
            ) from exc
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        size = shape[2] if len(shape) == 4 else None
        if (
            len(inputs) != 1
            or len(outputs) != 1
            or not isinstance(size, int)
            or shape[1:] != [3, size, size]
            or list(outputs[0].shape)[1:] != [3, size, size]
        ):
            got = [(i.name, i.shape) for i in inputs] + [("->", o.shape) for o in outputs]
            raise ValueError(
                f"model {model.name}@{model.version} is not a face restoration network of the "
                f"GFPGAN family (one input [N, 3, S, S] and one output of that shape); it has "
                f"{got}: import the restorer's ONNX file under this role"
            )
        self.input, self.size = inputs[0].name, size
        self.batch = 1 if isinstance(shape[0], int) else ctx.batch_size
        self.mask = face_mask(size)
        self.template = FFHQ_POINTS5 * size
        self.compositor = compositor
        self._analyzer_factory = analyzer
        self._analyzer: FaceAnalyzer | None = None
        self.name = f"{model.name}@{model.version}"
        self.provider = provider

    def _detect(self, frame: np.ndarray) -> list[np.ndarray]:
        if self._analyzer is None:  # loaded only for chunks that carry no faces
            self._analyzer = self._analyzer_factory()
        return [f.points5 for f in self._analyzer.detect(frame)]

    def restore(self, chunk: VideoChunk) -> np.ndarray:
        """The chunk's frames with every face restored; frames without a face are unchanged."""
        out = chunk.frames.copy()  # frames from Ray's object store are read-only
        work = []
        for i, points in enumerate(faces_in(chunk, self._detect)):
            for p in points:
                matrix, _ = cv2.estimateAffinePartial2D(
                    np.asarray(p, np.float32), self.template, method=cv2.LMEDS
                )
                if matrix is not None:
                    work.append((i, matrix))
        for first in range(0, len(work), self.batch):
            batch = work[first : first + self.batch]
            crops = np.stack(
                [
                    cv2.warpAffine(
                        out[i], m, (self.size, self.size), borderMode=cv2.BORDER_REFLECT101
                    )
                    for i, m in batch
                ]
            )
            x = (crops.astype(np.float32) / 127.5 - 1.0).transpose(0, 3, 1, 2)
            y = self.session.run(None, {self.input: np.ascontiguousarray(x)})[0]
            restored = ((y.transpose(0, 2, 3, 1) + 1.0) * 127.5).clip(0, 255)
            for (i, matrix), face in zip(batch, restored, strict=True):
                self._paste(out[i], matrix, face)
        return out

    def _paste(self, frame: np.ndarray, matrix: np.ndarray, face: np.ndarray) -> None:
        h, w = frame.shape[:2]
        back = cv2.invertAffineTransform(matrix)
        face_full = cv2.warpAffine(face.astype(np.float32), back, (w, h), borderValue=0.0)
        mask = cv2.warpAffine(self.mask, back, (w, h), borderValue=0.0)[..., None]
        merged = mask * face_full + (1.0 - mask) * frame
        frame[:] = np.clip(np.rint(merged), 0, 255).astype(np.uint8)  # (rint: 0 mask, same pixel)

    def encode(self, chunk: VideoChunk, spec: FrameSpec, cues: Sequence[Cue] = ()) -> bytes:
        """Restore the chunk's faces, then watermark and encode it (the reference's)."""
        return self.compositor.encode(replace(chunk, frames=self.restore(chunk)), spec, cues)

    def assemble(
        self, segments: list[bytes], speech: SpeechTrack, spec: FrameSpec, claim: ProvenanceClaim
    ) -> bytes:
        return self.compositor.assemble(segments, speech, spec, claim)
