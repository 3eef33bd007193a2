"""`cameofarm`: run the farm, enroll cameos, submit and follow render jobs, benchmark."""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path

import click
from cameofarm.configs import ConfigError
from cameofarm.service.areas.base import ApiError
from cameofarm.service.cli_batch import batch
from cameofarm.service.cli_bench import bench
from cameofarm.service.cli_common import Ctx, fail, json_option
from cameofarm.service.cli_consent import COMMANDS
from cameofarm.service.cli_models import models
from cameofarm.service.cli_quality import describe_quality, quality
from cameofarm.service.cli_scenes import scenes
from cameofarm.service.cli_simulate import simulate
from cameofarm.service.cli_top import top

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
_fail = fail


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_dir",
    envvar="CAMEOFARM_CONFIG_DIR",
    default=None,
    help="Folder of *.yaml overriding the packaged defaults.",
)
@click.option(
    "--api-url",
    envvar="CAMEOFARM_API_URL",
    default=None,
    help="Talk to the farm's HTTP API at this URL (default: the local farm, in-process).",
)
@click.option(
    "--api-key",
    envvar="CAMEOFARM_API_KEY",
    default=None,
    help="Your API key (env CAMEOFARM_API_KEY). `cameofarm users init` makes the first one.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
@click.pass_context
def cli(
    ctx: click.Context,
    config_dir: str | None,
    api_url: str | None,
    api_key: str | None,
    verbose: bool,
) -> None:
    """cameofarm: a render farm for consent-based avatar video on Ray.

    \b
    Typical session:
      cameofarm demo                      # everything, end to end, on built-in material
      cameofarm up                        # start the farm (embedded Ray) and its HTTP API
      cameofarm users init --user ops --org acme     # first operator; prints its API key
      export CAMEOFARM_API_KEY=cf_...
      cameofarm users add ada --org acme  # prints ada's key
      cameofarm enroll start --name Ada   # prints timed challenges (with ada's key)
      cameofarm enroll finish ses_... clip.mp4
      cameofarm cameo permission cam_... approved; cameofarm cameo approve cam_... bob
      cameofarm submit --cameo cam_... --script "Hello!" --tier plus
      cameofarm wait job_...
      cameofarm down

    Commands that read or change users' data need an API key; they run in-process on this
    machine's farm, or over HTTP with --api-url (env CAMEOFARM_API_URL).
    """
    ctx.obj = Ctx(config_dir, api_url, api_key)
    _log_to_terminal(ctx.obj, verbose)


def _log_to_terminal(obj: Ctx, verbose: bool) -> None:
    """The CLI's own records go to stderr: warnings (everything with -v), in the format of
    monitoring.log (a config that does not load is reported by the command that needs it)."""
    from cameofarm.configs import LogConfig
    from cameofarm.monitoring.logs import make_handler

    try:
        fmt = obj.config.monitoring.log.format
    except ConfigError:
        fmt = "text"
    log = LogConfig(format=fmt, level="DEBUG" if verbose else "WARNING")
    logging.basicConfig(level=log.level, handlers=[make_handler(log)])


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        _fail(str(exc), 2)


# --- farm lifecycle ------------------------------------------------------------------------


@cli.command()
@click.option("--address", default=None, help="Join an existing Ray cluster instead.")
@click.option(
    "--api/--no-api", default=True, show_default=True, help="Also serve the HTTP API (Ray Serve)."
)
@click.pass_obj
def up(obj: Ctx, address: str | None, api: bool) -> None:
    """Start the farm: Ray, the five stage pools, the scheduler and the HTTP API."""
    from cameofarm.cluster.bootstrap import FarmError, farm_up
    from cameofarm.service.serving import api_up

    config = obj.config
    if address:
        config = config.model_copy(
            update={"cluster": config.cluster.model_copy(update={"address": address})}
        )
    try:
        farm_up(config, progress=click.echo)
        if api:
            api_up(config, progress=click.echo)
    except FarmError as exc:
        _fail(str(exc))


@cli.command()
@click.pass_obj
def serve(obj: Ctx) -> None:
    """Serve the HTTP API on the running farm (Ray Serve + FastAPI; OpenAPI at /docs)."""
    from cameofarm.cluster.bootstrap import FarmError
    from cameofarm.service.serving import api_up

    try:
        api_up(obj.config, progress=click.echo)
    except FarmError as exc:
        _fail(str(exc))


@cli.command()
@click.pass_obj
def down(obj: Ctx) -> None:
    """Stop the scheduler, the pools and the embedded Ray node. Queued jobs stay queued."""
    from cameofarm.cluster.bootstrap import FarmError, connect, farm_down
    from cameofarm.service.serving import api_down

    try:
        connect(obj.config)
        api_down(obj.config)
    except FarmError:
        pass
    try:
        farm_down(obj.config, progress=click.echo)
    except FarmError as exc:
        _fail(str(exc))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.pass_obj
def status(obj: Ctx, as_json: bool) -> None:
    """Show pools (replicas and GPU ids), queue depth per tier and running jobs."""
    from cameofarm.cluster.bootstrap import FarmError, farm_links, farm_status

    try:
        info = farm_status(obj.config)
    except FarmError as exc:
        _fail(str(exc))
        return
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo("pools:")
    for stage in sorted({p["stage"] for p in info["pools"]}):
        replicas = [p for p in info["pools"] if p["stage"] == stage]
        click.echo(f"  {stage:<11} {len(replicas)} replica(s)")
        for p in replicas:
            if not p.get("reachable", True):
                line = f"    {p['replica']:<28} unreachable {p.get('error', '')}".rstrip()
            else:
                models = "".join(f" {role}={ref}" for role, ref in p.get("models", {}).items())
                line = (
                    f"    {p['replica']:<28} node={p.get('node', '?')} "
                    f"backend={p['backend']}{models} "
                    f"device={p.get('device', '?')} provider={p.get('provider', '?')} "
                    f"gpu_ids=[{p['gpu_ids']}] calls={p['calls']} cached={len(p['cached'])}"
                )
                for g in p.get("gpus", ()):  # NVML readings, where a GPU is present
                    line += (
                        f" gpu{g['index']}={g['utilization']:.0%}"
                        f" {g['memory_used'] / 2**30:.1f}/{g['memory_total'] / 2**30:.0f}GiB"
                    )
            if not p.get("in_rotation", True):
                line += (
                    f"  OUT OF ROTATION for {p['back_in_s']:.0f} s more after "
                    f"{p['failures']} failures: {p['last_failure']}"
                )
            elif p.get("total_failures"):
                line += f"  failures={p['total_failures']} (last: {p['last_failure']})"
            click.echo(line)
    click.echo(f"scheduler: node={info.get('node', '?')} pid={info['pid']}")
    for stage, a in sorted(info.get("autoscale", {}).items()):
        count = sum(1 for p in info["pools"] if p["stage"] == stage)
        line = f"autoscale: {stage} {count} replica(s) in {a['lowest']}..{a['highest']}"
        line += f", grown {a['grown']}, shrunk {a['shrunk']}"
        if "last" in a:
            line += f"; last look: {a['last']}"
        click.echo(line)
    click.echo("queues: " + ", ".join(f"{t}={n}" for t, n in info["queues"].items()))
    click.echo(f"running: {len(info['running'])}")
    for j in info["running"]:
        click.echo(
            f"  {j['id']} {j['tier']:<5} {j['stage'] or 'starting':<11} "
            f"{j['progress']:.0%} attempt {j['attempt']} ({j['running_s']} s)"
        )
    for tier, why in info["waiting"].items():
        click.echo(f"waiting: {tier}: {why}")
    served = info.get("metrics") or "not served (monitoring.scheduler_port is 0 or was taken)"
    click.echo(f"metrics: {served}")
    for what, where in farm_links(obj.config).items():
        click.echo(f"{what}: {where}")


# --- cameos --------------------------------------------------------------------------------


@cli.group()
def enroll() -> None:
    """Check a calibration recording, or enroll it as a cameo."""


_audio_option = click.option(
    "--audio",
    type=click.Path(dir_okay=False),
    default=None,
    help="Speech WAV to use instead of the video's own audio track.",
)


@enroll.command("check")
@click.argument("video", type=click.Path(dir_okay=False))
@_audio_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def enroll_check(obj: Ctx, video: str, audio: str | None, as_json: bool) -> None:
    """Check a recording: resolution, speech, audio quality, face, media. Stores nothing.

    Exits 1 when any check fails; each failed check says how to fix it.
    """
    from cameofarm.pipelines.checks import check_recording
    from cameofarm.pipelines.extractors import farm_extractors, needs_models

    storage = obj.storage() if needs_models(obj.config.enrollment) else None
    try:
        analyzer = farm_extractors(obj.config, storage).primary
    except ValueError as exc:  # a missing or corrupt model the enrollment config names
        _fail(f"enrollment cannot run: {exc}")
    report = check_recording(video, analyzer, obj.config.enrollment, audio)
    click.echo(report.to_json() if as_json else report.describe())
    if not report.accepted:
        sys.exit(1)


@enroll.command("backfill")
@click.option("--cameo", "cameo_ids", multiple=True, help="Only this cameo (repeatable).")
@click.pass_obj
def enroll_backfill(obj: Ctx, cameo_ids: tuple[str, ...]) -> None:
    """Give every cameo the identity of each configured face analyzer it lacks.

    Run after adding an analyzer to enrollment.analyzers (e.g. insightface): each identity is
    computed from the cameo's stored recording, so one-likeness and protected-likeness checks
    can compare like with like for cameos enrolled before. Acts on this machine's farm.
    """
    from cameofarm.cameos import CameoStatus, list_cameos
    from cameofarm.pipelines.enroll import EnrollmentError, backfill_identities
    from cameofarm.pipelines.extractors import farm_extractors

    storage = obj.storage()
    try:
        extractors = farm_extractors(obj.config, storage)
    except ValueError as exc:  # a missing or corrupt model the enrollment config names
        _fail(f"enrollment cannot run: {exc}")
    ids = list(cameo_ids) or [
        c.id for c in list_cameos(storage.db) if c.status is not CameoStatus.DELETED
    ]
    failed = 0
    for cameo_id in ids:
        try:
            added = backfill_identities(
                storage, extractors, cameo_id, "operator", lambda m: click.echo(f"  {m}")
            )
        except (EnrollmentError, LookupError) as exc:
            failed += 1
            click.echo(f"{cameo_id}: FAILED {exc}")
            continue
        click.echo(f"{cameo_id}: " + (f"added {', '.join(added)}" if added else "complete"))
    if failed:
        _fail(f"{failed} of {len(ids)} cameo(s) could not be given every identity")


@enroll.command("add")
@click.argument("video", type=click.Path(dir_okay=False))
@_audio_option
@click.option("--name", required=True, help="Display name of the person.")
@click.pass_obj
def enroll_add(obj: Ctx, video: str, audio: str | None, name: str) -> None:
    """Check a recording and store it as your PENDING cameo (no liveness yet).

    It cannot be cast until you pass a liveness session: `enroll start --cameo ID`.
    """
    from cameofarm.pipelines.enroll import EnrollmentError, enroll_recording
    from cameofarm.pipelines.extractors import farm_extractors

    api = obj.api()
    try:
        extractors = farm_extractors(obj.config, api.storage)
    except ValueError as exc:  # a missing or corrupt model the enrollment config names
        _fail(f"enrollment cannot run: {exc}")
    try:
        who = api.authenticate(obj.api_key)
        record = enroll_recording(
            api.storage,
            extractors,
            video,
            name=name,
            owner=who.user,
            checks=obj.config.enrollment,
            audio=audio,
            progress=lambda m: click.echo(f"  {m}"),
        )
    except ApiError as exc:
        _fail(exc.message)
    except EnrollmentError as exc:
        _fail(f"enrollment refused: {exc}")
    click.echo(record.id)


@enroll.command("start")
@click.option("--name", required=True, help="Display name of the person.")
@click.option("--cameo", "cameo_id", default=None, help="Re-verify this existing cameo.")
@click.pass_obj
def enroll_start(obj: Ctx, name: str, cameo_id: str | None) -> None:
    """Open a liveness session for yourself: prints the challenges and when to perform each."""
    try:
        out = obj.client().start_enrollment(name, cameo_id)
    except ApiError as exc:
        _fail(exc.message)
    click.echo(out["instructions"])
    click.echo(f"then: cameofarm enroll finish {out['session_id']} VIDEO")


@enroll.command("finish")
@click.argument("session_id")
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--id-photo",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="An ID photo the recorded face must match (threshold: README).",
)
@click.pass_obj
def enroll_finish(obj: Ctx, session_id: str, video: str, id_photo: str | None) -> None:
    """Verify a recording performing the session's challenges; make a VERIFIED cameo."""
    click.echo("verifying liveness, checking the recording and extracting the likeness...")
    try:
        out = obj.client().finish_enrollment(session_id, video, id_photo)
    except ApiError as exc:
        _fail(exc.message)
    for line in out.get("log", []):
        click.echo(f"  {line}")
    click.echo(f"{out['cameo_id']} {out['status']}")


