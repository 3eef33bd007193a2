"""The model store: import with a manifest, list, verify (a changed byte is found), remove,
and a node cache that fetches each file once and refuses a corrupt one."""

from __future__ import annotations

import hashlib
import json
import os

import pytest


def _weights(folder, seed: int = 0):
    """A small model folder: a graph file and a weights file in a subfolder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(bytes((i * 7 + seed) % 256 for i in range(50_000)))
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "weights.bin").write_bytes(os.urandom(20_000))
    return folder


@pytest.fixture(params=["local", "minio"])
def objects(request, tmp_path, monkeypatch):
    from cameofarm.configs import StorageConfig
    from cameofarm.storage import open_object_store

    if request.param == "local":
        return open_object_store(StorageConfig(), tmp_path / "farm")
    endpoint = request.getfixturevalue("moto_endpoint")
    monkeypatch.setenv("CAMEOFARM_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("CAMEOFARM_S3_SECRET_KEY", "testing")
    cfg = StorageConfig(kind="minio", endpoint=endpoint, bucket="models", region="us-east-1")
    return open_object_store(cfg, tmp_path / "farm")


def _corrupt(objects, key: str) -> None:
    data = bytearray(objects.get_bytes(key))
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    objects.put_bytes(key, bytes(data))


def test_import_list_verify_remove(objects, tmp_path):
    from cameofarm.models.store import ModelStore

    src = _weights(tmp_path / "src")
    store = ModelStore(objects)
    manifest, stored = store.import_path(
        src,
        "inswapper-128",
        "1.0",
        source="made by this test",
        licence="test-only",
        precision="fp16",
        signature={"inputs": {"target": [1, 3, 128, 128]}, "outputs": {"output": [1, 3, 128, 128]}},
    )
    assert stored
    expected = {
        "model.onnx": hashlib.sha256((src / "model.onnx").read_bytes()).hexdigest(),
        "sub/weights.bin": hashlib.sha256((src / "sub" / "weights.bin").read_bytes()).hexdigest(),
    }
    assert {f.path: f.sha256 for f in manifest.files} == expected
    assert manifest.size == 70_000
    stored_manifest = json.loads(objects.get_bytes("models/inswapper-128/1.0/manifest.json"))
    assert stored_manifest["files"][1]["sha256"] == expected["sub/weights.bin"]
    assert stored_manifest["precision"] == "fp16" and stored_manifest["licence"] == "test-only"
    assert stored_manifest["signature"]["inputs"]["target"] == [1, 3, 128, 128]

    # Same bytes again: nothing new. Other bytes under the same version: refused.
    again, stored = store.import_path(src, "inswapper-128", "1.0")
    assert not stored and again.sha256 == manifest.sha256
    other = _weights(tmp_path / "other", seed=3)
    from cameofarm.models.store import ModelStoreError

    with pytest.raises(ModelStoreError, match="versions never change"):
        store.import_path(other, "inswapper-128", "1.0")
    second, _ = store.import_path(other, "inswapper-128")  # default version: content digest
    assert second.version == second.sha256[:12]

    listed = store.list()
    assert [(m.name, m.version) for m in listed] == [
        ("inswapper-128", "1.0"),
        ("inswapper-128", second.version),
    ]
    assert store.get("inswapper-128").version == second.version  # newest

    assert store.verify("inswapper-128", "1.0").ok
    _corrupt(objects, "models/inswapper-128/1.0/files/sub/weights.bin")
    report = store.verify("inswapper-128", "1.0")
    assert not report.ok
    assert [c.path for c in report.checks if c.problem] == ["sub/weights.bin"]
    assert "sha256" in report.problems[0]

    assert store.remove("inswapper-128", "1.0") == 3
    assert not list(objects.list("models/inswapper-128/1.0/"))
    assert [m.version for m in store.list("inswapper-128")] == [second.version]
    with pytest.raises(ModelStoreError, match="cameofarm models import"):
        store.get("inswapper-128", "1.0")


def test_node_cache_fetches_once_shares_blobs_and_refuses_corrupt_files(tmp_path):
    from cameofarm.configs import StorageConfig
    from cameofarm.models.store import ModelCache, ModelStore, ModelStoreError
    from cameofarm.storage import open_object_store

    objects = open_object_store(StorageConfig(), tmp_path / "farm")
    store = ModelStore(objects)
    src = _weights(tmp_path / "src")
    store.import_path(src, "lipsync", "1")
    store.import_path(src, "lipsync", "2")  # the same files under a second version
    cache = ModelCache(tmp_path / "cache")
    manifest, folder = cache.materialize(store, "lipsync", "1")
    assert (folder / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()
    assert (folder / "sub" / "weights.bin").read_bytes() == (src / "sub/weights.bin").read_bytes()
    assert cache.has(manifest) and len(list(cache.blobs())) == 2

    # Once cached, a version is served without reading the store again.
    fetched = []
    real = store.open_file
    store.open_file = lambda *a: fetched.append(a[1].path) or real(*a)  # type: ignore[method-assign]
    _, folder2 = cache.materialize(store, "lipsync", "2")
    assert fetched == [] and len(list(cache.blobs())) == 2  # shared by sha256
    assert (folder2 / "model.onnx").read_bytes() == (src / "model.onnx").read_bytes()

    # A corrupt file in the store is refused before any backend sees it, and not cached.
    other = _weights(tmp_path / "other", seed=5)
    store.import_path(other, "facenet", "1")
    _corrupt(objects, "models/facenet/1/files/model.onnx")
    fresh = ModelCache(tmp_path / "cache2")
    with pytest.raises(ModelStoreError) as err:
        fresh.materialize(store, "facenet", "1")
    assert "facenet@1: model.onnx is corrupt" in str(err.value)
    assert "cameofarm models verify facenet@1" in str(err.value)
    assert not [
        p
        for p in fresh.blobs()
        if p.read_bytes() == objects.get_bytes("models/facenet/1/files/model.onnx")
    ]
    with pytest.raises(ModelStoreError, match="not in the model store"):
        fresh.materialize(store, "missing-model")


@pytest.mark.parametrize(
    "name, version",
    [
        ("../etc", "1"),
        ("Inswapper", "1"),
        ("a b", "1"),
        ("x" * 65, "1"),
        ("ok", "../1"),
        ("ok", "1/2"),
        ("ok", "-1"),
        ("ok'; DROP TABLE models;--", "1"),
    ],
)
def test_bad_names_and_versions_are_refused_and_store_nothing(tmp_path, name, version):
    from cameofarm.configs import StorageConfig
    from cameofarm.models.store import ModelStore, ModelStoreError
    from cameofarm.storage import open_object_store

    objects = open_object_store(StorageConfig(), tmp_path / "farm")
    src = _weights(tmp_path / "src")
    with pytest.raises(ModelStoreError):
        ModelStore(objects).import_path(src, name, version)
    assert list(objects.list("")) == []


def test_a_damaged_manifest_is_named_not_trusted(tmp_path):
    from cameofarm.configs import StorageConfig
    from cameofarm.models.store import ModelStore, ModelStoreError
    from cameofarm.storage import open_object_store

    objects = open_object_store(StorageConfig(), tmp_path / "farm")
    store = ModelStore(objects)
    store.import_path(_weights(tmp_path / "src"), "m", "1")
    key = "models/m/1/manifest.json"
    data = json.loads(objects.get_bytes(key))
    data["files"][0]["sha256"] = "0" * 64  # the list no longer matches the recorded digest
    objects.put_bytes(key, json.dumps(data).encode())
    with pytest.raises(ModelStoreError, match="does not match its digest"):
        store.get("m", "1")
    objects.put_bytes(key, b"{not json")
    with pytest.raises(ModelStoreError, match="not JSON"):
        store.get("m", "1")


def test_the_cli_imports_lists_verifies_and_removes(tmp_path):
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    env = {"CAMEOFARM__DATA_DIR": str(tmp_path / "farm")}
    runner = CliRunner()
    src = _weights(tmp_path / "src")
    # Reading commands outside a farm say so and create nothing.
    nothing = runner.invoke(cli, ["models", "list"], env=env)
    assert nothing.exit_code == 1 and "no farm object store" in nothing.output, nothing.output
    assert not (tmp_path / "farm").exists()
    out = runner.invoke(
        cli, ["models", "import", str(src), "--name", "w2l", "--version", "0.1"], env=env
    )
    assert out.exit_code == 0 and "w2l@0.1 imported: 2 file(s)" in out.output, out.output
    digest = hashlib.sha256((src / "model.onnx").read_bytes()).hexdigest()
    listed = runner.invoke(cli, ["models", "list"], env=env)
    assert listed.exit_code == 0 and digest in listed.output, listed.output
    ok = runner.invoke(cli, ["models", "verify", "w2l@0.1"], env=env)
    assert ok.exit_code == 0 and "every file matches" in ok.output, ok.output

    stored = tmp_path / "farm" / "objects" / "models" / "w2l" / "0.1" / "files" / "model.onnx"
    assert stored.is_file(), "the local store keeps objects under <data_dir>/objects"
    data = bytearray(stored.read_bytes())
    data[10] ^= 0xFF
    stored.write_bytes(bytes(data))
    bad = runner.invoke(cli, ["models", "verify", "w2l@0.1"], env=env)
    assert bad.exit_code == 1 and "CORRUPT model.onnx" in bad.output, bad.output

    gone = runner.invoke(cli, ["models", "remove", "w2l@0.1"], env=env)
    assert gone.exit_code == 0 and "removed" in gone.output
    unknown = runner.invoke(cli, ["models", "verify", "w2l@0.1"], env=env)
    assert unknown.exit_code == 1 and "cameofarm models import" in unknown.output
    hostile = runner.invoke(cli, ["models", "remove", "../../etc@1"], env=env)
    assert hostile.exit_code == 1 and "model name" in hostile.output
