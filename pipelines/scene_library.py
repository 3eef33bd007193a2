"""The scene library: template scenes stored in the object store, checked on upload, with a
preview frame and their uploader's rights attestation; visible to their organisation."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from cameofarm.cameos import audit
from cameofarm.cameos.accounts import Principal
from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text
from cameofarm.models import codec
from cameofarm.models.contracts import FaceAnalyzer
from cameofarm.pipelines.scenes import SceneError, check_scene
from cameofarm.storage import FarmStorage
from cameofarm.storage.db import Database, JobRow, SceneRow
from sqlalchemy import func, select
from sqlalchemy.orm import Session

SCENE_PREFIX = "scenes"
MAX_SCENE_BYTES = 512 << 20
_MIN_RIGHTS = 10  # characters: "licensed" alone says nothing about whose rights
_UNFINISHED = ("QUEUED", "RUNNING")  # JobStatus values (cluster/ may not be imported here)


class UnknownSceneError(LookupError):
    """No scene by that id is visible to the caller."""


@dataclass(frozen=True)
class SceneView:
    """A stored scene as the CLI and the API show it."""

    id: str
    org: str
    owner: str
    name: str
    rights: str
    width: int
    height: int
    fps: float
    frame_count: int
    actors: int
    created_at: float
    clip_key: str
    track_key: str
    preview_key: str

    @property
    def duration(self) -> float:
        return self.frame_count / self.fps

    @classmethod
    def from_row(cls, r: SceneRow) -> SceneView:
        return cls(
            r.id,
            r.org_id,
            r.owner,
            r.name,
            r.rights,
            r.width,
            r.height,
            r.fps,
            r.frame_count,
            r.actors,
            r.created_at,
            r.clip_key,
            r.track_key,
            r.preview_key,
        )

    def to_json(self) -> dict[str, Any]:
        """The scene as the HTTP API shows it (storage keys stay inside the farm)."""
        return {
            "id": self.id,
            "kind": "template",
            "name": self.name,
            "organisation": self.org,
            "owner": self.owner,
            "rights": self.rights,
            "width": self.width,
            "height": self.height,
            "fps": round(self.fps, 3),
            "seconds": round(self.duration, 2),
            "actors": self.actors,
            "created_at": self.created_at,
        }

    def fits(self, width: int, height: int) -> bool:
        """Whether the scene covers a width×height frame without being enlarged."""
        return self.width >= width and self.height >= height


def _row(s: Session, principal: Principal, scene_id: str) -> SceneRow:
    row = s.get(SceneRow, scene_id) if isinstance(scene_id, str) else None
    if row is None or (row.org_id != principal.org and not principal.operator):
        # Another organisation's scene reads as unknown: its existence is theirs to know.
        raise UnknownSceneError(f"no scene {scene_id[:40]!r} in your organisation's library")
    return row


def add_scene(
    storage: FarmStorage,
    analyzer: FaceAnalyzer,
    principal: Principal,
    path: str | Path,
    name: str,
    rights: str,
    progress: Callable[[float], None] = lambda _f: None,
    actors: int = 1,
) -> SceneView:
    """Check a template clip (`actors` stand-in actors throughout: one, or two for dialogues),
    store it with its tracked actors and a preview frame, and record the uploader's rights
    attestation in the audit log."""
    # 1. Check what the uploader says before the (slow) look at the clip.
    if not is_display_text(name):
        raise SceneError(f"scene name must be 1-200 characters, {DISPLAY_TEXT_RULE}")
    if not (is_display_text(rights, 2000) and len(rights.strip()) >= _MIN_RIGHTS):
        raise SceneError(
            "attest the rights to the scene: who licensed the footage and that its actor "
            f"agreed to stand in (--rights TEXT, {_MIN_RIGHTS}-2000 characters, "
            f"{DISPLAY_TEXT_RULE})"
        )
    size = Path(path).stat().st_size if Path(path).is_file() else 0
    if size > MAX_SCENE_BYTES:
        raise SceneError(f"the scene is {size >> 20} MiB; the limit is {MAX_SCENE_BYTES >> 20} MiB")

    # 2. Decode it whole and track its actor.
    checked = check_scene(path, analyzer, actors, progress=progress)

    # 3. Store clip, track and preview, then the row; a failure leaves none of them behind.
    scene_id = "scn_" + uuid.uuid4().hex[:12]
    prefix = f"{SCENE_PREFIX}/{principal.org}/{scene_id}"
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(checked.preview, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SceneError("the preview frame could not be encoded")
    keys = [f"{prefix}/clip.mp4", f"{prefix}/track.npz", f"{prefix}/preview.jpg"]
    try:
        storage.objects.put_file(keys[0], path, "video/mp4")
        storage.objects.put_bytes(
            keys[1], codec.scene_track_to_bytes(checked.track, checked.others)
        )
        storage.objects.put_bytes(keys[2], jpeg.tobytes(), "image/jpeg")

        def store(s: Session) -> SceneView:
            row = SceneRow(
                id=scene_id,
                org_id=principal.org,
                owner=principal.user,
                name=name,
                rights=rights.strip(),
                clip_key=keys[0],
                track_key=keys[1],
                preview_key=keys[2],
                width=checked.width,
                height=checked.height,
                fps=checked.fps,
                frame_count=checked.frame_count,
                actors=actors,
                created_at=time.time(),
            )
            s.add(row)
            audit.record(
                s,
                principal.user,
                "scene.add",
                scene_id,
                org=principal.org,
                name=name,
                rights=row.rights,
                actors=actors,
            )
            return SceneView.from_row(row)

        return storage.db.transact(store)
    except BaseException:
        for key in keys:
            storage.objects.delete(key)
        raise


def list_scenes(db: Database, principal: Principal) -> list[SceneView]:
    """The scenes of the caller's organisation (every scene for an operator), newest first."""
    with db.session() as s:
        query = select(SceneRow).order_by(SceneRow.created_at.desc())
        if not principal.operator:
            query = query.where(SceneRow.org_id == principal.org)
        return [SceneView.from_row(r) for r in s.scalars(query)]