@cli.group()
def protected() -> None:
    """The protected-likeness list: faces that may never be enrolled."""


@protected.command("add")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.option("--label", required=True, help="Who this is (shown when enrollment is refused).")
@click.option("--reason", default="", help="Why (e.g. estate request, date).")
@click.pass_obj
def protected_add(obj: Ctx, image: str, label: str, reason: str) -> None:
    """Add the face in IMAGE to the list."""
    import cv2
    from cameofarm.cameos.protected import add_protected
    from cameofarm.pipelines.extractors import embed_photo, farm_extractors

    picture = cv2.imread(image, cv2.IMREAD_COLOR)
    if picture is None:
        _fail(f"{image} is not an image OpenCV can read")
        return
    rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    storage = obj.storage()
    try:
        extractors = farm_extractors(obj.config, storage)
    except ValueError as exc:  # a missing or corrupt model the enrollment config names
        _fail(f"enrollment cannot run: {exc}")
    try:
        found = embed_photo(extractors, rgb)
    except ValueError as exc:
        _fail(f"{image}: {exc}")
        return
    vectors = {tag: e.vector.tolist() for tag, e in found.items()}
    row = add_protected(storage.db, label, vectors, reason)
    click.echo(f"protected #{row}: {label} ({', '.join(sorted(found))})")


