"""The stage actor: one backend resident per replica, per-cameo assets cached LRU."""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
from cameofarm.configs import LogConfig, PoolConfig, StageName
from cameofarm.models import codec
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.models.data import (
    AnyVoiceProfile,
    BackgroundVideo,
    Cue,
    FaceIdentity,
    FrameSpec,
    GenerationRequest,
    MouthAtlas,
    PresenterSource,
    ProvenanceClaim,
    SpeechTrack,
    TemplateSource,
    VideoChunk,
)
from cameofarm.models.placement import backend_context
from cameofarm.models.reference.provenance import SigningFiles
from cameofarm.models.registry import build_backend
from cameofarm.models.store import ModelStore
from cameofarm.monitoring.gpu import node_address, read_gpus
from cameofarm.monitoring.logs import configure_process_logging
from cameofarm.monitoring.timing import CallTiming, frames_of, timed_call
from cameofarm.storage.fetch import ObjectFetcher

T = TypeVar("T")
log = logging.getLogger("cameofarm.replica")


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


Priority = tuple[float, ...]  # a call's place at a replica: lower goes first


class PriorityGate:
    """One call at a time; when it ends, the waiting call with the lowest priority goes next
    (equal priorities in arrival order)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting: list[tuple[Priority, int]] = []
        self._arrivals = itertools.count()

    def waiting(self) -> int:
        with self._cond:
            return len(self._waiting)

    @contextmanager
    def turn(self, priority: Priority) -> Iterator[None]:
        entry = (tuple(priority), next(self._arrivals))
        with self._cond:
            heapq.heappush(self._waiting, entry)
            while self._busy or self._waiting[0] != entry:
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


# Calls a replica takes in at once: they wait inside it at its PriorityGate, so a call of an
# earlier priority overtakes those queued before it (a Plus chunk is not stuck behind the
# chunks of a Pro job). One works at a time.
CALLS_ADMITTED = 64


class StageActor:
    """Serves one stage. Each public method returns (result, CallTiming); the pools call them
    through `call`, which waits its turn by priority."""

    def __init__(
        self,
        stage: StageName,
        pool: PoolConfig,
        replica: str,
        keys_dir: Path,
        fetcher: ObjectFetcher,
        gpu_ids: Callable[[], list[Any]] | None = None,
        settings: dict[str, Any] | None = None,
        log_config: LogConfig | None = None,
        signing: SigningFiles | None = None,
    ) -> None:
        """`log_config`, given to a replica in its own process (not to in-process pools), sets
        up that process's logs: each record carries the replica's stage and name. `signing` is
        the farm's signing chain as `up` read it: written into this node's `keys_dir`, which on
        another node of a cluster does not hold it."""
        if log_config is not None:
            configure_process_logging(log_config, stage=stage.value, replica=replica)
        if signing is not None:
            signing.install(keys_dir)
        # Replicas are the unit of parallelism. OpenCV's own thread pool spin-waits between the
        # many small warps of a frame and, with several replicas per core, made face swap
        # ~100x slower (measured); one thread per replica avoids that.
        cv2.setNumThreads(1)
        self.stage = stage
        self.replica = replica
        self.fetcher = fetcher
        ids = gpu_ids() if gpu_ids else []
        self.gpus = ",".join(str(g) for g in ids)
        self.gpu_indices = [int(g) for g in ids if str(g).isdigit()]
        started = time.time()
        # Models are fetched into this node's cache and verified before the backend loads: a
        # missing or corrupt model fails here, at `up`, never in the middle of a render.
        store = ModelStore(fetcher.store) if pool.models else None
        self.ctx = backend_context(pool, keys_dir, ids, store)
        self.backend: Any = build_backend(stage, pool.backend, self.ctx)
        self.load_seconds = time.time() - started
        self.backend_name = pool.backend
        self.cache = _LRU(pool.cache_cameos)
        self._analyzer: FaceAnalyzer | None = None  # tracks generated scenes (base video)
        self._measurers: dict[str, FaceAnalyzer] = {}  # measure composed frames (composite)
        self.gate = PriorityGate()
        self.presenters = self._presenter_cache()
        self.calls = 0
        # Seconds spent in calls: those done, plus the one running since _busy_since (a
        # replica runs one chunk call at a time), so a long call shows as busy while it runs.
        self.busy_seconds = 0.0
        self._busy_since: float | None = None
        # What the pool's config asked for when this replica was made (`up` compares it).
        self.settings = dict(settings or pool.model_dump(exclude={"replicas"}))
        log.info(
            "loaded %s on %s in %.2f s (gpu ids [%s])",
            self.backend_name,
            self.ctx.device,
            self.load_seconds,
            self.gpus,
        )

    def call(self, method: str, priority: Priority, *args: Any) -> tuple[Any, CallTiming]:
        """Run one of the stage's methods when its turn comes: the lowest `priority` of the
        calls waiting goes first. Time spent waiting is the call's wait for its replica."""
        if method.startswith("_") or method in {"call", "health", "forget"}:
            raise ValueError(f"{method!r} is not a stage call")
        with self.gate.turn(priority):
            result: tuple[Any, CallTiming] = getattr(self, method)(*args)
            return result

    def health(self) -> dict[str, Any]:
        """Report who this replica is, what it holds and how much it has done."""
        return {
            "stage": self.stage.value,
            "replica": self.replica,
            "gpu_ids": self.gpus,
            "backend": self.backend_name,
            "models": {
                role: f"{m.name}@{m.version}" for role, m in sorted(self.ctx.models.items())
            },
            "device": self.ctx.device,
            "precision": self.ctx.precision,
            "provider": str(getattr(self.backend, "provider", "python")),
            "settings": self.settings,
            "node": node_address(),
            "pid": os.getpid(),
            "calls": self.calls,
            "waiting": self.gate.waiting(),
            "running_for": self._running_for(),
            "busy_seconds": round(self._busy_so_far(), 3),
            "load_seconds": round(self.load_seconds, 3),
            "cached": self.cache.keys(),
            "gpus": read_gpus(self.gpu_indices),
        }

    def _presenter_cache(self) -> Any:
        """A presenter backend's prepared footage, on this node's disk in the farm's data
        folder (beside its keys), per replica."""
        if not hasattr(self.backend, "presenters"):
            return None
        from cameofarm.models.reference.presenters import PresenterCache

        root = Path(self.ctx.keys_dir).parent / "presenters" / self.replica
        cache = PresenterCache(root, lambda cut: self.backend.segmenter.small_mask(cut))
        self.backend.presenters = cache
        return cache

    def forget(self, keys: list[str]) -> int:
        """Drop cached assets whose key starts with any of `keys` (a purged cameo); return how
        many entries, cached files and prepared footage went."""
        dropped = self.cache.drop(keys) + self.fetcher.forget(keys)
        if self.presenters is not None:
            dropped += self.presenters.forget(keys)
        return dropped

    def _timed(self, fn: Callable[[], T], frames: int | None = None) -> tuple[T, CallTiming]:
        self.calls += 1
        count = frames_of if frames is None else (lambda _: frames)
        self._busy_since = time.time()
        try:
            return timed_call(self.replica, self.gpus, fn, count)
        finally:
            started, self._busy_since = self._busy_since, None
            self.busy_seconds += time.time() - started

    def _running_for(self) -> float | None:
        """Seconds the call at work has been running (None: none is)."""
        since = self._busy_since
        return round(time.time() - since, 3) if since is not None else None

    def _busy_so_far(self) -> float:
        since = self._busy_since  # read once: the call may end meanwhile
        return self.busy_seconds + (time.time() - since if since is not None else 0.0)

    def _asset(self, key: str, decode: Callable[[bytes], T]) -> T:
        return self.cache.get(key, lambda: decode(self.fetcher.get_bytes(key)))

    def identity(self, assets_key: str) -> FaceIdentity:
        # The backend adds what it needs that enrollment did not store (an embedding of its
        # own analyzer, from the reference crop) once per cached cameo.
        def load(data: bytes) -> FaceIdentity:
            prepared: FaceIdentity = self.backend.prepare(codec.identity_from_bytes(data))
            return prepared

        return self._asset(f"{assets_key}/identity.npz", load)

    def voice_profile(self, assets_key: str) -> AnyVoiceProfile:
        def load(data: bytes) -> AnyVoiceProfile:
            profile = codec.voice_from_bytes(data)
            profiler = self.backend.profiler
            if profile.profiler == profiler.name:
                return profile
            # Made by another voice backend's profiler: derive this backend's own from the
            # enrolled speech (kept in this replica's cache, like every per-cameo asset).
            from cameofarm.models.media import read_audio
            from cameofarm.models.reference.voice import SAMPLE_RATE

            keys = set(self.fetcher.store.list(f"{assets_key}/"))
            speech = next(
                (
                    k
                    for k in (f"{assets_key}/speech.wav", f"{assets_key}/recording.mp4")
                    if k in keys
                ),
                None,
            )
            if speech is None:
                raise ValueError(f"cameo assets {assets_key} hold no enrolled speech to profile")
            samples = read_audio(self.fetcher.get_path(speech), SAMPLE_RATE)
            derived: AnyVoiceProfile = profiler.profile(samples, SAMPLE_RATE)
            return derived

        return self._asset(f"{assets_key}/voice.npz", load)

    def atlas(self, assets_key: str) -> MouthAtlas:
        return self._asset(f"{assets_key}/atlas.npz", codec.atlas_from_bytes)

    def _background(self, key: str | None) -> np.ndarray | BackgroundVideo | None:
        if key is None:
            return None
        if key.endswith(".mp4"):  # a video background: decoded frame by frame as chunks need

            def video() -> BackgroundVideo:
                from cameofarm.models.media import probe_video

                path = self.fetcher.get_path(key)
                info = probe_video(path)
                return BackgroundVideo(str(path), info.fps, info.frame_count)

            return self.cache.get(key, video)

        def load() -> np.ndarray:
            raw = np.frombuffer(self.fetcher.get_bytes(key), np.uint8)
            image = cv2.imdecode(raw, cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f"background {key} is not a decodable image")
            return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)

        return self.cache.get(key, load)

    # --- one method per stage kind --------------------------------------------------------

    def voice(
        self, script: str, assets_key: str, language: str = "en", emotion: str = "neutral"
    ) -> tuple[SpeechTrack, CallTiming]:
        profile = self.voice_profile(assets_key)
        return self._timed(lambda: self.backend.synthesize(script, profile, language, emotion))

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
            key=recording_key,
        )
        background = self._background(background_key)
        return self._timed(
            lambda: self.backend.render(source, background, spec, index, start, count)
        )

    def scene_video(
        self, scene: dict[str, Any], spec: FrameSpec, index: int, start: int, count: int
    ) -> tuple[VideoChunk, CallTiming]:
        """A template scene's frames, with its actor's track (fetched and cached once)."""
        tracks = self._asset(scene["track_key"], codec.scene_tracks_from_bytes)
        source = TemplateSource(
            self.fetcher.get_path(scene["clip_key"]),
            float(scene["fps"]),
            int(scene["frame_count"]),
            tracks[0],
            tracks[1:],
        )
        return self._timed(lambda: self.backend.template(source, spec, index, start, count))

    def prompt_scene(
        self, request: GenerationRequest, same_person: float
    ) -> tuple[dict[str, Any], CallTiming]:
        """Generate a prompt's scene with this replica's text-to-video model (or find it made
        already), check it and store it; return how the render uses it."""
        from cameofarm.models.registry import BackendContext, build_analyzer
        from cameofarm.pipelines.prompt_scenes import prepare_prompt_scene

        generator = getattr(self.backend, "generator", None)
        if generator is None:
            raise ValueError(
                f"the base_video pool's {self.backend_name} backend has no text-to-video model; "
                "prompt scenes need backend: diffusers with models: {pipeline: NAME}"
            )
        # The primary analyzer's kind (68-point landmarks: the face swap reuses the track).
        if self._analyzer is None or self._analyzer.same_person != same_person:
            ctx = BackendContext(self.ctx.keys_dir, same_person=same_person)
            self._analyzer = build_analyzer("reference", ctx)
        analyzer = self._analyzer
        return self._timed(
            lambda: prepare_prompt_scene(generator, analyzer, self.fetcher.store, request),
            frames=request.frames,
        )

    def face_swap(
        self, chunk: VideoChunk, assets_key: str, actor: int = 0
    ) -> tuple[VideoChunk, CallTiming]:
        """Cast the cameo onto the scene's actor `actor` (0 unless the scene has two)."""
        identity = self.identity(assets_key)
        focused = chunk.focus(actor)
        return self._timed(lambda: focused.refocus(self.backend.swap(focused, identity), actor))

    def lip_sync(
        self, chunk: VideoChunk, speech: SpeechTrack, fps: int, assets_key: str, actor: int = 0
    ) -> tuple[VideoChunk, CallTiming]:
        """Sync actor `actor`'s mouth to `speech` (in a dialogue, that cameo's lines only)."""
        atlas = self.atlas(assets_key)
        focused = chunk.focus(actor)
        return self._timed(
            lambda: focused.refocus(self.backend.sync(focused, speech, fps, atlas), actor)
        )

    def measure_faces(self, chunk: VideoChunk, measure: Any) -> tuple[Any, CallTiming]:
        """The face figures of the chunk's frames that `measure` (a FaceMeasure) picks, by
        the farm's primary analyzer built once on this replica (its models from the store)."""
        from cameofarm.models.registry import build_analyzer
        from cameofarm.pipelines.face_quality import measure_frames

        spec = measure.analyzer
        key = f"{spec.model_dump_json()}|{measure.same_person}"
        if key not in self._measurers:
            store = ModelStore(self.fetcher.store) if spec.models else None
            ctx = backend_context(
                spec, self.ctx.keys_dir, self.gpu_indices, store, same_person=measure.same_person
            )
            self._measurers[key] = build_analyzer(spec.backend, ctx)
        analyzer = self._measurers[key]
        picked = {k: chunk.frames[k - chunk.start] for k in measure.picks(chunk.start, len(chunk))}
        return self._timed(
            lambda: measure_frames(picked, analyzer, measure.cameo, measure.actor, measure.place),
            frames=len(picked),
        )

    def encode(
        self, chunk: VideoChunk, spec: FrameSpec, cues: Sequence[Cue] = ()
    ) -> tuple[bytes, CallTiming]:
        """The chunk encoded, watermarked, with `cues` (burned-in captions) drawn in."""
        return self._timed(lambda: self.backend.encode(chunk, spec, cues), frames=len(chunk))

    def assemble(
        self,
        key: str,
        speech: SpeechTrack,
        spec: FrameSpec,
        claim: ProvenanceClaim,
        audio_bed: dict[str, Any] | None,
        *segments: bytes,
    ) -> tuple[dict[str, Any], CallTiming]:
        """Make the signed MP4 of the encoded segments, in order (each its own argument, so
        Ray hands them over from the replicas that encoded them; with an audio bed, mixed
        under the speech at its level first), write it to the object store at `key` and
        return what its C2PA manifest says, read against the farm's root as a viewer would:
        the video goes from here to the store, never through the scheduler."""
        if audio_bed is not None:
            from cameofarm.models.media import read_audio
            from cameofarm.pipelines.audio_beds import mix_bed

            path = self.fetcher.get_path(audio_bed["key"])
            bed = read_audio(path, speech.sample_rate)
            mixed = mix_bed(speech.samples, speech.sample_rate, bed, float(audio_bed["level_db"]))
            speech = SpeechTrack(mixed, speech.sample_rate, speech.phonemes, speech.words)
        parts = list(segments)

        def make_and_store() -> dict[str, Any]:
            from cameofarm.models.reference.provenance import ensure_signing_chain, verify_mp4

            data = self.backend.assemble(parts, speech, spec, claim)
            root = ensure_signing_chain(self.ctx.keys_dir).root_cert.read_bytes()
            signed = verify_mp4(data, root)
            if signed.valid:  # an output that does not verify is never written
                self.fetcher.store.put_bytes(key, data, "video/mp4")
            return {
                "key": key,
                "bytes": len(data),
                "valid": signed.valid,
                "problems": list(signed.problems),
                "manifest_id": signed.manifest_id,
                "state": signed.state,
            }

        return self._timed(make_and_store, frames=0)
