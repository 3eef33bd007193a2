"""Media I/O through the ffmpeg binary that imageio-ffmpeg installs, and OpenCV decoding."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


class MediaError(ValueError):
    """A media file could not be read or written; the message says which and why."""


def ffmpeg_exe() -> str:
    """Return the path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds."""

    width: int
    height: int
    fps: float
    frame_count: int

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps if self.fps > 0 else 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Return the video stream's size, rate and frame count, or raise MediaError."""
    if not Path(path).is_file():
        raise MediaError(f"{path}: no such file")
    if Path(path).stat().st_size == 0:
        raise MediaError(f"{path}: the file is empty (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise MediaError(f"{path}: not a video OpenCV/ffmpeg can decode")
        width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, _ = cap.read()
        if not ok or width <= 0 or height <= 0:
            raise MediaError(f"{path}: has no decodable video frames")
    finally:
        cap.release()
    if not 1.0 <= fps <= 240.0:
        raise MediaError(f"{path}: frame rate {fps:g} is not sane (expected 1..240 fps)")
    return VideoInfo(width, height, fps, count)


_DAMAGE_SIGNS = (
    "moov atom not found",
    "Invalid data found",
    "Invalid NAL",
    "error while decoding",
    "Error splitting the input",
    "corrupt",
    "Truncated",
    "partial file",
)


def decode_errors(path: str | Path, limit: int = 3) -> tuple[int, list[str]]:
    """Decode every stream of the file through ffmpeg; return how many errors it reported and
    the first `limit` distinct ones. A whole, healthy file gives (0, [])."""
    cmd = [ffmpeg_exe(), "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    lines = [
        line.split("] ")[-1].strip()
        for line in proc.stderr.decode(errors="replace").splitlines()
        if line.strip() and "Last message repeated" not in line
    ]
    if proc.returncode != 0 and not lines:
        lines = [f"ffmpeg exited with status {proc.returncode}"]
    distinct = list(dict.fromkeys(lines))
    return len(lines), distinct[:limit]


def is_video_header(head: bytes) -> bool:
    """Whether bytes start like a video container (MP4/MOV, Matroska/WebM, AVI)."""
    return head[4:8] == b"ftyp" or head[:4] in (b"\x1aE\xdf\xa3", b"RIFF")


def _looks_like_video(path: str | Path) -> bool:
    with open(path, "rb") as handle:
        return is_video_header(handle.read(12))


def looks_damaged(path: str | Path) -> str | None:
    """If ffmpeg finds the file damaged or cut short, say how; None if it sees no damage."""
    count, errors = decode_errors(path)
    if count == 0:
        return None
    opened = not any("Error opening input" in e for e in errors)
    if not opened and not _looks_like_video(path):
        return None  # not a damaged video: not a video at all
    damaged = any(sign.lower() in e.lower() for e in errors for sign in _DAMAGE_SIGNS)
    what = "damaged or truncated" if damaged else "not decodable"
    return f"{what} ({count} decode errors, e.g. {'; '.join(errors)})"


def read_frames(path: str | Path, indices: list[int]) -> dict[int, np.ndarray]:
    """Decode the given frame indices (RGB), reading sequentially from the smallest one."""
    wanted = sorted(set(indices))
    if not wanted:
        return {}
    cap = cv2.VideoCapture(str(path))
    out: dict[int, np.ndarray] = {}
    try:
        if wanted[0] > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, wanted[0])
        position = wanted[0]
        targets = set(wanted)
        while position <= wanted[-1]:
            ok, frame = cap.read()
            if not ok:
                break
            if position in targets:
                out[position] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            position += 1
    finally:
        cap.release()
    if not out:
        raise MediaError(f"{path}: could not decode any of frames {wanted[:5]}...")
    # Containers often over-report the frame count by a frame or two: the tail repeats the
    # last decodable frame rather than failing the whole read.
    last = out[max(out)]
    for index in targets - set(out):
        if index < max(out):
            raise MediaError(f"{path}: frame {index} could not be decoded")
        out[index] = last
    return out


