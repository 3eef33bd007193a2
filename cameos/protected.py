"""The protected-likeness list: embeddings of people who must never be enrolled."""

from __future__ import annotations

import time

import numpy as np
from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text
from cameofarm.storage.db import Database, ProtectedLikenessRow
from sqlalchemy import select


def add_protected(db: Database, label: str, embedding: np.ndarray, reason: str = "") -> int:
    """Add a face to the list and return its row id."""
    if not is_display_text(label):
        raise ValueError(f"label must be 1-200 characters, {DISPLAY_TEXT_RULE}")
    with db.session() as s:
        row = ProtectedLikenessRow(
            label=label,
            reason=reason,
            added_at=time.time(),
            embedding=[float(v) for v in embedding],
        )
        s.add(row)
        s.flush()
        return int(row.id)


def list_protected(db: Database) -> list[tuple[int, str, str]]:
    """Return (id, label, reason) for every protected likeness."""
    with db.session() as s:
        rows = s.scalars(select(ProtectedLikenessRow).order_by(ProtectedLikenessRow.id))
        return [(r.id, r.label, r.reason) for r in rows]


def match_protected(db: Database, embedding: np.ndarray, max_distance: float) -> str | None:
    """Return the label of the closest protected face within max_distance, if any."""
    best: tuple[float, str] | None = None
    with db.session() as s:
        for row in s.scalars(select(ProtectedLikenessRow)):
            if len(row.embedding) != len(embedding):
                continue  # made by another embedding backend
            d = float(np.linalg.norm(np.asarray(row.embedding, np.float32) - embedding))
            if d <= max_distance and (best is None or d < best[0]):
                best = (d, row.label)
    return None if best is None else best[1]
