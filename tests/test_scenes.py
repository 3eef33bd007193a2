"""Template scenes: checked and tracked on upload, per-organisation, and a cameo cast onto a
different person's footage is measured to carry the cameo's face."""

from __future__ import annotations

import json
import subprocess

import cv2
import numpy as np
import pytest
from cameofarm.cameos.accounts import Principal
from cameofarm.models.media import ffmpeg_exe, read_frames, write_video
from cameofarm.pipelines.scenes import SceneError, check_scene, fill_and_smooth

from tests.conftest import fixture_path

ACME = Principal("tester", "acme", False)
RIGHTS = "Stock footage licensed from the test suite; the actor agreed to stand in."


def _clip(path, frames, fps=25):
    h, w = frames[0].shape[:2]
    return write_video(frames, (w, h), fps, path)


def _sample_frames(sample_clip, n=40):
    return [read_frames(sample_clip, [k])[k] for k in range(60, 60 + n)]


def test_landmark_gaps_are_filled_and_jitter_smoothed():
    rng = np.random.default_rng(0)
    truth = np.linspace(100, 140, 50)[:, None, None] * np.ones((50, 68, 2))
    noisy = (truth + rng.normal(0, 2.0, truth.shape)).astype(np.float32)
    noisy[20:23] = np.nan  # three frames without a face
    out = fill_and_smooth(noisy)
    assert not np.isnan(out).any()
    assert np.abs(out[21] - truth[21]).mean() < 1.5  # the gap follows the motion
    inner = slice(5, 45)
    assert (
        np.abs(out[inner] - truth[inner]).std()
        < 0.6 * np.abs(noisy[inner] - truth[inner])[~np.isnan(noisy[inner])].std()
    )


