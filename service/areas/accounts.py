"""Who is calling, and their account: users, API keys, follows, webhooks."""

from __future__ import annotations

from typing import Any

from cameofarm.cameos.accounts import (
    AccountError,
    AuthError,
    Principal,
    UnknownUserError,
    authenticate,
    create_user,
    follow,
    get_user,
    init_operator,
    issue_key,
    list_keys,
    revoke_key,
    set_webhook,
    unfollow,
)
from cameofarm.cluster.egress import AllowRule, DestinationRefused, resolve
from cameofarm.cluster.jobs import cancel_unpermitted
from cameofarm.cluster.webhooks import deliveries
from cameofarm.service.areas.base import (
    Area,
    BadRequest,
    Conflict,
    NotFound,
    Unauthorized,
    display_text,
)
from cameofarm.storage.db import CameoRow, FollowRow, UserRow
from sqlalchemy import select
from sqlalchemy.orm import Session


class AccountsArea(Area):
    """Authentication, users, keys, follows and webhooks."""

    def authenticate(self, token: str | None) -> Principal:
        try:
            return authenticate(self.db, token)
        except AuthError as exc:
            raise Unauthorized(str(exc)) from None

    def init_operator(self, user: str, org: str) -> dict[str, Any]:
        try:
            principal, token = init_operator(self.db, user, org)
        except AccountError as exc:
            raise Conflict(str(exc)) from None
        return {"user": principal.user, "org": principal.org, "operator": True, "api_key": token}

    def create_user(
        self, principal: Principal, user: str, org: str, operator: bool = False
    ) -> dict[str, Any]:
        self._operator(principal)
        try:
            created, token = create_user(self.db, principal.user, user, org, operator)
        except AccountError as exc:
            kind = Conflict if "already exists" in str(exc) else BadRequest
            raise kind(str(exc)) from None
        return {"user": created.user, "org": created.org, "operator": operator, "api_key": token}

    def whoami(self, principal: Principal) -> dict[str, Any]:
        with self.db.session() as s:
            row = get_user(s, principal.user)
            following = s.scalars(select(FollowRow.followee).where(FollowRow.follower == row.id))
            followers = s.scalars(select(FollowRow.follower).where(FollowRow.followee == row.id))
            return {
                "user": row.id,
                "org": row.org_id,
                "operator": bool(row.operator),
                "following": sorted(following),
                "followers": sorted(followers),
                "webhook_url": row.webhook_url,
            }

    def issue_key(
        self, principal: Principal, label: str = "", expires_in_days: float | None = None
    ) -> dict[str, Any]:
        try:
            token = issue_key(
                self.db, principal, display_text(label or "key", "label"), expires_in_days
            )
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        return {"api_key": token}

    def list_keys(self, principal: Principal, user: str | None = None) -> dict[str, Any]:
        """The caller's API keys (an operator may name a user): ids, labels, states."""
        try:
            return {"keys": [k.to_json() for k in list_keys(self.db, principal, user)]}
        except UnknownUserError as exc:
            raise NotFound(str(exc)) from None

    def revoke_key(self, principal: Principal, key_id: str) -> dict[str, Any]:
        """Revoke a key at once: its next request answers 401. Audited with who did it."""
        try:
            return revoke_key(self.db, principal, key_id).to_json()
        except UnknownUserError as exc:
            raise NotFound(str(exc)) from None

    def follow(self, principal: Principal, other: str) -> dict[str, Any]:
        try:
            follow(self.db, principal, other)
        except UnknownUserError as exc:
            raise NotFound(str(exc)) from None
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        return self.whoami(principal)

    def unfollow(self, principal: Principal, other: str) -> dict[str, Any]:
        """Stop following; mutual-only uses of either side's cameos stop at once."""

        def change(s: Session) -> list[str]:
            if not unfollow(s, principal, other):
                return []
            s.flush()
            owners = [principal.user, other]
            cameos = list(s.scalars(select(CameoRow.id).where(CameoRow.owner.in_(owners))))
            return cancel_unpermitted(s, self.config, cameos, principal.user)

        # Re-decided on a fresh read if the scheduler touched one of the jobs meanwhile.
        cancelled = self.db.transact(change)
        return {**self.whoami(principal), "cancelled_jobs": cancelled}

    def set_webhook(self, principal: Principal, url: str | None) -> dict[str, Any]:
        """Set where job-completion webhooks go; internal destinations are refused now (and
        again at every delivery, since a name may later resolve elsewhere)."""
        if url is not None:
            allow = [AllowRule.parse(e) for e in self.config.webhooks.allow_destinations]
            try:
                resolve(url, allow, lookup=False)
            except DestinationRefused as exc:
                raise BadRequest(f"webhook url refused: {exc}") from None
        try:
            secret = set_webhook(self.db, principal, url)
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        return {"webhook_url": url, "secret": secret}

    def webhook_deliveries(self, principal: Principal, job_id: str | None) -> dict[str, Any]:
        return {"deliveries": deliveries(self.db, principal.user, job_id)}

    def users(self, principal: Principal) -> dict[str, Any]:
        self._operator(principal)
        with self.db.session() as s:
            rows = s.scalars(select(UserRow).order_by(UserRow.id))
            return {
                "users": [
                    {"user": r.id, "org": r.org_id, "operator": bool(r.operator)} for r in rows
                ]
            }
