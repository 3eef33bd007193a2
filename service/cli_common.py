"""What every CLI command shares: the loaded config, storage, and the client for the caller."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click
from cameofarm.configs import FarmConfig, load_config


class Ctx:
    def __init__(self, config_dir: str | None, api_url: str | None, api_key: str | None) -> None:
        self.config_dir = config_dir
        self.api_url = api_url
        self.api_key = api_key
        self._config: FarmConfig | None = None

    @property
    def config(self) -> FarmConfig:
        if self._config is None:
            cfg = load_config(self.config_dir)
            self._config = cfg.model_copy(update={"data_dir": str(Path(cfg.data_dir).resolve())})
        return self._config

    def storage(self) -> Any:
        from cameofarm.storage import open_farm_storage

        return open_farm_storage(self.config)

    def api(self) -> Any:
        from cameofarm.service.farm_api import FarmAPI

        return FarmAPI(self.config, self.storage())

    def client(self) -> Any:
        """The caller's client: over HTTP with --api-url, else in-process; both need a key."""
        from cameofarm.service.client import HttpClient, LocalClient

        if self.api_url:
            return HttpClient(self.api_url, self.api_key)
        return LocalClient(self.api(), self.api_key)


def fail(message: str, code: int = 1) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def show(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, indent=2, default=str) if as_json else text)


json_option = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
