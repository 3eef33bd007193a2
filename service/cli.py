"""`cameofarm`: run the farm, enroll cameos, submit and follow render jobs, benchmark."""

from __future__ import annotations

import getpass
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from cameofarm.configs import ConfigError, FarmConfig, load_config

warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


class Ctx:
    def __init__(self, config_dir: str | None) -> None:
        self.config_dir = config_dir
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


def _fail(message: str, code: int = 1) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_dir",
    envvar="CAMEOFARM_CONFIG_DIR",
    default=None,
    help="Folder of *.yaml overriding the packaged defaults.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug output.")
@click.pass_context
def cli(ctx: click.Context, config_dir: str | None, verbose: bool) -> None:
    """cameofarm: a render farm for consent-based avatar video on Ray.

    \b
    Typical session:
      cameofarm demo                      # everything, end to end, on built-in material
      cameofarm up                        # start the farm (embedded Ray)
      cameofarm enroll start --name Ada       # prints timed challenges
      cameofarm enroll finish ses_... clip.mp4
      cameofarm submit --cameo cam_... --script "Hello!" --tier plus
      cameofarm wait job_...
      cameofarm down
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    ctx.obj = Ctx(config_dir)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except ConfigError as exc:
        _fail(str(exc), 2)


# --- farm lifecycle ------------------------------------------------------------------------


@cli.command()
@click.option("--address", default=None, help="Join an existing Ray cluster instead.")
@click.pass_obj
def up(obj: Ctx, address: str | None) -> None:
    """Start the farm: Ray, the five stage pools and the scheduler."""
    from cameofarm.cluster.bootstrap import FarmError, farm_up

    config = obj.config
    if address:
        config = config.model_copy(
            update={"cluster": config.cluster.model_copy(update={"address": address})}
        )
    try:
        farm_up(config, progress=click.echo)
    except FarmError as exc:
        _fail(str(exc))


@cli.command()
@click.pass_obj
def down(obj: Ctx) -> None:
    """Stop the scheduler, the pools and the embedded Ray node. Queued jobs stay queued."""
    from cameofarm.cluster.bootstrap import FarmError, farm_down

    try:
        farm_down(obj.config, progress=click.echo)
    except FarmError as exc:
        _fail(str(exc))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the raw status as JSON.")
@click.pass_obj
def status(obj: Ctx, as_json: bool) -> None:
    """Show pools (replicas and GPU ids), queue depth per tier and running jobs."""
    from cameofarm.cluster.bootstrap import FarmError, farm_status

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
            click.echo(
                f"    {p['replica']:<28} gpu_ids=[{p['gpu_ids']}] backend={p['backend']} "
                f"calls={p['calls']} cached={len(p['cached'])}"
            )
    click.echo("queues: " + ", ".join(f"{t}={n}" for t, n in info["queues"].items()))
    click.echo(f"running: {len(info['running'])}")
    for j in info["running"]:
        click.echo(
            f"  {j['id']} {j['tier']:<5} {j['stage'] or 'starting':<11} "
            f"{j['progress']:.0%} attempt {j['attempt']} ({j['running_s']} s)"
        )
    for tier, why in info["waiting"].items():
        click.echo(f"waiting: {tier}: {why}")


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
    from cameofarm.models.reference.face import DlibFaceAnalyzer
    from cameofarm.pipelines.checks import check_recording

    report = check_recording(video, DlibFaceAnalyzer(), obj.config.enrollment, audio)
    click.echo(report.to_json() if as_json else report.describe())
    if not report.accepted:
        sys.exit(1)


@enroll.command("add")
@click.argument("video", type=click.Path(dir_okay=False))
@_audio_option
@click.option("--name", required=True, help="Display name of the person.")
@click.option("--owner", default=None, help="Owner account (default: current user).")
@click.pass_obj
def enroll_add(obj: Ctx, video: str, audio: str | None, name: str, owner: str | None) -> None:
    """Check a recording, extract face identity, mouth shapes and voice; store a cameo."""
    from cameofarm.models.reference.face import DlibFaceAnalyzer
    from cameofarm.pipelines.enroll import EnrollmentError, enroll_recording

    try:
        record = enroll_recording(
            obj.storage(),
            DlibFaceAnalyzer(),
            video,
            name=name,
            owner=owner or getpass.getuser(),
            checks=obj.config.enrollment,
            audio=audio,
            progress=lambda m: click.echo(f"  {m}"),
        )
    except EnrollmentError as exc:
        _fail(f"enrollment refused: {exc}")
        return
    click.echo(record.id)


@enroll.command("start")
@click.option("--name", required=True, help="Display name of the person.")
@click.option("--owner", default=None, help="Owner account (default: current user).")
@click.option("--cameo", "cameo_id", default=None, help="Re-verify this existing cameo.")
@click.pass_obj
def enroll_start(obj: Ctx, name: str, owner: str | None, cameo_id: str | None) -> None:
    """Open a liveness session: prints the challenges and when to perform each."""
    from cameofarm.pipelines.enroll import EnrollmentError
    from cameofarm.pipelines.verify import start_session

    try:
        session = start_session(
            obj.storage(),
            obj.config.enrollment,
            name=name,
            owner=owner or getpass.getuser(),
            cameo_id=cameo_id,
        )
    except (EnrollmentError, LookupError) as exc:
        _fail(str(exc))
        return
    click.echo(session.instructions())
    click.echo(f"then: cameofarm enroll finish {session.id} VIDEO")


@enroll.command("finish")
@click.argument("session_id")
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@_audio_option
@click.option(
    "--id-photo",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="An ID photo the recorded face must match (threshold: README).",
)
@click.pass_obj
def enroll_finish(
    obj: Ctx, session_id: str, video: str, audio: str | None, id_photo: str | None
) -> None:
    """Verify a recording performing the session's challenges; make a VERIFIED cameo."""
    from cameofarm.models.reference.face import DlibFaceAnalyzer
    from cameofarm.pipelines.enroll import EnrollmentError
    from cameofarm.pipelines.verify import finish_session

    try:
        record = finish_session(
            obj.storage(),
            DlibFaceAnalyzer(),
            obj.config.enrollment,
            session_id,
            video,
            audio=audio,
            id_photo=id_photo,
            progress=lambda m: click.echo(f"  {m}"),
        )
    except EnrollmentError as exc:
        _fail(f"enrollment refused: {exc}")
        return
    click.echo(f"{record.id} {record.status.value}")


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
    from cameofarm.models.reference.face import DlibFaceAnalyzer

    picture = cv2.imread(image, cv2.IMREAD_COLOR)
    if picture is None:
        _fail(f"{image} is not an image OpenCV can read")
        return
    rgb = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    analyzer = DlibFaceAnalyzer()
    faces = analyzer.detect(rgb)
    if len(faces) != 1:
        _fail(f"{image} must show exactly one face; found {len(faces)}")
        return
    row = add_protected(obj.storage().db, label, analyzer.embed(rgb, faces[0]), reason)
    click.echo(f"protected #{row}: {label}")