def test_a_scene_without_a_face_or_with_two_or_damaged_is_refused(analyzer, sample_clip, tmp_path):
    noise = np.random.default_rng(1).integers(0, 255, (30, 720, 1280, 3), np.uint8)
    with pytest.raises(SceneError, match=r"found in 0% of frames"):
        check_scene(_clip(tmp_path / "empty.mp4", noise), analyzer)

    faces = _sample_frames(sample_clip, 30)
    pairs = [np.hstack([f, f[:, ::-1]]) for f in faces]  # the same person, twice
    with pytest.raises(SceneError, match=r"2 faces appear at 0\.0 s"):
        check_scene(_clip(tmp_path / "two.mp4", pairs), analyzer)

    short = _clip(tmp_path / "short.mp4", faces[:10])
    with pytest.raises(SceneError, match=r"0\.4 s long"):
        check_scene(short, analyzer)

    whole = (tmp_path / "two.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(SceneError, match=r"damaged or truncated|not a usable video"):
        check_scene(tmp_path / "cut.mp4", analyzer)


def test_scenes_are_stored_per_organisation_and_kept_while_jobs_need_them(
    farm_config, storage, analyzer, sample_clip, cameo, tmp_path
):
    from cameofarm.cluster.jobs import JobError, submit_job
    from cameofarm.pipelines.scene_library import (
        UnknownSceneError,
        add_scene,
        get_scene,
        list_scenes,
        remove_scene,
    )

    clip = _clip(tmp_path / "actor.mp4", _sample_frames(sample_clip, 40))
    with pytest.raises(SceneError, match="attest the rights"):
        add_scene(storage, analyzer, ACME, clip, "Desk", "ok")
    scene = add_scene(storage, analyzer, ACME, clip, "Desk", RIGHTS)
    assert scene.id.startswith("scn_") and scene.actors == 1
    preview = storage.objects.get_bytes(scene.preview_key)
    assert cv2.imdecode(np.frombuffer(preview, np.uint8), cv2.IMREAD_COLOR) is not None
    other = Principal("mallory", "globex", False)
    assert [s.id for s in list_scenes(storage.db, ACME)] == [scene.id]
    assert list_scenes(storage.db, other) == []
    with pytest.raises(UnknownSceneError):
        get_scene(storage.db, other, scene.id)
    with pytest.raises(UnknownSceneError):
        remove_scene(storage, other, scene.id)

    # The sample clip is 1280x720: enough for Plus, not for Pro (never enlarged).
    common = {"cameo_ids": [cameo.id], "script": "Hello there.", "customer": "tester"}
    with pytest.raises(JobError, match="never enlarges"):
        submit_job(storage.db, farm_config, tier="pro", scene_id=scene.id, org="acme", **common)
    with pytest.raises(JobError, match="no scene"):
        submit_job(storage.db, farm_config, tier="plus", scene_id=scene.id, org="globex", **common)
    with pytest.raises(JobError, match="not several"):
        submit_job(
            storage.db,
            farm_config,
            tier="plus",
            scene_id=scene.id,
            org="acme",
            background_key="backgrounds/tester/bg.png",
            **common,
        )
    job = submit_job(storage.db, farm_config, tier="plus", scene_id=scene.id, org="acme", **common)
    assert job.scene_id == scene.id
    with pytest.raises(SceneError, match="used by 1 queued or running"):
        remove_scene(storage, ACME, scene.id)
    from cameofarm.cluster.jobs import cancel_job

    cancel_job(storage.db, job.id, actor="tester")
    remove_scene(storage, ACME, scene.id)
    assert not list(storage.objects.list(f"scenes/acme/{scene.id}/"))
    rows = [e for e in _audit(storage) if e["subject"] == scene.id]
    assert [e["action"] for e in rows] == ["scene.add", "scene.remove"]
    assert rows[0]["detail"]["rights"] == RIGHTS


def _audit(storage):
    from cameofarm.cameos import audit

    return [e.to_json() for e in audit.list_audit(storage.db, limit=1000)]


def test_a_background_that_shows_a_person_is_refused(farm_config, storage, sample_clip, cameo):
    from cameofarm.service.jobs_api import SubmitError, store_background

    _, png = cv2.imencode(
        ".png", cv2.cvtColor(_sample_frames(sample_clip, 1)[0], cv2.COLOR_RGB2BGR)
    )
    before = set(storage.objects.list("backgrounds/"))
    with pytest.raises(SubmitError, match=r"shows 1 face\(s\); real people enter a video only"):
        store_background(storage, png.tobytes(), "tester", farm_config)
    assert set(storage.objects.list("backgrounds/")) == before


def test_template_frames_carry_the_tracked_actor_and_the_swap_uses_that_track(
    analyzer, sample_clip, tmp_path
):
    from cameofarm.models.data import FrameSpec, TemplateSource
    from cameofarm.models.reference.base_video import ReferenceBaseVideo
    from cameofarm.models.reference.face_swap import TriangleFaceSwap, reshape_toward

    checked = check_scene(_clip(tmp_path / "a.mp4", _sample_frames(sample_clip, 30)), analyzer)
    source = TemplateSource(str(tmp_path / "a.mp4"), 25.0, checked.frame_count, checked.track)
    spec = FrameSpec(640, 360, 25)
    whole = ReferenceBaseVideo().template(source, spec, 0, 0, 40)  # loops past the clip's end
    halves = [ReferenceBaseVideo().template(source, spec, i, 20 * i, 20) for i in (0, 1)]
    # Chunks are cut from one track: the landmarks across a chunk edge are the whole run's.
    joined = np.concatenate([h.landmarks for h in halves])
    assert np.allclose(joined, whole.landmarks) and whole.landmarks_by == analyzer.name
    # ...and they sit on the actor's face in the fitted frame.
    found = analyzer.detect(whole.frames[5])[0].landmarks
    assert np.abs(found - whole.landmarks[5]).mean() < 4.0

    class Counting:
        def __init__(self, inner):
            self.inner, self.name, self.calls = inner, inner.name, 0

        def detect(self, frame):
            self.calls += 1
            return self.inner.detect(frame)

    counting = Counting(analyzer)
    swap = TriangleFaceSwap(counting)
    identity = _identity_of(analyzer, whole.frames[0])
    out = swap.swap(halves[1], identity)
    assert counting.calls == 0  # no detection: the scene's track is used
    # It hands on the landmarks of the face it drew: the track, reshaped toward the cameo.
    expected = [
        reshape_toward(identity.reference_landmarks, m, swap.shape_transfer)
        for m in halves[1].landmarks
    ]
    assert np.allclose(out.landmarks, expected)


def _identity_of(analyzer, frame):
    from cameofarm.models.data import FaceIdentity

    face = analyzer.detect(frame)[0]
    return FaceIdentity(frame, face.landmarks, face.points5, {}, analyzer.name)


# --- the fixtures' real people -----------------------------------------------------------------


def _woman_template(out):
    """The fixtures' woman (512x512) on a 1280x720 set: the template's stand-in actor."""
    video = fixture_path("talking_512b_with_audio.mp4")
    pad = "scale=720:720,pad=1280:720:280:0:color=0x3c4650"
    command = [ffmpeg_exe(), "-v", "error", "-y", "-i", str(video), "-vf", pad, "-an"]
    command += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(out)]
    subprocess.run(command, check=True)
    return out


