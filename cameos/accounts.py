"""Organisations, users, API keys and follows.

A user's id is its handle (lowercase letters, digits, `_ . -`); it is what cameos record as
their owner and jobs as their customer. API keys are random 32-byte tokens shown once when
issued; only their SHA-256 is stored. Operators may act farm-wide (users, audit, purges).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass

from cameofarm.cameos import audit
from cameofarm.storage.db import ApiKeyRow, Database, FollowRow, OrganisationRow, UserRow
from sqlalchemy import func, select
from sqlalchemy.orm import Session

HANDLE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
TOKEN_PREFIX = "cf_"


class AccountError(ValueError):
    """A request about users or keys was invalid; the message says what to change."""


class AuthError(PermissionError):
    """The API key is missing, unknown or revoked."""


class UnknownUserError(LookupError):
    """No user has that handle."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the authenticated user, their organisation and role."""

    user: str
    org: str
    operator: bool = False


def check_handle(value: str, what: str = "user") -> str:
    """Return the handle if it is well formed; raise AccountError saying what is allowed."""
    if not isinstance(value, str) or not HANDLE.fullmatch(value):
        raise AccountError(
            f"{what} name {value[:80]!r} is not allowed: use 1-63 lowercase letters, digits, "
            "'_', '.' or '-', starting with a letter or digit"
        )
    return value


def _key_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _issue(session: Session, user_id: str, label: str, expires_in_days: float | None = None) -> str:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    session.add(
        ApiKeyRow(
            id="key_" + uuid.uuid4().hex[:12],
            user_id=user_id,
            sha256=_key_hash(token),
            label=label[:200],
            created_at=now,
            expires_at=now + expires_in_days * 86400 if expires_in_days else None,
        )
    )
    return token


def create_user(
    db: Database, actor: str, user: str, org: str, operator: bool = False
) -> tuple[Principal, str]:
    """Create a user (and its organisation if new); return it and its first API key."""
    check_handle(user)
    check_handle(org, "organisation")
    with db.session() as s:
        if s.get(UserRow, user) is not None:
            raise AccountError(f"user {user!r} already exists")
        if s.get(OrganisationRow, org) is None:
            s.add(OrganisationRow(id=org, created_at=time.time()))
            s.flush()
            audit.record(s, actor, "org.create", org)
        s.add(UserRow(id=user, org_id=org, operator=operator, created_at=time.time()))
        s.flush()
        token = _issue(s, user, "first key")
        audit.record(s, actor, "user.create", user, org=org, operator=operator)
        return Principal(user, org, operator), token


def init_operator(db: Database, user: str, org: str) -> tuple[Principal, str]:
    """Create the farm's first operator; refused once any user exists."""
    with db.session() as s:
        if (s.scalar(select(func.count()).select_from(UserRow)) or 0) > 0:
            raise AccountError(
                "the farm already has users; an operator adds more with `cameofarm users add`"
            )
    return create_user(db, "local-admin", user, org, operator=True)


MAX_KEY_DAYS = 3650


def issue_key(
    db: Database, principal: Principal, label: str = "", expires_in_days: float | None = None
) -> str:
    """Issue another API key for the caller (optionally expiring); the token is returned
    once and never stored."""
    if expires_in_days is not None and not 0 < expires_in_days <= MAX_KEY_DAYS:
        raise AccountError(f"a key expires in more than 0 and at most {MAX_KEY_DAYS} days")
    with db.session() as s:
        token = _issue(s, principal.user, label, expires_in_days)
        audit.record(
            s,
            principal.user,
            "key.issue",
            principal.user,
            label=label[:200],
            expires_in_days=expires_in_days,
        )
        return token


@dataclass(frozen=True)
class KeyView:
    """An API key as its owner (or an operator) sees it: never the token itself."""

    id: str
    user: str
    label: str
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    revoked_by: str | None

    def state(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or time.time()):
            return "expired"
        return "active"

    def to_json(self) -> dict[str, object]:
        return {**self.__dict__, "state": self.state()}


def _key_view(row: ApiKeyRow) -> KeyView:
    return KeyView(
        row.id,
        row.user_id,
        row.label,
        row.created_at,
        row.expires_at,
        row.revoked_at,
        row.revoked_by,
    )


