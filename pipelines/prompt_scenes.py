"""Prompt scenes: a text-to-video model makes the scene from the job's prompt and its controls
(framing, emotion), and the farm then treats the clip like an uploaded one.

- One person found throughout (the checks of a template scene): the cameo is cast onto them.
- No face anywhere: the clip is the place, and the cameo presents in front of it.
- Anything else (several people, a face that comes and goes, someone else half-way): refused,
  since the cameo would not replace every face — reword the prompt or change the seed.

A generated scene is stored under `generated-scenes/<digest>/` and reused: the digest covers
the model version's sha256 and everything the generator was asked, so a retried job, or a batch
of jobs with one prompt, generates once.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cameofarm.configs import PromptScenesConfig
from cameofarm.models import codec
from cameofarm.models.contracts import FaceAnalyzer, SceneGenerator
from cameofarm.models.data import GenerationRequest
from cameofarm.models.media import read_frames, write_video
from cameofarm.pipelines.scenes import SceneError, check_scene
from cameofarm.storage.objects import ObjectStore

GENERATED_PREFIX = "generated-scenes"
FRAMINGS = {
    "close-up": "close-up of one person's head and shoulders, looking into the camera",
    "medium": "medium shot of one person from the waist up, facing the camera",
    "wide": "wide shot of one person standing in the scene, facing the camera",
}
EMOTIONS = {
    "neutral": "calm, neutral expression",
    "joy": "smiling, joyful expression",
    "sad": "sad, downcast expression",
}
MAX_SEED = 2**31 - 1
_PROBES = 8  # frames looked at for any face before the full check


class PromptError(ValueError):
    """A prompt a scene cannot be generated from; the message says what to change."""


@dataclass(frozen=True)
class ScenePrompt:
    """What a job asks the scene to be: the place and action in words, and its controls."""

    text: str
    framing: str = "medium"
    emotion: str = "neutral"
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenePrompt:
        return cls(str(data["text"]), str(data["framing"]), str(data["emotion"]), int(data["seed"]))

    def pipeline_text(self) -> str:
        """The prompt as the generator reads it: the scene, then framing and expression."""
        return f"{self.text.rstrip(' .')}. {FRAMINGS[self.framing]}, {EMOTIONS[self.emotion]}."


def check_prompt(
    text: object, framing: object, emotion: object, seed: object, max_chars: int
) -> ScenePrompt:
    """Return the prompt a job asked for, or raise PromptError saying what is wrong."""
    if not isinstance(text, str):
        raise PromptError("prompt must be text")
    cleaned = " ".join(text.split())  # newlines, tabs and control spacing become one space
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in cleaned):
        raise PromptError("prompt holds control characters; write it as plain text")
    if not 3 <= len(cleaned) <= max_chars:
        raise PromptError(
            f"prompt is {len(cleaned)} characters; describe the scene in 3 to {max_chars} "
            "(where, who, what they do)"
        )
    if framing not in FRAMINGS:
        raise PromptError(f"framing must be one of {', '.join(FRAMINGS)}, got {framing!r}")
    if emotion not in EMOTIONS:
        raise PromptError(f"emotion must be one of {', '.join(EMOTIONS)}, got {emotion!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise PromptError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return ScenePrompt(cleaned, str(framing), str(emotion), seed)


def generation_request(prompt: ScenePrompt, cfg: PromptScenesConfig) -> GenerationRequest:
    """What the generator is asked for a prompt, by the farm's prompt-scene settings."""
    return GenerationRequest(
        prompt=prompt.pipeline_text(),
        negative_prompt=cfg.negative_prompt,
        width=cfg.width,
        height=cfg.height,
        frames=max(2, round(cfg.seconds * cfg.fps)),
        fps=cfg.fps,
        steps=cfg.steps,
        guidance=cfg.guidance,
        seed=prompt.seed,
    )


def scene_digest(generator_sha256: str, request: GenerationRequest) -> str:
    body = json.dumps([generator_sha256, asdict(request)], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _has_face(analyzer: FaceAnalyzer, path: Path, frame_count: int) -> bool:
    """Whether any face shows in the clip: a few spread frames first, then every frame."""
    spread = sorted({round(i * (frame_count - 1) / (_PROBES - 1)) for i in range(_PROBES)})
    for indices in (spread, list(range(frame_count))):
        for frame in read_frames(path, indices).values():
            if analyzer.detect(frame):
                return True
    return False


def prepare_prompt_scene(
    generator: SceneGenerator,
    analyzer: FaceAnalyzer,
    objects: ObjectStore,
    request: GenerationRequest,
) -> dict[str, Any]:
    """Generate (or find already generated) the scene for a request, check it and return how
    the render uses it: {"kind": "template", ...scene fields} or {"kind": "background",
    "background_key": ...}. Raises SceneError when the clip shows people the cameo would not
    replace."""
    digest = scene_digest(generator.sha256, request)
    prefix = f"{GENERATED_PREFIX}/{digest[:40]}"
    described = f"{prefix}/scene.json"
    if objects.exists(described):
        found: dict[str, Any] = json.loads(objects.get_bytes(described))
        return found
    frames = generator.generate(request)
    if frames.ndim != 4 or len(frames) < 2:
        raise SceneError(f"{generator.name} made {frames.shape} frames; a scene needs a clip")
    n, h, w = frames.shape[:3]
    clip_key = f"{prefix}/clip.mp4"
    scene: dict[str, Any] = {
        "generator": generator.name,
        "seed": request.seed,
        "prompt": request.prompt,
        "fps": float(request.fps),
        "frame_count": int(n),
    }
    with tempfile.TemporaryDirectory(prefix="cameofarm-gen-") as tmp:
        path = Path(tmp) / "clip.mp4"
        # Near-lossless: the clip is decoded again for every job that uses it.
        write_video(list(frames), (w, h), request.fps, path, bitrate_kbps=20_000)
        if not _has_face(analyzer, path, n):
            scene.update(kind="background", background_key=clip_key)
        else:
            try:
                checked = check_scene(path, analyzer)
            except SceneError as exc:
                raise SceneError(
                    f"the scene generated from the prompt (seed {request.seed}) cannot take the "
                    f"cameo: {exc}. Reword the prompt for one person, or try another seed"
                ) from None
            track_key = f"{prefix}/track.npz"
            objects.put_bytes(track_key, codec.scene_track_to_bytes(checked.track))
            scene.update(
                kind="template",
                id=f"gen_{digest[:12]}",
                name="generated from a prompt",
                rights=f"generated by {generator.name} (seed {request.seed})",
                clip_key=clip_key,
                track_key=track_key,
                frame_count=checked.frame_count,
            )
        objects.put_file(clip_key, path, "video/mp4")
    objects.put_bytes(described, json.dumps(scene).encode(), "application/json")  # last
    return scene
