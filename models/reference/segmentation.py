"""Person segmentation for presenters: MediaPipe's selfie-segmentation network (landscape,
256x144 input) run by LiteRT (`ai-edge-litert`) on the CPU.

Its weights (Apache-2.0, 250 KB) ship inside the mediapipe 0.10.21 wheel, whose own Python
package cannot be installed next to Ray (it needs protobuf < 5). `make setup` runs
`python -m cameofarm.models.reference.segmentation fetch`: pip downloads that wheel, the one
.tflite file is taken out of it, checked against its sha256 and kept in this environment.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import sysconfig
import tempfile
import threading
import zipfile
from pathlib import Path

import cv2
import numpy as np

WHEEL = "mediapipe==0.10.21"
MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite"
SHA256 = "a77d03f4659b9f6b6c1f5106947bf40e99d7655094b6527f214ea7d451106edd"
NAME = "mediapipe:selfie-segmentation-landscape@0.10.21"


def weights_path() -> Path:
    """Where `fetch` keeps the weights: this environment's data folder."""
    return Path(sysconfig.get_paths()["data"]) / "share" / "cameofarm" / Path(MEMBER).name


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fetch(target: Path | None = None) -> Path:
    """Take the weights out of the mediapipe wheel (downloaded by pip), check and keep them."""
    target = target or weights_path()
    if target.is_file() and _sha256(target.read_bytes()) == SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="cameofarm-weights-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp]
        subprocess.run(command, check=True)
        wheel = next(Path(tmp).glob("mediapipe-*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(MEMBER)
    if _sha256(data) != SHA256:
        raise RuntimeError(f"{MEMBER} in {wheel.name} has sha256 {_sha256(data)}, not {SHA256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


class SelfieSegmenter:
    """Finds the person in an RGB frame: a soft mask, 1 on the person."""

    name = NAME

    def __init__(self, path: Path | None = None) -> None:
        path = path or weights_path()
        if not path.is_file():
            raise RuntimeError(
                f"the presenter's person segmentation needs {path.name}, which is not at {path}: "
                "run `make setup`, or `python -m cameofarm.models.reference.segmentation fetch`"
            )
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        _, self._h, self._w, _ = (int(v) for v in self._input["shape"])
        self._lock = threading.Lock()  # one interpreter, its tensors are not shared safely

    def _infer(self, frame: np.ndarray) -> np.ndarray:
        small = cv2.resize(frame, (self._w, self._h), interpolation=cv2.INTER_AREA)
        with self._lock:
            self._interpreter.set_tensor(
                self._input["index"], (small.astype(np.float32) / 255.0)[None]
            )
            self._interpreter.invoke()
            out: np.ndarray = self._interpreter.get_tensor(self._output["index"])[0, ..., 0]
        return out

    def mask(self, frame: np.ndarray) -> np.ndarray:
        """Return a float32 (H, W) mask in [0, 1] at the frame's size."""
        h, w = frame.shape[:2]
        return np.clip(cv2.resize(self._infer(frame), (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)

    def small_mask(self, frame: np.ndarray) -> np.ndarray:
        """The mask at the network's own resolution, as uint8 (0-255): what is worth keeping
        of it (`grow` brings it to any size)."""
        return np.round(np.clip(self._infer(frame), 0.0, 1.0) * 255.0).astype(np.uint8)

    @staticmethod
    def grow(small: np.ndarray, width: int, height: int) -> np.ndarray:
        """A `small_mask` at (width, height), float32 in [0, 1], as `mask` gives it."""
        scaled = (small.astype(np.float32) / np.float32(255.0)).astype(np.float32)
        mask = cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR)
        return np.clip(mask, 0.0, 1.0)


if __name__ == "__main__":
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m cameofarm.models.reference.segmentation fetch")
    print(f"person segmentation weights: {fetch()}")