def list_keys(db: Database, principal: Principal, user: str | None = None) -> list[KeyView]:
    """The caller's keys (an operator may name any user), oldest first."""
    user = user or principal.user
    if user != principal.user and not principal.operator:
        raise UnknownUserError(f"you may list only your own keys, not {user[:80]!r}'s")
    with db.session() as s:
        get_user(s, user)
        query = select(ApiKeyRow).where(ApiKeyRow.user_id == user).order_by(ApiKeyRow.created_at)
        return [_key_view(r) for r in s.scalars(query)]


def revoke_key(db: Database, principal: Principal, key_id: str) -> KeyView:
    """Revoke a key at once (the caller's own, or anyone's for an operator); audited.

    Revoking an already revoked key changes nothing and says so in the answer.
    """
    with db.session() as s:
        row = s.get(ApiKeyRow, key_id)
        if row is None or (row.user_id != principal.user and not principal.operator):
            raise UnknownUserError(
                f"no key {key_id[:40]!r} of yours; list them with `cameofarm keys list`"
            )
        if row.revoked_at is None:
            row.revoked_at, row.revoked_by = time.time(), principal.user
            audit.record(s, principal.user, "key.revoke", row.user_id, key_id=row.id)
        return _key_view(row)


def authenticate(db: Database, token: str | None) -> Principal:
    """Return who holds this key; raise AuthError for a missing, unknown or revoked key."""
    if not token:
        raise AuthError(
            "no API key: pass one as `Authorization: Bearer KEY` (CLI: CAMEOFARM_API_KEY or "
            "--api-key); the first operator key comes from `cameofarm users init`"
        )
    with db.session() as s:
        row = s.scalars(select(ApiKeyRow).where(ApiKeyRow.sha256 == _key_hash(token))).first()
        if row is None or row.revoked_at is not None:
            raise AuthError("the API key is unknown or revoked")
        if row.expires_at is not None and row.expires_at <= time.time():
            raise AuthError(
                f"the API key {row.id} expired; issue a new one (`cameofarm new-key`) with a key "
                "that still works, or ask an operator"
            )
        user = s.get(UserRow, row.user_id)
        if user is None or user.disabled_at is not None:
            raise AuthError(f"user {row.user_id!r} is disabled")
        return Principal(user.id, user.org_id, bool(user.operator))


def get_user(session: Session, user: str) -> UserRow:
    row = session.get(UserRow, user)
    if row is None or row.disabled_at is not None:
        raise UnknownUserError(f"no user {user[:80]!r}")
    return row


def follow(db: Database, principal: Principal, other: str) -> None:
    """The caller follows `other` (idempotent)."""
    with db.session() as s:
        get_user(s, other)
        if other == principal.user:
            raise AccountError("you cannot follow yourself")
        if s.get(FollowRow, (principal.user, other)) is None:
            s.add(FollowRow(follower=principal.user, followee=other, at=time.time()))
            audit.record(s, principal.user, "follow", other)


def unfollow(session: Session, principal: Principal, other: str) -> bool:
    """The caller stops following `other` inside the caller's transaction; True if it did."""
    row = session.get(FollowRow, (principal.user, other))
    if row is None:
        return False
    session.delete(row)
    audit.record(session, principal.user, "unfollow", other)
    return True


def is_mutual(session: Session, a: str, b: str) -> bool:
    """True when a and b follow each other."""
    return session.get(FollowRow, (a, b)) is not None and session.get(FollowRow, (b, a)) is not None


def follows(session: Session, follower: str, followee: str) -> bool:
    return session.get(FollowRow, (follower, followee)) is not None


def set_webhook(db: Database, principal: Principal, url: str | None) -> str | None:
    """Set (or clear) where job-completion webhooks go; return the signing secret."""
    if url is not None and not re.match(r"^https?://[^\s]{1,2000}$", url):
        raise AccountError("webhook url must be an http(s) URL without spaces")
    with db.session() as s:
        row = get_user(s, principal.user)
        row.webhook_url = url
        row.webhook_secret = secrets.token_hex(32) if url else None
        audit.record(s, principal.user, "webhook.set", principal.user, url=url)
        return row.webhook_secret
