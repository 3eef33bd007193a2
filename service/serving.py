"""Run the HTTP API on the farm's Ray cluster with Ray Serve (`cameofarm serve`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from cameofarm.configs import FarmConfig

APP_NAME = "cameofarm-api"


def api_url(config: FarmConfig) -> str:
    host = "127.0.0.1" if config.api.host in ("0.0.0.0", "::") else config.api.host
    return f"http://{host}:{config.api.port}"


def api_up(config: FarmConfig, progress: Callable[[str], None] = print) -> str:
    """Deploy the API ingress (idempotent) on the connected farm; return its URL."""
    from cameofarm.cluster.bootstrap import connect
    from cameofarm.service.http import build_app
    from ray import serve

    connect(config)
    serve.start(
        http_options={"host": config.api.host, "port": config.api.port},
        logging_config={"log_level": "WARNING"},
    )
    app = build_app(config)

    @serve.deployment(
        name="api",
        num_replicas=1,
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=config.api.max_ongoing_requests,
    )
    @serve.ingress(app)
    class ApiIngress:
        """The FastAPI app, one replica (see service.http on rate limits). The replica serves
        its request metrics on monitoring.api_port and logs as monitoring.log says."""

        def __init__(self) -> None:
            from cameofarm.monitoring.logs import configure_process_logging
            from cameofarm.monitoring.metrics import declare_api_series, serve_metrics

            configure_process_logging(config.monitoring.log)
            declare_api_series()
            serve_metrics(config.monitoring.host, config.monitoring.api_port, "api")

    serve.run(ApiIngress.bind(), name=APP_NAME, route_prefix="/", blocking=False)  # type: ignore[attr-defined]
    url = api_url(config)
    progress(f"API listening on {url} (OpenAPI: {url}/openapi.json, docs: {url}/docs)")
    return url


def api_down(config: FarmConfig) -> None:
    """Stop Ray Serve (the API) if it runs on the connected farm."""
    from ray import serve

    with contextlib.suppress(Exception):  # nothing was serving
        serve.shutdown()


def api_status(config: FarmConfig) -> dict[str, Any]:
    from ray import serve

    try:
        return {"url": api_url(config), "status": str(serve.status().applications.get(APP_NAME))}
    except Exception as exc:
        return {"url": None, "status": f"not running ({type(exc).__name__})"}
