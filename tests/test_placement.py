"""Where a backend runs: the device from the replica's GPU ids, typed pool options."""

from __future__ import annotations

import pytest


def test_device_follows_the_replicas_gpu_ids_on_real_gpus(monkeypatch):
    from cameofarm.models.placement import resolve_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # what Ray sets for the replica
    assert resolve_device("auto", [5], cuda=True) == "cuda:1"
    assert resolve_device("auto", ["3"], cuda=True) == "cuda:0"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resolve_device("auto", [2], cuda=True) == "cuda:2"
    assert resolve_device("cpu", [2], cuda=True) == "cpu"
    # Logical GPUs on a machine without NVIDIA GPUs, or no GPU share: the CPU.
    assert resolve_device("auto", [0], cuda=False) == "cpu"
    assert resolve_device("auto", [], cuda=True) == "cpu"
    with pytest.raises(ValueError, match="this node has no CUDA GPU"):
        resolve_device("cuda", [0], cuda=False)
    with pytest.raises(ValueError, match="num_gpus: 0"):
        resolve_device("cuda", [], cuda=True)


def test_backend_context_is_cpu_fp32_without_a_gpu(tmp_path):
    from cameofarm.configs import PoolConfig
    from cameofarm.models.placement import backend_context

    ctx = backend_context(PoolConfig(precision="fp16", batch_size=4), tmp_path, [0], None)
    assert (ctx.device, ctx.precision, ctx.batch_size, dict(ctx.models)) == ("cpu", "fp32", 4, {})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"models": {"swapper": "../../etc/passwd"}}, "model-store name"),
        ({"models": {"not a role": "x"}}, "model-store name"),
        ({"precision": "fp8"}, "precision"),
        ({"device": "tpu"}, "device"),
        ({"batch_size": 0}, "batch_size"),
        ({"weights": "/tmp/x.onnx"}, "weights"),  # unknown keys are refused, not ignored
    ],
)
def test_bad_pool_options_are_refused_naming_the_key(tmp_path, options, message):
    from cameofarm.configs import ConfigError, load_config

    (tmp_path / "pools.yaml").write_text(
        "pools:\n  face_swap:\n"
        + "".join(f"    {k}: {v!r}\n".replace("'", '"') for k, v in options.items())
    )
    with pytest.raises(ConfigError, match=message):
        load_config(tmp_path)


def test_missing_models_name_each_model_and_the_import_command(tmp_path):
    from cameofarm.models.placement import missing_models
    from cameofarm.models.store import ModelStore
    from cameofarm.storage.objects import LocalObjectStore

    store = ModelStore(LocalObjectStore(tmp_path))
    problems = missing_models({"swapper": "inswapper-128@1.0", "detector": "scrfd"}, store)
    assert len(problems) == 2
    assert problems[0].startswith("detector: model scrfd is not in the model store")
    assert problems[0].endswith("`cameofarm models import PATH --name scrfd`")
    assert problems[1].startswith("swapper: model inswapper-128@1.0 is not")
    assert problems[1].endswith("`cameofarm models import PATH --name inswapper-128 --version 1.0`")
