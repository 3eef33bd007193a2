"""The neural backends on tiny weights in their published formats (made by tests/tiny_models):
shapes, placement, caching, manifests, timing rows and errors. The pixels are noise."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest

from tests import tiny_models

pytestmark = pytest.mark.neural
ROLES = {"detector": "scrfd-tiny", "recognizer": "arcface-tiny", "swapper": "inswapper-tiny"}
LIPSYNC = "wav2lip-tiny"
RESTORER = "gfpgan-tiny"
PIPELINE = "wan-tiny"
VOICE = {"spectrogram": "fastpitch-tiny", "vocoder": "hifigan-tiny", "speaker": "titanet-tiny"}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory) -> dict[str, Path]:
    """The three insightface models, one folder each, by role."""
    pytest.importorskip("insightface")
    root = tmp_path_factory.mktemp("tiny")
    return {
        "detector": tiny_models.scrfd(root / "scrfd" / "det_tiny.onnx"),
        "recognizer": tiny_models.arcface(root / "arcface" / "w600k_tiny.onnx"),
        "swapper": tiny_models.inswapper(root / "inswapper" / "inswapper_128.onnx"),
    }


@pytest.fixture(scope="module")
def tiny_wav2lip(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    return tiny_models.wav2lip(tmp_path_factory.mktemp("w2l") / "wav2lip.pth")


@pytest.fixture(scope="module")
def tiny_gfpgan(tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    return tiny_models.gfpgan(tmp_path_factory.mktemp("gfpgan") / "gfpgan_1.4.onnx")


@pytest.fixture(scope="module")
def tiny_wan(tmp_path_factory) -> Path:
    pytest.importorskip("diffusers")
    return tiny_models.wan_pipeline(tmp_path_factory.mktemp("t2v") / "wan")


@pytest.fixture(scope="module")
def tiny_nemo(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("nemo.collections.tts")
    root = tmp_path_factory.mktemp("nemo")
    return {
        "spectrogram": tiny_models.fastpitch(root / "fastpitch" / "fastpitch.nemo"),
        "vocoder": tiny_models.hifigan(root / "hifigan" / "hifigan.nemo"),
        "speaker": tiny_models.titanet(root / "titanet" / "titanet.nemo"),
    }


def _import_models(data_dir: Path, tiny: dict[str, Path]) -> list[str]:
    """Import every tiny model through `cameofarm models import`; return the CLI's output."""
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    env = {"CAMEOFARM__DATA_DIR": str(data_dir)}
    outputs = []
    for role, path in tiny.items():
        out = CliRunner().invoke(
            cli,
            [
                "models",
                "import",
                str(path),
                "--name",
                {**ROLES, **VOICE, "restorer": RESTORER, "pipeline": PIPELINE}.get(role, LIPSYNC),
                "--version",
                "1",
                "--licence",
                "test-only",
                "--source",
                "tests/tiny_models.py",
            ],
            env=env,
        )
        assert out.exit_code == 0, out.output
        outputs.append(out.output)
    return outputs


def _options(models: dict[str, str] | None = None, **extra):
    """The insightface backend's options with every tiny model (or the given ones) at @1."""
    from cameofarm.configs import AnalyzerConfig

    if models is None:
        models = {role: f"{name}@1" for role, name in ROLES.items()}
    return AnalyzerConfig(backend="insightface", models=models, **extra)


def test_the_neural_stack_imports():
    """What `.[neural]` installs: the named stack, CPU torch (no CUDA wheels were pulled)."""
    import diffusers  # noqa: F401
    import insightface  # noqa: F401
    import nemo.collections.asr
    import nemo.collections.tts  # noqa: F401
    import onnxruntime
    import torch

    assert "CPUExecutionProvider" in onnxruntime.get_available_providers()
    assert torch.__version__.startswith("2.13.0")


def test_import_verify_list_and_a_changed_byte(farm_config, tiny_onnx):
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    data_dir = Path(farm_config.data_dir)
    _import_models(data_dir, tiny_onnx)
    env = {"CAMEOFARM__DATA_DIR": str(data_dir)}
    listed = CliRunner().invoke(cli, ["models", "list"], env=env)
    for role, path in tiny_onnx.items():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert f"{ROLES[role]}@1" in listed.output and digest in listed.output, listed.output
    ok = CliRunner().invoke(cli, ["models", "verify", "inswapper-tiny@1"], env=env)
    assert ok.exit_code == 0, ok.output
    stored = next((data_dir / "objects" / "models" / "inswapper-tiny" / "1").rglob("*.onnx"))
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.write_bytes(bytes(data))
    bad = CliRunner().invoke(cli, ["models", "verify", "inswapper-tiny@1"], env=env)
    assert bad.exit_code == 1 and "CORRUPT" in bad.output, bad.output


