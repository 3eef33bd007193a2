"""Reference compositing: visible watermark, H.264 chunk encoding, AAC mux and C2PA signing
through the ffmpeg binary that imageio-ffmpeg installs."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from cameofarm.models.data import Cue, FrameSpec, ProvenanceClaim, SpeechTrack, VideoChunk
from cameofarm.models.media import MediaError, encode_h264, mux_mp4, write_wav
from cameofarm.models.reference.provenance import SigningChain, sign_mp4, verify_mp4
from cameofarm.models.reference.subtitles import active_cue, burn_cue

WATERMARK_TEXT = "AI-GENERATED  cameofarm"


def _watermark_layout(
    width: int, height: int
) -> tuple[float, int, tuple[int, int], tuple[int, int, int, int]]:
    scale = height / 720.0 * 0.8
    thickness = max(1, round(height / 720.0 * 2))
    (tw, th), base = cv2.getTextSize(WATERMARK_TEXT, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(6, height // 90)
    x = width - tw - 3 * pad
    y = height - 3 * pad
    box = (x - pad, y - th - pad, x + tw + pad, y + base + pad)
    return scale, thickness, (x, y), box


def watermark_mask(width: int, height: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Return (text mask, box) of where the watermark's text pixels are drawn."""
    scale, thickness, origin, box = _watermark_layout(width, height)
    mask = np.zeros((height, width), np.uint8)
    cv2.putText(
        mask, WATERMARK_TEXT, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA
    )
    return mask, box


def draw_watermark(frame: np.ndarray) -> np.ndarray:
    """Draw the visible 'AI-GENERATED' label: white text on a darkened box, bottom right."""
    h, w = frame.shape[:2]
    scale, thickness, origin, (x0, y0, x1, y1) = _watermark_layout(w, h)
    out = frame.copy()
    out[y0:y1, x0:x1] = (out[y0:y1, x0:x1].astype(np.uint16) * 2 // 5).astype(np.uint8)
    cv2.putText(
        out,
        WATERMARK_TEXT,
        origin,
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thickness,
        cv2.LINE_AA,
    )
    return out


def caption_bottom(width: int, height: int) -> int:
    """The row burned captions sit on: just above the watermark's box."""
    _, _, _, (_, top, _, _) = _watermark_layout(width, height)
    return top - max(4, height // 90)


def finish_frames(chunk: VideoChunk, fps: int, cues: Sequence[Cue] = ()) -> Iterator[np.ndarray]:
    """The chunk's frames as published: the cue on screen at each frame burned in (when
    given), then the watermark on top of everything."""
    _, h, w, _ = chunk.frames.shape
    bottom = caption_bottom(w, h)
    for i, frame in enumerate(chunk.frames):
        cue = active_cue(cues, (chunk.start + i) / fps) if cues else None
        yield draw_watermark(burn_cue(frame, cue, bottom) if cue is not None else frame)


class FfmpegCompositor:
    """Encodes watermarked chunks in parallel, then muxes audio and signs the MP4."""

    def __init__(self, chain: SigningChain) -> None:
        self.chain = chain

    def encode(self, chunk: VideoChunk, spec: FrameSpec, cues: Sequence[Cue] = ()) -> bytes:
        """Return the chunk as watermarked raw H.264 that concatenates with its neighbours,
        with `cues` burned in."""
        _, h, w, _ = chunk.frames.shape
        if (w, h) != (spec.width, spec.height):
            raise MediaError(f"chunk {chunk.index} is {w}x{h}, expected {spec.width}x{spec.height}")
        frames = finish_frames(chunk, spec.fps, cues)
        with tempfile.TemporaryDirectory(prefix="cameofarm-enc-") as tmp:
            out = encode_h264(
                frames, (w, h), spec.fps, spec.video_bitrate_kbps, Path(tmp) / "c.h264"
            )
            return out.read_bytes()

    def assemble(
        self, segments: list[bytes], speech: SpeechTrack, spec: FrameSpec, claim: ProvenanceClaim
    ) -> bytes:
        """Join segments, mux the speech as AAC, sign C2PA, verify it, return the MP4 bytes."""
        if not segments:
            raise MediaError("no video segments to assemble")
        with tempfile.TemporaryDirectory(prefix="cameofarm-mux-") as tmp:
            video = Path(tmp) / "video.h264"
            video.write_bytes(b"".join(segments))
            wav = write_wav(Path(tmp) / "speech.wav", speech.samples, speech.sample_rate)
            mp4 = mux_mp4(video, spec.fps, wav, Path(tmp) / "out.mp4")
            signed = sign_mp4(mp4.read_bytes(), claim, self.chain)
        report = verify_mp4(signed, self.chain.root_cert.read_bytes())
        if not report.valid:
            raise MediaError(f"signed output failed C2PA verification: {report.problems}")
        return signed