@protected.command("list")
@click.pass_obj
def protected_list(obj: Ctx) -> None:
    """List protected likenesses."""
    from cameofarm.cameos.protected import list_protected

    for row, label, reason in list_protected(obj.storage().db):
        click.echo(f"#{row} {label}  {reason}")


@cli.command()
@click.pass_obj
def cameos(obj: Ctx) -> None:
    """List cameos."""
    from cameofarm.cameos import list_cameos

    for c in list_cameos(obj.storage().db):
        click.echo(f"{c.id}  {c.status.value:<8} {c.owner:<12} {c.name}")


# --- jobs ----------------------------------------------------------------------------------


@cli.command()
@click.option("--cameo", "cameo_ids", multiple=True, required=True, help="Cameo id to cast.")
@click.option("--script", required=True, help="What the cameo says.")
@click.option("--tier", type=click.Choice(["plus", "pro"]), default="plus", show_default=True)
@click.option(
    "--background",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Background image for the scene (default: a plain colour).",
)
@click.option("--priority", type=int, default=0, show_default=True)
@click.option("--customer", default=None, help="Who the job is for (default: current user).")
@click.pass_obj
def submit(
    obj: Ctx,
    cameo_ids: tuple[str, ...],
    script: str,
    tier: str,
    background: str | None,
    priority: int,
    customer: str | None,
) -> None:
    """Queue a render job and print its id."""
    from cameofarm.service.jobs_api import SubmitError, submit_render

    try:
        job = submit_render(
            obj.config,
            obj.storage(),
            list(cameo_ids),
            script,
            tier,
            customer or getpass.getuser(),
            priority,
            background,
        )
    except SubmitError as exc:
        _fail(str(exc))
        return
    click.echo(job.id)


