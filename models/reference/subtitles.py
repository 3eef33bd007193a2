"""Burned-in captions: each cue drawn into the frames it covers, as white text on a dark,
translucent box at the bottom centre, above the watermark.

The font is DejaVu Sans, which matplotlib ships (so every node has it): it covers Latin,
Greek, Cyrillic and more, but not Chinese, Japanese or Korean. `undrawable` names the
characters it lacks, so a job asking for burned captions it cannot draw is refused at
submit instead of showing empty boxes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from cameofarm.models.data import Cue
from PIL import ImageFont

BOX_ALPHA = 0.62  # how much of the picture the box darkens
_TEXT_HEIGHT = 0.042  # the font's size as a share of the frame's height
_MAX_WIDTH = 0.92  # a line never runs wider than this share of the frame


def caption_font() -> Path:
    """The TrueType font burned captions are drawn in."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


@functools.cache
def _font_chars() -> frozenset[int]:
    from fontTools.ttLib import TTFont

    return frozenset(TTFont(str(caption_font()), lazy=True).getBestCmap())


def undrawable(text: str) -> list[str]:
    """The characters of `text` the caption font has no glyph for, in order of appearance."""
    chars = _font_chars()
    missing: dict[str, None] = {}
    for c in text:
        if not c.isspace() and ord(c) not in chars:
            missing[c] = None
    return list(missing)


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(caption_font()), size)


@functools.cache
def caption_patch(text: str, width: int, height: int, bottom: int) -> tuple[np.ndarray, int, int]:
    """One cue drawn for a `width`×`height` frame: its RGBA patch (float32, 0-1) and the
    patch's top-left corner, centred with its lower edge at row `bottom`."""
    from PIL import Image, ImageDraw

    size = max(10, round(height * _TEXT_HEIGHT))
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    while True:  # a narrow (portrait) frame gets a smaller font rather than clipped text
        font = _font(size)
        spacing = size // 4
        left, top, right, low = (
            math.floor(v) if i < 2 else math.ceil(v)
            for i, v in enumerate(
                probe.multiline_textbbox((0, 0), text, font=font, spacing=spacing, align="center")
            )
        )
        if right - left <= width * _MAX_WIDTH or size <= 10:
            break
        size = max(10, int(size * width * _MAX_WIDTH / (right - left)))
    pad = max(4, size // 3)
    w = min(width, right - left + 2 * pad)
    h = min(height, low - top + 2 * pad)
    image = Image.new("RGBA", (w, h), (0, 0, 0, round(255 * BOX_ALPHA)))
    ImageDraw.Draw(image).multiline_text(
        (pad - left, pad - top),
        text,
        font=font,
        fill=(255, 255, 255, 255),
        spacing=spacing,
        align="center",
    )
    patch = np.asarray(image, np.float32) / 255.0
    x = (width - w) // 2
    y = max(0, bottom - h)
    return patch, x, y


def active_cue(cues: Sequence[Cue], seconds: float) -> Cue | None:
    """The cue on screen at `seconds` (cues never overlap), if any."""
    for cue in cues:
        if cue.start <= seconds < cue.end:
            return cue
    return None


def burn_cue(frame: np.ndarray, cue: Cue, bottom: int) -> np.ndarray:
    """The frame (H, W, 3 uint8) with the cue drawn in, its box's lower edge at `bottom`."""
    h, w = frame.shape[:2]
    patch, x, y = caption_patch(cue.text, w, h, bottom)
    ph, pw = patch.shape[:2]
    alpha = patch[..., 3:4]
    out = frame.copy()
    region = out[y : y + ph, x : x + pw].astype(np.float32)
    blended = patch[..., :3] * 255.0 * alpha + region * (1.0 - alpha)
    out[y : y + ph, x : x + pw] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out
