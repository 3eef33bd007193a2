"""Lip sync with a torch network of the Wav2Lip family: a 16-step mel window and the face's
masked lower half (beside the unmasked face) in, a 96x96 face with the mouth for that audio
out, batched over frames. Loads Wav2Lip's published checkpoint format ({"state_dict": ...},
DataParallel "module." prefixes allowed); the channel width is read from the checkpoint, so
the full-size network and a narrow test one load the same way."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import MouthAtlas, SpeechTrack, VideoChunk
from cameofarm.models.registry import BackendContext

SAMPLE_RATE = 16_000
MEL_STEPS = 16  # mel frames per video frame's window (0.2 s)
MEL_PER_SECOND = 80.0  # hop 200 at 16 kHz
FACE_SIZE = 96
FULL_WIDTH = 16  # the published network's first layer has 16 channels

# Encoder, decoder and output channels of the published network (width 16), in order.
_ENCODER = [(6, 16, 7, 1, 3, 0), (16, 32, 3, 2, 1, 2), (32, 64, 3, 2, 1, 3),
            (64, 128, 3, 2, 1, 2), (128, 256, 3, 2, 1, 2), (256, 512, 3, 2, 1, 1)]  # fmt: skip
_AUDIO = [(1, 32, 3, 1, 1, 2), (32, 64, 3, (3, 1), 1, 2), (64, 128, 3, 3, 1, 2),
          (128, 256, 3, (3, 2), 1, 1)]  # fmt: skip
_DECODER = [(1024, 512, 1, 0, 1), (1024, 512, 2, 1, 2), (768, 384, 2, 1, 2),
            (512, 256, 2, 1, 2), (320, 128, 2, 1, 2), (160, 64, 2, 1, 2)]  # fmt: skip


def build_network(width: int = FULL_WIDTH) -> Any:
    """The Wav2Lip generator with every channel count scaled by width/16 (16: full size)."""
    import torch
    from torch import nn

    def c(n: int) -> int:
        return n * width // FULL_WIDTH if n not in (1, 3, 6) else n

    class ConvBN(nn.Module):
        def __init__(self, cin: int, cout: int, k: int, s: Any, p: int, residual: bool = False):
            super().__init__()
            self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout))
            self.act = nn.ReLU()
            self.residual = residual

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.conv_block(x)
            return self.act(out + x if self.residual else out)

    class UpBN(nn.Module):
        def __init__(self, cin: int, cout: int, s: int, p: int, out_pad: int):
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ConvTranspose2d(cin, cout, 3, s, p, out_pad), nn.BatchNorm2d(cout)
            )
            self.act = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv_block(x))

    def stage(cin: int, cout: int, k: int, s: Any, p: int, repeats: int) -> list[nn.Module]:
        layers: list[nn.Module] = [ConvBN(c(cin), c(cout), k, s, p)]
        layers += [ConvBN(c(cout), c(cout), 3, 1, 1, residual=True) for _ in range(repeats)]
        return layers

    class Wav2LipNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            encoder = [nn.Sequential(*stage(*spec)) for spec in _ENCODER]
            encoder.append(
                nn.Sequential(ConvBN(c(512), c(512), 3, 1, 0), ConvBN(c(512), c(512), 1, 1, 0))
            )
            self.face_encoder_blocks = nn.ModuleList(encoder)
            audio = [layer for spec in _AUDIO for layer in stage(*spec)]
            audio += [ConvBN(c(256), c(512), 3, 1, 0), ConvBN(c(512), c(512), 1, 1, 0)]
            self.audio_encoder = nn.Sequential(*audio)
            decoder = [nn.Sequential(ConvBN(c(512), c(512), 1, 1, 0))]
            for cin, cout, s, p, repeats in _DECODER:
                out_pad = 1 if s == 2 else 0
                layers: list[nn.Module] = [UpBN(c(cin), c(cout), s, p if s == 2 else 0, out_pad)]
                layers += [ConvBN(c(cout), c(cout), 3, 1, 1, residual=True) for _ in range(repeats)]
                decoder.append(nn.Sequential(*layers))
            self.face_decoder_blocks = nn.ModuleList(decoder)
            self.output_block = nn.Sequential(
                ConvBN(c(80), c(32), 3, 1, 1), nn.Conv2d(c(32), 3, 1, 1, 0), nn.Sigmoid()
            )

        def forward(self, mel: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
            """mel (B, 1, 80, 16), faces (B, 6, 96, 96) in [0, 1] → faces (B, 3, 96, 96)."""
            skips = []
            x = faces
            for block in self.face_encoder_blocks:
                x = block(x)
                skips.append(x)
            x = self.audio_encoder(mel)
            for block in self.face_decoder_blocks:
                x = torch.cat((block(x), skips.pop()), dim=1)
            return self.output_block(x)

    return Wav2LipNetwork()


def load_network(path: str, device: str, precision: str) -> tuple[Any, int]:
    """Load a Wav2Lip checkpoint onto device; return (network in eval mode, its width)."""
    import torch

    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    first = "face_encoder_blocks.0.0.conv_block.0.weight"
    if not isinstance(state, dict) or not any(k.endswith(first) for k in state):
        raise ValueError(f"{path} is not a Wav2Lip checkpoint (no {first} in its state_dict)")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    width = int(state[first].shape[0])
    net = build_network(width)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not match the Wav2Lip network: {exc}") from None
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    return net.eval().to(device=device, dtype=dtype), width


# --- audio ---------------------------------------------------------------------------------


def _slaney_mel_basis(sr: int, n_fft: int, bands: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filters on the Slaney scale with Slaney area normalisation (what the
    published network was trained on)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0

    def to_mel(hz: np.ndarray) -> np.ndarray:
        hz = np.asarray(hz, np.float64)
        return np.where(
            hz >= min_log_hz,
            min_log_mel + np.log(np.maximum(hz, 1e-9) / min_log_hz) / logstep,
            hz / f_sp,
        )

    def to_hz(mel: np.ndarray) -> np.ndarray:
        return np.where(
            mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel
        )

    edges = to_hz(np.linspace(to_mel(np.array(fmin)), to_mel(np.array(fmax)), bands + 2))
    freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    ramps = edges[:, None] - freqs[None, :]
    lower = -ramps[:-2] / np.diff(edges)[:-1, None]
    upper = ramps[2:] / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


_MEL_BASIS = _slaney_mel_basis(SAMPLE_RATE, 800, 80, 55.0, 7600.0)


def melspectrogram(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """(80, T) normalised log-mel at 80 frames/s, as the published network expects."""
    from scipy.signal import resample_poly, stft

    x = samples.astype(np.float64)
    if sample_rate != SAMPLE_RATE:
        g = np.gcd(int(sample_rate), SAMPLE_RATE)
        x = resample_poly(x, SAMPLE_RATE // g, int(sample_rate) // g)
    x = np.append(x[0] if len(x) else 0.0, x[1:] - 0.97 * x[:-1])  # pre-emphasis
    x = np.pad(x, 400, mode="reflect") if len(x) > 400 else np.pad(x, 400)
    _, _, spec = stft(x, SAMPLE_RATE, "hann", 800, 600, 800, boundary=None, padded=False)
    magnitude = np.abs(spec) * 400.0  # scipy scales by the window sum; librosa does not
    db = 20 * np.log10(np.maximum(1e-5, _MEL_BASIS @ magnitude)) - 20.0
    return np.clip(8.0 * ((db + 100.0) / 100.0) - 4.0, -4.0, 4.0).astype(np.float32)


def mel_windows(mel: np.ndarray, fps: int, frames: Sequence[int]) -> np.ndarray:
    """The 16-step mel window of each video frame: (len(frames), 1, 80, 16)."""
    out = np.zeros((len(frames), 1, mel.shape[0], MEL_STEPS), np.float32)
    for k, i in enumerate(frames):
        start = min(int(i * MEL_PER_SECOND / fps), max(mel.shape[1] - MEL_STEPS, 0))
        window = mel[:, start : start + MEL_STEPS]
        out[k, 0, :, : window.shape[1]] = window
    return out


# --- the backend ---------------------------------------------------------------------------


def face_box(points: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """A square-ish face box from any landmark scheme (68 points or the 5 alignment points):
    the points' extent grown to take in forehead and chin, clipped to the frame."""
    if np.isnan(points).any():
        return None
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    grow = 0.15 if len(points) > 5 else 0.6  # 5 points span eyes to mouth only
    x0, x1 = x0 - grow * w, x1 + grow * w
    y0, y1 = y0 - (grow + 0.1) * h, y1 + (grow + 0.25) * h
    H, W = shape[:2]
    box = (int(max(x0, 0)), int(max(y0, 0)), int(min(x1, W)), int(min(y1, H)))
    return box if box[2] - box[0] >= 16 and box[3] - box[1] >= 16 else None


