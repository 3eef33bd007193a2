"""Prompt scenes: a job's prompt and controls are checked at submit, a text-to-video model
(diffusers: Wan or LTX-Video, tiny weights made here) generates the scene, and the farm casts
the cameo onto the generated person, or presents the cameo in front of a scene with nobody
in it. With tiny weights the generated pixels are noise (a scene with nobody in it); the
one-person and several-people paths are checked with scene generators that return real
footage (the contract's other implementations, below)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cameofarm.models.data import GenerationRequest
from cameofarm.models.media import read_frames
from cameofarm.pipelines.prompt_scenes import (
    EMOTIONS,
    FRAMINGS,
    GENERATED_PREFIX,
    PromptError,
    ScenePrompt,
    check_prompt,
    prepare_prompt_scene,
)
from cameofarm.pipelines.scenes import SceneError

from tests import tiny_models

TINY = {  # prompt_scenes settings a CPU generates in seconds with the tiny pipelines
    "CAMEOFARM__PROMPT_SCENES__WIDTH": "160",
    "CAMEOFARM__PROMPT_SCENES__HEIGHT": "96",
    "CAMEOFARM__PROMPT_SCENES__FPS": "8",
    "CAMEOFARM__PROMPT_SCENES__SECONDS": "1.5",
    "CAMEOFARM__PROMPT_SCENES__STEPS": "2",
}


def _request(seed: int = 3, frames: int = 12, width: int = 160, height: int = 96):
    return GenerationRequest(
        "a person talking in an office. medium shot",
        "blurry",
        width,
        height,
        frames,
        8,
        2,
        3.0,
        seed,
    )


class ClipGenerator:
    """A scene generator that returns real footage (to check what the farm does with a scene
    that shows one person, or several) and counts its calls."""

    name = "footage@1"

    def __init__(self, frames: list[np.ndarray], sha256: str) -> None:
        self.frames = np.stack(frames)
        self.sha256 = sha256
        self.calls = 0

    def generate(self, request: GenerationRequest) -> np.ndarray:
        self.calls += 1
        return self.frames


def test_a_prompt_is_checked_and_read_with_its_controls():
    prompt = check_prompt("  a nurse\nin a bright ward  ", "close-up", "joy", 42, 500)
    assert prompt == ScenePrompt("a nurse in a bright ward", "close-up", "joy", 42)
    text = prompt.pipeline_text()
    assert text.startswith("a nurse in a bright ward. ")
    assert FRAMINGS["close-up"] in text and EMOTIONS["joy"] in text
    assert ScenePrompt.from_json(json.loads(json.dumps(prompt.to_json()))) == prompt
    for bad, match in [
        (("x", "medium", "neutral", 0), "3 to 500"),
        (("a" * 501, "medium", "neutral", 0), "501 characters"),
        (("a room\x07", "medium", "neutral", 0), "control characters"),
        (("a room", "aerial", "neutral", 0), "framing must be one of close-up, medium, wide"),
        (("a room", "medium", "angry", 0), "emotion must be one of neutral, joy, sad"),
        (("a room", "medium", "neutral", -1), "seed must be a whole number"),
        (("a room", "medium", "neutral", True), "seed must be a whole number"),
        ((None, "medium", "neutral", 0), "prompt must be text"),
    ]:
        with pytest.raises(PromptError, match=match):
            check_prompt(*bad, 500)


def test_the_cli_refuses_prompt_controls_without_a_prompt(tmp_path):
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    args = ["submit", "--cameo", "cam_x", "--script", "Hello.", "--framing", "wide"]
    out = CliRunner().invoke(cli, args, env={"CAMEOFARM__DATA_DIR": str(tmp_path)})
    assert out.exit_code == 1 and "shape a --prompt scene; add --prompt TEXT" in out.output


def test_submit_refuses_a_prompt_the_farm_cannot_generate_or_its_policy_forbids(
    farm_config, storage, cameo
):
    from cameofarm.cluster.jobs import JobError, list_jobs, submit_job
    from cameofarm.configs import PoolConfig, StageName

    prompt = ScenePrompt("a person in a quiet library")
    ask = {"cameo_ids": [cameo.id], "script": "Hello there.", "tier": "plus", "customer": "tester"}
    with pytest.raises(JobError, match=r"cannot generate scenes from prompts.*reference backend"):
        submit_job(storage.db, farm_config, **ask, prompt=prompt)

    pools = {**farm_config.pools, StageName.BASE_VIDEO: PoolConfig(backend="diffusers")}
    generating = farm_config.model_copy(update={"pools": pools})
    with pytest.raises(JobError, match=r"name one of a scene .*, a prompt .* or a background"):
        submit_job(storage.db, generating, **ask, prompt=prompt, scene_id="scn_x")
    blocked = generating.content.blocked[0]
    phrase = next(iter(generating.content.rules[blocked].phrases))
    with pytest.raises(JobError, match=r"the prompt was refused by the content policy"):
        submit_job(storage.db, generating, **ask, prompt=ScenePrompt(f"a room, {phrase}"))
    assert list_jobs(storage.db) == []  # nothing queued by a refusal

    job = submit_job(storage.db, generating, **ask, prompt=prompt, client_token="t1")
    assert job.prompt == prompt.to_json()
    again = submit_job(storage.db, generating, **ask, prompt=prompt, client_token="t1")
    assert again.replayed and again.id == job.id
    other = ScenePrompt("a person in a quiet library", seed=1)
    from cameofarm.cluster.jobs import IdempotencyConflict

    with pytest.raises(IdempotencyConflict):  # another seed is another request
        submit_job(storage.db, generating, **ask, prompt=other, client_token="t1")


def test_a_generated_scene_with_one_person_is_cast_and_one_with_two_is_refused(
    storage, analyzer, sample_clip
):
    faces = [read_frames(sample_clip, [k])[k] for k in range(60, 90)]
    one = ClipGenerator(faces, "a" * 64)
    scene = prepare_prompt_scene(one, analyzer, storage.objects, _request(frames=len(faces)))
    assert scene["kind"] == "template" and scene["generator"] == "footage@1"
    assert scene["frame_count"] == len(faces) and scene["id"].startswith("gen_")
    assert scene["clip_key"].startswith(f"{GENERATED_PREFIX}/")
    from cameofarm.models import codec

    track = codec.scene_track_from_bytes(storage.objects.get_bytes(scene["track_key"]))
    assert track.landmarks.shape == (len(faces), 68, 2) and track.found.mean() >= 0.9
    # The same request again: found in the store, not generated again.
    assert (
        prepare_prompt_scene(one, analyzer, storage.objects, _request(frames=len(faces))) == scene
    )
    assert one.calls == 1

    two = ClipGenerator([np.hstack([f, f[:, ::-1]]) for f in faces], "b" * 64)
    with pytest.raises(SceneError, match=r"2 faces appear.*Reword the prompt .* another seed"):
        prepare_prompt_scene(two, analyzer, storage.objects, _request(frames=len(faces)))
    # The refused scene left nothing behind: only the first one is stored.
    assert len({k.split("/")[1] for k in storage.objects.list(f"{GENERATED_PREFIX}/")}) == 1


@pytest.fixture(scope="module")
def tiny_pipelines(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("t2v")
    return {
        "wan-tiny": tiny_models.wan_pipeline(root / "wan"),
        "ltx-tiny": tiny_models.ltx_pipeline(root / "ltx"),
    }


def _import(data_dir: Path, name: str, folder: Path) -> str:
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    out = CliRunner().invoke(
        cli,
        ["models", "import", str(folder), "--name", name, "--version", "1", "--licence",
         "test-only", "--source", "tests/tiny_models.py"],
        env={"CAMEOFARM__DATA_DIR": str(data_dir)},
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    return out.output


@pytest.mark.neural
def test_wan_and_ltx_pipelines_load_from_the_store_and_generate_the_asked_clip(
    storage, tiny_pipelines
):
    """Both families load from a `save_pretrained` folder imported into the model store; a
    request is rounded up to the pipeline's size rules and cut back; a seed gives one clip."""
    from cameofarm.configs import PoolConfig
    from cameofarm.models.neural.diffusers_video import DiffusersBaseVideo
    from cameofarm.models.placement import backend_context
    from cameofarm.models.store import ModelStore

    for name, folder in tiny_pipelines.items():
        _import(storage.data_dir, name, folder)
        options = PoolConfig(backend="diffusers", models={"pipeline": f"{name}@1"})
        ctx = backend_context(options, storage.keys_dir, [], ModelStore(storage.objects))
        backend = DiffusersBaseVideo(ctx)
        generator = backend.generator
        assert generator.name == f"{name}@1" and generator.sha256 == ctx.models["pipeline"].sha256
        family = {"wan-tiny": "WanPipeline", "ltx-tiny": "LTXPipeline"}[name]
        assert backend.provider.startswith("diffusers ") and family in backend.provider
        clip = generator.generate(_request(frames=10, width=150, height=90))
        assert clip.shape == (10, 90, 150, 3) and clip.dtype == np.uint8
        assert clip.std() > 0  # frames, not a blank
        assert np.array_equal(clip, generator.generate(_request(frames=10, width=150, height=90)))
        other = generator.generate(_request(seed=4, frames=10, width=150, height=90))
        assert not np.array_equal(clip, other)


