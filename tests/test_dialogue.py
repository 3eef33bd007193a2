"""Two cameos in one video: a dialogue script ("A: ... / B: ..."), a two-actor template scene,
each cameo cast onto one actor and speaking its own lines in its own voice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cameofarm.cameos.accounts import Principal
from cameofarm.models.data import PhonemeTiming, SpeechTrack, WordTiming
from cameofarm.models.media import read_frames, write_video
from cameofarm.pipelines.dialogue import (
    DialogueError,
    dialogue_script,
    join_lines,
    parse_dialogue,
)
from cameofarm.pipelines.scenes import SceneError, check_scene

ACME = Principal("tester", "acme", False)
RIGHTS = "Built-in public-domain portraits; stand-ins for the test suite's dialogue."
DIALOGUE = (
    "A: Good morning everyone, and welcome to the safety briefing for the new warehouse. "
    "/ B: Thank you. Please keep the fire exits clear and report every spill at once."
)


def test_a_dialogue_is_read_as_labelled_lines_and_refused_when_it_is_not_one():
    lines = parse_dialogue("A: Hello there. / B: Hi! How are you?\nA: Fine, thanks.", 2)
    assert lines == [(0, "Hello there."), (1, "Hi! How are you?"), (0, "Fine, thanks.")]
    assert parse_dialogue(dialogue_script(lines), 2) == lines  # the stored form reads back
    assert parse_dialogue("A: the whole script, labels and all", 1) == [
        (0, "A: the whole script, labels and all")
    ]
    assert parse_dialogue("A: Plan B: run. / B: Ok.", 2) == [(0, "Plan B: run."), (1, "Ok.")]
    for script, why in [
        ("Hello there, how are you?", r"write the script as lines 'A: \.\.\. / B: \.\.\.'"),
        ("Intro. A: Hello / B: Hi", "write the script as lines"),
        ("A: Hello / C: Hi", "line 2 is spoken by C, but the video casts 2 cameos"),
        ("A: Hello / B: ... / A: Bye", r"line 2 \(B:\) has no words"),
        ("A: Hello / A: Bye", "B never speaks"),
    ]:
        with pytest.raises(DialogueError, match=why):
            parse_dialogue(script, 2)


def _line(seconds, rate=100, symbol="a"):
    return SpeechTrack(
        np.full(int(seconds * rate), 0.5, np.float32),
        rate,
        (PhonemeTiming(symbol, 0.0, seconds),),
        (WordTiming(symbol, 0.0, seconds),),
    )


def test_lines_are_joined_one_after_another_and_each_speaker_hears_only_their_own():
    lines = [_line(1.0, symbol="a"), _line(2.0, symbol="b"), _line(0.5, symbol="c")]
    joined, own = join_lines(lines, [0, 1, 0], 2, gap=0.5)
    assert joined.duration == pytest.approx(1.0 + 0.5 + 2.0 + 0.5 + 0.5)
    assert [p.symbol for p in joined.phonemes] == ["a", "b", "c"]
    assert [(p.start, p.end) for p in own[1].phonemes] == [(1.5, 3.5)]
    assert [w.start for w in own[0].words] == [0.0, 4.0]
    # A's track is silent while B speaks, and the other way round.
    assert own[0].samples[150:350].max() == 0 and own[1].samples[150:350].min() == 0.5
    assert own[1].samples[:100].max() == 0 and np.allclose(
        own[0].samples + own[1].samples, joined.samples
    )


def _two_person_frames(sample_clip, stand_in_clip, n):
    """Side by side: the stand-in (Grace Hopper) on the left, the astronaut on the right."""
    left = read_frames(stand_in_clip, list(range(n)))
    right = read_frames(sample_clip, list(range(60, 60 + n)))
    return [np.hstack([left[k][:, 320:960], right[60 + k][:, 320:960]]) for k in range(n)]


@pytest.fixture(scope="module")
def stand_in_clip(tmp_path_factory, analyzer):
    from cameofarm.pipelines.sample_clip import build_stand_in_clip

    return build_stand_in_clip(tmp_path_factory.mktemp("stand-in") / "hopper.mp4", analyzer, 6.0)


@pytest.fixture
def two_person_scene(tmp_path, sample_clip, stand_in_clip):
    frames = _two_person_frames(sample_clip, stand_in_clip, 100)
    return write_video(frames, (1280, 720), 25, tmp_path / "two.mp4")


def test_a_two_actor_scene_tracks_each_actor_left_to_right(analyzer, two_person_scene, cameo):
    from cameofarm.pipelines.extractors import identities_of

    with pytest.raises(SceneError, match=r"2 faces appear at 0\.0 s; a template declares 1"):
        check_scene(two_person_scene, analyzer)
    checked = check_scene(two_person_scene, analyzer, actors=2)
    left, right = checked.track, checked.others[0]
    assert left.found.mean() >= 0.9 and right.found.mean() >= 0.9
    assert np.nanmedian(left.landmarks[:, :, 0]) < 640 < np.nanmedian(right.landmarks[:, :, 0])
    astronaut = identities_of(cameo.summary)[analyzer.name]
    assert right.actor.distance(astronaut) < analyzer.same_person < left.actor.distance(astronaut)


@pytest.fixture
def hopper_cameo(farm_config, storage, analyzer, tmp_path):
    """A second cameo, another person with another voice: the built-in stand-in, enrolled from
    a sample recording spoken by flite's male 'kal16' voice."""
    from cameofarm.models.reference.flite import FliteEngine
    from cameofarm.pipelines.enroll import enroll_recording
    from cameofarm.pipelines.sample_clip import build_sample_clip

    if not FliteEngine.available():
        pytest.skip("a second sample voice needs flite (`make setup` installs it)")
    clip = build_sample_clip(tmp_path / "hopper.mp4", analyzer, portrait="hopper", voice="kal16")
    return enroll_recording(
        storage,
        analyzer,
        clip,
        name="Hopper",
        owner="tester",
        checks=farm_config.enrollment,
        verified_by="test fixture",
    )


