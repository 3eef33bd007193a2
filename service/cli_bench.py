"""`cameofarm bench ...`: render, enrollment, policy, recogniser, cancel and fault benchmarks.
Each prints its figures; the drills exit 1 when a figure that must be 0 is not."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from cameofarm.service.cli_common import Ctx, fail


def _cameo_for(obj: Ctx, tier: str, cameo_id: str | None) -> tuple[Any, str]:
    """The farm's storage and the cameo a bench renders (the newest, or the sample cameo
    enrolled once); fails with a clear message on an unknown tier."""
    from cameofarm.service.demo import DemoError, ensure_sample_cameo

    if tier not in obj.config.tiers:
        fail(f"--tier {tier!r} is not a tier of this farm; choose from {sorted(obj.config.tiers)}")
    storage = obj.storage()
    try:
        return storage, cameo_id or ensure_sample_cameo(obj.config, storage, click.echo)
    except DemoError as exc:
        fail(str(exc))


@click.group(invoke_without_command=True)
@click.option("--plus", "n_plus", type=int, default=4, show_default=True)
@click.option("--pro", "n_pro", type=int, default=1, show_default=True)
@click.option("--cameo", "cameo_id", default=None, help="Cameo to render (default: newest).")
@click.option(
    "--pro-script",
    default=None,
    help="What the Pro jobs say (default: a 12 s training intro). A longer one, up to the "
    "tier's 20 s, shows what the longest Pro job holds in the object store.",
)
@click.option(
    "--plus-every",
    type=click.FloatRange(0, 600),
    default=0.0,
    show_default=True,
    help="Submit the Plus jobs one every this many seconds during the Pro render (0: all at "
    "once). Spaced so they do not overlap, each shows when a Plus job submitted during a Pro "
    "render makes its first call.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write an HTML report into this folder: plots of stage times per tier, a "
    "timeline of stage calls per replica, throughput; the figures as report.json.",
)
@click.pass_context
def bench(
    ctx: click.Context,
    n_plus: int,
    n_pro: int,
    cameo_id: str | None,
    pro_script: str | None,
    plus_every: float,
    report_dir: str | None,
) -> None:
    """Render benchmark on the running farm: p50/p95 per tier and stage, overhead ratio.

    Subcommands: `enroll` times enrollment, `policy` the dispatch decision, `recognizer` the
    recogniser's word error rate on transcribed speech, `voice` the reference voice on real
    speakers, `cancels` runs
    submit→cancel pairs over HTTP, `faults` is the kill -9 drill, `status` times the status
    report during a long render.
    """
    if ctx.invoked_subcommand is not None:
        return
    from cameofarm.service.demo import PRO_SCRIPT, DemoError, run_bench

    obj: Ctx = ctx.obj
    try:
        run_bench(
            obj.config,
            obj.storage(),
            n_plus,
            n_pro,
            cameo_id,
            echo=click.echo,
            report=report_dir,
            pro_script=pro_script or PRO_SCRIPT,
            plus_every=plus_every,
        )
    except DemoError as exc:
        fail(str(exc))


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


@bench.command("policy")
@click.option(
    "--sizes",
    default="1000,10000,100000",
    show_default=True,
    help="Comma-separated queue sizes to time.",
)
@click.option("--customers", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--repeats", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option(
    "--slots",
    type=click.IntRange(1, 100_000),
    default=None,
    help="Free slots each decision fills (default: the farm's scheduler.max_running_jobs).",
)
@click.pass_obj
def bench_policy(obj: Ctx, sizes: str, customers: int, repeats: int, slots: int | None) -> None:
    """Time one dispatch decision (queue heads read + policy) at growing queue sizes, in a
    scratch database. The policy's target: at most 1 ms to decide at 100,000 queued jobs
    and 100 free slots (--slots 100)."""
    from cameofarm.cluster.bench_policy import measure_policy

    try:
        counts = tuple(int(x) for x in sizes.split(",") if x.strip())
    except ValueError:
        fail(f"--sizes must be comma-separated integers, not {sizes!r}")
    if not counts or min(counts) < 1 or max(counts) > 2_000_000:
        fail("--sizes: give 1 to 2,000,000 jobs per size")
    measure_policy(obj.config, counts, customers, repeats, echo=click.echo, slots=slots)


@bench.command("recognizer")
@click.argument(
    "folders",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
)
def bench_recognizer(folders: tuple[Path, ...]) -> None:
    """Measure the offline recogniser on real, transcribed speech: the liveness phrase
    recogniser (its grammar plus each recording's words) and the general transcript the voice
    report uses, as word error rates.

    Each FOLDER holds a Sphinx `transcription` file (`<s> words </s> (fileid)` lines, with
    fileid.wav beside it) or NAME.txt beside each NAME.wav. Real ones from the package index:
    `pip download --no-deps --no-binary :all: pocketsphinx==5.1.1`, untar, and give its
    test/data/librivox and test/data/cards.
    """
    from cameofarm.pipelines.recognizer_bench import measure_recognizer

    try:
        measure_recognizer(list(folders), echo=click.echo)
    except ValueError as exc:
        fail(str(exc))


@bench.command("voice")
@click.argument("speakers", nargs=-1, required=True)
@click.option(
    "--script",
    "scripts",
    multiple=True,
    help="A script to speak as every speaker (repeat it; default: five workplace scripts).",
)
@click.option(
    "--timbre",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Share of the envelope taken from the speaker's own speech; more sounds more like "
    "them and less clear. Default: each speaker's calibrated share, as enrollment sets it "
    "(the lowest of 0.4-0.75 whose calibration renders clear the targets).",
)
@click.pass_obj
def bench_voice(
    obj: Ctx, speakers: tuple[str, ...], scripts: tuple[str, ...], timbre: float | None
) -> None:
    """Measure the reference voice on real people: every script spoken as every speaker,
    scored as each job's voice report scores it (GE2E similarity to the speaker and of the
    stock voice, words a recogniser recovers, the nearest other speaker), against the farm's
    targets (>= 0.75 and >= the stock voice + 0.1) and for clarity (a recogniser recovers at
    least half of the words, or as many as from the stock voice). Prints each render, each
    speaker's and the total count on target, clear, and both. English.

    Each SPEAKER is a recording of one person's speech, or FILE.rttm:SPEAKER — that
    speaker's turns where nobody else speaks, in the URI.wav files beside the RTTM. Real ones
    from the package index: `pip download --no-deps --no-binary :all: pyannote.audio==4.0.7`,
    untar, and give e.g. tests/data/debug.train.rttm:FEE083.
    """
    from cameofarm.pipelines.voice_bench import SCRIPTS, measure_voice

    try:
        measure_voice(
            speakers,
            scripts or SCRIPTS,
            obj.config.enrollment.min_speech_seconds,
            timbre,
            echo=click.echo,
        )
    except ValueError as exc:
        fail(str(exc))


@bench.command("cancels")
@click.option("--pairs", type=click.IntRange(1, 10_000), default=200, show_default=True)
@click.option("--cameo", "cameo_id", required=True, help="A cameo the key's user may cast.")
@click.option("--tier", default="plus", show_default=True)
@click.option(
    "--settle",
    type=click.FloatRange(1, 86_400),
    default=900.0,
    show_default=True,
    help="Seconds to wait for every job to end.",
)
@click.pass_obj
def bench_cancels(obj: Ctx, pairs: int, cameo_id: str, tier: str, settle: float) -> None:
    """Submit→cancel pairs through the HTTP API of a running farm: counts cancels refused
    with a conflict, jobs that never end, and jobs published although cancelled (all must be
    0; exit 1 otherwise). Needs --api-url (or CAMEOFARM_API_URL) and an API key."""
    from cameofarm.service.bench_cancels import report, run_cancel_drill

    if not obj.api_url or not obj.api_key:
        fail("bench cancels talks to the HTTP API: pass --api-url and --api-key (or env)")
    drill = run_cancel_drill(
        obj.api_url, obj.api_key, cameo_id, pairs, tier, settle, echo=click.echo
    )
    report(drill, echo=click.echo)
    if not drill.ok:
        sys.exit(1)


@bench.command("status")
@click.option("--tier", default="pro", show_default=True, help="Tier of the job rendered.")
@click.option("--samples", type=click.IntRange(1, 1000), default=10, show_default=True)
@click.option("--cameo", "cameo_id", default=None, help="Cameo to render (default: newest).")
@click.pass_obj
def bench_status(obj: Ctx, tier: str, samples: int, cameo_id: str | None) -> None:
    """Time `status` on the running farm while one job of --tier renders: in-process (as a
    dashboard polls it) and as a fresh `cameofarm status` process; prints p50/max of each."""
    from cameofarm.cameos import UnknownCameoError
    from cameofarm.service.bench_status import StatusBenchError, report, run_status_bench

    storage, cameo = _cameo_for(obj, tier, cameo_id)
    try:
        bench = run_status_bench(
            obj.config, storage, cameo, tier, samples, obj.config_dir, echo=click.echo
        )
    except (StatusBenchError, UnknownCameoError) as exc:
        fail(str(exc))
    report(bench, echo=click.echo)


@bench.command("faults")
@click.option(
    "--kills",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="Faults to inject, cycling through --kinds.",
)
@click.option(
    "--kinds",
    default="stage,scheduler,node",
    show_default=True,
    help="What to kill -9, in turn: stage (a stage replica mid-chunk), scheduler (the "
    "scheduler actor), node (every process of the farm's Ray node; the drill then runs up).",
)
@click.option("--cameo", "cameo_id", default=None, help="Cameo to render (default: newest).")
@click.option("--tier", default="plus", show_default=True)
@click.option(
    "--in-flight",
    type=click.IntRange(1, 50),
    default=2,
    show_default=True,
    help="Jobs kept queued or running during the drill.",
)
@click.option(
    "--settle",
    type=click.FloatRange(1, 86_400),
    default=1800.0,
    show_default=True,
    help="Seconds to wait for every job to end after the last kill.",
)
@click.pass_obj
def bench_faults(
    obj: Ctx,
    kills: int,
    kinds: str,
    cameo_id: str | None,
    tier: str,
    in_flight: int,
    settle: float,
) -> None:
    """Fault drill on the local farm: keeps short jobs in flight while it kill -9s stage
    replicas, the scheduler and the whole Ray node, then prints injections, jobs, succeeded,
    failed (with reasons), lost, duplicate publishes, orphan objects and recovery time p50/max.
    Exits 1 unless lost, duplicate publishes and orphan objects are all 0.

    Disruptive: it kills this farm's processes. Run it on a test farm, not one serving users.
    """
    from cameofarm.cameos import UnknownCameoError
    from cameofarm.cluster.bootstrap import FarmError
    from cameofarm.service.bench_faults import DrillError, report, run_fault_drill

    storage, cameo = _cameo_for(obj, tier, cameo_id)
    try:
        drill = run_fault_drill(
            obj.config,
            storage,
            cameo,
            kills,
            kinds=[k.strip() for k in kinds.split(",") if k.strip()],
            tier=tier,
            in_flight=in_flight,
            settle_s=settle,
            echo=click.echo,
        )
    except (DrillError, UnknownCameoError, FarmError) as exc:
        fail(str(exc))
    report(drill, echo=click.echo)
    if not drill.ok:
        sys.exit(1)
