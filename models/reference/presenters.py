"""A replica's prepared presenter footage: what every job of a cameo used to redo is done once.

Casting a cameo as a presenter takes, for each output frame, a frame of the cameo's own
recording cut to its head-and-shoulders box, and the person's mask in it. Decoding a chunk's
frames from the recording means seeking to a keyframe and decoding every frame up to the ones
wanted (6.6 times the frames used, measured), and the mask is a network's answer: both are the
same for every job of the cameo. So the first job that needs a block of the recording's frames
decodes the block once, in order, cuts each frame and masks it, and writes the cuts (JPEG) and
masks (the network's own resolution) to this replica's disk; every later chunk reads those.

Entries are keyed by the recording's object key (and the box and start), and dropped with the
cameo's other cached assets when it is purged (`forget`).
"""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from cameofarm.models.data import PresenterSource
from cameofarm.models.media import read_frames

BLOCK = 50  # source frames prepared together (one seek, then decoded in order)
_JPEG_QUALITY = 95


class PresenterCache:
    """Prepared presenter cuts and masks under `root`, made on first use per block."""

    def __init__(self, root: str | Path, small_mask: Callable[[np.ndarray], np.ndarray]) -> None:
        """`small_mask(cut)` is the person's mask in a cut (uint8, 0-255) at the mask
        network's own resolution."""
        self.root = Path(root)
        self.small_mask = small_mask
        self._lock = threading.Lock()
        self.prepared_blocks = 0  # blocks this process prepared (the rest were read)

    def _folder(self, source: PresenterSource) -> Path:
        ident = f"{source.key}|{source.box}|{source.frame_count}"
        return self.root / hashlib.sha256(ident.encode()).hexdigest()[:24]

    def cuts(
        self, source: PresenterSource, indices: list[int]
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Each source frame's (cut RGB, small mask uint8), preparing missing blocks."""
        folder = self._folder(source)
        for block in sorted({i // BLOCK for i in indices}):
            if not (folder / f"block-{block}.npy").is_file():
                with self._lock:  # one replica thread prepares a block; the others wait
                    if not (folder / f"block-{block}.npy").is_file():
                        self._prepare(source, folder, block)
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        masks: dict[int, np.ndarray] = {}
        for i in indices:
            block = i // BLOCK
            if block not in masks:
                masks[block] = np.load(folder / f"block-{block}.npy")
            cut = cv2.imread(str(folder / f"{i:06d}.jpg"), cv2.IMREAD_COLOR)
            if cut is None:
                raise OSError(f"prepared presenter frame {i} is missing under {folder}")
            out[i] = (cv2.cvtColor(cut, cv2.COLOR_BGR2RGB), masks[block][i - block * BLOCK])
        return out

    def _prepare(self, source: PresenterSource, folder: Path, block: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "key.txt").write_text(source.key)
        first = block * BLOCK
        wanted = list(range(first, min(first + BLOCK, source.frame_count)))
        decoded = read_frames(source.path, wanted)
        x0, y0, x1, y1 = source.box
        masks = []
        for i in wanted:
            cut = np.ascontiguousarray(decoded[i][y0:y1, x0:x1])
            masks.append(self.small_mask(cut))
            ok = cv2.imwrite(
                str(folder / f"{i:06d}.jpg"),
                cv2.cvtColor(cut, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY],
            )
            if not ok:
                raise OSError(f"could not write a prepared presenter frame under {folder}")
        partial = folder / f"block-{block}.tmp.npy"
        np.save(partial, np.stack(masks))
        partial.replace(folder / f"block-{block}.npy")  # the block counts once it is whole
        self.prepared_blocks += 1

    def forget(self, keys: list[str]) -> int:
        """Drop the prepared footage of recordings whose key starts with any of `keys`."""
        dropped = 0
        if not self.root.is_dir():
            return 0
        with self._lock:
            for folder in self.root.iterdir():
                marker = folder / "key.txt"
                key = marker.read_text() if marker.is_file() else ""
                if any(key.startswith(k) for k in keys):
                    shutil.rmtree(folder, ignore_errors=True)
                    dropped += 1
        return dropped
