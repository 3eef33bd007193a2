"""Open the farm's storage from config: the metadata DB and the object store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cameofarm.configs import FarmConfig
from cameofarm.storage.db import Database
from cameofarm.storage.objects import ObjectStore, open_object_store


@dataclass(frozen=True)
class FarmStorage:
    """Everything durable: database, object store and the local state folder."""

    db: Database
    objects: ObjectStore
    data_dir: Path

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"


def open_farm_storage(config: FarmConfig) -> FarmStorage:
    """Open (creating if needed) the configured database and object store."""
    data_dir = Path(config.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.from_config(config.database.url, data_dir)
    return FarmStorage(db, open_object_store(config.storage, data_dir), data_dir)
