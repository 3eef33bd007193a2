"""What the CLI talks to: the HTTP API (`--api-url`) or the farm's storage in-process.

Both clients offer the same methods with the same JSON answers and raise `ApiError` with the
same messages, so every CLI command has one code path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cameofarm.cameos.accounts import Principal
from cameofarm.service.farm_api import ApiError, FarmAPI

_STATUS: dict[int, type[ApiError]] = {}


def _error_for(status: int, message: str, retry_after: float | None) -> ApiError:
    from cameofarm.service import farm_api

    if not _STATUS:
        for cls in vars(farm_api).values():
            if isinstance(cls, type) and issubclass(cls, ApiError) and cls is not ApiError:
                _STATUS.setdefault(int(getattr(cls, "status", 400)), cls)
    err = _STATUS.get(status, ApiError)(message, retry_after)
    err.status = status
    return err


def _raise_refusal(response: Any) -> None:
    """Raise the ApiError an HTTP error answer stands for (a batch's bad rows included)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text[:500]}
    if "problems" in body:  # a batch's bad rows
        from cameofarm.cluster.batches import RowProblem
        from cameofarm.service.areas.batches import BatchRefused

        rows = [RowProblem(int(p["row"]), str(p["reason"])) for p in body["problems"]]
        raise BatchRefused(str(body.get("error", "")), rows)
    retry = response.headers.get("retry-after")
    raise _error_for(
        response.status_code, str(body.get("error", body)), float(retry) if retry else None
    )


class LocalClient:
    """In-process: the caller's key is checked against the farm database directly."""

    def __init__(self, api: FarmAPI, token: str | None) -> None:
        self.api = api
        self.principal: Principal = api.authenticate(token)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.api, name)
        return lambda *args, **kwargs: method(self.principal, *args, **kwargs)

    def download(self, job_id: str) -> dict[str, Any]:
        return self.api.download(self.principal, job_id, "", local=True)

    def finish_enrollment(
        self, session_id: str, video: str, id_photo: str | None = None
    ) -> dict[str, Any]:
        return self.api.finish_enrollment(self.principal, session_id, video, id_photo)

    def store_background(self, path: str) -> dict[str, Any]:
        return self.api.store_background(self.principal, Path(path).read_bytes())

    def submit_batch(self, path: str, skip_invalid: bool = False) -> dict[str, Any]:
        data = Path(path).read_bytes()
        return self.api.submit_batch(self.principal, data, Path(path).name, skip_invalid)