@protected.command("list")
@click.pass_obj
def protected_list(obj: Ctx) -> None:
    """List protected likenesses."""
    from cameofarm.cameos.protected import list_protected

    for row, label, reason in list_protected(obj.storage().db):
        click.echo(f"#{row} {label}  {reason}")


# --- jobs ----------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--cameo",
    "cameo_ids",
    multiple=True,
    required=True,
    help="Cameo id to cast. Twice for a dialogue on a two-actor --scene: the first is A (cast "
    "onto the left actor), the second B.",
)
@click.option(
    "--script",
    required=True,
    help="What the cameo says. With two cameos, a dialogue: 'A: ... / B: ...' (a line per "
    "turn, each spoken in its own cameo's voice).",
)
@click.option(
    "--tier",
    default=None,
    help="One of the farm's tiers (configs/tiers.yaml; shipped: plus, pro). Default: the "
    "farm's first tier.",
)
@click.option(
    "--scene",
    "scene_id",
    default=None,
    help="A template scene (`cameofarm scenes list`): the cameo is cast onto its actor. "
    "Default: the cameo presents over --background.",
)
@click.option(
    "--prompt",
    default=None,
    help="A scene to generate from these words (farms with a text-to-video model): one "
    "person in it and the cameo is cast onto them; nobody and the cameo presents in front.",
)
@click.option(
    "--framing",
    type=click.Choice(["close-up", "medium", "wide"]),
    default=None,
    help="With --prompt: how close the camera is. Default: medium.",
)
@click.option(
    "--emotion",
    type=click.Choice(["neutral", "joy", "sad"]),
    default=None,
    help="With --prompt: the generated person's expression and the voice's pitch and "
    "liveliness. Default: neutral.",
)
@click.option(
    "--seed",
    type=click.IntRange(0, 2**31 - 1),
    default=None,
    help="With --prompt: another seed gives another take of the same prompt. Default: 0.",
)
@click.option(
    "--audio-bed",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Music or ambience (WAV, MP3, AAC, FLAC, OGG; 1 s to 10 min, no speech) looped "
    "under the dialogue, faded in and out.",
)
@click.option(
    "--bed-level",
    type=click.FloatRange(-40, -6),
    default=None,
    help="With --audio-bed: its loudness relative to the speech, in dB. Default: -18.",
)
@click.option(
    "--background",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Background behind the presenting cameo: an image, or a 1-60 s video looped to the "
    "speech (default: a plain colour). It must show no faces: real people enter a video only "
    "as cast cameos.",
)
@click.option(
    "--language",
    default=None,
    help="The script's language code (en, de, ja...). Default: detected from the script. "
    "The farm refuses one its voice cannot speak and lists those it can.",
)
@click.option(
    "--captions",
    type=click.Choice(["sidecar", "burned"]),
    default="sidecar",
    show_default=True,
    help="Every video gets WebVTT and SRT captions beside it; 'burned' also draws them into "
    "the frames (refused for characters the caption font lacks, such as Japanese).",
)
@click.option("--priority", type=click.IntRange(-10, 10), default=0, show_default=True)
@click.option(
    "--client-token",
    default=None,
    help="Idempotency token: re-running with the same token returns the same job.",
)
@json_option
@click.pass_obj
def submit(
    obj: Ctx,
    cameo_ids: tuple[str, ...],
    script: str,
    tier: str | None,
    scene_id: str | None,
    prompt: str | None,
    framing: str | None,
    emotion: str | None,
    seed: int | None,
    audio_bed: str | None,
    bed_level: float | None,
    background: str | None,
    language: str | None,
    captions: str,
    priority: int,
    client_token: str | None,
    as_json: bool,
) -> None:
    """Queue a render job as yourself and print its id."""
    controls = {"framing": framing, "emotion": emotion, "seed": seed}
    if prompt is None and any(v is not None for v in controls.values()):
        _fail("--framing, --emotion and --seed shape a --prompt scene; add --prompt TEXT")
    if bed_level is not None and audio_bed is None:
        _fail("--bed-level sets the level of an --audio-bed; add --audio-bed FILE")
    scene_prompt = None
    if prompt is not None:
        scene_prompt = {"text": prompt, **{k: v for k, v in controls.items() if v is not None}}
    try:
        client = obj.client()
        bg = client.store_background(background)["background_id"] if background else None
        bed = client.store_audio_bed(audio_bed)["audio_bed_id"] if audio_bed else None
        job = client.submit(
            list(cameo_ids),
            script,
            tier,
            priority,
            client_token,
            bg,
            language,
            scene_id,
            scene_prompt,
            bed,
            bed_level,
            captions,
        )
    except ApiError as exc:
        _fail(exc.message)
    click.echo(json.dumps(job, indent=2) if as_json else job["id"])


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds to wait.")
@click.pass_obj
def wait(obj: Ctx, job_id: str, timeout: float) -> None:
    """Follow a job's progress until it ends; print its quality report (face, lip sync,
    voice and whether it meets the farm's voice targets) and, last, where to get the video."""
    import time

    from cameofarm.service.farm_api import job_is_over

    client = obj.client()
    deadline, last = time.monotonic() + timeout, ""
    try:
        while True:
            job = client.get_job(job_id)
            line = (
                f"{job['id']} {job['status']:<9} {job['stage'] or '-':<11} {job['progress']:4.0%}"
            )
            if job["attempts"] > 1:
                line += f" (attempt {job['attempts']})"
            if line != last:
                click.echo(line)
                last = line
            if job_is_over(job):
                break
            if time.monotonic() > deadline:
                _fail(f"job {job_id} still {job['status']} after {timeout:g} s")
            time.sleep(0.5)
        if job["status"] != "SUCCEEDED":
            _fail(f"job {job_id} ended {job['status']}: {job['error']}")
        for measured in describe_quality(job.get("quality")):
            click.echo(measured)
        click.echo(client.download(job_id)["url"])  # the last line: scripts take it
    except ApiError as exc:
        _fail(exc.message)


