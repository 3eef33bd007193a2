"""Each reference backend on real frames: the fixtures when present, generated otherwise."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from cameofarm.models import codec
from cameofarm.models.data import FrameSpec, PresenterSource, ProvenanceClaim, VideoChunk
from cameofarm.models.media import probe_video, read_audio, read_frames

from tests.conftest import fixture_path


def _assets(storage, cameo):
    get = storage.objects.get_bytes
    return (
        codec.identity_from_bytes(get(f"{cameo.assets_key}/identity.npz")),
        codec.voice_from_bytes(get(f"{cameo.assets_key}/voice.npz")),
        codec.atlas_from_bytes(get(f"{cameo.assets_key}/atlas.npz")),
    )


def test_face_analyzer_on_real_fixture(analyzer):
    clip = fixture_path("talking_720x1280.mp4")
    frame = read_frames(clip, [0])[0]
    faces = analyzer.detect(frame)
    assert len(faces) == 1 and faces[0].landmarks.shape == (68, 2)
    assert faces[0].points5.shape == (5, 2)
    emb = analyzer.embed(frame, faces[0])
    assert emb.analyzer == analyzer.name == "dlib@resnet-v1" and emb.metric == "euclidean"
    vec = emb.vector
    assert vec.shape == (128,) and np.isfinite(vec).all() and 0.3 < np.linalg.norm(vec) < 3


def test_face_analyzer_finds_no_face_in_dog(analyzer):
    import cv2

    dog = cv2.cvtColor(cv2.imread(str(fixture_path("dog_not_a_face.jpg"))), cv2.COLOR_BGR2RGB)
    assert analyzer.detect(dog) == []


def test_the_reference_analyzers_name_is_read_without_loading_it(farm_config, storage, cameo):
    """The render reads the primary analyzer's name in the scheduler's process: for the
    reference analyzer without loading dlib's models (seconds with the GIL held)."""
    from cameofarm.pipelines import extractors
    from cameofarm.pipelines.face_quality import face_measure

    before = dict(extractors._PRIMARY)
    name = extractors.primary_analyzer_name(farm_config, storage)
    measure = face_measure(farm_config, storage, cameo, None, 100)
    assert before == extractors._PRIMARY  # nothing was built
    assert name == "dlib@resnet-v1" == extractors.primary_analyzer(farm_config, storage).name
    assert measure is not None and measure.cameo.analyzer == name


def test_enrollment_extracts_identity_voice_and_atlas(storage, cameo):
    identity, voice, atlas = _assets(storage, cameo)
    assert list(identity.embeddings) == ["dlib@resnet-v1"]
    assert identity.embeddings["dlib@resnet-v1"].vector.shape == (128,)
    assert identity.reference_landmarks.shape == (68, 2)
    assert identity.reference_points5.shape == (5, 2)
    assert identity.landmarks_by == "dlib@resnet-v1"
    assert list(cameo.summary["identities"]) == ["dlib@resnet-v1"]
    assert 60 < np.exp(voice.f0_log_mean) < 400
    assert set(atlas.shapes) == {"rest", "open", "wide", "round", "mid"}
    assert sorted(storage.objects.list(cameo.assets_key + "/")) == [
        f"{cameo.assets_key}/{n}"
        for n in ("atlas.npz", "identity.npz", "recording.mp4", "voice.npz")
    ]


def test_enrollment_refuses_a_faceless_recording_and_stores_nothing(
    farm_config, storage, analyzer, tmp_path
):
    from cameofarm.models.media import write_video, write_wav
    from cameofarm.models.reference.voice import EspeakEngine
    from cameofarm.pipelines.enroll import EnrollmentError, enroll_recording

    speech = EspeakEngine().speak("There is nobody in this picture at all, only a grey wall.")
    wav = write_wav(tmp_path / "s.wav", speech.samples, speech.sample_rate)
    frames = (np.full((360, 640, 3), 128, np.uint8) for _ in range(50))
    clip = write_video(frames, (640, 360), 25, tmp_path / "empty.mp4", wav)
    with pytest.raises(EnrollmentError, match="face_found") as err:
        enroll_recording(
            storage, analyzer, clip, name="Nobody", owner="t", checks=farm_config.enrollment
        )
    assert err.value.report is not None and "resolution" in {
        c.name for c in err.value.report.failed
    }
    assert list(storage.objects.list()) == []