def test_a_two_cameo_dialogue_casts_each_cameo_onto_its_actor_in_its_own_voice(
    farm_config,
    storage,
    analyzer,
    pools,
    cameo,
    hopper_cameo,
    two_person_scene,
    sample_clip,
    monkeypatch,
):
    """A (the astronaut) is cast onto the left actor (Grace Hopper), B (Hopper) onto the right
    one (the astronaut): each face ends up as its cameo's, and the two lines are told apart
    by a speaker encoder better than each cameo's speech from itself."""
    from cameofarm.cluster.jobs import JobError, get_job, submit_job
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.pipelines.render import RenderJob
    from cameofarm.pipelines.scene_library import add_scene
    from cameofarm.service.cli import cli
    from cameofarm.service.cli_quality import describe_quality
    from click.testing import CliRunner

    from tests.conftest import render_published

    longer = farm_config.tiers["plus"].model_copy(update={"max_seconds": 12.0})
    tiers = {**farm_config.tiers, "plus": longer}  # room for lines long enough to compare
    config = farm_config.model_copy(update={"tiers": tiers})
    scene = add_scene(storage, analyzer, ACME, two_person_scene, "Two", RIGHTS, actors=2)
    alone = [read_frames(sample_clip, [k])[k] for k in range(60, 100)]
    one = write_video(alone, (1280, 720), 25, two_person_scene.parent / "one.mp4")
    single = add_scene(storage, analyzer, ACME, one, "One", RIGHTS).id
    both = [cameo.id, hopper_cameo.id]
    asks = dict(tier="plus", customer="tester", org="acme")
    with pytest.raises(JobError, match="write the script as lines"):
        submit_job(storage.db, config, cameo_ids=both, script="Hi all.", scene_id=scene.id, **asks)
    with pytest.raises(JobError, match="a 2-actor template scene: name one with --scene"):
        submit_job(storage.db, config, cameo_ids=both, script=DIALOGUE, **asks)
    with pytest.raises(JobError, match="has 1 stand-in actor and this video casts 2 cameos"):
        submit_job(storage.db, config, cameo_ids=both, script=DIALOGUE, scene_id=single, **asks)
    with pytest.raises(JobError, match="has 2 stand-in actors and this video casts 1 cameo"):
        submit_job(
            storage.db, config, cameo_ids=[cameo.id], script="Hi.", scene_id=scene.id, **asks
        )

    view = submit_job(
        storage.db, config, cameo_ids=both, script=DIALOGUE, scene_id=scene.id, **asks
    )
    assert view.script.startswith("A: Good morning") and " / B: Thank you." in view.script
    job = RenderJob(view.id, "plus", tuple(both), view.script, scene_id=scene.id)
    result = render_published(config, storage, pools, job)
    quality = get_job(storage.db, view.id).quality
    print("\n" + "\n".join(describe_quality(quality)))
    for cast, who in zip(quality["cast"], both, strict=True):
        face = cast["face"]
        assert cast["cameo"] == who and face["recognised"] >= 0.9, cast
        assert face["to_cameo"] < min(face["same_person"], face["to_actor"]), cast
    apart = quality["dialogue"]
    assert apart["between_speakers"] < min(apart["within"]), apart
    data = storage.objects.get_bytes(result.output_key)
    assert verify_mp4(data, None).cameo_ids == tuple(both)
    # `cameofarm quality` measures B on the right, where B was cast.
    monkeypatch.setenv("CAMEOFARM__DATA_DIR", config.data_dir)
    path = storage.objects.locate(result.output_key)
    out = CliRunner().invoke(cli, ["quality", path, "--cameo", hopper_cameo.id, "--json"])
    assert out.exit_code == 0, out.output
    face = json.loads(out.output)["face"]
    assert face["recognised"] >= 0.9 and face["to_cameo"] < face["to_actor"], face


def test_the_neural_swap_takes_the_face_on_the_tracked_actor_not_the_largest():
    from cameofarm.models.data import FaceObservation
    from cameofarm.models.neural.insightface import target_face

    def face(x0, side):
        box = (x0, 100, x0 + side, 100 + side)
        return FaceObservation(box, np.zeros((5, 2), np.float32), np.zeros((5, 2), np.float32))

    big, small = face(100, 300), face(800, 200)  # detectors list the largest first
    on_small = np.array([[850.0, 150.0], [950.0, 250.0]], np.float32)
    assert target_face([big, small], on_small) is small
    assert target_face([big, small], None) is big  # a presenter: no track, the largest face
    assert target_face([big], on_small) is None  # the tracked actor is not found here
    assert target_face([big, small], np.full((2, 2), np.nan, np.float32)) is None