@cli.command()
@click.argument("job_id")
@click.pass_obj
def download(obj: Ctx, job_id: str) -> None:
    """Print a presigned download URL (or, in-process on a local store, the file path)."""
    try:
        click.echo(obj.client().download(job_id)["url"])
    except ApiError as exc:
        _fail(exc.message)


@cli.command()
@click.argument("job_id")
@json_option
@click.pass_obj
def events(obj: Ctx, job_id: str, as_json: bool) -> None:
    """Show a job's history: each status change and each chunk tried again, with reasons."""
    try:
        out = obj.client().job_events(job_id)
    except ApiError as exc:
        _fail(exc.message)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for e in out["events"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        move = e["to"] if e["from"] == e["to"] else f"{e['from'] or '-'} -> {e['to']}"
        click.echo(f"{when}  {move:<22} {e['reason']}")


@cli.command()
@click.argument("job_id")
@click.pass_obj
def cancel(obj: Ctx, job_id: str) -> None:
    """Cancel your queued or running job (nothing is published)."""
    try:
        job = obj.client().cancel(job_id)
    except ApiError as exc:
        _fail(exc.message)
    click.echo(f"{job['id']} {job['status']}")


@cli.command()
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
@click.pass_obj
def jobs(obj: Ctx, limit: int, as_json: bool) -> None:
    """List your recent jobs."""
    try:
        out = obj.client().list_jobs(limit)
    except ApiError as exc:
        _fail(exc.message)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    for j in out["jobs"]:
        detail = "published" if j["published"] else (j["error"] or j["stage"])
        click.echo(f"{j['id']}  {j['tier']:<5} {j['status']:<9} try {j['attempts']}  {detail}")


@cli.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--root",
    "root_pem",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Trust root certificate (PEM) to check against; default: the farm's own "
    "(<data_dir>/keys/root.pem).",
)
@click.pass_obj
def verify(obj: Ctx, video: str, root_pem: str | None) -> None:
    """Validate a video's signed C2PA manifest against a farm's root certificate.

    Read-only: it creates nothing. Run it in the farm's folder (or with --config pointing at
    the farm's configuration), or name the trust root with --root.
    """
    from cameofarm.models.reference.provenance import verify_mp4

    root = Path(root_pem) if root_pem else Path(obj.config.data_dir) / "keys" / "root.pem"
    if not root.is_file():
        _fail(
            f"no trust root at {root.resolve()}: this is not a farm's folder (data_dir "
            f"{obj.config.data_dir!r}). Run `cameofarm verify` in the farm's folder, point "
            "--config at its configuration, or pass --root FARM_DATA_DIR/keys/root.pem"
        )
    report = verify_mp4(Path(video).read_bytes(), root.read_bytes())
    click.echo(
        f"trust root: {root.resolve()}\n"
        f"state: {report.state}\nsigner: {report.signer}\njob: {report.job_id}\n"
        f"tier: {report.tier}\ncameos: {', '.join(report.cameo_ids)}\n"
        f"AI-generated: {report.ai_generated}"
    )
    for problem in report.problems:
        click.echo(f"problem: {problem}")
    if not report.valid:
        sys.exit(1)


