"""The scene library as its organisation sees it: add (checked and tracked), list, show,
preview and remove template scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cameofarm.cameos.accounts import Principal
from cameofarm.service.areas.base import Area, BadRequest, Conflict, NotFound, display_text


class ScenesArea(Area):
    """Template scenes: clips of stand-in actors whose uploader attests the rights."""

    def add_scene(
        self, principal: Principal, path: str | Path, name: str, rights: str, actors: int = 1
    ) -> dict[str, Any]:
        from cameofarm.pipelines.extractors import primary_analyzer
        from cameofarm.pipelines.scene_library import add_scene
        from cameofarm.pipelines.scenes import SceneError

        display_text(name, "name")
        display_text(rights, "rights", 2000)
        try:
            analyzer = primary_analyzer(self.config, self.storage)
            view = add_scene(self.storage, analyzer, principal, path, name, rights, actors=actors)
        except SceneError as exc:
            raise BadRequest(str(exc)) from None
        return view.to_json()

    def list_scenes(self, principal: Principal) -> dict[str, Any]:
        from cameofarm.pipelines.scene_library import list_scenes

        return {"scenes": [v.to_json() for v in list_scenes(self.db, principal)]}

    def get_scene(self, principal: Principal, scene_id: str) -> dict[str, Any]:
        from cameofarm.pipelines.scene_library import UnknownSceneError, get_scene

        try:
            return get_scene(self.db, principal, scene_id).to_json()
        except UnknownSceneError as exc:
            raise NotFound(str(exc)) from None

    def scene_preview(self, principal: Principal, scene_id: str) -> bytes:
        """The scene's preview frame (JPEG)."""
        from cameofarm.pipelines.scene_library import UnknownSceneError, get_scene

        try:
            view = get_scene(self.db, principal, scene_id)
        except UnknownSceneError as exc:
            raise NotFound(str(exc)) from None
        return self.storage.objects.get_bytes(view.preview_key)

    def remove_scene(self, principal: Principal, scene_id: str) -> dict[str, Any]:
        from cameofarm.pipelines.scene_library import UnknownSceneError, remove_scene
        from cameofarm.pipelines.scenes import SceneError

        try:
            return {**remove_scene(self.storage, principal, scene_id).to_json(), "removed": True}
        except UnknownSceneError as exc:
            raise NotFound(str(exc)) from None
        except SceneError as exc:
            raise Conflict(str(exc)) from None