def test_enrollment_refuses_corrupt_and_silent_input(
    farm_config, storage, analyzer, tmp_path, sample_clip
):
    from cameofarm.pipelines.enroll import EnrollmentError, enroll_recording

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(EnrollmentError, match="media"):
        enroll_recording(storage, analyzer, bad, name="X", owner="t", checks=farm_config.enrollment)
    silence = tmp_path / "silence.wav"
    from cameofarm.models.media import write_wav

    write_wav(silence, np.zeros(22050 * 5, np.float32), 22050)
    with pytest.raises(EnrollmentError, match="speech"):
        enroll_recording(
            storage,
            analyzer,
            sample_clip,
            name="X",
            owner="t",
            audio=silence,
            checks=farm_config.enrollment,
        )
    assert list(storage.objects.list()) == []


def test_voice_speaks_the_script_in_the_profile_pitch(storage, cameo):
    import pyworld
    from cameofarm.models.reference.unit_voice import UnitVoiceBackend

    _, voice, _ = _assets(storage, cameo)
    track = UnitVoiceBackend().synthesize("Testing one two three, this is the farm.", voice)
    assert 1.0 < track.duration < 5.0
    assert len(track.phonemes) > 10
    assert all(p.end > p.start for p in track.phonemes)
    # Timings in the one neutral alphabet (IPA, "_" for pauses) and by word.
    symbols = {p.symbol.lstrip("ˈˌ") for p in track.phonemes}
    assert {"θ", "ð", "_"} <= symbols, symbols  # "three", "this", the comma's pause
    words = ["testing", "one", "two", "three", "this", "is", "the", "farm"]
    assert [w.text.lower() for w in track.words] == words
    assert all(a.start <= b.start for a, b in itertools.pairwise(track.words))
    assert track.words[-1].end <= track.duration + 1e-6
    f0, _ = pyworld.dio(track.samples.astype(np.float64), track.sample_rate)
    voiced = f0[f0 > 0]
    assert abs(np.log(np.median(voiced)) - voice.f0_log_mean) < 0.25


def test_emotion_moves_the_voices_pitch_level_and_range_not_its_timing(storage, cameo):
    """Joy speaks higher and livelier, sadness lower and flatter; words keep their timings
    (lip sync follows them). Also for voices that do not vocode through WORLD themselves."""
    import pyworld
    from cameofarm.models.reference.unit_voice import UnitVoiceBackend
    from cameofarm.models.reference.voice import apply_emotion

    _, voice, _ = _assets(storage, cameo)
    backend = UnitVoiceBackend()
    script = "Good morning, and welcome to the safety training."

    def pitch(samples, sr):
        f0, _ = pyworld.dio(samples.astype(np.float64), sr)
        log_f0 = np.log(f0[f0 > 0])
        return float(np.median(log_f0)), float(
            np.percentile(log_f0, 90) - np.percentile(log_f0, 10)
        )

    tracks = {e: backend.synthesize(script, voice, "en", e) for e in ("neutral", "joy", "sad")}
    level = {e: pitch(t.samples, t.sample_rate) for e, t in tracks.items()}
    semitone = np.log(2.0) / 12
    for e, (median, spread) in level.items():  # shown with -s
        print(f"{e}: median F0 {np.exp(median):.0f} Hz, 10-90 % range {spread / semitone:.1f} st")
    assert level["joy"][0] - level["neutral"][0] > 1.0 * semitone, level
    assert level["neutral"][0] - level["sad"][0] > 0.75 * semitone, level
    assert level["joy"][1] > level["neutral"][1] > level["sad"][1], level
    for t in tracks.values():
        assert t.words == tracks["neutral"].words and len(t.samples) == len(
            tracks["neutral"].samples
        )
    with pytest.raises(ValueError, match=r"emotion must be one of neutral, joy, sad"):
        backend.synthesize(script, voice, "en", "angry")
    plain = tracks["neutral"]
    assert apply_emotion(plain.samples, plain.sample_rate, "neutral") is plain.samples
    happier = apply_emotion(plain.samples, plain.sample_rate, "joy")
    assert len(happier) == len(plain.samples)
    assert pitch(happier, plain.sample_rate)[0] - level["neutral"][0] > 1.0 * semitone