def test_a_real_cameo_cast_onto_a_different_persons_template_is_recognisably_the_cameo(
    farm_config, storage, analyzer, pools, tmp_path, monkeypatch
):
    """The man, enrolled from the fixtures, cast by a Plus job onto a template of the woman:
    the farm's own quality report finds his face, not hers, on at least 90 % of frames."""
    from cameofarm.cluster.jobs import dispatch_job, finish_published, submit_job
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.pipelines.render import RenderJob, render_job
    from cameofarm.pipelines.scene_library import add_scene
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    from tests.test_checks import enroll_real_man

    cameo = enroll_real_man(storage, analyzer, farm_config, tmp_path)
    scene = add_scene(
        storage, analyzer, ACME, _woman_template(tmp_path / "woman.mp4"), "Set", RIGHTS
    )
    script = "Welcome to the team. Here is how we keep our customers' data safe."
    view = submit_job(
        storage.db,
        farm_config,
        cameo_ids=[cameo.id],
        script=script,
        tier="plus",
        customer="tester",
        scene_id=scene.id,
        org="acme",
    )
    assert dispatch_job(storage.db, farm_config, view.id) is not None
    job = RenderJob(view.id, "plus", (cameo.id,), view.script, scene_id=scene.id)
    result = render_job(
        job,
        farm_config,
        pools,
        storage,
        finalize=lambda key, q: finish_published(storage.db, farm_config, view.id, key, q),
    )
    path = storage.objects.locate(result.output_key)
    monkeypatch.setenv("CAMEOFARM__DATA_DIR", farm_config.data_dir)
    out = CliRunner().invoke(cli, ["quality", path])
    print(out.output)
    assert out.exit_code == 0, out.output
    face = json.loads(CliRunner().invoke(cli, ["quality", path, "--json"]).output)["face"]
    assert face["frames"] >= 100 and face["face_found"] >= 0.95, face
    assert face["recognised"] >= 0.9, face  # his face, closer to him than to her
    assert face["to_cameo"] < analyzer.same_person < face["to_actor"], face
    # The stand-in's rights travel with the video, in its signed manifest.
    with open(path, "rb") as fh:
        data = fh.read()
    assert verify_mp4(data, None).cameo_ids == (cameo.id,)
    assert RIGHTS.encode() in data and scene.id.encode() in data