class HttpClient:
    """Over HTTP with `Authorization: Bearer KEY`."""

    def __init__(self, url: str, token: str | None, timeout: float = 600) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the API at {self.http.base_url}: {exc}") from None

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._send(method, path, **kwargs)
        _raise_refusal(response)
        return dict(response.json())

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/v1/me")

    def issue_key(self, label: str = "key", expires_in_days: float | None = None) -> dict[str, Any]:
        body = {"label": label, "expires_in_days": expires_in_days}
        return self._call("POST", "/v1/me/keys", json=body)

    def list_keys(self, user: str | None = None) -> dict[str, Any]:
        return self._call("GET", f"/v1/users/{user}/keys" if user else "/v1/me/keys")

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/keys/{key_id}")

    def users(self) -> dict[str, Any]:
        return self._call("GET", "/v1/users")

    def create_user(self, user: str, org: str, operator: bool = False) -> dict[str, Any]:
        return self._call(
            "POST", "/v1/users", json={"user": user, "org": org, "operator": operator}
        )

    def follow(self, other: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/follows/{other}")

    def unfollow(self, other: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/follows/{other}")

    def set_webhook(self, url: str | None) -> dict[str, Any]:
        return self._call("PUT", "/v1/me/webhook", json={"url": url})

    def webhook_deliveries(self, job_id: str | None = None) -> dict[str, Any]:
        params = {"job_id": job_id} if job_id else {}
        return self._call("GET", "/v1/me/webhook/deliveries", params=params)

    def list_cameos(self) -> dict[str, Any]:
        return self._call("GET", "/v1/cameos")

    def get_cameo(self, cameo_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/cameos/{cameo_id}")

    def set_permission(self, cameo_id: str, level: str) -> dict[str, Any]:
        return self._call("PUT", f"/v1/cameos/{cameo_id}/permission", json={"level": level})

    def approve(self, cameo_id: str, user: str) -> dict[str, Any]:
        return self._call("PUT", f"/v1/cameos/{cameo_id}/approved/{user}")

    def unapprove(self, cameo_id: str, user: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/cameos/{cameo_id}/approved/{user}")

    def set_restrictions(self, cameo_id: str, names: list[str]) -> dict[str, Any]:
        body = {"restrictions": names}
        return self._call("PUT", f"/v1/cameos/{cameo_id}/restrictions", json=body)

    def revoke_cameo(self, cameo_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/cameos/{cameo_id}/revoke")

    def delete_cameo(self, cameo_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/cameos/{cameo_id}")

    def purge_status(self, cameo_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/cameos/{cameo_id}/purge")

    def scan_cameo(self, cameo_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/cameos/{cameo_id}/scan")

    def owner_view(self, cameo_id: str | None = None) -> dict[str, Any]:
        return self._call("GET", "/v1/uses", params={"cameo_id": cameo_id} if cameo_id else {})

    def start_enrollment(self, name: str, cameo_id: str | None = None) -> dict[str, Any]:
        body = {"name": name, "cameo_id": cameo_id}
        return self._call("POST", "/v1/enrollment/sessions", json=body)

    def finish_enrollment(
        self, session_id: str, video: str, id_photo: str | None = None
    ) -> dict[str, Any]:
        base = f"/v1/enrollment/sessions/{session_id}"
        octet = {"Content-Type": "application/octet-stream"}
        if id_photo is not None:
            self._call(
                "PUT", f"{base}/id-photo", content=Path(id_photo).read_bytes(), headers=octet
            )
        with open(video, "rb") as fh:
            return self._call("POST", f"{base}/recording", content=fh.read(), headers=octet)

    def store_background(self, path: str) -> dict[str, Any]:
        octet = {"Content-Type": "application/octet-stream"}
        return self._call("POST", "/v1/backgrounds", content=Path(path).read_bytes(), headers=octet)

    def store_audio_bed(self, path: str) -> dict[str, Any]:
        octet = {"Content-Type": "application/octet-stream"}
        return self._call("POST", "/v1/audio-beds", content=Path(path).read_bytes(), headers=octet)

    def submit(
        self,
        cameo_ids: list[str],
        script: str,
        tier: str | None = None,
        priority: int = 0,
        client_token: str | None = None,
        background_id: str | None = None,
        language: str | None = None,
        scene_id: str | None = None,
        prompt: dict[str, Any] | None = None,
        audio_bed_id: str | None = None,
        bed_level_db: float | None = None,
        captions: str = "sidecar",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "cameo_ids": cameo_ids,
            "script": script,
            "priority": priority,
            "client_token": client_token,
            "background_id": background_id,
        }
        if scene_id is not None:
            body["scene_id"] = scene_id
        if prompt is not None:
            body["prompt"] = prompt
        if audio_bed_id is not None:
            body["audio_bed_id"] = audio_bed_id
        if bed_level_db is not None:
            body["bed_level_db"] = bed_level_db
        if tier is not None:  # else the farm's first tier
            body["tier"] = tier
        if language is not None:  # else detected from the script
            body["language"] = language
        if captions != "sidecar":
            body["captions"] = captions
        return self._call("POST", "/v1/jobs", json=body)

    def add_scene(
        self, path: str | Path, name: str, rights: str, actors: int = 1
    ) -> dict[str, Any]:
        octet = {"Content-Type": "application/octet-stream"}
        with open(path, "rb") as fh:
            return self._call(
                "POST",
                "/v1/scenes",
                params={"name": name, "rights": rights, "actors": actors},
                content=fh.read(),
                headers=octet,
            )

    def list_scenes(self) -> dict[str, Any]:
        return self._call("GET", "/v1/scenes")

    def get_scene(self, scene_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/scenes/{scene_id}")

    def scene_preview(self, scene_id: str) -> bytes:
        self.get_scene(scene_id)  # the refusal (unknown, not yours) as JSON, like every call
        return bytes(self.http.get(f"/v1/scenes/{scene_id}/preview").content)

    def remove_scene(self, scene_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/scenes/{scene_id}")

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}")

    def job_events(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/events")

    def list_jobs(self, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", "/v1/jobs", params={"limit": limit})

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/cancel")

    def download(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/download")

    def captions(self, job_id: str, fmt: str = "vtt") -> str:
        response = self._send("GET", f"/v1/jobs/{job_id}/captions", params={"format": fmt})
        _raise_refusal(response)
        return str(response.text)

    def takedown(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/jobs/{job_id}/takedown")

    def audit_log(self, after: int = 0, limit: int = 200) -> dict[str, Any]:
        return self._call("GET", "/v1/audit", params={"after": after, "limit": limit})

    def audit_verify(self) -> dict[str, Any]:
        return self._call("GET", "/v1/audit/verify")

    def farm_view(self, window_s: float = 300.0) -> dict[str, Any]:
        return self._call("GET", "/v1/farm", params={"window_s": window_s})

    def submit_batch(self, path: str, skip_invalid: bool = False) -> dict[str, Any]:
        params = {"filename": Path(path).name, "skip_invalid": skip_invalid}
        headers = {"Content-Type": "application/octet-stream"}
        data = Path(path).read_bytes()
        return self._call("POST", "/v1/batches", params=params, content=data, headers=headers)

    def list_batches(self) -> dict[str, Any]:
        return self._call("GET", "/v1/batches")

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/batches/{batch_id}")

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/batches/{batch_id}/cancel")

    def retry_failed(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/batches/{batch_id}/retry-failed")

    def batch_results(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/batches/{batch_id}/results")
