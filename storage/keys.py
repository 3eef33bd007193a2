"""Object keys: one safe syntax shared by every backend."""

from __future__ import annotations

import re

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_KEY_LENGTH = 512


class InvalidKeyError(ValueError):
    """An object key that could escape its prefix or is not portable."""


def validate_key(key: str) -> str:
    """Return key unchanged if it is a safe relative key like ``cameos/ab12/recording.mp4``."""
    if not isinstance(key, str) or not key:
        raise InvalidKeyError("object key must be a non-empty string")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKeyError(f"object key is {len(key)} chars; the limit is {MAX_KEY_LENGTH}")
    if key.startswith("/") or "\\" in key or ":" in key.split("/", 1)[0]:
        raise InvalidKeyError(f"object key {key!r} must be relative (no leading '/', no drive)")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidKeyError(f"object key {key!r} has an empty, '.' or '..' segment")
        if not _SEGMENT.match(segment):
            raise InvalidKeyError(
                f"object key {key!r}: segment {segment!r} may use only letters, digits, '.', "
                "'_' and '-', and must start with a letter or digit"
            )
    return key


def validate_prefix(prefix: str) -> str:
    """Return prefix if empty or a valid key optionally ending in '/'."""
    if prefix == "":
        return prefix
    validate_key(prefix.rstrip("/"))
    return prefix


CAPTION_FORMATS = ("vtt", "srt")


def caption_keys(output_key: str) -> dict[str, str]:
    """The captions published beside a video, by format: outputs/job.mp4 → outputs/job.vtt
    and outputs/job.srt. Whatever removes a video removes these too."""
    stem = validate_key(output_key).rsplit(".", 1)[0]
    return {fmt: f"{stem}.{fmt}" for fmt in CAPTION_FORMATS}
