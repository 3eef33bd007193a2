"""The protected-likeness list: identity embeddings of people who must never be enrolled, one
per face analyzer, so each is compared only with embeddings of its own analyzer."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np
from cameofarm.cameos.content import DISPLAY_TEXT_RULE, is_display_text
from cameofarm.storage.db import Database, ProtectedLikenessRow
from sqlalchemy import select

# Rows written before embeddings were tagged hold one bare dlib vector.
LEGACY_ANALYZER = "dlib@resnet-v1"


def add_protected(
    db: Database, label: str, vectors: Mapping[str, Sequence[float]], reason: str = ""
) -> int:
    """Add a face (its embedding by analyzer name) to the list and return its row id."""
    if not is_display_text(label):
        raise ValueError(f"label must be 1-200 characters, {DISPLAY_TEXT_RULE}")
    if not vectors:
        raise ValueError("a protected likeness needs at least one analyzer's embedding")
    with db.session() as s:
        row = ProtectedLikenessRow(
            label=label,
            reason=reason,
            added_at=time.time(),
            embedding={tag: [float(v) for v in vec] for tag, vec in vectors.items()},
        )
        s.add(row)
        s.flush()
        return int(row.id)


def list_protected(db: Database) -> list[tuple[int, str, str]]:
    """Return (id, label, reason) for every protected likeness."""
    with db.session() as s:
        rows = s.scalars(select(ProtectedLikenessRow).order_by(ProtectedLikenessRow.id))
        return [(r.id, r.label, r.reason) for r in rows]


def protected_vectors(db: Database) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Every protected likeness as (label, embedding by analyzer name)."""
    with db.session() as s:
        rows = [(r.label, r.embedding) for r in s.scalars(select(ProtectedLikenessRow))]
    out = []
    for label, stored in rows:
        by_tag = stored if isinstance(stored, dict) else {LEGACY_ANALYZER: stored}
        out.append((label, {t: np.asarray(v, np.float32) for t, v in by_tag.items()}))
    return out
