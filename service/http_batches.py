"""Batches' HTTP routes: /v1/batches (submit a manifest, list, status, cancel, retry the
failed rows, results as JSON or CSV).

No `from __future__ import annotations` here: FastAPI reads the route annotations, and the
caller dependency is a value of build_app's, not a name it could resolve later."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from cameofarm.service.areas.batches import results_csv
from cameofarm.service.farm_api import FarmAPI
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

_BATCH_ID = r"^bat_[0-9a-f]{12}$"
MANIFEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            kind: {"schema": {"type": "string", "format": "binary"}}
            for kind in ("text/csv", "application/x-ndjson", "application/octet-stream")
        },
    }
}


def add_batch_routes(
    app: FastAPI,
    farm: Callable[[], FarmAPI],
    caller: Any,
    spool: Callable[[Request, str], Awaitable[Path]],
) -> None:
    """Add the /v1/batches routes to the app (the caller dependency and upload spool are the
    app's own)."""

    @app.post("/v1/batches", tags=["batches"], openapi_extra=MANIFEST_BODY)
    async def submit_batch(
        who: caller,
        request: Request,
        filename: Annotated[
            str,
            Query(
                pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,150}\.(csv|jsonl)$",
                description="The manifest's file name; .csv or .jsonl says how it is read.",
            ),
        ],
        skip_invalid: Annotated[
            bool, Query(description="Queue the rows that pass and list the others.")
        ] = False,
    ) -> Any:
        """Submit a manifest (raw CSV or JSONL body). Every row is checked first; with a bad
        row nothing is queued (422 lists each with its row number) unless skip_invalid. The
        same file again answers 200 with the first batch."""
        path = await spool(request, ".manifest")
        try:
            data = path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
        out = await asyncio.to_thread(farm().submit_batch, who, data, filename, skip_invalid)
        return JSONResponse(out, status_code=200 if out.get("replayed") else 201)

    @app.get("/v1/batches", tags=["batches"])
    def list_batches(who: caller) -> dict[str, Any]:
        return farm().list_batches(who)

    @app.get("/v1/batches/{batch_id}", tags=["batches"])
    def batch_status(who: caller, batch_id: Annotated[str, _path()]) -> dict[str, Any]:
        return farm().batch_status(who, batch_id)

    @app.post("/v1/batches/{batch_id}/cancel", tags=["batches"])
    def cancel_batch(who: caller, batch_id: Annotated[str, _path()]) -> dict[str, Any]:
        return farm().cancel_batch(who, batch_id)

    @app.post("/v1/batches/{batch_id}/retry-failed", tags=["batches"])
    def retry_failed(who: caller, batch_id: Annotated[str, _path()]) -> dict[str, Any]:
        return farm().retry_failed(who, batch_id)

    @app.get("/v1/batches/{batch_id}/results", tags=["batches"])
    def batch_results(
        who: caller,
        batch_id: Annotated[str, _path()],
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Any:
        """The results sheet: row, output, job, status, error, timings, quality figures."""
        results = farm().batch_results(who, batch_id)
        if format == "csv":
            return Response(results_csv(results), media_type="text/csv")
        return results


def _path() -> Any:
    from fastapi import Path as PathParam

    return PathParam(pattern=_BATCH_ID)