class Wav2LipSync:
    """The lip-sync stage on a Wav2Lip-family network, batched over frames."""

    def __init__(self, ctx: BackendContext, analyzer: Callable[[], FaceAnalyzer]) -> None:
        import torch

        if ctx.device == "cpu":
            torch.set_num_threads(1)  # replicas are the unit of parallelism (see StageActor)
        model = ctx.model("lipsync", "wav2lip")
        self.network, self.width = load_network(str(model.path(".pth")), ctx.device, ctx.precision)
        self.device, self.batch_size = ctx.device, ctx.batch_size
        self.dtype = next(self.network.parameters()).dtype
        self._analyzer_factory = analyzer  # finds faces when the chunk carries none: loaded
        self._analyzer: FaceAnalyzer | None = None  # then only (dlib's models are ~120 MB)
        self.provider = f"torch {torch.__version__} {ctx.device} {ctx.precision}"

    def _boxes(self, chunk: VideoChunk) -> list[tuple[int, int, int, int] | None]:
        if chunk.landmarks is not None:
            return [
                face_box(m, f.shape) for m, f in zip(chunk.landmarks, chunk.frames, strict=True)
            ]
        boxes: list[tuple[int, int, int, int] | None] = []
        for frame in chunk.frames:
            if self._analyzer is None:
                self._analyzer = self._analyzer_factory()
            faces = self._analyzer.detect(frame)
            boxes.append(face_box(faces[0].landmarks, frame.shape) if faces else None)
        return boxes

    def sync(
        self, chunk: VideoChunk, speech: SpeechTrack, fps: int, atlas: MouthAtlas
    ) -> VideoChunk:
        """Redraw each frame's lower face for the audio at that frame; faceless frames pass."""
        import torch

        mel = melspectrogram(speech.samples, speech.sample_rate)
        out = chunk.frames.copy()
        boxes = self._boxes(chunk)
        todo = [i for i, b in enumerate(boxes) if b is not None]
        for first in range(0, len(todo), self.batch_size):
            batch = todo[first : first + self.batch_size]
            faces = np.stack([self._crop(out[i], boxes[i]) for i in batch]) / np.float32(255)
            masked = faces.copy()
            masked[:, FACE_SIZE // 2 :] = 0.0
            x = np.concatenate([masked, faces], axis=3).transpose(0, 3, 1, 2)
            windows = mel_windows(mel, fps, [chunk.start + i for i in batch])
            with torch.inference_mode():
                pred = self.network(
                    torch.from_numpy(windows).to(self.device, self.dtype),
                    torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self.dtype),
                )
            predicted = (pred.float().cpu().numpy().transpose(0, 2, 3, 1) * 255.0).clip(0, 255)
            for k, i in enumerate(batch):
                self._paste(out[i], boxes[i], predicted[k])
        return VideoChunk(chunk.index, chunk.start, out, chunk.landmarks, chunk.landmarks_by)

    @staticmethod
    def _crop(frame: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
        assert box is not None
        x0, y0, x1, y1 = box
        return cv2.resize(frame[y0:y1, x0:x1], (FACE_SIZE, FACE_SIZE)).astype(np.float32)

    @staticmethod
    def _paste(frame: np.ndarray, box: tuple[int, int, int, int] | None, face: np.ndarray) -> None:
        """Blend the predicted lower face into the box, feathered so no seam shows."""
        assert box is not None
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        resized = cv2.resize(face, (w, h)).astype(np.float32)
        lower = np.zeros((h, w), np.float32)
        lower[h // 2 :, w // 8 : w - w // 8] = 1.0
        k = max(3, (min(w, h) // 8) | 1)
        mask = cv2.GaussianBlur(lower, (k, k), 0)[..., None]
        region = frame[y0:y1, x0:x1].astype(np.float32)
        frame[y0:y1, x0:x1] = np.clip(mask * resized + (1 - mask) * region, 0, 255).astype(np.uint8)