@cli.command()
@click.argument("job_id")
@click.option("--timeout", type=float, default=1800, show_default=True, help="Seconds to wait.")
@click.pass_obj
def wait(obj: Ctx, job_id: str, timeout: float) -> None:
    """Follow a job's progress until it ends; print the output's path."""
    from cameofarm.service.jobs_api import WaitError, wait_for_job

    storage = obj.storage()
    try:
        job = wait_for_job(storage, job_id, timeout, progress=click.echo)
    except (WaitError, LookupError) as exc:
        _fail(str(exc))
        return
    if job.output_key is None:
        _fail(f"job {job.id} ended {job.status.value}: {job.error}")
        return
    click.echo(storage.objects.locate(job.output_key))


@cli.command()
@click.argument("job_id")
@click.pass_obj
def cancel(obj: Ctx, job_id: str) -> None:
    """Cancel a queued or running job (nothing is published)."""
    from cameofarm.cluster.jobs import JobError, cancel_job

    try:
        job = cancel_job(obj.storage().db, job_id)
    except (JobError, LookupError) as exc:
        _fail(str(exc))
        return
    click.echo(f"{job.id} {job.status.value}")


@cli.command()
@click.option("--limit", type=int, default=50, show_default=True)
@click.pass_obj
def jobs(obj: Ctx, limit: int) -> None:
    """List recent jobs."""
    from cameofarm.cluster.jobs import list_jobs

    for j in list_jobs(obj.storage().db)[-limit:]:
        detail = j.output_key or j.error or j.stage
        click.echo(f"{j.id}  {j.tier:<5} {j.status.value:<9} try {j.attempts}  {detail}")


@cli.command()
@click.argument("video", type=click.Path(exists=True, dir_okay=False))
@click.pass_obj
def verify(obj: Ctx, video: str) -> None:
    """Validate a video's signed C2PA manifest against this farm's root certificate."""
    from cameofarm.models.reference.provenance import ensure_signing_chain, verify_mp4

    chain = ensure_signing_chain(Path(obj.config.data_dir) / "keys")
    report = verify_mp4(Path(video).read_bytes(), chain.root_cert.read_bytes())
    click.echo(
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
@click.pass_obj
def demo(obj: Ctx, keep_up: bool, out: str | None) -> None:
    """Build a sample recording, enroll it, render one Plus and one Pro video, check both."""
    from cameofarm.service.demo import DemoError, run_demo

    try:
        run_demo(obj.config, obj.storage(), keep_up=keep_up, out_dir=out, echo=click.echo)
    except DemoError as exc:
        _fail(str(exc))


@cli.group(invoke_without_command=True)
@click.option("--plus", "n_plus", type=int, default=4, show_default=True)
@click.option("--pro", "n_pro", type=int, default=1, show_default=True)
@click.option("--cameo", "cameo_id", default=None, help="Cameo to render (default: newest).")
@click.pass_context
def bench(ctx: click.Context, n_plus: int, n_pro: int, cameo_id: str | None) -> None:
    """Render benchmark on the running farm: p50/p95 per tier and stage, overhead ratio.

    `cameofarm bench enroll` times enrollment instead.
    """
    if ctx.invoked_subcommand is not None:
        return
    from cameofarm.service.demo import DemoError, run_bench

    obj: Ctx = ctx.obj
    try:
        run_bench(obj.config, obj.storage(), n_plus, n_pro, cameo_id, echo=click.echo)
    except DemoError as exc:
        _fail(str(exc))


@bench.command("enroll")
@click.option(
    "--seconds",
    type=float,
    default=60.0,
    show_default=True,
    help="Length of the generated 720p recording.",
)
@click.pass_obj
def bench_enroll(obj: Ctx, seconds: float) -> None:
    """Time each step of enrolling a generated 720p recording (in a scratch farm folder)."""
    from cameofarm.service.demo import run_enroll_bench

    run_enroll_bench(obj.config, seconds, echo=click.echo)


if __name__ == "__main__":
    main()
