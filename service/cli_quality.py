"""`cameofarm quality VIDEO`: measure a published video against its cameo (read-only); and
how a job's stored quality report reads, a line per measured part (`wait`, the demo)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from cameofarm.service.cli_common import Ctx, fail, json_option


@click.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--cameo",
    "cameo_id",
    default=None,
    help="Cameo to measure against. Default: the first cameo the video's C2PA manifest names.",
)
@click.option(
    "--script",
    default=None,
    help="What the video says (for the stock-voice comparison). Default: its job's script.",
)
@click.option("--language", default=None, help="The script's language. Default: its job's.")
@json_option
@click.pass_obj
def quality(
    obj: Ctx,
    video: str,
    cameo_id: str | None,
    script: str | None,
    language: str | None,
    as_json: bool,
) -> None:
    """Measure a video's quality against its cameo and print the figures.

    Face: on each measured frame, whether a face is found and its identity distance to the
    cameo and to the template scene's original actor (the farm's primary face analyzer), and
    how the mouth's opening follows the speech's loudness (correlation, best lag). Voice:
    speaker similarity by the farm's speaker encoder (enrollment.speaker_encoder: GE2E by
    default, TitaNet on the NeMo path) of the video's speech to the cameo's enrolled speech, and
    of the stock voice (flite or espeak-ng saying the same script) to the cameo. Run it in the
    farm's folder: the cameo and the job come from the farm's records. Also shows the report
    the farm stored when it published the job. Read-only.
    """
    from cameofarm.cameos import UnknownCameoError, get_cameo
    from cameofarm.cluster.jobs import get_job
    from cameofarm.models.media import MediaError, read_audio
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.models.reference.voice import SAMPLE_RATE
    from cameofarm.models.store import ModelStore
    from cameofarm.pipelines.extractors import speaker_encoder
    from cameofarm.pipelines.face_quality import measure_face, scene_track_key
    from cameofarm.pipelines.quality import EnrolledVoice, enrolled_voice, voice_quality

    config = obj.config
    if not (Path(config.data_dir) / "cameofarm.db").exists() and not config.database.url:
        fail(
            f"no farm at {config.data_dir}: run `cameofarm quality` in the farm's folder or "
            "point CAMEOFARM__DATA_DIR (or --config) at it"
        )
    storage = obj.storage()
    root = Path(config.data_dir) / "keys" / "root.pem"
    manifest = verify_mp4(Path(video).read_bytes(), root.read_bytes() if root.is_file() else None)
    job = None
    if manifest.job_id:
        try:
            job = get_job(storage.db, manifest.job_id)
        except LookupError:
            job = None
    cameo_id = cameo_id or (manifest.cameo_ids[0] if manifest.cameo_ids else None)
    if cameo_id is None:
        fail(f"{video} names no cameo in a C2PA manifest: say which with --cameo ID")
    script = script or (job.script if job else None)
    if script is None:
        fail(f"{video} is not a job of this farm: give what it says with --script TEXT")
    language = language or (job.language if job else "en")
    cast = list(manifest.cameo_ids)
    place = cast.index(cameo_id) if cameo_id in cast else 0  # a dialogue's A is on the left
    if len(cast) > 1 and job is not None:  # the stock voice says this cameo's lines only
        from cameofarm.pipelines.dialogue import parse_dialogue

        lines = parse_dialogue(script, len(cast))
        script = " ".join(text for who, text in lines if who == place)
    try:
        cameo = get_cameo(storage.db, cameo_id)
        samples = read_audio(video, SAMPLE_RATE)
        models = ModelStore(storage.objects)
        encoder = speaker_encoder(config.enrollment, models, Path(config.data_dir) / "keys")
        enrolled = enrolled_voice(storage.objects, EnrolledVoice.of(cameo), encoder)
        voice = voice_quality(samples, SAMPLE_RATE, script, language, enrolled, encoder)
        track = scene_track_key(storage, job.scene_id, job.quality) if job else None
        face = measure_face(config, storage, cameo, track, video, place, max(1, len(cast)))
    except (UnknownCameoError, MediaError, ValueError) as exc:
        fail(str(exc))
    report = {
        "video": video,
        "cameo": cameo_id,
        "job": manifest.job_id,
        "face": face.to_dict() if face else None,
        "voice": voice.to_dict(),
        "stored": job.quality if job else None,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"{video}: cameo {cameo_id}" + (f", job {manifest.job_id}" if job else ""))
    click.echo(
        f"  {face.describe()}"
        if face
        else "  face: the cameo has no identity by the farm's analyzer"
    )
    click.echo(f"  {voice.describe()}")
    if job and job.quality:
        click.echo(f"  stored at publish: {json.dumps(job.quality)}")


def _face_line(face: dict[str, Any]) -> str:
    if "recognised" not in face:
        return f"face: not measured ({face.get('unmeasured', 'no report')})"
    line = f"face: the cameo's in {face['recognised']:.0%} of {face['frames']} frames"
    if face.get("to_cameo") is not None:
        line += f" (median distance {face['to_cameo']:.2f}"
        if face.get("to_actor") is not None:
            line += f", to the scene's actor {face['to_actor']:.2f}"
        line += f"; same person <= {face['same_person']:g})"
    if face.get("lip_sync") is not None:
        line += f"; lip sync r = {face['lip_sync']:.2f} at {face['lip_lag_ms']:+.0f} ms"
    return line


def _voice_line(voice: dict[str, Any]) -> str:
    if "to_cameo" not in voice:
        return f"voice: not measured ({voice.get('unmeasured', 'no report')})"
    words = voice.get("words_recovered")
    line = (
        f"voice: {voice['to_cameo']:.3f} like the cameo (stock voice "
        f"{voice['base_to_cameo']:.3f})"
        + (f", {words:.0%} of the words recovered" if words is not None else "")
    )
    if "meets_targets" in voice:  # reports stored before verdicts have none
        from cameofarm.pipelines.quality import verdict

        line += verdict(voice)
    return line


def describe_quality(quality: dict[str, Any] | None) -> list[str]:
    """One line per measured part of a job's stored quality report (per cameo in a dialogue,
    and how far apart its two voices are)."""
    quality = quality or {}
    if "cast" not in quality:
        return [_face_line(quality.get("face") or {}), _voice_line(quality.get("voice") or {})]
    lines = []
    for cast in quality["cast"]:
        who = f"{cast['speaker']} ({cast['cameo']}) "
        lines += [who + _face_line(cast.get("face") or {}), who + _voice_line(cast["voice"])]
    apart = quality.get("dialogue") or {}
    if "between_speakers" in apart:
        within = ", ".join(f"{v:.3f}" for v in apart["within"])
        lines.append(
            f"dialogue: the two voices are {apart['between_speakers']:.3f} alike; each "
            f"cameo's own speech {within}"
        )
    else:
        lines.append(f"dialogue: voices not compared ({apart.get('unmeasured', 'no report')})")
    return lines