def test_a_german_script_is_spoken_in_german_and_kanji_never_spelled(storage, cameo):
    from cameofarm.models.reference.unit_voice import UnitVoiceBackend

    _, voice, _ = _assets(storage, cameo)
    backend = UnitVoiceBackend()
    german = backend.synthesize("Guten Morgen, wie geht es dir?", voice, "de")
    spoken = "".join(p.symbol for p in german.phonemes)
    assert "mˈɔɾɡən" in spoken and "(" not in spoken, spoken  # German "Morgen", no switching
    assert [w.text for w in german.words][:2] == ["Guten", "Morgen"]
    assert german.duration > 1.0
    with pytest.raises(ValueError, match="cannot read"):
        backend.synthesize("今日は安全研修です。", voice, "ja")  # not "Chinese letter" x8


def test_a_voice_profile_of_another_profiler_is_re_derived_not_misread(farm_config, storage, cameo):
    from dataclasses import replace

    from cameofarm.actors.stage import StageActor
    from cameofarm.configs import PoolConfig, StageName
    from cameofarm.storage.fetch import ObjectFetcher

    key = f"{cameo.assets_key}/voice.npz"
    stored = codec.voice_from_bytes(storage.objects.get_bytes(key))
    assert stored.profiler == "world-frames@1"
    foreign = replace(stored, profiler="other-tts@3", f0_log_mean=0.0, mcep=stored.mcep * 0)
    storage.objects.put_bytes(key, codec.voice_to_bytes(foreign))
    actor = StageActor(
        StageName.VOICE,
        PoolConfig(),
        "voice-test",
        storage.keys_dir,
        ObjectFetcher(farm_config.storage, storage.data_dir),
    )
    profile = actor.voice_profile(cameo.assets_key)
    assert profile.profiler == "world-frames@1"
    assert abs(profile.f0_log_mean - stored.f0_log_mean) < 0.05  # from the enrolled speech
    speech, _ = actor.voice("Hello again.", cameo.assets_key)
    assert speech.duration > 0.3


def test_visemes_from_ipa():
    from cameofarm.models.reference.lip_sync import viseme_of

    assert [viseme_of(s) for s in ("_", "m", "ˈɑː", "uː", "ˈiː", "f", "ə")] == [
        "rest",
        "rest",
        "open",
        "round",
        "wide",
        "mid",
        "mid",
    ]


def test_voice_profile_from_real_speech():
    from cameofarm.models.reference.voice import SAMPLE_RATE, analyze_voice

    samples = read_audio(fixture_path("speech_en_60s.wav"), SAMPLE_RATE)
    profile = analyze_voice(samples, SAMPLE_RATE)
    assert profile.speech_seconds > 30
    assert 60 < np.exp(profile.f0_log_mean) < 350


