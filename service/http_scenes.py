"""The scene library's HTTP routes: /v1/scenes (upload, list, show, preview, remove).

No `from __future__ import annotations` here: FastAPI reads the route annotations, and the
caller dependency is a value of build_app's, not a name it could resolve later."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

from cameofarm.cameos.content import DISPLAY_TEXT_PATTERN
from cameofarm.service.farm_api import FarmAPI
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response


def add_scene_routes(
    app: FastAPI,
    farm: Callable[[], FarmAPI],
    caller: Any,
    spool: Callable[[Request, str], Awaitable[Path]],
) -> None:
    """Add the /v1/scenes routes to the app (the caller dependency and upload spool are the
    app's own)."""
    from cameofarm.service.http import UPLOAD_BODY

    @app.post("/v1/scenes", tags=["scenes"], status_code=201, openapi_extra=UPLOAD_BODY)
    async def add_scene(
        who: caller,
        request: Request,
        name: Annotated[str, Query(min_length=1, max_length=200, pattern=DISPLAY_TEXT_PATTERN)],
        rights: Annotated[
            str,
            Query(
                min_length=10,
                max_length=2000,
                pattern=DISPLAY_TEXT_PATTERN,
                description="Who licensed the footage and that its actor agreed to stand in "
                "for cast cameos; recorded in the audit log and every output's C2PA manifest.",
            ),
        ],
        actors: Annotated[
            int,
            Query(
                ge=1,
                le=2,
                description="How many stand-in actors the clip shows: 1, or 2 for dialogues "
                "between two cameos (A is cast onto the left actor, B onto the right).",
            ),
        ] = 1,
    ) -> dict[str, Any]:
        """Upload a template scene (raw MP4 body): one stand-in actor (or two, side by side,
        for a dialogue), facing the camera, at least the size of the tiers it is for. It is
        decoded whole and its actors tracked before it is stored (about a second per second
        of 720p footage on a CPU)."""
        path = await spool(request, ".mp4")
        try:
            return await asyncio.to_thread(farm().add_scene, who, path, name, rights, actors)
        finally:
            path.unlink(missing_ok=True)

    @app.get("/v1/scenes", tags=["scenes"])
    def scenes(who: caller) -> dict[str, Any]:
        """Your organisation's scenes, newest first."""
        return farm().list_scenes(who)

    @app.get("/v1/scenes/{scene_id}", tags=["scenes"])
    def scene(who: caller, scene_id: str) -> dict[str, Any]:
        return farm().get_scene(who, scene_id)

    @app.get(
        "/v1/scenes/{scene_id}/preview",
        tags=["scenes"],
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}, "description": "A frame of the scene"}},
    )
    def scene_preview(who: caller, scene_id: str) -> Response:
        return Response(farm().scene_preview(who, scene_id), media_type="image/jpeg")

    @app.delete("/v1/scenes/{scene_id}", tags=["scenes"])
    def remove_scene(who: caller, scene_id: str) -> dict[str, Any]:
        """Remove a scene, unless queued or running jobs still use it."""
        return farm().remove_scene(who, scene_id)