def get_scene(db: Database, principal: Principal, scene_id: str) -> SceneView:
    """One scene the caller may see, or UnknownSceneError."""
    with db.session() as s:
        return SceneView.from_row(_row(s, principal, scene_id))


def fitting_scene(s: Session, scene_id: str, width: int, height: int) -> SceneView:
    """A scene that covers a width×height frame without being enlarged; raises
    UnknownSceneError (gone) or SceneError (too small) saying what to change."""
    row = s.get(SceneRow, scene_id)
    if row is None:
        raise UnknownSceneError(f"scene {scene_id[:40]!r} is not in the library")
    view = SceneView.from_row(row)
    if not view.fits(width, height):
        raise SceneError(
            f"scene {scene_id} is {view.width}x{view.height}; this tier renders {width}x{height} "
            "and never enlarges a scene — upload it at that size or larger, or pick a smaller tier"
        )
    return view


def scene_for_job(s: Session, org: str, scene_id: str, width: int, height: int) -> SceneView:
    """The scene a job of this organisation names, checked to cover the tier's frame."""
    _row(s, Principal("", org, False), scene_id)  # another organisation's reads as unknown
    return fitting_scene(s, scene_id, width, height)


def remove_scene(storage: FarmStorage, principal: Principal, scene_id: str) -> SceneView:
    """Delete a scene and its objects, unless queued or running jobs still need it."""

    def drop(s: Session) -> SceneView:
        row = _row(s, principal, scene_id)
        using = s.scalar(
            select(func.count())
            .select_from(JobRow)
            .where(JobRow.scene_id == scene_id, JobRow.status.in_(_UNFINISHED))
        )
        if using:
            raise SceneError(
                f"scene {scene_id} is used by {using} queued or running job(s); wait for them "
                "or cancel them first"
            )
        view = SceneView.from_row(row)
        s.delete(row)
        audit.record(s, principal.user, "scene.remove", scene_id, org=row.org_id, name=row.name)
        return view

    view = storage.db.transact(drop)
    for key in (view.clip_key, view.track_key, view.preview_key):
        storage.objects.delete(key)
    return view
