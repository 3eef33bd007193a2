"""Load the farm config: packaged YAML defaults, an optional overlay folder, then env vars.

Precedence (last wins): ``configs/*.yaml`` shipped with the package, ``*.yaml`` in the
folder named by ``--config``/``CAMEOFARM_CONFIG_DIR``, then environment variables named
``CAMEOFARM__SECTION__KEY`` (e.g. ``CAMEOFARM__DATABASE__URL``,
``CAMEOFARM__TIERS__PLUS__MAX_RUNNING``) whose values are parsed as YAML scalars.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from cameofarm.configs.schema import FarmConfig
from pydantic import ValidationError

DEFAULTS_DIR = Path(__file__).resolve().parent
ENV_PREFIX = "CAMEOFARM__"
Provenance = dict[tuple[str, ...], str]


class ConfigError(ValueError):
    """The configuration is invalid; the message names the file (or env var) and key."""


def _merge(
    base: dict[str, Any],
    update: Mapping[str, Any],
    source: str,
    prov: Provenance,
    path: tuple[str, ...] = (),
) -> None:
    for key, value in update.items():
        key = str(key)
        here = (*path, key)
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, source, prov, here)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
        prov[here] = source


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data)}")
    return data


def _env_overrides(environ: Mapping[str, str]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        nested: dict[str, Any] = {}
        cursor = nested
        for part in parts[:-1]:
            cursor = cursor.setdefault(part, {})
        cursor[parts[-1]] = value
        found.append((f"env {name}", nested))
    return found


def _source_of(loc: tuple[str, ...], prov: Provenance) -> str:
    for end in range(len(loc), 0, -1):
        if loc[:end] in prov:
            return prov[loc[:end]]
    return "defaults"


def load_config(
    overlay_dir: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> FarmConfig:
    """Return the validated farm config; raise ConfigError naming the file and key at fault."""
    environ = os.environ if environ is None else environ
    overlay = overlay_dir or environ.get("CAMEOFARM_CONFIG_DIR") or None
    merged: dict[str, Any] = {}
    prov: Provenance = {}
    for path in sorted(DEFAULTS_DIR.glob("*.yaml")):
        _merge(merged, _read_yaml(path), str(path.name), prov)
    if overlay is not None:
        folder = Path(overlay)
        if not folder.is_dir():
            raise ConfigError(f"config folder {folder} does not exist; pass a folder of *.yaml")
        for path in sorted(folder.glob("*.yaml")):
            _merge(merged, _read_yaml(path), str(path), prov)
    for source, nested in _env_overrides(environ):
        _merge(merged, nested, source, prov)
    try:
        return FarmConfig.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            key = ".".join(loc) or "(top level)"
            lines.append(f"{_source_of(loc, prov)}: {key}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