@pytest.mark.neural
def test_a_pipeline_of_another_kind_is_refused_naming_it(storage, tmp_path):
    pytest.importorskip("diffusers")
    from cameofarm.configs import PoolConfig
    from cameofarm.models.neural.diffusers_video import DiffusersBaseVideo
    from cameofarm.models.placement import backend_context
    from cameofarm.models.store import ModelStore

    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.bin").write_bytes(b"\0" * 64)
    _import(storage.data_dir, "not-a-pipeline", tmp_path / "weights")
    options = PoolConfig(backend="diffusers", models={"pipeline": "not-a-pipeline@1"})
    ctx = backend_context(options, storage.keys_dir, [], ModelStore(storage.objects))
    with pytest.raises(ValueError, match=r"no model_index.json: import the folder a diffusers"):
        DiffusersBaseVideo(ctx)


@pytest.mark.neural
def test_a_prompt_job_renders_end_to_end_with_a_tiny_wan_pipeline(
    farm_config, storage, cameo, tiny_pipelines
):
    """A farm whose base-video pool runs the diffusers backend on the tiny Wan pipeline
    renders a Plus prompt job: the (noise) scene has nobody in it, so the cameo presents in
    front of it; the C2PA manifest names the prompt, model and seed; the same prompt again
    reuses the generated scene."""
    from cameofarm.cluster.bootstrap import farm_down, farm_status, farm_up
    from cameofarm.cluster.jobs import JobStatus
    from cameofarm.configs import PoolConfig, StageName, load_config
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.service.jobs_api import submit_render, wait_for_job
    from cameofarm.storage.db import StageTimingRow

    _import(storage.data_dir, "wan-tiny", tiny_pipelines["wan-tiny"])
    env = {
        "CAMEOFARM__DATA_DIR": farm_config.data_dir,
        "CAMEOFARM__DATABASE__URL": farm_config.database.url,
        "CAMEOFARM__ENROLLMENT__MIN_SPEECH_SECONDS": "4",
        **TINY,
    }
    config = load_config(environ=env)
    pools = dict(config.pools)
    pools[StageName.BASE_VIDEO] = PoolConfig(
        backend="diffusers", models={"pipeline": "wan-tiny@1"}, num_gpus=0.25
    )
    config = config.model_copy(update={"pools": pools})
    prompt = ScenePrompt("a person talking in a garden", "wide", "joy", 7)
    try:
        farm_up(config, progress=lambda _: None)
        (base,) = [p for p in farm_status(config)["pools"] if p["stage"] == "base_video"]
        assert base["backend"] == "diffusers" and base["models"] == {"pipeline": "wan-tiny@1"}
        assert base["provider"].startswith("diffusers ") and "WanPipeline cpu" in base["provider"]

        script = "Hello from a generated garden."
        job = submit_render(config, storage, [cameo.id], script, "plus", "tester", prompt=prompt)
        done = wait_for_job(storage, job.id, timeout=900)
        assert done.status is JobStatus.SUCCEEDED, done.error
        made = done.quality["scene"]
        assert made["kind"] == "background" and made["generator"] == "wan-tiny@1"
        assert made["seed"] == 7 and made["prompt"] == prompt.pipeline_text()
        assert done.quality["face"]["recognised"] >= 0.9  # the cameo's own face presents
        root = (storage.keys_dir / "root.pem").read_bytes()
        manifest = verify_mp4(storage.objects.get_bytes(done.output_key), root)
        assert manifest.valid
        assert manifest.extra["prompt"] == prompt.pipeline_text()
        assert manifest.extra["generator"] == "wan-tiny@1" and manifest.extra["seed"] == 7
        with storage.db.session() as s:
            rows = s.query(StageTimingRow).filter_by(job_id=job.id, stage="base_video").all()
        assert rows and sum(r.frames for r in rows) > 0
        scenes = sorted(storage.objects.list(f"{GENERATED_PREFIX}/"))
        assert [k.rsplit("/", 1)[1] for k in scenes] == ["clip.mp4", "scene.json"]

        again = submit_render(config, storage, [cameo.id], script, "plus", "tester", prompt=prompt)
        assert wait_for_job(storage, again.id, timeout=900).status is JobStatus.SUCCEEDED
        assert sorted(storage.objects.list(f"{GENERATED_PREFIX}/")) == scenes  # reused
    finally:
        farm_down(config, progress=lambda _: None)
