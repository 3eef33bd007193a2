"""`cameofarm scenes ...`: your organisation's template scenes (add, list, show, remove)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from cameofarm.service.areas.base import ApiError
from cameofarm.service.cli_common import Ctx, fail, json_option


@click.group()
def scenes() -> None:
    """Template scenes: clips of a stand-in actor that jobs cast a cameo into
    (`cameofarm submit --scene ID`). The actor's face is replaced by the cameo's, and the
    cameo's voice speaks the script.

    \b
    A scene is checked when it is added: the clip decodes whole, lasts 1-60 s, and shows
    exactly one face — the same actor throughout, found in at least 90 % of frames. Real
    people enter a video only as cast cameos, so the uploader attests the rights to the
    footage and its actor (--rights); that text is in the audit log and in every output's
    C2PA manifest. A scene is used by tiers whose frame it covers without enlarging it
    (Plus: 1280x720, Pro: 1920x1080).
    """


@scenes.command("add")
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="A name for the scene, e.g. 'office, medium shot'.")
@click.option(
    "--rights",
    required=True,
    help="Who licensed the footage and that its actor agreed to stand in for cast cameos.",
)
@click.option(
    "--actors",
    type=click.IntRange(1, 2),
    default=1,
    show_default=True,
    help="Stand-in actors in the clip: 2 for a dialogue between two cameos, side by side "
    "(the script's A: lines go to the left actor's cameo, B: to the right one's).",
)
@json_option
@click.pass_obj
def add(obj: Ctx, video: str, name: str, rights: str, actors: int, as_json: bool) -> None:
    """Check, track and store a scene (about a second per second of 720p footage)."""
    click.echo(f"checking {video}: decoding it whole and tracking its actors...", err=True)
    try:
        scene = obj.client().add_scene(video, name, rights, actors)
    except ApiError as exc:
        fail(exc.message)
    if as_json:
        click.echo(json.dumps(scene, indent=2))
        return
    click.echo(scene["id"])
    click.echo(
        f"  {scene['width']}x{scene['height']}, {scene['seconds']} s; use it with "
        f"`cameofarm submit --scene {scene['id']} ...`",
        err=True,
    )


@scenes.command("list")
@json_option
@click.pass_obj
def list_(obj: Ctx, as_json: bool) -> None:
    """Your organisation's scenes, newest first."""
    try:
        found = obj.client().list_scenes()["scenes"]
    except ApiError as exc:
        fail(exc.message)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        click.echo(
            "no scenes yet: add one with `cameofarm scenes add VIDEO --name ... --rights ...`"
        )
    for s in found:
        click.echo(f"{s['id']}  {s['width']}x{s['height']}  {s['seconds']:>5} s  {s['name']}")


@scenes.command("show")
@click.argument("scene_id")
@click.option(
    "--preview",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Also write the scene's preview frame (JPEG) to this file.",
)
@json_option
@click.pass_obj
def show(obj: Ctx, scene_id: str, preview: str | None, as_json: bool) -> None:
    """One scene: its format, actor count and rights attestation."""
    try:
        client = obj.client()
        scene = client.get_scene(scene_id)
        if preview:
            Path(preview).write_bytes(client.scene_preview(scene_id))
    except ApiError as exc:
        fail(exc.message)
    if as_json:
        click.echo(json.dumps(scene, indent=2))
        return
    for key in ("id", "name", "width", "height", "fps", "seconds", "actors", "owner", "rights"):
        click.echo(f"{key:>8}: {scene[key]}")
    if preview:
        click.echo(f" preview: {preview}")


@scenes.command("remove")
@click.argument("scene_id")
@click.pass_obj
def remove(obj: Ctx, scene_id: str) -> None:
    """Remove a scene and its stored clip (refused while queued or running jobs use it)."""
    try:
        obj.client().remove_scene(scene_id)
    except ApiError as exc:
        fail(exc.message)
    click.echo(f"removed {scene_id}")