def read_audio(path: str | Path, sample_rate: int = 22050) -> np.ndarray:
    """Return the first audio stream as mono float32 at sample_rate; empty if there is none."""
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(sample_rate),
        "-f",
        "f32le",
        "-",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        if "does not contain any stream" in err or "matches no streams" in err:
            return np.zeros(0, np.float32)
        raise MediaError(f"{path}: cannot decode audio: {err[-300:]}")
    return np.frombuffer(proc.stdout, dtype="<f4").astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples as 16-bit PCM WAV."""
    import soundfile

    soundfile.write(str(path), np.clip(samples, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return Path(path)


def encode_h264(
    frames: Iterable[np.ndarray],
    size: tuple[int, int],
    fps: int,
    bitrate_kbps: int,
    out: str | Path,
    threads: int = 1,
) -> Path:
    """Stream RGB frames (w, h = size) into a raw H.264 (Annex B) stream that concatenates
    byte-wise with other segments encoded with the same settings."""
    w, h = size
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        str(fps),
        "-i",
        "-",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-b:v",
        f"{bitrate_kbps}k",
        "-maxrate",
        f"{bitrate_kbps * 2}k",
        "-bufsize",
        f"{bitrate_kbps * 2}k",
        "-pix_fmt",
        "yuv420p",
        "-threads",
        str(threads),
        # No B-frames: each segment then starts and ends on display order, so byte-joined
        # segments demux to exactly the frames that went in (B-frames lost 2 per join).
        "-bf",
        "0",
        "-f",
        "h264",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    try:
        for frame in frames:
            if frame.shape != (h, w, 3):
                raise MediaError(f"frame is {frame.shape}, expected {(h, w, 3)}")
            proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).data)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg died; its stderr below says why
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    err = proc.stderr.read() if proc.stderr is not None else b""
    if proc.wait() != 0:
        raise MediaError(f"H.264 encode failed: {err.decode(errors='replace')[-300:]}")
    return Path(out)


def mux_mp4(video_h264: str | Path, fps: int, wav: str | Path | None, out: str | Path) -> Path:
    """Wrap an H.264 stream (and optional WAV as AAC) into a fast-start MP4."""
    cmd = [
        ffmpeg_exe(),
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-framerate",
        str(fps),
        "-i",
        str(video_h264),
    ]
    if wav is not None:
        cmd += ["-i", str(wav), "-c:a", "aac", "-b:a", "128k", "-ar", "48000"]
    cmd += ["-c:v", "copy", "-map", "0:v:0"]
    if wav is not None:
        cmd += ["-map", "1:a:0"]
    cmd += ["-movflags", "+faststart", str(out)]
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise MediaError(f"MP4 mux failed: {proc.stderr.decode(errors='replace')[-300:]}")
    return Path(out)


def write_video(
    frames: Iterable[np.ndarray],
    size: tuple[int, int],
    fps: int,
    out: str | Path,
    wav: str | Path | None = None,
    bitrate_kbps: int = 4000,
) -> Path:
    """Encode RGB frames (and optional WAV) to an MP4, using all cores."""
    tmp = Path(out).with_suffix(".tmp.h264")
    try:
        encode_h264(frames, size, fps, bitrate_kbps, tmp, threads=0)
        return mux_mp4(tmp, fps, wav, out)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Mp4Report:
    """What an output file holds, read back with PyAV."""

    width: int
    height: int
    frames: int
    duration: float
    video_codec: str
    audio_codec: str | None
    audio_seconds: float


def probe_mp4(path: str | Path) -> Mp4Report:
    """Decode an MP4's streams and report size, frame count, duration and audio."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise MediaError(f"{path}: has no video stream")
        video = container.streams.video[0]
        width, height = video.codec_context.width, video.codec_context.height
        codec = video.codec_context.name
        rate = float(video.average_rate or video.guessed_rate or 0)
        frames = sum(1 for _ in container.decode(video=0))
    if rate <= 0:
        raise MediaError(f"{path}: video stream has no frame rate")
    audio_codec, audio_seconds = None, 0.0
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            audio_codec = stream.codec_context.name
            samples = sum(f.samples for f in container.decode(audio=0))
            audio_seconds = samples / float(stream.rate or 1)
    return Mp4Report(width, height, frames, frames / rate, codec, audio_codec, audio_seconds)