# --- demo and benchmark ------------------------------------------------------------------


@cli.command()
@click.option("--keep-up", is_flag=True, help="Leave the farm running afterwards.")
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Also copy the videos into this folder.",
)
@click.option(
    "--scene",
    "scene_clip",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A clip of a stand-in actor (one face, facing the camera) for the demo's template "
    "job, which casts the cameo onto them. A clip smaller than 1280x720 is first set on a "
    "1280x720 stage. Without it the demo uses its built-in stand-in (a public-domain "
    "portrait of Grace Hopper, animated).",
)
@click.option(
    "--scene-rights",
    default=None,
    help="Who licensed the --scene clip and that its actor agreed to stand in (required with "
    "--scene; recorded in the audit log and the output's C2PA manifest).",
)
@click.pass_obj
def demo(
    obj: Ctx, keep_up: bool, out: str | None, scene_clip: str | None, scene_rights: str | None
) -> None:
    """Build a sample recording, enroll it, render one Plus and one Pro video and a Plus video
    cast onto a stand-in actor's template scene, check each and print its quality report."""
    from cameofarm.service.demo import DemoError, run_demo

    if scene_clip and not scene_rights:
        _fail("--scene needs --scene-rights: who licensed the clip, and that its actor agreed")
    scene = (scene_clip, scene_rights or "") if scene_clip else None
    try:
        run_demo(
            obj.config, obj.storage(), keep_up=keep_up, out_dir=out, echo=click.echo, scene=scene
        )
    except DemoError as exc:
        _fail(str(exc))


for _command in (*COMMANDS, batch, bench, models, quality, scenes, simulate, top):
    cli.add_command(_command)


if __name__ == "__main__":
    main()
