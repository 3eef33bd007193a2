"""`cameofarm models ...`: the farm's model store (import, list, verify, remove)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from cameofarm.service.cli_common import Ctx, fail, json_option


def _store(obj: Ctx, create: bool = False) -> Any:
    """The farm's model store. Only `import` may create a farm's folder: reading commands
    run outside one say so and create nothing."""
    from pathlib import Path

    from cameofarm.models.store import ModelStore
    from cameofarm.storage import open_object_store

    cfg = obj.config
    root = Path(cfg.storage.root)
    local = root if root.is_absolute() else Path(cfg.data_dir) / root
    if cfg.storage.kind == "local" and not create and not local.is_dir():
        fail(
            f"no farm object store at {local}; run this in the farm's folder or point "
            "CAMEOFARM__DATA_DIR (or --config) at the farm"
        )
    try:
        return ModelStore(open_object_store(cfg.storage, cfg.data_dir))
    except RuntimeError as exc:  # MinIO without credentials
        fail(str(exc))


@click.group()
def models() -> None:
    """The model store: weights in the object store under models/<name>/<version>/, each
    version with a manifest (files, sha256, size, source, licence, precision, signature).

    \b
      cameofarm models import ./inswapper --name inswapper-128 --version 1.0 \\
          --source https://... --licence "non-commercial research"
      cameofarm models list
      cameofarm models verify inswapper-128@1.0
      cameofarm models remove inswapper-128@1.0
    """


@models.command("import")
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", required=True, help="Model name, e.g. inswapper-128 (lowercase).")
@click.option("--version", default=None, help="Version (default: the content digest's start).")
@click.option("--source", default="", help="Where the weights came from (URL or description).")
@click.option("--licence", default="", help="The weights' licence, as its publisher states it.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "bf16", "int8", "mixed"]),
    default="fp32",
    show_default=True,
)
@click.option(
    "--signature",
    default=None,
    help='Inputs and outputs as JSON, e.g. \'{"inputs": {"target": [1, 3, 128, 128]}}\'.',
)
@json_option
@click.pass_obj
def models_import(
    obj: Ctx,
    path: str,
    name: str,
    version: str | None,
    source: str,
    licence: str,
    precision: str,
    signature: str | None,
    as_json: bool,
) -> None:
    """Import a weights file, or a folder of them, as a new model version."""
    from cameofarm.models.store import ModelStoreError

    try:
        sig = json.loads(signature) if signature else None
    except ValueError as exc:
        fail(f"--signature is not JSON: {exc}")
    try:
        manifest, stored = _store(obj, create=True).import_path(
            path,
            name,
            version,
            source=source,
            licence=licence,
            precision=precision,
            signature=sig,
            progress=lambda line: None if as_json else click.echo(line),
        )
    except ModelStoreError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps({**manifest.to_json(), "stored": stored}, indent=2))
        return
    what = "imported" if stored else "already in the store (same files)"
    click.echo(
        f"{manifest.name}@{manifest.version} {what}: {len(manifest.files)} file(s), "
        f"{manifest.size / 1e6:.1f} MB, sha256 {manifest.sha256}"
    )


@models.command("list")
@click.argument("name", required=False)
@json_option
@click.pass_obj
def models_list(obj: Ctx, name: str | None, as_json: bool) -> None:
    """List every model version (or one model's), with size, precision and sha256."""
    from cameofarm.models.store import ModelStoreError

    try:
        found = _store(obj).list(name)
    except ModelStoreError as exc:
        fail(str(exc))
    if as_json:
        click.echo(json.dumps([m.to_json() for m in found], indent=2))
        return
    if not found:
        click.echo("no models; import one with `cameofarm models import PATH --name NAME`")
        return
    for m in found:
        click.echo(
            f"{m.name}@{m.version}  {len(m.files)} file(s) {m.size / 1e6:.1f} MB  "
            f"{m.precision}  sha256 {m.sha256}"
        )
        for f in m.files:
            click.echo(f"    {f.path:<40} {f.size:>12} B  {f.sha256}")
        if m.source or m.licence:
            click.echo(f"    source: {m.source or '-'}  licence: {m.licence or '-'}")


@models.command("verify")
@click.argument("ref")
@click.pass_obj
def models_verify(obj: Ctx, ref: str) -> None:
    """Re-hash every stored file of NAME[@VERSION] against its manifest; exit 1 if any
    file is missing or differs."""
    from cameofarm.models.store import ModelStoreError, parse_ref

    try:
        name, version = parse_ref(ref)
        report = _store(obj).verify(name, version)
    except ModelStoreError as exc:
        fail(str(exc))
    for check in report.checks:
        click.echo(
            f"  {'ok     ' if check.problem is None else 'CORRUPT'} {check.path}"
            + (f": {check.problem}" if check.problem else "")
        )
    if report.ok:
        click.echo(f"{report.name}@{report.version}: every file matches its manifest")
        return
    click.secho(
        f"{report.name}@{report.version}: {len(report.problems)} file(s) do not match; "
        "import the model again (under a new version)",
        fg="red",
        err=True,
    )
    sys.exit(1)


@models.command("remove")
@click.argument("ref")
@click.pass_obj
def models_remove(obj: Ctx, ref: str) -> None:
    """Delete NAME@VERSION from the store (its manifest first, then its files)."""
    from cameofarm.models.store import ModelStoreError, parse_ref

    try:
        name, version = parse_ref(ref)
        if version is None:
            fail("name the version to remove: NAME@VERSION (see `cameofarm models list`)")
        removed = _store(obj).remove(name, version)
    except ModelStoreError as exc:
        fail(str(exc))
    click.echo(f"{name}@{version} removed ({removed} objects)")
