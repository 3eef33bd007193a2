"""The stage actor: one backend resident per replica, per-cameo assets cached LRU."""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import cv2
import numpy as np
from cameofarm.configs import StageName
from cameofarm.models import codec
from cameofarm.models.data import (
    FaceIdentity,
    FrameSpec,
    MouthAtlas,
    PresenterSource,
    ProvenanceClaim,
    SpeechTrack,
    VideoChunk,
    VoiceProfile,
)
from cameofarm.models.registry import BackendContext, build_backend
from cameofarm.monitoring.timing import CallTiming, frames_of, timed_call
from cameofarm.storage.fetch import ObjectFetcher

T = TypeVar("T")


class _LRU:
    """Per-cameo assets, least recently used out first. A lock guards the dict: health and
    forget run on the replica's control thread while a chunk call fills the cache."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: OrderedDict[str, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = load()  # outside the lock: loading may take long
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value

    def keys(self) -> list[str]:
        with self.lock:
            return list(self.items)

    def drop(self, prefixes: list[str]) -> int:
        with self.lock:
            gone = [k for k in self.items if any(k.startswith(p) for p in prefixes)]
            for k in gone:
                del self.items[k]
            return len(gone)


class StageActor:
    """Serves one stage. Each public method returns (result, CallTiming)."""

    def __init__(
        self,
        stage: StageName,
        backend: str,
        replica: str,
        ctx: BackendContext,
        fetcher: ObjectFetcher,
        cache_cameos: int = 8,
        gpu_ids: Callable[[], list[Any]] | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        # Replicas are the unit of parallelism. OpenCV's own thread pool spin-waits between the
        # many small warps of a frame and, with several replicas per core, made face swap
        # ~100x slower (measured); one thread per replica avoids that.
        cv2.setNumThreads(1)
        self.stage = stage
        self.replica = replica
        self.fetcher = fetcher
        self.gpus = ",".join(str(g) for g in (gpu_ids() if gpu_ids else []))
        started = time.time()
        self.backend: Any = build_backend(stage, backend, ctx)
        self.load_seconds = time.time() - started
        self.backend_name = backend
        self.cache = _LRU(cache_cameos)
        self.calls = 0
        # What the pool's config asked for when this replica was made (`up` compares it).
        self.settings = dict(settings or {"backend": backend, "cache_cameos": cache_cameos})

    def health(self) -> dict[str, Any]:
        """Report who this replica is, what it holds and how much it has done."""
        return {
            "stage": self.stage.value,
            "replica": self.replica,
            "gpu_ids": self.gpus,
            "backend": self.backend_name,
            "settings": self.settings,
            "pid": os.getpid(),
            "calls": self.calls,
            "load_seconds": round(self.load_seconds, 3),
            "cached": self.cache.keys(),
        }

    def forget(self, keys: list[str]) -> int:
        """Drop cached assets whose key starts with any of `keys` (a purged cameo); return how
        many entries and cached files went."""
        return self.cache.drop(keys) + self.fetcher.forget(keys)

    def _timed(self, fn: Callable[[], T], frames: int | None = None) -> tuple[T, CallTiming]:
        self.calls += 1
        count = frames_of if frames is None else (lambda _: frames)
        return timed_call(self.replica, self.gpus, fn, count)

    def _asset(self, key: str, decode: Callable[[bytes], T]) -> T:
        return self.cache.get(key, lambda: decode(self.fetcher.get_bytes(key)))

    def identity(self, assets_key: str) -> FaceIdentity:
        return self._asset(f"{assets_key}/identity.npz", codec.identity_from_bytes)

    def voice_profile(self, assets_key: str) -> VoiceProfile:
        return self._asset(f"{assets_key}/voice.npz", codec.voice_from_bytes)

    def atlas(self, assets_key: str) -> MouthAtlas:
        return self._asset(f"{assets_key}/atlas.npz", codec.atlas_from_bytes)

    def _background(self, key: str | None) -> np.ndarray | None:
        if key is None:
            return None

        def load() -> np.ndarray:
            raw = np.frombuffer(self.fetcher.get_bytes(key), np.uint8)
            image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"background {key} is not a decodable image")
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

        return self.cache.get(key, load)

    # --- one method per stage kind --------------------------------------------------------

    def voice(self, script: str, assets_key: str) -> tuple[SpeechTrack, CallTiming]:
        profile = self.voice_profile(assets_key)
        return self._timed(lambda: self.backend.synthesize(script, profile))

    def base_video(
        self,
        recording_key: str,
        presenter: dict[str, Any],
        background_key: str | None,
        spec: FrameSpec,
        index: int,
        start: int,
        count: int,
    ) -> tuple[VideoChunk, CallTiming]:
        source = PresenterSource(
            self.fetcher.get_path(recording_key),
            float(presenter["fps"]),
            int(presenter["frame_count"]),
            tuple(presenter["presenter_box"]),
            int(presenter.get("first_frame", 0)),
        )
        background = self._background(background_key)
        return self._timed(
            lambda: self.backend.render(source, background, spec, index, start, count)
        )

    def face_swap(self, chunk: VideoChunk, assets_key: str) -> tuple[VideoChunk, CallTiming]:
        identity = self.identity(assets_key)
        return self._timed(lambda: self.backend.swap(chunk, identity))

    def lip_sync(
        self, chunk: VideoChunk, speech: SpeechTrack, fps: int, assets_key: str
    ) -> tuple[VideoChunk, CallTiming]:
        atlas = self.atlas(assets_key)
        return self._timed(lambda: self.backend.sync(chunk, speech.phonemes, fps, atlas))

    def encode(self, chunk: VideoChunk, spec: FrameSpec) -> tuple[bytes, CallTiming]:
        return self._timed(lambda: self.backend.encode(chunk, spec), frames=len(chunk))

    def assemble(
        self, segments: list[bytes], speech: SpeechTrack, spec: FrameSpec, claim: ProvenanceClaim
    ) -> tuple[bytes, CallTiming]:
        return self._timed(lambda: self.backend.assemble(segments, speech, spec, claim), frames=0)
