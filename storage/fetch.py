"""A picklable reader of the object store for Ray actors, with a local file cache."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from cameofarm.configs import StorageConfig
from cameofarm.storage.objects import LocalObjectStore, ObjectStore, open_object_store


class ObjectFetcher:
    """Opens the configured store lazily in whichever process it is unpickled in."""

    def __init__(self, config: StorageConfig, data_dir: str | Path) -> None:
        self.config = config
        self.data_dir = str(data_dir)
        self._store: ObjectStore | None = None
        self._cache = Path(tempfile.gettempdir()) / "cameofarm-cache"

    def __getstate__(self) -> dict[str, object]:
        return {
            "config": self.config,
            "data_dir": self.data_dir,
            "_store": None,
            "_cache": self._cache,
        }

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_object_store(self.config, self.data_dir)
        return self._store

    def get_bytes(self, key: str) -> bytes:
        """Return the object's bytes."""
        return self.store.get_bytes(key)

    def _cache_path(self, key: str) -> Path:
        return self._cache / (hashlib.sha256(key.encode()).hexdigest()[:24] + Path(key).suffix)

    def forget(self, keys: list[str]) -> int:
        """Delete this node's cached copies of these objects; return how many were cached."""
        removed = 0
        for key in keys:
            path = self._cache_path(key)
            if path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def get_path(self, key: str) -> str:
        """Return a local path holding the object (the file itself for a local store)."""
        if isinstance(self.store, LocalObjectStore):
            return self.store.locate(key)
        path = self._cache_path(key)
        if not path.is_file():
            self._cache.mkdir(parents=True, exist_ok=True)
            self.store.get_file(key, path)
        return str(path)