def test_analyzer_and_swap_load_from_the_store_on_cpu(storage, cameo, tiny_onnx):
    """Models come from the store through the node cache; the analyzer gives 5 points and a
    unit 512-d ArcFace vector tagged with its model; the swap keeps the frame format, reports
    the 5 points it found, and adds the cameo's ArcFace identity from the reference crop."""
    from cameofarm.models import codec
    from cameofarm.models.data import VideoChunk
    from cameofarm.models.media import read_frames
    from cameofarm.models.neural.insightface import InsightfaceAnalyzer, InswapperFaceSwap
    from cameofarm.models.placement import backend_context
    from cameofarm.models.store import ModelStore

    _import_models(storage.data_dir, tiny_onnx)
    store = ModelStore(storage.objects)
    ctx = backend_context(_options(), storage.keys_dir, [], store)
    assert ctx.device == "cpu" and ctx.precision == "fp32"
    assert {m.name for m in ctx.models.values()} == set(ROLES.values())
    for role, m in ctx.models.items():  # verified copies in the node cache, same bytes
        assert m.path(".onnx").read_bytes() == tiny_onnx[role].read_bytes()

    analyzer = InsightfaceAnalyzer(ctx)
    assert analyzer.name == "insightface:arcface-tiny@1" and analyzer.provider == "CPU"
    frame = read_frames(storage.objects.locate(cameo.recording_key), [10])[10]
    faces = analyzer.detect(frame)
    assert len(faces) == 1 and faces[0].points5.shape == (5, 2) == faces[0].landmarks.shape
    emb = analyzer.embed(frame, faces[0])
    assert emb.vector.shape == (512,) and abs(np.linalg.norm(emb.vector) - 1) < 1e-5
    assert emb.analyzer == analyzer.name and emb.metric == "cosine"

    swap = InswapperFaceSwap(ctx)
    identity = codec.identity_from_bytes(
        storage.objects.get_bytes(f"{cameo.assets_key}/identity.npz")
    )
    assert analyzer.name not in identity.embeddings  # enrolled with the reference analyzer only
    prepared = swap.prepare(identity)
    assert prepared.embeddings[analyzer.name].vector.shape == (512,)
    assert "dlib@resnet-v1" in prepared.embeddings  # what enrollment stored is kept
    frames = np.stack([frame] * 3)
    out = swap.swap(VideoChunk(0, 0, frames), prepared)
    assert out.frames.shape == frames.shape and out.frames.dtype == np.uint8
    assert out.landmarks is not None and out.landmarks.shape == (3, 5, 2)
    assert out.landmarks_by == analyzer.name
    assert not np.array_equal(out.frames, frames)  # the face region was replaced ...
    x0, y0, x1, y1 = faces[0].box
    outside = np.ones(frame.shape[:2], bool)
    outside[max(0, y0 - 40) : y1 + 40, max(0, x0 - 40) : x1 + 40] = False
    assert np.array_equal(out.frames[:, outside], frames[:, outside])  # ... and only it


