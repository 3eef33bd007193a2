"""Who may cast a cameo, checked the same way at submit, at dispatch and before publishing.

Four levels, widening:
  only_me   — the owner;
  approved  — the owner and the users on the cameo's allow list;
  mutuals   — also users who follow the owner and whom the owner follows back;
  everyone  — any user of the farm.
A cameo must also be VERIFIED (not pending, lapsed, revoked or deleted), and the script must
pass the farm's content policy and the owner's restrictions for that cameo.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from enum import StrEnum

from cameofarm.cameos import audit
from cameofarm.cameos.accounts import AccountError, Principal, get_user, is_mutual
from cameofarm.cameos.content import ContentError, check_restriction_names, check_restrictions
from cameofarm.cameos.registry import DAY, CameoStatus, UnknownCameoError, unusable_hint
from cameofarm.configs import FarmConfig
from cameofarm.storage.db import CameoGrantRow, CameoRow
from sqlalchemy import select
from sqlalchemy.orm import Session


class PermissionLevel(StrEnum):
    ONLY_ME = "only_me"
    APPROVED = "approved"
    MUTUALS = "mutuals"
    EVERYONE = "everyone"


_WHO = {
    PermissionLevel.ONLY_ME: "only its owner",
    PermissionLevel.APPROVED: "only people its owner approved",
    PermissionLevel.MUTUALS: "only people its owner approved or who follow each other with them",
    PermissionLevel.EVERYONE: "everyone",
}


class ConsentError(PermissionError):
    """The caller may not cast this cameo (now); the message says why."""


class NotOwnerError(PermissionError):
    """Only a cameo's owner (or an operator) may do that."""


def owned_cameo(session: Session, principal: Principal, cameo_id: str) -> CameoRow:
    """Return the cameo row if the caller owns it (or is an operator).

    Anyone else gets UnknownCameoError, so cameo ids reveal nothing to strangers.
    """
    row = session.get(CameoRow, cameo_id, with_for_update=True)
    if row is None or (row.owner != principal.user and not principal.operator):
        raise UnknownCameoError(f"you own no cameo with id {cameo_id[:40]!r}")
    return row


def refusal(
    session: Session, user: str, row: CameoRow, verified_days: float, now: float | None = None
) -> str | None:
    """Return why `user` may not cast this cameo now, or None when they may."""
    now = time.time() if now is None else now
    status = CameoStatus(row.status)
    lapsed = status is CameoStatus.VERIFIED and (row.verified_at or 0) < now - verified_days * DAY
    if status is not CameoStatus.VERIFIED or lapsed:
        shown = CameoStatus.EXPIRED if lapsed else status
        return f"cameo {row.id} is {shown.value} and cannot be cast: {unusable_hint(shown)}"
    if user == row.owner:
        return None
    level = PermissionLevel(row.permission or PermissionLevel.ONLY_ME)
    if level is PermissionLevel.EVERYONE:
        return None
    if level in (PermissionLevel.APPROVED, PermissionLevel.MUTUALS) and (
        session.get(CameoGrantRow, (row.id, user)) is not None
    ):
        return None
    if level is PermissionLevel.MUTUALS and is_mutual(session, user, row.owner):
        return None
    return f"{user} may not cast cameo {row.id}: its owner allows {_WHO[level]}"


def check_cast_count(cameo_ids: Sequence[str], config: FarmConfig) -> None:
    """Raise ConsentError when a video names more cameos than it may cast, or one twice."""
    limit = config.consent.max_cameos_per_video
    if len(cameo_ids) > limit:
        raise ConsentError(
            f"a video may cast at most {limit} cameo{'s' if limit != 1 else ''}; this one "
            f"names {len(cameo_ids)} (consent.max_cameos_per_video): submit one job per cameo "
            "or per pair"
        )
    if len(set(cameo_ids)) != len(cameo_ids):
        raise ConsentError("a cameo is named twice")


def may_cast(
    session: Session,
    user: str,
    cameo_ids: Sequence[str],
    script: str,
    config: FarmConfig,
    now: float | None = None,
) -> list[CameoRow]:
    """Return the cameo rows if `user` may cast all of them with this script; raise otherwise.

    The one consent rule, read-only, checked inside the transaction that acts on it: at submit,
    at dispatch, at publish, and when an owner narrows a permission (the cascade). It covers
    the cameo count, status and verification age, the owner's permission and restrictions.
    Raises UnknownCameoError, ConsentError or ContentError (the farm-wide content policy is
    checked separately, by `content.check_script`).
    """
    check_cast_count(cameo_ids, config)
    rows = []
    for cid in cameo_ids:
        row = session.get(CameoRow, cid)
        if row is None:
            raise UnknownCameoError(f"no cameo with id {cid[:40]!r}")
        why = refusal(session, user, row, config.enrollment.verified_days, now)
        if why is not None:
            raise ConsentError(why)
        check_restrictions(script, config.content, row.id, list(row.restrictions or []))
        rows.append(row)
    return rows


def set_permission(
    session: Session, principal: Principal, cameo_id: str, level: str
) -> tuple[PermissionLevel, PermissionLevel]:
    """Set a cameo's level; return (old, new). The caller re-checks active jobs."""
    try:
        new = PermissionLevel(level)
    except ValueError:
        raise AccountError(
            f"unknown permission {level[:40]!r}; use one of {[p.value for p in PermissionLevel]}"
        ) from None
    row = owned_cameo(session, principal, cameo_id)
    old = PermissionLevel(row.permission or PermissionLevel.ONLY_ME)
    row.permission = new.value
    audit.record(session, principal.user, "cameo.permission", cameo_id, old=old, new=new)
    return old, new


def approve(session: Session, principal: Principal, cameo_id: str, user: str) -> None:
    """Put a user on a cameo's allow list."""
    owned_cameo(session, principal, cameo_id)
    get_user(session, user)
    if session.get(CameoGrantRow, (cameo_id, user)) is None:
        session.add(CameoGrantRow(cameo_id=cameo_id, user_id=user, at=time.time()))
        audit.record(session, principal.user, "cameo.approve", cameo_id, user=user)


def unapprove(session: Session, principal: Principal, cameo_id: str, user: str) -> bool:
    """Take a user off a cameo's allow list; True if they were on it."""
    owned_cameo(session, principal, cameo_id)
    grant = session.get(CameoGrantRow, (cameo_id, user))
    if grant is None:
        return False
    session.delete(grant)
    audit.record(session, principal.user, "cameo.unapprove", cameo_id, user=user)
    return True


def approved_users(session: Session, cameo_id: str) -> list[str]:
    query = select(CameoGrantRow.user_id).where(CameoGrantRow.cameo_id == cameo_id)
    return sorted(session.scalars(query))


def set_restrictions(
    session: Session, principal: Principal, cameo_id: str, names: list[str], config: FarmConfig
) -> list[str]:
    """Replace the content rules the owner refuses for this cameo; return them."""
    try:
        clean = check_restriction_names(names, config.content)
    except ContentError as exc:
        raise AccountError(str(exc)) from None
    row = owned_cameo(session, principal, cameo_id)
    old = list(row.restrictions or [])
    row.restrictions = clean
    audit.record(session, principal.user, "cameo.restrict", cameo_id, old=old, new=clean)
    return clean


def cameos_of(session: Session, owner: str) -> list[str]:
    return list(session.scalars(select(CameoRow.id).where(CameoRow.owner == owner)))
