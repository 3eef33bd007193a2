"""Byte encodings of the per-cameo assets (npz), so they can live in the object store."""

from __future__ import annotations

import io
import json

import numpy as np
from cameofarm.models.data import FaceIdentity, MouthAtlas, MouthShape, VoiceProfile


def _pack(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def _unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def identity_to_bytes(identity: FaceIdentity) -> bytes:
    return _pack(
        embedding=identity.embedding,
        image=identity.reference_image,
        landmarks=identity.reference_landmarks,
        backend=np.array(identity.backend),
    )


def identity_from_bytes(data: bytes) -> FaceIdentity:
    d = _unpack(data)
    return FaceIdentity(d["embedding"], d["image"], d["landmarks"], str(d["backend"]))


def voice_to_bytes(profile: VoiceProfile) -> bytes:
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
        )
    }
    return _pack(
        envelope=profile.envelope, speaker=profile.speaker, meta=np.array(json.dumps(meta))
    )


def voice_from_bytes(data: bytes) -> VoiceProfile:
    d = _unpack(data)
    speaker = d.get("speaker", np.zeros(38, np.float32))
    return VoiceProfile(envelope=d["envelope"], speaker=speaker, **json.loads(str(d["meta"])))


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