def test_wav2lip_loads_the_published_checkpoint_format_and_redraws_the_lower_face(
    storage, cameo, analyzer, tiny_wav2lip, tmp_path
):
    import torch
    from cameofarm.configs import PoolConfig
    from cameofarm.models.data import VideoChunk
    from cameofarm.models.media import read_frames
    from cameofarm.models.neural.wav2lip import Wav2LipSync, build_network, face_box
    from cameofarm.models.placement import backend_context
    from cameofarm.models.reference.voice import EspeakEngine
    from cameofarm.models.store import ModelStore

    _import_models(storage.data_dir, {"lipsync": tiny_wav2lip})
    pool = PoolConfig(backend="wav2lip", models={"lipsync": f"{LIPSYNC}@1"}, batch_size=4)
    ctx = backend_context(pool, storage.keys_dir, [0], ModelStore(storage.objects))
    sync = Wav2LipSync(ctx, lambda: analyzer)
    assert sync.width == 2 and sync.batch_size == 4 and sync.provider.endswith("cpu fp32")
    # The published network is the same code at width 16.
    assert sum(p.numel() for p in build_network(16).parameters()) == 36_298_035

    clip = storage.objects.locate(cameo.recording_key)
    frames = np.stack(list(read_frames(clip, list(range(10, 16))).values()))
    marks = np.stack([analyzer.detect(f)[0].landmarks for f in frames])
    speech = EspeakEngine().speak("Open wide.")
    # Landmarks of any scheme: dlib's 68, or the 5 points of another analyzer.
    five = np.stack([analyzer.detect(f)[0].points5 for f in frames])
    for landmarks, by in ((marks, "dlib@resnet-v1"), (five, "insightface:x@1")):
        chunk = VideoChunk(0, 10, frames, landmarks, by)
        out = sync.sync(chunk, speech, 25, atlas=None)  # type: ignore[arg-type]
        assert out.frames.shape == frames.shape and out.landmarks_by == by
        for i, frame in enumerate(out.frames):
            x0, y0, x1, y1 = face_box(landmarks[i], frame.shape)
            outside = np.ones(frame.shape[:2], bool)
            outside[y0:y1, x0:x1] = False
            assert np.array_equal(frame[outside], frames[i][outside])  # only the face box
            upper = frame[y0 : y0 + (y1 - y0) // 3, x0:x1]
            assert np.array_equal(upper, frames[i][y0 : y0 + (y1 - y0) // 3, x0:x1])
            assert not np.array_equal(frame[y1 - 10 : y1, x0:x1], frames[i][y1 - 10 : y1, x0:x1])

    # dlib is loaded only for a chunk that carries no landmarks, to find its faces.
    assert sync._analyzer is None
    out = sync.sync(VideoChunk(0, 10, frames), speech, 25, atlas=None)  # type: ignore[arg-type]
    assert sync._analyzer is analyzer and not np.array_equal(out.frames, frames)

    from cameofarm.models.neural.wav2lip import load_network

    bogus = tmp_path / "bogus.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}}, str(bogus))
    with pytest.raises(ValueError, match="not a Wav2Lip checkpoint"):
        load_network(str(bogus), "cpu", "fp32")
    state = torch.load(str(tiny_wav2lip), weights_only=True)["state_dict"]
    state.pop("module.output_block.1.bias")
    torch.save({"state_dict": state}, str(bogus))
    with pytest.raises(ValueError, match="does not match the Wav2Lip network"):
        load_network(str(bogus), "cpu", "fp32")


def test_restoring_compositor_restores_the_faces_only_then_composites(
    storage, cameo, analyzer, tiny_gfpgan, tiny_onnx, tmp_path
):
    """The composite stage's gfpgan backend: the published restorer format from the store,
    each face aligned by 5 points (carried as 5 or 68, or found when the chunk carries none),
    only the face's surroundings changed; then the reference's watermark and encoding. A model
    of another signature is refused, naming it."""
    from cameofarm.configs import PoolConfig, StageName
    from cameofarm.models.data import FrameSpec, VideoChunk
    from cameofarm.models.media import read_frames
    from cameofarm.models.neural.gfpgan import RestoringCompositor
    from cameofarm.models.placement import backend_context
    from cameofarm.models.registry import build_backend
    from cameofarm.models.store import ModelStore

    _import_models(
        storage.data_dir, {"restorer": tiny_gfpgan, "recognizer": tiny_onnx["recognizer"]}
    )
    store = ModelStore(storage.objects)
    pool = PoolConfig(backend="gfpgan", models={"restorer": f"{RESTORER}@1"})
    ctx = backend_context(pool, storage.keys_dir, [], store)
    restorer = build_backend(StageName.COMPOSITE, "gfpgan", ctx)
    assert isinstance(restorer, RestoringCompositor)
    assert (restorer.size, restorer.batch, restorer.provider) == (512, 1, "CPU")

    clip = storage.objects.locate(cameo.recording_key)
    frames = np.stack(list(read_frames(clip, [10, 11]).values()))
    faces = [analyzer.detect(f)[0] for f in frames]
    blank = np.full_like(frames[0], 90)
    frames = np.concatenate([frames, blank[None]])  # a frame without a face
    nan = np.full((1, 68, 2), np.nan, np.float32)
    sixty_eight = np.concatenate([np.stack([f.landmarks for f in faces]), nan])
    five = np.concatenate([np.stack([f.points5 for f in faces]), nan[:, :5]])
    for chunk in (
        VideoChunk(0, 10, frames, sixty_eight, "dlib@resnet-v1"),
        VideoChunk(0, 10, frames, five, "insightface:x@1"),
        VideoChunk(0, 10, frames),  # none carried: found by the reference analyzer
    ):
        out = restorer.restore(chunk)
        assert out.shape == frames.shape and out.dtype == np.uint8
        assert np.array_equal(out[2], frames[2])  # no face: unchanged
        for i, face in enumerate(faces):
            x0, y0, x1, y1 = face.box
            w, h = x1 - x0, y1 - y0
            outside = np.ones(frames.shape[1:3], bool)
            outside[max(0, y0 - h // 2) : y1 + h // 2, max(0, x0 - w // 2) : x1 + w // 2] = False
            assert np.array_equal(out[i][outside], frames[i][outside])  # only around the face
            centre = out[i][y0 + h // 3 : y1 - h // 3, x0 + w // 3 : x1 - w // 3].astype(int)
            before = frames[i][y0 + h // 3 : y1 - h // 3, x0 + w // 3 : x1 - w // 3]
            assert np.abs(centre - before).mean() > 1.0  # the face itself went through it

    spec = FrameSpec(width=frames.shape[2], height=frames.shape[1], fps=25)
    segment = restorer.encode(VideoChunk(0, 0, frames, sixty_eight, "dlib@resnet-v1"), spec)
    assert len(segment) > 1000  # an H.264 chunk, as the reference encodes

    wrong = PoolConfig(backend="gfpgan", models={"restorer": "arcface-tiny@1"})
    with pytest.raises(ValueError, match=r"arcface-tiny@1 is not a face restoration network"):
        build_backend(
            StageName.COMPOSITE, "gfpgan", backend_context(wrong, storage.keys_dir, [], store)
        )


def test_nemo_voice_speaks_from_the_cameos_reference_with_word_and_ipa_timings(
    farm_config, storage, cameo, tiny_nemo
):
    from cameofarm.actors.stage import StageActor
    from cameofarm.configs import PoolConfig, StageName
    from cameofarm.models import codec
    from cameofarm.models.data import SpeakerReference
    from cameofarm.models.neural.nemo import NemoVoice
    from cameofarm.models.placement import backend_context
    from cameofarm.models.reference.voice import EspeakEngine
    from cameofarm.models.store import ModelStore
    from cameofarm.storage.fetch import ObjectFetcher

    _import_models(storage.data_dir, tiny_nemo)
    models = {role: f"{VOICE[role]}@1" for role in ("spectrogram", "vocoder")}
    pool = PoolConfig(backend="nemo", models=models)
    voice = NemoVoice(backend_context(pool, storage.keys_dir, [], ModelStore(storage.objects)))
    assert voice.profiler.name == "nemo-reference:fastpitch-tiny@1"

    # The cameo's voice.npz was made by the reference (WORLD) profiler at enrollment: the
    # replica derives its own profile from the enrolled speech instead of misreading it.
    actor = StageActor(
        StageName.VOICE, pool, "voice-nemo", storage.keys_dir,
        ObjectFetcher(farm_config.storage, storage.data_dir),
    )  # fmt: skip
    profile = actor.voice_profile(cameo.assets_key)
    assert isinstance(profile, SpeakerReference) and profile.profiler == voice.profiler.name
    assert profile.mel.shape[0] == 80 and profile.mel.shape[1] > 100
    assert codec.voice_from_bytes(codec.voice_to_bytes(profile)).mel.shape == profile.mel.shape

    track, timing = actor.voice("Hello there, nice to meet you.", cameo.assets_key)
    assert track.sample_rate == 22050 and timing.replica == "voice-nemo"
    assert [w.text for w in track.words] == ["hello", "there", "nice", "to", "meet", "you"]
    assert all(a.end <= b.start + 1e-6 for a, b in itertools.pairwise(track.words))
    assert 0 <= track.duration - track.words[-1].end < 0.2  # then the final stop's pause
    symbols = [p.symbol for p in track.phonemes]
    assert "_" in symbols and {"h", "ð", "n", "m"} <= {s.lstrip("ˈˌ") for s in symbols}, symbols
    # The reference conditions the voice: another speaker's reference, other audio.
    other = voice.profiler.profile(*_espeak(EspeakEngine))
    again = voice.synthesize("Hello there, nice to meet you.", other)
    assert not np.allclose(again.samples[: len(track.samples)], track.samples[: len(again.samples)])
    with pytest.raises(ValueError, match="needs a nemo-reference:fastpitch-tiny@1 profile"):
        voice.synthesize("Hello.", codec.voice_from_bytes(
            storage.objects.get_bytes(f"{cameo.assets_key}/voice.npz")))  # fmt: skip


def test_titanet_checks_enrollment_stores_its_embedding_and_scores_outputs(
    farm_config, storage, sample_clip, tiny_nemo
):
    from cameofarm.configs import AnalyzerConfig
    from cameofarm.pipelines.enroll import EnrollmentError, enroll_recording
    from cameofarm.pipelines.extractors import farm_extractors

    _import_models(storage.data_dir, tiny_nemo)

    def enroll(same_person: float):
        speaker = AnalyzerConfig(
            backend="nemo", models={"speaker": "titanet-tiny@1"}, same_person=same_person
        )
        enrollment = farm_config.enrollment.model_copy(update={"speaker_encoder": speaker})
        config = farm_config.model_copy(update={"enrollment": enrollment})
        extractors = farm_extractors(config, storage)
        assert extractors.speaker.name == "titanet:titanet-tiny@1"
        return enroll_recording(
            storage, extractors, sample_clip, name="Spk", owner="tester", checks=enrollment
        )

    # Any two speech stretches further apart than the encoder's threshold: refused, by name.
    keys = set(storage.objects.list())
    with pytest.raises(EnrollmentError, match=r"titanet:titanet-tiny@1 distance"):
        enroll(1e-9)
    assert set(storage.objects.list()) == keys
    record = enroll(2.0)  # (cosine distance is at most 2: every stretch is one speaker)
    voice = record.summary["voices"]["titanet:titanet-tiny@1"]
    assert len(voice) == 192 and abs(np.linalg.norm(voice) - 1) < 1e-3

    # Every output's "sounds like the cameo" score is TitaNet's too, against the stored vector.
    from cameofarm.models.reference.speech import similarity
    from cameofarm.models.reference.voice import plain_speech
    from cameofarm.pipelines import quality
    from cameofarm.storage.fetch import ObjectFetcher

    speaker = AnalyzerConfig(backend="nemo", models={"speaker": "titanet-tiny@1"})
    enrollment = farm_config.enrollment.model_copy(update={"speaker_encoder": speaker})
    script = "The quarterly safety briefing starts in the main hall at nine."
    output = plain_speech(script, "en")
    fetcher = ObjectFetcher(farm_config.storage, storage.data_dir)
    cameo = quality.EnrolledVoice.of(record)
    report = quality.measure_voice(fetcher, enrollment, output, script, "en", cameo)
    assert report["encoder"] == "titanet:titanet-tiny@1", report
    _, titanet = quality._encoder(fetcher, enrollment)
    mine = titanet.embed(output.samples, output.sample_rate)
    assert report["to_cameo"] == pytest.approx(similarity(mine, np.asarray(voice)), abs=1e-3)
    assert 0.0 <= report["words_recovered"] <= 1.0


def _espeak(engine_cls):
    speech = engine_cls().speak("A different voice reads a different sentence for the reference.")
    return speech.samples, speech.sample_rate


def test_models_of_the_wrong_kind_or_missing_roles_are_refused(storage, tiny_onnx):
    from cameofarm.models.neural.insightface import InsightfaceAnalyzer
    from cameofarm.models.placement import backend_context
    from cameofarm.models.store import ModelStore

    _import_models(storage.data_dir, tiny_onnx)
    store = ModelStore(storage.objects)
    swapped = _options(models={"detector": "arcface-tiny@1", "recognizer": "arcface-tiny@1"})
    ctx = backend_context(swapped, storage.keys_dir, [], store)
    with pytest.raises(ValueError, match="is ArcFaceONNX, not SCRFD"):
        InsightfaceAnalyzer(ctx)
    ctx = backend_context(
        _options(models={"detector": "scrfd-tiny@1"}), storage.keys_dir, [], store
    )
    with pytest.raises(ValueError, match="needs a 'recognizer' model"):
        InsightfaceAnalyzer(ctx)


def test_enrolling_with_insightface_stores_512_beside_128_and_compares_like_with_like(
    farm_config, storage, sample_clip, tiny_onnx
):
    from cameofarm.cameos.protected import add_protected
    from cameofarm.configs import AnalyzerConfig
    from cameofarm.models import codec
    from cameofarm.models.data import IdentityEmbedding
    from cameofarm.pipelines.enroll import EnrollmentError, enroll_recording
    from cameofarm.pipelines.extractors import closest_match, farm_extractors, identities_of

    _import_models(storage.data_dir, tiny_onnx)
    enrollment = farm_config.enrollment.model_copy(
        update={"analyzers": [AnalyzerConfig(), _options()]}
    )
    config = farm_config.model_copy(update={"enrollment": enrollment})
    extractors = farm_extractors(config, storage)
    assert [a.name for a in extractors.analyzers] == [
        "dlib@resnet-v1",
        "insightface:arcface-tiny@1",
    ]
    record = enroll_recording(
        storage, extractors, sample_clip, name="Two analyzers", owner="tester", checks=enrollment
    )
    stored = identities_of(record.summary)
    assert {t: e.vector.shape for t, e in stored.items()} == {
        "dlib@resnet-v1": (128,),
        "insightface:arcface-tiny@1": (512,),
    }
    identity = codec.identity_from_bytes(
        storage.objects.get_bytes(f"{record.assets_key}/identity.npz")
    )
    assert set(identity.embeddings) == set(stored)

    # Never compared across analyzers: a 512-d ArcFace vector and a 128-d dlib vector share
    # no analyzer, so nothing matches, and comparing them directly is an error.
    arc, dlib = stored["insightface:arcface-tiny@1"], stored["dlib@resnet-v1"]
    assert closest_match({arc.analyzer: arc}, {dlib.analyzer: dlib}) is None
    with pytest.raises(ValueError, match="different analyzers"):
        arc.distance(dlib)

    # A protected likeness known only by its ArcFace vector is still caught, through ArcFace.
    keys = set(storage.objects.list())
    add_protected(storage.db, "Known by ArcFace only", {arc.analyzer: arc.vector.tolist()})
    with pytest.raises(EnrollmentError, match="protected likeness"):
        enroll_recording(
            storage, extractors, sample_clip, name="X", owner="tester", checks=enrollment
        )
    assert set(storage.objects.list()) == keys  # refused: nothing stored

    # Another owner's cameo enrolled before ArcFace was configured (dlib only) is matched
    # through the analyzer both have.
    only_dlib = {dlib.analyzer: IdentityEmbedding(dlib.analyzer, dlib.vector, "euclidean", 0.62)}
    assert closest_match(stored, only_dlib) == ("dlib@resnet-v1", 0.0)


def test_enrollment_naming_a_missing_model_says_so_and_how_to_import_it(tmp_path, sample_clip):
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    config = tmp_path / "config"
    config.mkdir()
    (config / "enrollment.yaml").write_text(
        "enrollment:\n  analyzers:\n    - backend: reference\n    - backend: insightface\n"
        "      models: {detector: scrfd-tiny, recognizer: arcface-tiny}\n"
    )
    env = {"CAMEOFARM__DATA_DIR": str(tmp_path / "farm")}
    out = CliRunner().invoke(
        cli, ["--config", str(config), "enroll", "check", str(sample_clip)], env=env
    )
    assert out.exit_code == 1, out.output
    assert "enrollment cannot run" in out.output and "cameofarm models import" in out.output


def test_backfill_gives_earlier_cameos_the_new_analyzers_identity(
    farm_config, storage, cameo, tiny_onnx, tmp_path
):
    from cameofarm.cameos import get_cameo
    from cameofarm.models import codec
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    _import_models(storage.data_dir, tiny_onnx)
    config = tmp_path / "config"
    config.mkdir()
    (config / "enrollment.yaml").write_text(
        "enrollment:\n  analyzers:\n    - backend: reference\n    - backend: insightface\n"
        "      models: {detector: scrfd-tiny@1, recognizer: arcface-tiny@1}\n"
    )
    env = {
        "CAMEOFARM__DATA_DIR": farm_config.data_dir,
        "CAMEOFARM__DATABASE__URL": farm_config.database.url,
    }
    run = CliRunner().invoke
    assert list(cameo.summary["identities"]) == ["dlib@resnet-v1"]
    out = run(cli, ["--config", str(config), "enroll", "backfill"], env=env)
    assert out.exit_code == 0 and f"{cameo.id}: added insightface:arcface-tiny@1" in out.output, (
        out.output
    )
    after = get_cameo(storage.db, cameo.id)
    assert (
        after.summary["identities"]["dlib@resnet-v1"]
        == cameo.summary["identities"]["dlib@resnet-v1"]
    )
    assert len(after.summary["identities"]["insightface:arcface-tiny@1"]["vector"]) == 512
    identity = codec.identity_from_bytes(
        storage.objects.get_bytes(f"{cameo.assets_key}/identity.npz")
    )
    assert set(identity.embeddings) == {"dlib@resnet-v1", "insightface:arcface-tiny@1"}
    again = run(cli, ["--config", str(config), "enroll", "backfill"], env=env)
    assert again.exit_code == 0 and f"{cameo.id}: complete" in again.output, again.output
    unknown = run(
        cli, ["--config", str(config), "enroll", "backfill", "--cameo", "cam_nope"], env=env
    )
    assert unknown.exit_code == 1 and "cam_nope: FAILED" in unknown.output, unknown.output


def test_the_first_analyzer_must_give_the_checks_their_68_landmarks(
    farm_config, storage, tiny_onnx
):
    from cameofarm.pipelines.extractors import farm_extractors

    _import_models(storage.data_dir, tiny_onnx)
    enrollment = farm_config.enrollment.model_copy(update={"analyzers": [_options()]})
    with pytest.raises(ValueError, match="need 68-point landmarks"):
        farm_extractors(farm_config.model_copy(update={"enrollment": enrollment}), storage)


@pytest.mark.integration
def test_farm_switches_to_its_neural_backends_and_renders(
    farm_config, storage, cameo, tiny_onnx, tiny_wav2lip, tiny_nemo, tiny_gfpgan, tiny_wan, tmp_path
):
    """A farm up on the reference backends; every pool switched to its neural backend (voice
    to NeMo, base video to diffusers, face swap to insightface, lip sync to wav2lip,
    compositing to gfpgan) refuses to start while their models are missing (the old pools keep
    serving), starts once they are imported (status names backend, models, device and
    provider), renders a Plus prompt job (the scene generated) to a valid MP4 with timing rows
    for each and TitaNet's voice report, and refuses a corrupt model version at `up`."""
    from cameofarm.cluster.bootstrap import FarmError, farm_down, farm_status, farm_up
    from cameofarm.cluster.jobs import JobStatus
    from cameofarm.configs import AnalyzerConfig, PoolConfig, StageName
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.service.cli import cli
    from cameofarm.service.jobs_api import submit_render, wait_for_job
    from cameofarm.storage.db import StageTimingRow
    from click.testing import CliRunner

    def replicas(config, stage):
        return [p for p in farm_status(config)["pools"] if p["stage"] == stage]

    def with_neural(swapper: str = "inswapper-tiny@1"):
        pools = dict(farm_config.pools)
        pools[StageName.FACE_SWAP] = PoolConfig(
            replicas=1, backend="insightface", models={**_options().models, "swapper": swapper}
        )
        pools[StageName.LIP_SYNC] = PoolConfig(
            backend="wav2lip", models={"lipsync": f"{LIPSYNC}@1"}, batch_size=8
        )
        pools[StageName.VOICE] = PoolConfig(
            backend="nemo", models={r: f"{VOICE[r]}@1" for r in ("spectrogram", "vocoder")}
        )
        pools[StageName.COMPOSITE] = PoolConfig(
            replicas=1, backend="gfpgan", models={"restorer": f"{RESTORER}@1"}
        )
        pools[StageName.BASE_VIDEO] = PoolConfig(
            backend="diffusers", models={"pipeline": f"{PIPELINE}@1"}
        )
        small = {"width": 160, "height": 96, "fps": 8, "seconds": 1.5, "steps": 2}  # CPU-quick
        scenes = farm_config.prompt_scenes.model_copy(update=small)
        # TitaNet scores every output's voice (the cameo was enrolled with GE2E: the measuring
        # process embeds its stored speech)
        speaker = AnalyzerConfig(backend="nemo", models={"speaker": f"{VOICE['speaker']}@1"})
        enrollment = farm_config.enrollment.model_copy(update={"speaker_encoder": speaker})
        update = {"pools": pools, "enrollment": enrollment, "prompt_scenes": scenes}
        return farm_config.model_copy(update=update)

    neural = with_neural()
    try:
        farm_up(farm_config, progress=lambda _: None)
        assert {p["backend"] for p in replicas(farm_config, "face_swap")} == {"reference"}

        # 1. Models missing: refused before any replica changes, naming each model.
        with pytest.raises(FarmError) as refused:
            farm_up(neural, progress=lambda _: None)
        needed = [*ROLES.values(), LIPSYNC, VOICE["spectrogram"], VOICE["vocoder"], RESTORER]
        for name in [*needed, PIPELINE]:
            assert name in str(refused.value)
        assert "cameofarm models import PATH --name scrfd-tiny --version 1" in str(refused.value)
        assert {p["backend"] for p in replicas(farm_config, "face_swap")} == {"reference"}

        # 2. Imported: `up` replaces the replicas and the new backends serve.
        tiny = {
            **tiny_onnx,
            "lipsync": tiny_wav2lip,
            **tiny_nemo,
            "restorer": tiny_gfpgan,
            "pipeline": tiny_wan,
        }
        _import_models(storage.data_dir, tiny)
        lines: list[str] = []
        farm_up(neural, progress=lines.append)
        neural_pools = (
            ("voice", "nemo"),
            ("face_swap", "insightface"),
            ("lip_sync", "wav2lip"),
            ("composite", "gfpgan"),
            ("base_video", "diffusers"),
        )
        for name, backend in neural_pools:
            wanted = f"cameofarm-{name}-0: replaced (backend 'reference' → '{backend}'"
            assert any(wanted in x for x in lines), lines
        (swap,) = replicas(neural, "face_swap")
        assert (swap["backend"], swap["device"], swap["provider"]) == ("insightface", "cpu", "CPU")
        assert swap["models"] == {role: f"{n}@1" for role, n in ROLES.items()}
        (lips,) = replicas(neural, "lip_sync")
        assert lips["backend"] == "wav2lip" and lips["models"] == {"lipsync": f"{LIPSYNC}@1"}
        assert lips["device"] == "cpu" and lips["provider"].startswith("torch ")
        (voice,) = replicas(neural, "voice")
        assert voice["backend"] == "nemo" and voice["provider"].startswith("nemo torch")
        assert voice["models"] == {"spectrogram": "fastpitch-tiny@1", "vocoder": "hifigan-tiny@1"}
        (composite,) = replicas(neural, "composite")
        assert composite["backend"] == "gfpgan" and composite["provider"] == "CPU"
        assert composite["models"] == {"restorer": f"{RESTORER}@1"}
        env = {
            "CAMEOFARM__DATA_DIR": neural.data_dir,
            "CAMEOFARM__DATABASE__URL": neural.database.url,
        }
        shown = CliRunner().invoke(cli, ["status"], env=env)
        assert "backend=insightface detector=scrfd-tiny@1" in shown.output, shown.output
        assert "device=cpu provider=CPU" in shown.output, shown.output
        assert f"backend=wav2lip lipsync={LIPSYNC}@1 device=cpu provider=torch" in shown.output

        # 3. A Plus prompt render through them (the generated noise holds nobody: the cameo
        # presents in front of it).
        from cameofarm.pipelines.prompt_scenes import ScenePrompt

        prompt = ScenePrompt("a person talking in a garden", "wide", "joy", 7)
        script = "Hello from the neural pools."
        job = submit_render(neural, storage, [cameo.id], script, "plus", "tester", prompt=prompt)
        done = wait_for_job(storage, job.id, timeout=900)
        assert done.status is JobStatus.SUCCEEDED, done.error
        assert done.quality["scene"]["generator"] == f"{PIPELINE}@1"
        root = (storage.keys_dir / "root.pem").read_bytes()
        assert verify_mp4(storage.objects.get_bytes(done.output_key), root).valid
        voice_report = done.quality["voice"]
        assert voice_report["encoder"] == "titanet:titanet-tiny@1", voice_report
        assert -1.0 <= voice_report["to_cameo"] <= 1.0 and voice_report["speech_seconds"] > 0
        with storage.db.session() as s:
            for stage in ("voice", "base_video", "face_swap", "lip_sync", "composite"):
                rows = s.query(StageTimingRow).filter_by(job_id=job.id, stage=stage).all()
                assert rows and (stage == "voice" or sum(r.frames for r in rows) > 0), stage

        # 4. A corrupt version: the replica refuses to start, naming the file and the fix.
        # (other weights than version 1: the node cache holds version 1's blob by sha256)
        bad = tiny_models.inswapper(tmp_path / "bad" / "inswapper_128.onnx", seed=7)
        from cameofarm.models.store import ModelStore

        ModelStore(storage.objects).import_path(bad, "inswapper-tiny", "2")
        stored = next(
            (storage.data_dir / "objects" / "models" / "inswapper-tiny" / "2").rglob("*.onnx")
        )
        data = bytearray(stored.read_bytes())
        data[100] ^= 0xFF
        stored.write_bytes(bytes(data))
        with pytest.raises(FarmError, match=r"inswapper_128.onnx is corrupt in the store"):
            farm_up(with_neural("inswapper-tiny@2"), progress=lambda _: None)
    finally:
        farm_down(farm_config, progress=lambda _: None)
