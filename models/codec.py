"""Byte encodings of the per-cameo assets (npz), so they can live in the object store."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from cameofarm.models.data import (
    AnyVoiceProfile,
    FaceIdentity,
    IdentityEmbedding,
    MouthAtlas,
    MouthShape,
    SceneTrack,
    SpeakerReference,
    VoiceFrames,
    VoiceProfile,
)

# What identity.npz files written before identities were tagged by analyzer held: one dlib
# vector (euclidean, the farm's measured 0.62 same-person distance) and 68 landmarks.
LEGACY_DLIB = ("dlib@resnet-v1", "euclidean", 0.62)


def _pack(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def identity_to_bytes(identity: FaceIdentity) -> bytes:
    tags = sorted(identity.embeddings)
    meta = {
        "landmarks_by": identity.landmarks_by,
        "embeddings": [
            {
                "analyzer": t,
                "metric": identity.embeddings[t].metric,
                "same_person": identity.embeddings[t].same_person,
            }
            for t in tags
        ],
    }
    vectors = {f"embedding_{k}": identity.embeddings[t].vector for k, t in enumerate(tags)}
    return _pack(
        image=identity.reference_image,
        landmarks=identity.reference_landmarks,
        points5=identity.reference_points5,
        meta=np.array(json.dumps(meta)),
        **vectors,
    )


def identity_from_bytes(data: bytes) -> FaceIdentity:
    d = _unpack(data)
    if "meta" not in d:  # written before identities were tagged: one dlib vector
        from cameofarm.models.reference.face import points5_from_68

        tag, metric, same = LEGACY_DLIB
        emb = IdentityEmbedding(tag, d["embedding"], metric, same)
        marks = d["landmarks"]
        return FaceIdentity(d["image"], marks, points5_from_68(marks), {tag: emb}, tag)
    meta = json.loads(str(d["meta"]))
    embeddings = {
        e["analyzer"]: IdentityEmbedding(
            e["analyzer"], d[f"embedding_{k}"], e["metric"], float(e["same_person"])
        )
        for k, e in enumerate(meta["embeddings"])
    }
    return FaceIdentity(d["image"], d["landmarks"], d["points5"], embeddings, meta["landmarks_by"])


def voice_to_bytes(profile: AnyVoiceProfile) -> bytes:
    if isinstance(profile, VoiceFrames):
        meta_frames = {
            "kind": "world-frames",
            "profiler": profile.profiler,
            "sr": profile.sample_rate,
            "fft_size": profile.fft_size,
            "f0_log_mean": profile.f0_log_mean,
            "f0_log_std": profile.f0_log_std,
            "speech_seconds": profile.speech_seconds,
            "timbre": profile.timbre,
            "calibrated": None if profile.calibrated is None else list(profile.calibrated),
        }
        return _pack(
            mcep=profile.mcep.astype(np.float32),
            coded_ap=profile.coded_ap.astype(np.float32),
            voiced=profile.voiced.astype(bool),
            phones=profile.phones.astype(np.int8),
            meta=np.array(json.dumps(meta_frames)),
        )
    if isinstance(profile, SpeakerReference):
        meta_ref = {
            "kind": "reference-mel",
            "profiler": profile.profiler,
            "sr": profile.sample_rate,
        }
        return _pack(mel=profile.mel, meta=np.array(json.dumps(meta_ref)))
    meta = {
        k: getattr(profile, k)
        for k in (
            "sample_rate",
            "f0_log_mean",
            "f0_log_std",
            "f0_p5",
            "f0_p95",
            "fft_size",
            "speech_seconds",
            "profiler",
        )
    }
    return _pack(
        envelope=profile.envelope, speaker=profile.speaker, meta=np.array(json.dumps(meta))
    )


def _figures(value: Any) -> tuple[float, float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]), float(value[2]))


def voice_from_bytes(data: bytes) -> AnyVoiceProfile:
    d = _unpack(data)
    meta = json.loads(str(d["meta"]))
    if meta.get("kind") == "world-frames":
        return VoiceFrames(
            meta["profiler"],
            int(meta["sr"]),
            int(meta["fft_size"]),
            d["mcep"],
            d["coded_ap"],
            d["voiced"].astype(bool),
            float(meta["f0_log_mean"]),
            float(meta["f0_log_std"]),
            float(meta["speech_seconds"]),
            d["phones"].astype(np.int8),
            # Profiles stored before calibration have no share: they take the default.
            **({"timbre": float(meta["timbre"])} if "timbre" in meta else {}),
            calibrated=_figures(meta.get("calibrated")),
        )
    if meta.get("kind") == "reference-mel":
        return SpeakerReference(meta["profiler"], int(meta["sr"]), d["mel"])
    speaker = d.get("speaker", np.zeros(38, np.float32))
    return VoiceProfile(envelope=d["envelope"], speaker=speaker, **meta)


def atlas_to_bytes(atlas: MouthAtlas) -> bytes:
    arrays: dict[str, np.ndarray] = {"size": np.array(atlas.size)}
    for name, shape in atlas.shapes.items():
        arrays[f"patch_{name}"] = shape.patch
        arrays[f"mouth_{name}"] = shape.mouth
    return _pack(**arrays)


def atlas_from_bytes(data: bytes) -> MouthAtlas:
    d = _unpack(data)
    names = [k[len("patch_") :] for k in d if k.startswith("patch_")]
    shapes = {n: MouthShape(n, d[f"patch_{n}"], d[f"mouth_{n}"]) for n in names}
    return MouthAtlas(int(d["size"]), shapes)


def scene_track_to_bytes(track: SceneTrack, others: tuple[SceneTrack, ...] = ()) -> bytes:
    """A scene's actor tracks in one archive: the first actor's arrays under their plain
    names (as one-actor scenes have always been stored), actor k's with the suffix _k."""
    arrays: dict[str, np.ndarray] = {}
    for k, one in enumerate((track, *others)):
        meta = {
            "landmarks_by": one.landmarks_by,
            "analyzer": one.actor.analyzer,
            "metric": one.actor.metric,
            "same_person": one.actor.same_person,
        }
        suffix = f"_{k}" if k else ""
        arrays[f"landmarks{suffix}"] = one.landmarks
        arrays[f"found{suffix}"] = one.found
        arrays[f"actor{suffix}"] = one.actor.vector
        arrays[f"meta{suffix}"] = np.array(json.dumps(meta))
    return _pack(**arrays)


def scene_tracks_from_bytes(data: bytes) -> tuple[SceneTrack, ...]:
    """Every actor's track of a scene, in the scene's actor order (left to right)."""
    d = _unpack(data)
    tracks = []
    k = 0
    while f"meta{f'_{k}' if k else ''}" in d:
        suffix = f"_{k}" if k else ""
        meta = json.loads(str(d[f"meta{suffix}"]))
        actor = IdentityEmbedding(
            meta["analyzer"], d[f"actor{suffix}"], meta["metric"], meta["same_person"]
        )
        found = d[f"found{suffix}"].astype(bool)
        tracks.append(SceneTrack(d[f"landmarks{suffix}"], meta["landmarks_by"], found, actor))
        k += 1
    return tuple(tracks)


def scene_track_from_bytes(data: bytes) -> SceneTrack:
    """A scene's first actor's track."""
    return scene_tracks_from_bytes(data)[0]