def test_base_video_loops_only_the_usable_footage(tmp_path):
    from cameofarm.models.media import write_video
    from cameofarm.models.reference.base_video import ReferenceBaseVideo, pingpong

    assert [pingpong(i, 4) for i in range(8)] == [0, 1, 2, 3, 2, 1, 0, 1]
    # frame i of the source is a flat grey of level 5*i: the level tells which frame was used
    levels = [np.full((64, 64, 3), 5 * i, np.uint8) for i in range(40)]
    clip = write_video(iter(levels), (64, 64), 25, tmp_path / "ramp.mp4", bitrate_kbps=2000)
    source = PresenterSource(str(clip), 25.0, 40, (0, 0, 64, 64), first_frame=30)

    class Everything:  # flat grey holds no person to segment: keep the whole crop
        def mask(self, frame):
            return np.ones(frame.shape[:2], np.float32)

    base = ReferenceBaseVideo(segmenter=Everything())  # type: ignore[arg-type]
    chunk = base.render(source, None, FrameSpec(128, 128, 25), 0, 0, 25)
    centre = chunk.frames[:, 100, 64, 0].astype(int)  # inside the presenter cut-out
    assert centre.min() >= 5 * 30 - 6  # never shows the challenge part before frame 30
    assert centre.max() <= 5 * 39 + 6 and len(set(centre // 5)) > 5  # and it does move


def _base_chunk(storage, cameo, spec, count=6):
    from cameofarm.models.reference.base_video import ReferenceBaseVideo

    s = cameo.summary
    source = PresenterSource(
        storage.objects.locate(cameo.recording_key),
        s["fps"],
        s["frame_count"],
        tuple(s["presenter_box"]),
    )
    return ReferenceBaseVideo().render(source, None, spec, 0, 0, count)


def test_base_video_swap_and_lip_sync_on_generated_material(storage, cameo, analyzer):
    from cameofarm.models.reference.face_swap import TriangleFaceSwap
    from cameofarm.models.reference.lip_sync import AtlasLipSync, viseme_track
    from cameofarm.models.reference.voice import EspeakEngine

    identity, _, atlas = _assets(storage, cameo)
    spec = FrameSpec(1280, 720, 25)
    chunk = _base_chunk(storage, cameo, spec)
    assert chunk.frames.shape == (6, 720, 1280, 3)
    swapped = TriangleFaceSwap(analyzer).swap(chunk, identity)
    assert swapped.landmarks is not None and not np.isnan(swapped.landmarks).any()
    speech = EspeakEngine().speak("Open wide: aaah.")
    synced = AtlasLipSync(analyzer).sync(swapped, speech, 25, atlas)
    track = viseme_track(speech.phonemes, 25, 6)
    changed = [not np.array_equal(a, b) for a, b in zip(synced.frames, swapped.frames, strict=True)]
    assert len(track) == 6 and any(v != "rest" for v in track)
    # Every frame that shows a speech viseme was re-drawn ...
    assert all(c for c, v in zip(changed, track, strict=True) if v != "rest"), (changed, track)
    # ... and only inside the face: nothing outside the landmarks' box (plus a margin) moved.
    diff = np.abs(synced.frames.astype(int) - swapped.frames.astype(int)).sum(axis=(0, 3))
    points = swapped.landmarks.reshape(-1, 2)
    (x0, y0), (x1, y1) = points.min(0), points.max(0)
    mx, my = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
    outside = np.ones_like(diff, dtype=bool)
    outside[max(0, int(y0 - my)) : int(y1 + my) + 1, max(0, int(x0 - mx)) : int(x1 + mx) + 1] = (
        False
    )
    assert diff[outside].sum() == 0 and diff[~outside].sum() > 0


def test_face_swap_on_real_fixture(analyzer, storage, cameo):
    from cameofarm.models.reference.face_swap import TriangleFaceSwap

    identity, _, _ = _assets(storage, cameo)
    clip = fixture_path("talking_512b_with_audio.mp4")
    frames = np.stack(list(read_frames(clip, [0, 1, 2]).values()))
    out = TriangleFaceSwap(analyzer).swap(VideoChunk(0, 0, frames), identity)
    assert out.landmarks is not None and not np.isnan(out.landmarks).any()
    face = analyzer.detect(frames[0])[0]
    x0, y0, x1, y1 = face.box
    assert np.abs(out.frames[0, y0:y1, x0:x1].astype(int) - frames[0, y0:y1, x0:x1]).mean() > 3


def test_compositor_watermarks_encodes_and_signs(storage, cameo, tmp_path):
    import av
    from cameofarm.models.media import probe_mp4
    from cameofarm.models.reference.compositor import FfmpegCompositor, watermark_mask
    from cameofarm.models.reference.provenance import ensure_signing_chain, verify_mp4
    from cameofarm.models.reference.voice import EspeakEngine

    chain = ensure_signing_chain(tmp_path / "keys")
    spec = FrameSpec(1280, 720, 25, 3000)
    chunk = _base_chunk(storage, cameo, spec, count=25)
    comp = FfmpegCompositor(chain)
    segments = [
        comp.encode(VideoChunk(0, 0, chunk.frames[:13]), spec),
        comp.encode(VideoChunk(1, 13, chunk.frames[13:]), spec),
    ]
    speech = EspeakEngine().speak("One second.")
    data = comp.assemble(segments, speech, spec, ProvenanceClaim("job_t", "plus", (cameo.id,)))
    out = tmp_path / "o.mp4"
    out.write_bytes(data)
    rep = probe_mp4(out)
    assert (rep.width, rep.height, rep.frames) == (1280, 720, 25)
    assert rep.audio_codec == "aac"
    report = verify_mp4(data, chain.root_cert.read_bytes())
    assert report.valid and report.cameo_ids == (cameo.id,) and report.ai_generated
    mask, (x0, y0, x1, y1) = watermark_mask(1280, 720)
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert frame[mask > 128].mean() > 180  # white text
    assert frame[y0:y1, x0:x1][mask[y0:y1, x0:x1] == 0].mean() < 90  # on a dark box
    # tampering breaks the signature
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    assert not verify_mp4(bytes(tampered), chain.root_cert.read_bytes()).valid
    # An output that fails verification is never handed on (so never published): here the
    # leaf is checked against another farm's root.
    from cameofarm.models.media import MediaError
    from cameofarm.models.reference.provenance import SigningChain

    other = ensure_signing_chain(tmp_path / "other-keys")
    wrong = FfmpegCompositor(SigningChain(other.root_cert, chain.leaf_cert, chain.leaf_key))
    with pytest.raises(MediaError, match="failed C2PA verification"):
        wrong.assemble(segments, speech, spec, ProvenanceClaim("job_t", "plus", (cameo.id,)))


def test_probe_rejects_garbage(tmp_path):
    from cameofarm.models.media import MediaError

    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"garbage")
    with pytest.raises(MediaError):
        probe_video(bad)


def test_a_presenters_footage_is_cut_and_masked_once_per_cameo(storage, cameo, tmp_path):
    from cameofarm.models.reference.base_video import ReferenceBaseVideo
    from cameofarm.models.reference.presenters import BLOCK, PresenterCache

    s = cameo.summary
    source = PresenterSource(
        storage.objects.locate(cameo.recording_key),
        s["fps"],
        s["frame_count"],
        tuple(s["presenter_box"]),
        key=cameo.recording_key,
    )
    spec = FrameSpec(640, 360, 25)
    plain = ReferenceBaseVideo().render(source, None, spec, 1, 25, 25)
    base = ReferenceBaseVideo()
    root = tmp_path / "presenters"
    base.presenters = cache = PresenterCache(root, lambda cut: base.segmenter.small_mask(cut))
    first = base.render(source, None, spec, 1, 25, 25)  # frames 25-49: the first block
    assert cache.prepared_blocks == 1 and BLOCK >= 25 + 25
    again = base.render(source, None, spec, 1, 25, 25)  # another job of the same cameo
    assert cache.prepared_blocks == 1  # read, not decoded and segmented again
    assert np.array_equal(first.frames, again.frames)
    # The same picture as cutting and masking each time (JPEG cuts: within a few levels).
    diff = np.abs(first.frames.astype(int) - plain.frames.astype(int))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8
    # A purged cameo's prepared footage goes with it.
    assert cache.forget([f"cameos/{cameo.id}/"]) == 1 and not any(root.iterdir())
    base.render(source, None, spec, 1, 25, 25)
    assert cache.prepared_blocks == 2