def test_the_swap_keeps_the_actors_pose_and_mouth_but_takes_the_cameos_face_shape():
    from cameofarm.models.reference.face_swap import reshape_toward

    cameo = np.random.default_rng(3).uniform(20, 180, (68, 2)).astype(np.float32)
    wide = cameo.copy()
    wide[0:17, 0] = 100 + 1.4 * (wide[0:17, 0] - 100)  # the actor's broader jaw
    wide[62:67, 1] += 12  # ...with the mouth open
    angle = np.deg2rad(10)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    actor = (wide - 100) @ turn.T * 1.5 + [400, 300]  # somewhere else, tilted, larger
    assert np.allclose(reshape_toward(cameo, actor, 0.0), actor)
    full = reshape_toward(cameo, actor, 1.0)
    placed = (cameo - 100) @ turn.T * 1.5 + [400, 300]
    assert np.abs(full[0:48] - placed[0:48]).max() < 6.0  # the cameo's jaw, in the actor's pose
    opening = full[62:67, 1].mean() - full[50:53, 1].mean()
    assert opening == pytest.approx(actor[62:67, 1].mean() - actor[50:53, 1].mean(), abs=1e-3)


# --- presenters: a person cut out by segmentation, not an oval ---------------------------------


@pytest.mark.parametrize("material", ["sample", "fixture"])
def test_a_presenter_is_cut_out_along_the_person_not_an_oval(analyzer, sample_clip, material):
    from cameofarm.models.data import FrameSpec, PresenterSource
    from cameofarm.models.media import probe_video
    from cameofarm.models.reference.base_video import ReferenceBaseVideo, presenter_box

    path = sample_clip if material == "sample" else fixture_path("talking_720x1280.mp4")
    info = probe_video(path)
    first = read_frames(path, [0])[0]
    face = analyzer.detect(first)[0]
    box = presenter_box(face.box, info.width, info.height)
    source = PresenterSource(str(path), info.fps, info.frame_count, box)
    green = np.zeros((720, 1280, 3), np.uint8)
    green[:] = (0, 255, 0)
    spec = FrameSpec(1280, 720, 25)
    frame = ReferenceBaseVideo().render(source, green, spec, 0, 0, 1).frames[0]
    # Where the presenter's crop lands, and the oval the old cut-out filled with the crop.
    ph = int(720 * 0.92) // 2 * 2
    pw = min(1280, round((box[2] - box[0]) * ph / (box[3] - box[1])))
    ox, oy = (1280 - pw) // 2, 720 - ph
    oval = np.zeros((ph, pw), np.uint8)
    cv2.ellipse(oval, (pw // 2, int(ph * 0.62)), (int(pw * 0.46), int(ph * 0.62)), 0, 0, 360, 1, -1)
    region = frame[oy:, ox : ox + pw].astype(int)
    is_green = (np.abs(region - (0, 255, 0)).sum(axis=2) < 60) & (oval > 0)
    # The background shows inside the oval, around the head and shoulders (an oval cut-out
    # would show the recording's room there)...
    assert is_green.sum() > 0.08 * oval.sum(), is_green.sum() / oval.sum()
    # ...and not on the person: the face is all there.
    found = analyzer.detect(frame)
    assert len(found) == 1
    x0, y0, x1, y1 = found[0].box
    mx, my = (x1 - x0) // 4, (y1 - y0) // 4  # the inner face: eyes, nose, mouth
    inner = frame[y0 + my : y1 - my, x0 + mx : x1 - mx].astype(int)
    assert (np.abs(inner - (0, 255, 0)).sum(axis=2) < 60).mean() < 0.01


def test_lip_sync_lag_is_found_where_the_mouth_follows_the_sound():
    from cameofarm.pipelines.face_quality import best_lag

    rng = np.random.default_rng(5)
    loud = np.abs(rng.normal(size=120))
    mouth = np.roll(loud, 3) + rng.normal(0, 0.05, 120)  # the mouth opens 3 frames late
    mouth[:3] = np.nan
    r, lag = best_lag(mouth, loud, 8)
    assert lag == 3 and r > 0.95
    assert best_lag(np.full(120, np.nan), loud, 8) is None  # no face: nothing to correlate


def test_the_demo_prints_one_line_per_measured_part():
    from cameofarm.service.cli_quality import describe_quality

    face = {"frames": 118, "recognised": 1.0, "to_cameo": 0.38, "to_actor": 0.73}
    face |= {"same_person": 0.62, "lip_sync": 0.47, "lip_lag_ms": -40.0}
    voice = {"to_cameo": 0.762, "base_to_cameo": 0.636, "words_recovered": None}
    assert describe_quality({"face": face, "voice": voice}) == [
        "face: the cameo's in 100% of 118 frames (median distance 0.38, to the scene's actor "
        "0.73; same person <= 0.62); lip sync r = 0.47 at -40 ms",
        "voice: 0.762 like the cameo (stock voice 0.636)",
    ]
    # A report with the farm's verdict says it (the one above was stored before verdicts).
    judged = {**voice, "encoder": "resemblyzer:ge2e@1", "meets_targets": True}
    judged["targets"] = {"to_cameo": 0.75, "gain": 0.1}  # what it was judged by
    assert describe_quality({"face": face, "voice": judged})[1] == (
        "voice: 0.762 like the cameo (stock voice 0.636); meets the farm's voice targets "
        "(>= 0.75 to the cameo, >= stock + 0.1)"
    )
    unseen = {**face, "recognised": 0.0, "to_cameo": None, "lip_sync": None}
    assert describe_quality({"face": unseen}) == [
        "face: the cameo's in 0% of 118 frames",
        "voice: not measured (no report)",
    ]


def test_a_presenter_stands_in_front_of_a_moving_background_video_without_people(
    farm_config, storage, sample_clip, tmp_path
):
    from cameofarm.models.data import BackgroundVideo, FrameSpec, PresenterSource
    from cameofarm.models.media import probe_video
    from cameofarm.models.reference.base_video import ReferenceBaseVideo
    from cameofarm.service.jobs_api import SubmitError, store_background

    # A background video without people: a colour sweep.
    sweep = [np.full((360, 640, 3), (10 * i % 255, 80, 200 - 4 * i), np.uint8) for i in range(50)]
    clip = _clip(tmp_path / "sweep.mp4", sweep)
    key = store_background(storage, clip.read_bytes(), "tester", farm_config)
    assert key.endswith(".mp4") and storage.objects.exists(key)
    # One with a person in it is refused, and nothing is stored.
    people = _clip(tmp_path / "people.mp4", _sample_frames(sample_clip, 30))
    before = set(storage.objects.list("backgrounds/"))
    with pytest.raises(SubmitError, match=r"shows 1 face\(s\) at 0\.0 s"):
        store_background(storage, people.read_bytes(), "tester", farm_config)
    assert set(storage.objects.list("backgrounds/")) == before

    info = probe_video(sample_clip)
    source = PresenterSource(str(sample_clip), info.fps, info.frame_count, (320, 0, 960, 720))
    background = BackgroundVideo(storage.objects.locate(key), 25.0, 50)
    chunk = ReferenceBaseVideo().render(source, background, FrameSpec(1280, 720, 25), 0, 0, 30)
    corner = chunk.frames[:, 20, 20].astype(int)  # beside the presenter: the background
    assert np.abs(corner[0] - corner[29]).sum() > 60  # it moves with the video
    assert np.abs(corner[0] - (0, 80, 200)).sum() < 30  # and starts at its first frame


def test_the_built_in_stand_in_is_a_usable_template_of_another_person(analyzer, cameo, tmp_path):
    """A fresh machine's demo casts its cameo onto the built-in stand-in: the clip passes the
    template check (one actor, tracked throughout) and shows somebody else than the sample."""
    from cameofarm.pipelines.extractors import identities_of
    from cameofarm.pipelines.sample_clip import build_stand_in_clip

    clip = build_stand_in_clip(tmp_path / "stand-in.mp4", analyzer, seconds=3.0)
    checked = check_scene(clip, analyzer)
    assert checked.track.found.mean() >= 0.9 and (checked.width, checked.height) == (1280, 720)
    sample = identities_of(cameo.summary)[analyzer.name]
    distance = checked.track.actor.distance(sample)
    print(
        f"\nbuilt-in stand-in to the sample cameo: {distance:.2f} (same <= {analyzer.same_person})"
    )
    assert distance > analyzer.same_person
