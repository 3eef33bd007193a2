from __future__ import annotations

import pytest
from cameofarm.storage import InvalidKeyError, LocalObjectStore, ObjectNotFoundError, validate_key


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "/etc/passwd",
        "a/../b",
        "a//b",
        "",
        "a/./b",
        "c:/x",
        "a\\b",
        "a/b\x00",
        "a/ b",
        "x" * 600,
    ],
)
def test_bad_keys_rejected(key):
    with pytest.raises(InvalidKeyError):
        validate_key(key)


def test_good_keys_pass():
    assert validate_key("cameos/cam_1/identity.npz") == "cameos/cam_1/identity.npz"


def _exercise(store):
    store.put_bytes("a/one.bin", b"1")
    store.put_bytes("a/two.bin", b"22")
    store.put_bytes("b/three.bin", b"333")
    assert store.get_bytes("a/two.bin") == b"22"
    assert store.exists("a/one.bin") and not store.exists("a/none.bin")
    assert list(store.list("a/")) == ["a/one.bin", "a/two.bin"]
    store.put_bytes("a/one.bin", b"replaced")
    assert store.get_bytes("a/one.bin") == b"replaced"
    store.delete("a/one.bin")
    assert not store.exists("a/one.bin")
    with pytest.raises(ObjectNotFoundError):
        store.get_bytes("a/one.bin")
    with pytest.raises(InvalidKeyError):
        store.put_bytes("../escape", b"x")


def test_local_store(tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    _exercise(store)
    src = tmp_path / "f.txt"
    src.write_text("hello")
    store.put_file("c/f.txt", src)
    assert store.get_file("c/f.txt", tmp_path / "back.txt").read_text() == "hello"
    assert not (tmp_path / "escape").exists()


def test_minio_store_against_s3_server(moto_endpoint, tmp_path, monkeypatch):
    from cameofarm.configs import StorageConfig
    from cameofarm.storage import MinioObjectStore, open_object_store

    monkeypatch.setenv("CAMEOFARM_S3_ACCESS_KEY", "testing")
    monkeypatch.setenv("CAMEOFARM_S3_SECRET_KEY", "testing")
    cfg = StorageConfig(
        kind="minio", endpoint=moto_endpoint, bucket="farm-test", region="us-east-1"
    )
    store = open_object_store(cfg, tmp_path)
    assert isinstance(store, MinioObjectStore)
    _exercise(store)
    src = tmp_path / "f.txt"
    src.write_text("hello")
    store.put_file("c/f.txt", src)
    assert store.get_file("c/f.txt", tmp_path / "back.txt").read_text() == "hello"
    assert store.locate("c/f.txt").startswith("http://")


def test_minio_without_credentials_says_what_to_set(tmp_path, monkeypatch):
    from cameofarm.configs import StorageConfig
    from cameofarm.storage import open_object_store

    monkeypatch.delenv("CAMEOFARM_S3_ACCESS_KEY", raising=False)
    with pytest.raises(RuntimeError, match="CAMEOFARM_S3_ACCESS_KEY"):
        open_object_store(StorageConfig(kind="minio"), tmp_path)


def test_a_version_3_database_is_upgraded_in_place_and_a_newer_one_refused(tmp_path):
    from cameofarm.storage.db import SCHEMA_VERSION, Database, SchemaMismatchError
    from sqlalchemy import inspect, text

    url = f"sqlite:///{tmp_path / 'farm.db'}"
    db = Database(url)
    with db.engine.begin() as conn:  # what a farm made before jobs had a language
        for column in (
            "captions",
            "audio_bed",
            "prompt",
            "scene_id",
            "quality",
            "speech_seconds",
            "language",
        ):
            conn.execute(text(f"ALTER TABLE jobs DROP COLUMN {column}"))
        conn.execute(text("UPDATE schema_version SET version = 3"))
    db.engine.dispose()
    upgraded = Database(url)
    columns = {c["name"] for c in inspect(upgraded.engine).get_columns("jobs")}
    added = {"language", "speech_seconds", "quality", "scene_id", "prompt", "audio_bed", "captions"}
    assert added <= columns
    with upgraded.engine.begin() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalar() == SCHEMA_VERSION
        conn.execute(text("UPDATE schema_version SET version = 99"))
    upgraded.engine.dispose()
    with pytest.raises(SchemaMismatchError, match="schema version 99"):
        Database(url)
