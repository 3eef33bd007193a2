"""`cameofarm demo` and `cameofarm bench`: end-to-end runs on built-in material."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cameofarm.cameos import CameoStatus, list_cameos
from cameofarm.configs import FarmConfig
from cameofarm.service.cli_quality import describe_quality
from cameofarm.storage import FarmStorage

Echo = Callable[[str], None]
PLUS_SCRIPT = "Hi! Welcome to this quick safety briefing."
PRO_SCRIPT = (
    "Welcome to the quarterly training. Today we cover three things: how to report an "
    "incident, where to find the safety equipment, and who to call when something goes wrong. "
    "Thank you for watching."
)


class DemoError(RuntimeError):
    """The demo or benchmark could not complete; the message says where it stopped."""


def ensure_sample_cameo(config: FarmConfig, storage: FarmStorage, echo: Echo) -> str:
    """Return the newest VERIFIED cameo, enrolling the built-in sample through a liveness
    session (challenges performed by the generated recording) if there is none."""
    for cameo in list_cameos(storage.db):
        if cameo.status is CameoStatus.VERIFIED:
            echo(f"using cameo {cameo.id} ({cameo.name})")
            return cameo.id
    from cameofarm.pipelines.extractors import farm_extractors
    from cameofarm.pipelines.sample_clip import build_sample_clip, sample_enrollment
    from cameofarm.pipelines.verify import finish_session, start_session

    extractors = farm_extractors(config, storage)
    cfg, note = sample_enrollment(config.enrollment)
    if note:
        echo(f"note: {note}")
    session = start_session(storage, cfg, name="Sample Astronaut", owner="demo")
    echo(session.instructions())
    with tempfile.TemporaryDirectory(prefix="cameofarm-demo-") as tmp:
        clip = Path(tmp) / "calibration.mp4"
        seconds = session.challenges[-1].end + cfg.min_speech_seconds + 8
        echo(
            f"building a {seconds:.0f} s sample recording that performs them "
            "(astronaut photo + flite or espeak-ng)..."
        )
        windows = tuple((c.kind, c.start, c.end) for c in session.challenges)
        build_sample_clip(
            clip, extractors.primary, seconds=seconds, challenges=windows, phrase=session.phrase
        )
        echo("verifying liveness and enrolling...")
        record = finish_session(
            storage, extractors, cfg, session.id, clip, progress=lambda m: echo(f"  {m}")
        )
    return record.id


def check_output(path: str, config: FarmConfig, tier: str, root_pem: bytes) -> list[str]:
    """Return what is wrong with a published video (empty when it meets its tier spec)."""
    from cameofarm.models.media import probe_mp4
    from cameofarm.models.reference.provenance import verify_mp4

    spec = config.tier(tier)
    report = probe_mp4(path)
    problems = []
    if (report.width, report.height) != (spec.width, spec.height):
        problems.append(f"size {report.width}x{report.height}, expected {spec.width}x{spec.height}")
    if report.duration > spec.max_seconds + 1e-6:
        problems.append(f"{report.duration:.2f} s is over the {spec.max_seconds:g} s limit")
    if report.audio_codec is None or report.audio_seconds < 0.5:
        problems.append("no audio")
    c2pa = verify_mp4(Path(path).read_bytes(), root_pem)
    if not c2pa.valid:
        problems.append(f"C2PA invalid: {c2pa.problems}")
    return problems


def ensure_demo_scene(
    config: FarmConfig, storage: FarmStorage, scene: tuple[str, str] | None, echo: Echo
) -> str:
    """Return the id of the demo's template scene: the given (clip, rights) stand-in, or the
    built-in one (Grace Hopper, see sample_clip.STAND_IN_RIGHTS), added to the demo's scene
    library once — set on a Plus-sized stage when it is smaller."""
    import subprocess

    from cameofarm.cameos.accounts import Principal
    from cameofarm.models.media import MediaError, ffmpeg_exe, probe_video
    from cameofarm.pipelines.extractors import primary_analyzer
    from cameofarm.pipelines.sample_clip import STAND_IN_RIGHTS, build_stand_in_clip
    from cameofarm.pipelines.scene_library import add_scene, list_scenes
    from cameofarm.pipelines.scenes import SceneError

    demo = Principal("demo", "demo", False)
    plus = config.tier("plus")
    name = f"demo stand-in ({Path(scene[0]).name})" if scene else "demo stand-in (built in)"
    for known in list_scenes(storage.db, demo):
        if known.name == name and known.fits(plus.width, plus.height):
            echo(f"using scene {known.id} ({known.name})")
            return known.id
    analyzer = primary_analyzer(config, storage)
    with tempfile.TemporaryDirectory(prefix="cameofarm-demo-") as tmp:
        if scene is None:
            echo("building the built-in stand-in actor's clip (Grace Hopper, public domain)...")
            clip, rights = str(Path(tmp) / "stand-in.mp4"), STAND_IN_RIGHTS
            build_stand_in_clip(clip, analyzer, size=(plus.width, plus.height))
        else:
            clip, rights = scene
        try:
            info = probe_video(clip)
        except MediaError as exc:
            raise DemoError(f"--scene: {exc}") from None
        staged = clip
        if info.width < plus.width or info.height < plus.height:
            staged = str(Path(tmp) / "stage.mp4")
            fit = (
                f"scale=-2:{plus.height},pad={plus.width}:{plus.height}:(ow-iw)/2:0:color=0x3c4650"
            )
            stage = f"{plus.width}x{plus.height}"
            echo(f"setting the {info.width}x{info.height} stand-in clip on a {stage} stage...")
            command = [ffmpeg_exe(), "-v", "error", "-y", "-i", clip, "-vf", fit, "-an"]
            command += ["-c:v", "libx264", "-crf", "16", "-pix_fmt", "yuv420p", staged]
            subprocess.run(command, check=True)
        echo("checking the scene and tracking its actor...")
        try:
            made = add_scene(storage, analyzer, demo, staged, name, rights)
        except SceneError as exc:
            raise DemoError(f"scene {clip}: {exc}") from None
    echo(f"scene {made.id}: {made.width}x{made.height}, {made.duration:.1f} s")
    return made.id


def run_demo(
    config: FarmConfig,
    storage: FarmStorage,
    keep_up: bool,
    out_dir: str | None,
    echo: Echo,
    scene: tuple[str, str] | None = None,
) -> list[str]:
    """Enroll the sample, render Plus and Pro on a local farm and a Plus job cast onto a
    stand-in actor's template scene (the given clip, or the built-in one), check each output
    and print its quality report."""
    from cameofarm.cameos.audit import verify_audit
    from cameofarm.cluster.bootstrap import farm_down, farm_up
    from cameofarm.models.media import probe_mp4
    from cameofarm.models.reference.provenance import ensure_signing_chain, verify_mp4
    from cameofarm.service.jobs_api import submit_render, wait_for_job

    cameo_id = ensure_sample_cameo(config, storage, echo)
    scene_id = ensure_demo_scene(config, storage, scene, echo)
    farm_up(config, progress=echo)
    paths = []
    try:
        jobs = [
            submit_render(config, storage, [cameo_id], script, tier, "demo")
            for tier, script in (("plus", PLUS_SCRIPT), ("pro", PRO_SCRIPT))
        ]
        jobs.append(
            submit_render(
                config, storage, [cameo_id], PLUS_SCRIPT, "plus", "demo", scene_id=scene_id
            )
        )
        root = ensure_signing_chain(storage.keys_dir).root_cert.read_bytes()
        for job in jobs:
            echo(f"rendering {job.tier} job {job.id}...")
            done = wait_for_job(storage, job.id, 1800, progress=lambda m: echo(f"  {m}"))
            if done.output_key is None:
                raise DemoError(
                    f"{done.tier} job {done.id} ended {done.status.value}: {done.error}"
                )
            path = storage.objects.locate(done.output_key)
            if not Path(path).is_file():  # MinIO: fetch a local copy to check
                local = Path(tempfile.mkdtemp()) / f"{done.id}.mp4"
                path = str(storage.objects.get_file(done.output_key, local))
            problems = check_output(path, config, done.tier, root)
            if problems:
                raise DemoError(f"{done.tier} output {path} failed its checks: {problems}")
            r = probe_mp4(path)
            c2pa = verify_mp4(Path(path).read_bytes(), root)
            echo(
                f"  ok: {r.width}x{r.height}, {r.frames} frames, {r.duration:.2f} s, "
                f"audio {r.audio_codec} {r.audio_seconds:.2f} s"
            )
            echo(
                f"  C2PA {c2pa.state}: signer {c2pa.signer}; job {c2pa.job_id}, tier "
                f"{c2pa.tier}, cameos {', '.join(c2pa.cameo_ids)}"
            )
            for line in describe_quality(done.quality):
                echo(f"  quality: {line}")
            if out_dir:
                Path(out_dir).mkdir(parents=True, exist_ok=True)
                path = str(shutil.copy(path, Path(out_dir) / f"{done.tier}-{done.id}.mp4"))
            paths.append(path)
    finally:
        if not keep_up:
            farm_down(config, progress=echo)
    report = verify_audit(storage.db)
    if not report.ok:
        raise DemoError(f"the audit log does not verify: {report.problems}")
    echo(f"audit log: {report.rows} rows, hash chain intact (head {report.head_hash[:16]}...)")
    echo("\ndemo videos:")
    for path in paths:
        echo(f"  {path}")
    return paths


def run_bench(
    config: FarmConfig,
    storage: FarmStorage,
    n_plus: int,
    n_pro: int,
    cameo_id: str | None,
    echo: Echo,
    report: str | None = None,
    pro_script: str = PRO_SCRIPT,
    plus_every: float = 0.0,
) -> None:
    """Submit n_pro + n_plus jobs to the running farm, wait, print the benchmark report (and
    write it with plots into `report`, given a folder). The Plus jobs are submitted once a
    Pro job is rendering its frames, to show when a Plus job gets going beside it — all at
    once, or one every `plus_every` seconds (each then meets the Pro render, not the other
    Plus jobs); the report says how much of Ray's object store spilled to disk during the
    run."""
    from cameofarm.cluster.bootstrap import FarmError, farm_status
    from cameofarm.monitoring.bench import build_report, format_report
    from cameofarm.service.jobs_api import SubmitError, submit_render, wait_for_job

    try:
        farm_status(config)
    except FarmError as exc:
        raise DemoError(f"{exc} (bench needs a running farm)") from exc
    from cameofarm.cameos import get_cameo

    cameo_id = cameo_id or ensure_sample_cameo(config, storage, echo)
    owner = get_cameo(storage.db, cameo_id).owner  # the benchmark renders as the cameo's owner
    spilled_before = _spilled_bytes()
    try:
        jobs = [
            submit_render(config, storage, [cameo_id], pro_script, "pro", owner)
            for _ in range(n_pro)
        ]
    except SubmitError as exc:
        raise DemoError(f"the Pro script was refused: {exc}") from None
    if jobs and n_plus:
        stage = _await_rendering(storage, jobs[0].id)
        echo(f"submitted {n_pro} pro jobs; {jobs[0].id} is rendering ({stage}): now the plus jobs")
    for k in range(n_plus):
        if k and plus_every > 0:
            time.sleep(plus_every)  # the experiment's spacing, not a wait for a condition
            echo(f"  plus job {k + 1} of {n_plus}, {plus_every:g} s after the last")
        jobs.append(submit_render(config, storage, [cameo_id], PLUS_SCRIPT, "plus", owner))
    echo(f"submitted {n_plus} plus + {n_pro} pro jobs; waiting...")
    for job in jobs:
        done = wait_for_job(storage, job.id, 3600)
        echo(
            f"  {done.id} {done.tier:<4} {done.status.value}"
            f"{'' if done.error is None else ': ' + done.error}"
        )
    echo("")
    echo(format_report(build_report(storage.db, [j.id for j in jobs])))
    spilled_after = _spilled_bytes()
    if spilled_before is None or spilled_after is None:
        echo("object store spill: not readable from this Ray version")
    else:
        spilled = spilled_after - spilled_before
        echo(
            f"object store: {spilled / 2**20:.0f} MiB spilled to disk during the run"
            if spilled
            else "object store: nothing spilled to disk during the run"
        )
    if report is not None:
        from cameofarm.monitoring.bench_report import write_report

        echo(f"report: {write_report(storage.db, [j.id for j in jobs], report)}")


def _spilled_bytes() -> int | None:
    """Bytes Ray's object stores have spilled to disk since the cluster started (None when
    this Ray does not say)."""
    try:
        import ray
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        state = get_state_from_address(ray.get_runtime_context().gcs_address)
        return int(get_memory_info_reply(state).store_stats.spilled_bytes_total)
    except Exception:  # a private API: its absence must not fail the bench
        return None


def _await_rendering(storage: FarmStorage, job_id: str, timeout: float = 1800) -> str:
    """Wait until the job renders its frames (past its voice); return the stage it is at."""
    import time

    from cameofarm.cluster.jobs import JobStatus, get_job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = get_job(storage.db, job_id)
        if job.status is not JobStatus.QUEUED and job.status is not JobStatus.RUNNING:
            return job.status.value.lower()
        if job.status is JobStatus.RUNNING and job.stage not in ("", "voice", "dispatched"):
            return job.stage
        time.sleep(0.2)
    raise DemoError(f"{job_id} did not start rendering within {timeout:.0f} s")


def run_enroll_bench(config: FarmConfig, seconds: float, echo: Echo) -> float:
    """Enroll a generated `seconds`-long 1280x720 recording through a liveness session in a
    scratch data folder; print how long each step took and the total. Returns the total."""
    import time

    from cameofarm.pipelines.extractors import farm_extractors, needs_models
    from cameofarm.pipelines.sample_clip import build_sample_clip, sample_enrollment
    from cameofarm.pipelines.verify import finish_session, start_session
    from cameofarm.storage import open_farm_storage

    enrollment, _ = sample_enrollment(config.enrollment)

    with tempfile.TemporaryDirectory(prefix="cameofarm-bench-") as tmp:
        scratch = open_farm_storage(config.model_copy(update={"data_dir": tmp}))
        # The extractors' models come from the farm's own model store, not the scratch one.
        models = open_farm_storage(config) if needs_models(config.enrollment) else None
        extractors = farm_extractors(config, models)
        session = start_session(scratch, enrollment, name="Bench", owner="bench")
        clip = Path(tmp) / "recording.mp4"
        t = time.perf_counter()
        windows = tuple((c.kind, c.start, c.end) for c in session.challenges)
        build_sample_clip(
            clip, extractors.primary, seconds=seconds, challenges=windows, phrase=session.phrase
        )
        echo(
            f"built a {seconds:g} s 1280x720 recording in {time.perf_counter() - t:.1f} s "
            "(not counted)"
        )
        steps: list[tuple[str, float]] = []
        start = last = time.perf_counter()

        def mark(message: str) -> None:
            nonlocal last
            now = time.perf_counter()
            steps.append((message, now - last))
            last = now

        record = finish_session(scratch, extractors, enrollment, session.id, clip, progress=mark)
        total = time.perf_counter() - start
        scratch.db.dispose()
    echo(f"{'step (ends with)':<72} {'seconds':>8}")
    for message, took in steps:
        echo(f"{message[:72]:<72} {took:>8.2f}")
    echo(f"{'total: ' + record.status.value + ' cameo':<72} {total:>8.2f}")
    echo("target: under 30 s end to end on 2 CPU cores")
    return total
