"""Text-to-video scenes with a diffusers pipeline of the Wan or LTX-Video family, loaded from
the model store (a folder saved by `save_pretrained`: model_index.json and one folder per
component), resident on the replica's device.

The pipeline generates at its own size and length rules (width and height multiples of its
VAE's spatial factor times the transformer's patch; 4k+1 frames for Wan, 8k+1 for LTX-Video):
a request is rounded up to them and the result cut back to what was asked."""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
from cameofarm.models.data import GenerationRequest
from cameofarm.models.reference.base_video import ReferenceBaseVideo
from cameofarm.models.registry import BackendContext

# The text-to-video pipelines this backend drives, with the multiple their own input checks
# demand of width and height (besides what their VAE and patch size imply).
FAMILIES = {"WanPipeline": 16, "LTXPipeline": 32}


def _patch(transformer: Any) -> int:
    """The transformer's spatial patch (an int, or (t, h, w) for Wan)."""
    patch = getattr(getattr(transformer, "config", None), "patch_size", 1) or 1
    return int(patch[-1]) if isinstance(patch, (tuple, list)) else int(patch)


def size_rules(pipe: Any) -> tuple[int, int]:
    """(spatial multiple, temporal factor) of a loaded pipeline: width and height must be
    multiples of the first, frame counts one more than a multiple of the second."""
    vae = int(
        getattr(pipe, "vae_scale_factor_spatial", 0)
        or getattr(pipe, "vae_spatial_compression_ratio", 0)
        or 8
    )
    temporal = int(
        getattr(pipe, "vae_scale_factor_temporal", 0)
        or getattr(pipe, "vae_temporal_compression_ratio", 0)
        or 1
    )
    spatial = math.lcm(vae * _patch(pipe.transformer), FAMILIES.get(type(pipe).__name__, 1))
    return spatial, temporal


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def frames_for(wanted: int, temporal: int) -> int:
    """The smallest frame count k*temporal + 1 that holds `wanted` frames."""
    return round_up(max(1, wanted - 1), temporal) + 1


class DiffusersSceneGenerator:
    """Generates a scene's frames from a prompt with the pool's `pipeline` model."""

    def __init__(self, ctx: BackendContext) -> None:
        import diffusers
        import torch

        model = ctx.model("pipeline", "diffusers")
        index = model.folder / "model_index.json"
        if not index.is_file():
            raise ValueError(
                f"model {model.name}@{model.version} has no model_index.json: import the folder "
                "a diffusers pipeline was saved to (`pipeline.save_pretrained(DIR)`; "
                "`cameofarm models import DIR --name NAME`)"
            )
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(ctx.precision, torch.float32)
        pipe = diffusers.DiffusionPipeline.from_pretrained(str(model.folder), dtype=dtype)
        family = type(pipe).__name__
        if family not in FAMILIES:
            raise ValueError(
                f"model {model.name}@{model.version} is a {family}; the diffusers scene "
                f"backend drives text-to-video pipelines of the {' or '.join(FAMILIES)} family"
            )
        self.pipe = pipe.to(ctx.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.spatial, self.temporal = size_rules(self.pipe)
        self._call = set(inspect.signature(self.pipe.__call__).parameters)
        self.device = ctx.device
        self.name = f"{model.name}@{model.version}"
        self.sha256 = model.sha256
        self.family = family
        self.provider = f"diffusers {diffusers.__version__} {family} {ctx.device} {ctx.precision}"

    def generate(self, request: GenerationRequest) -> np.ndarray:
        """Return the scene's frames, (frames, height, width, 3) uint8 RGB."""
        import torch

        width = round_up(request.width, self.spatial)
        height = round_up(request.height, self.spatial)
        frames = frames_for(request.frames, self.temporal)
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt or None,
            "width": width,
            "height": height,
            "num_frames": frames,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "generator": torch.Generator("cpu").manual_seed(request.seed),
            "output_type": "np",
        }
        if "frame_rate" in self._call:  # LTX-Video conditions on the frame rate
            kwargs["frame_rate"] = request.fps
        with torch.inference_mode():
            out = self.pipe(**kwargs).frames[0]
        video = np.asarray(out, np.float32)
        if video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"{self.name} returned frames of shape {video.shape}, not (T,H,W,3)")
        video = video[: request.frames]
        y0, x0 = (height - request.height) // 2, (width - request.width) // 2
        video = video[:, y0 : y0 + request.height, x0 : x0 + request.width]
        return np.ascontiguousarray((np.clip(video, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))


class DiffusersBaseVideo(ReferenceBaseVideo):
    """The reference base video (templates, presenters) plus prompt scenes generated by a
    diffusers text-to-video pipeline."""

    def __init__(self, ctx: BackendContext) -> None:
        super().__init__()
        self.generator = DiffusersSceneGenerator(ctx)
        self.provider = self.generator.provider
