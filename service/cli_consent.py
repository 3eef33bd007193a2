"""CLI commands for consent and control: users and keys, follows, cameo permissions,
revocation, deletion and purge proof, the owner's view, webhooks and the audit log."""

from __future__ import annotations

import time
from typing import Any

import click
from cameofarm.service.areas.base import ApiError
from cameofarm.service.cli_common import Ctx, fail, json_option, show


def _run(call: Any) -> Any:
    try:
        return call()
    except ApiError as exc:
        fail(exc.message)


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


# --- users and keys ------------------------------------------------------------------------


@click.group()
def users() -> None:
    """Users, organisations and API keys (`users init` makes the first operator)."""


@users.command("init")
@click.option("--user", required=True, help="Handle of the first operator.")
@click.option("--org", required=True, help="Their organisation.")
@click.pass_obj
def users_init(obj: Ctx, user: str, org: str) -> None:
    """Create the farm's first operator and print its API key (only on an empty farm).

    Runs in-process against the farm's database: whoever can run it owns the machine.
    """
    out = _run(lambda: obj.api().init_operator(user, org))
    click.echo(f"operator {out['user']} ({out['org']}) created. API key (shown once):")
    click.echo(out["api_key"])
    click.echo("export CAMEOFARM_API_KEY=<that key> to use it")


@users.command("add")
@click.argument("user")
@click.option("--org", required=True, help="Organisation (created if new).")
@click.option("--operator", is_flag=True, help="Give farm-wide operator rights.")
@click.pass_obj
def users_add(obj: Ctx, user: str, org: str, operator: bool) -> None:
    """Create a user (operator only) and print its first API key."""
    out = _run(lambda: obj.client().create_user(user, org, operator))
    click.echo(f"user {out['user']} ({out['org']}) created. API key (shown once):")
    click.echo(out["api_key"])


@users.command("list")
@json_option
@click.pass_obj
def users_list(obj: Ctx, as_json: bool) -> None:
    """List users (operator only)."""
    out = _run(lambda: obj.client().users())
    lines = [
        f"{u['user']:<24} {u['org']:<20} {'operator' if u['operator'] else ''}"
        for u in out["users"]
    ]
    show(out, as_json, "\n".join(lines))


@click.command()
@json_option
@click.pass_obj
def whoami(obj: Ctx, as_json: bool) -> None:
    """Show who the API key belongs to, whom they follow and who follows them."""
    out = _run(lambda: obj.client().whoami())
    show(
        out,
        as_json,
        f"{out['user']} ({out['org']}){' operator' if out['operator'] else ''}\n"
        f"following: {', '.join(out['following']) or '-'}\n"
        f"followers: {', '.join(out['followers']) or '-'}",
    )


@click.command("new-key")
@click.option("--label", default="key", show_default=True)
@click.option(
    "--expires-days",
    type=click.FloatRange(0, 3650, min_open=True),
    default=None,
    help="The key stops working after this many days (default: until revoked).",
)
@click.pass_obj
def new_key(obj: Ctx, label: str, expires_days: float | None) -> None:
    """Issue another API key for yourself (shown once)."""
    click.echo(_run(lambda: obj.client().issue_key(label, expires_days))["api_key"])


@click.group()
def keys() -> None:
    """List and revoke API keys (a leaked key: `keys revoke KEY_ID`)."""


@keys.command("list")
@click.option("--user", default=None, help="Another user's keys (operators only).")
@json_option
@click.pass_obj
def keys_list(obj: Ctx, user: str | None, as_json: bool) -> None:
    """Your API keys: id, label, state (active, expired, revoked), created, expires."""
    out = _run(lambda: obj.client().list_keys(user))
    lines = [
        f"{k['id']}  {k['state']:<8} created {_when(k['created_at'])}  "
        f"expires {_when(k['expires_at'])}  {k['label']}"
        + (f"  (revoked by {k['revoked_by']})" if k["revoked_by"] else "")
        for k in out["keys"]
    ]
    show(out, as_json, "\n".join(lines) or "no keys")


@keys.command("revoke")
@click.argument("key_id")
@click.pass_obj
def keys_revoke(obj: Ctx, key_id: str) -> None:
    """Revoke a key at once: its next request is refused (401). Audited."""
    out = _run(lambda: obj.client().revoke_key(key_id))
    click.echo(f"{out['id']} of {out['user']} revoked by {out['revoked_by']}")


@click.command()
@click.argument("user")
@click.pass_obj
def follow(obj: Ctx, user: str) -> None:
    """Follow a user (mutual follows may cast each other's `mutuals` cameos)."""
    _run(lambda: obj.client().follow(user))
    click.echo(f"following {user}")


@click.command()
@click.argument("user")
@click.pass_obj
def unfollow(obj: Ctx, user: str) -> None:
    """Stop following a user; jobs that relied on the mutual follow are cancelled."""
    out = _run(lambda: obj.client().unfollow(user))
    click.echo(f"no longer following {user}; cancelled jobs: {out['cancelled_jobs'] or 'none'}")


@click.group()
def webhook() -> None:
    """Job-completion webhooks (HMAC-SHA256 signed; see README)."""


@webhook.command("set")
@click.argument("url")
@click.pass_obj
def webhook_set(obj: Ctx, url: str) -> None:
    """Send job-completion events to URL; prints the signing secret (shown once)."""
    out = _run(lambda: obj.client().set_webhook(url))
    click.echo(f"webhook: {out['webhook_url']}\nsigning secret: {out['secret']}")


@webhook.command("clear")
@click.pass_obj
def webhook_clear(obj: Ctx) -> None:
    """Stop sending webhooks."""
    _run(lambda: obj.client().set_webhook(None))
    click.echo("webhook cleared")


@webhook.command("deliveries")
@click.option("--job", "job_id", default=None)
@json_option
@click.pass_obj
def webhook_deliveries(obj: Ctx, job_id: str | None, as_json: bool) -> None:
    """Show recent deliveries and their attempts."""
    out = _run(lambda: obj.client().webhook_deliveries(job_id))
    lines = [
        f"#{d['id']} {d['job_id']} {d['status']:<9} attempts={d['attempts']} "
        f"{d['last_error'] or ''}"
        for d in out["deliveries"]
    ]
    show(out, as_json, "\n".join(lines) or "no deliveries")


# --- cameos ----------------------------------------------------------------------------------


def _cameo_text(c: dict[str, Any]) -> str:
    text = (
        f"{c['id']}  {c['status']:<8} {c['name']}\n"
        f"  owner: {c['owner']}  permission: {c['permission']}\n"
        f"  approved: {', '.join(c['approved']) or '-'}\n"
        f"  restrictions: {', '.join(c['restrictions']) or '-'}"
    )
    if c.get("voice"):
        from cameofarm.models.reference.unit_voice import describe_calibration

        text += f"\n  voice: {describe_calibration(c['voice'])}"
    if c.get("cancelled_jobs"):
        text += f"\n  cancelled jobs no longer allowed: {', '.join(c['cancelled_jobs'])}"
    if c.get("purge_deadline"):
        text += f"\n  purge deadline: {_when(c['purge_deadline'])} (runs as soon as it can)"
    return text


@click.command()
@json_option
@click.pass_obj
def cameos(obj: Ctx, as_json: bool) -> None:
    """List your cameos (an operator sees all)."""
    out = _run(lambda: obj.client().list_cameos())
    lines = [
        f"{c['id']}  {c['status']:<8} {c['permission']:<9} {c['owner']:<12} {c['name']}"
        for c in out["cameos"]
    ]
    show(out, as_json, "\n".join(lines) or "no cameos")


@click.group()
def cameo() -> None:
    """Control one of your cameos: who may cast it, restrictions, revoke, delete."""


def _cameo_cmd(name: str, help_text: str, call: Any, *params: Any) -> None:
    """Add `cameofarm cameo NAME CAMEO_ID [PARAMS]` calling `call(client, cameo_id, ...)`."""

    def command(obj: Ctx, cameo_id: str, as_json: bool, **kwargs: Any) -> None:
        out = _run(lambda: call(obj.client(), cameo_id, **kwargs))
        show(out, as_json, _cameo_text(out))

    fn: Any = click.pass_obj(command)
    for param in reversed(params):
        fn = param(fn)
    fn = json_option(fn)
    fn = click.argument("cameo_id")(fn)
    cameo.command(name, help=help_text)(fn)


_cameo_cmd(
    "show",
    "Show a cameo's status, permission, allow list, restrictions and how its voice renders.",
    lambda c, cid: c.get_cameo(cid),
)
_cameo_cmd(
    "permission",
    "Set who may cast it: only_me, approved, mutuals or everyone. Narrowing cancels queued "
    "jobs no longer allowed and stops running ones before they publish.",
    lambda c, cid, level: c.set_permission(cid, level),
    click.argument("level", type=click.Choice(["only_me", "approved", "mutuals", "everyone"])),
)
_cameo_cmd(
    "approve",
    "Put USER on the cameo's allow list.",
    lambda c, cid, user: c.approve(cid, user),
    click.argument("user"),
)
_cameo_cmd(
    "unapprove",
    "Take USER off the allow list; their jobs with this cameo stop at once.",
    lambda c, cid, user: c.unapprove(cid, user),
    click.argument("user"),
)
_cameo_cmd(
    "restrict",
    "Set the content rules refused for this cameo (e.g. political advertising); none clears.",
    lambda c, cid, rules: c.set_restrictions(cid, list(rules)),
    click.argument("rules", nargs=-1),
)
_cameo_cmd(
    "revoke",
    "Withdraw the cameo: nothing new may cast it; queued jobs are cancelled and running ones "
    "publish nothing. A new liveness session restores it.",
    lambda c, cid: c.revoke_cameo(cid),
)
_cameo_cmd(
    "delete",
    "Delete the cameo for good: unusable at once, every stored object purged (deadline: "
    "consent.purge_days). Prove it with `cameofarm cameo scan`.",
    lambda c, cid: c.delete_cameo(cid),
)


@cameo.command("purge-status")
@click.argument("cameo_id")
@json_option
@click.pass_obj
def purge_status(obj: Ctx, cameo_id: str, as_json: bool) -> None:
    """Show a deleted cameo's purge: deadline, when it finished, what it removed."""
    out = _run(lambda: obj.client().purge_status(cameo_id))
    text = (
        f"requested {_when(out['requested_at'])}, deadline {_when(out['deadline'])}\n"
        f"finished: {_when(out['finished_at'])}; removed {len(out['removed'])} objects"
    )
    if out["error"]:
        text += f"\nlast error (retried): {out['error']}"
    show(out, as_json, text)


@cameo.command("scan")
@click.argument("cameo_id")
@json_option
@click.pass_obj
def scan(obj: Ctx, cameo_id: str, as_json: bool) -> None:
    """Prove a purge: scan every object in the store (keys and bytes) for the cameo.

    Exits 1 if anything of it remains.
    """
    out = _run(lambda: obj.client().scan_cameo(cameo_id))
    text = f"scanned {out['scanned_objects']} objects: {len(out['remaining'])} of {cameo_id} remain"
    for key in out["remaining"]:
        text += f"\n  {key}"
    show(out, as_json, text)
    if not out["clean"]:
        raise SystemExit(1)


@click.command()
@click.option("--cameo", "cameo_id", default=None, help="Only this cameo.")
@json_option
@click.pass_obj
def uses(obj: Ctx, cameo_id: str | None, as_json: bool) -> None:
    """The owner's view: every video casting your cameos, drafts and others' included."""
    out = _run(lambda: obj.client().owner_view(cameo_id))
    lines = []
    for u in out["uses"]:
        state = "published" if u["published"] else ("taken down" if u["taken_down_at"] else "draft")
        lines.append(
            f"{u['job_id']}  {','.join(u['cameo_ids'])}  by {u['made_by']:<12} "
            f"{_when(u['submitted_at'])}  {u['status']:<9} {state}"
        )
    show(out, as_json, "\n".join(lines) or "no videos use your cameos")


@click.command()
@click.argument("job_id")
@click.pass_obj
def takedown(obj: Ctx, job_id: str) -> None:
    """Take down a published video (as its maker, or as the owner of a cameo in it)."""
    out = _run(lambda: obj.client().takedown(job_id))
    click.echo(f"{out['id']} taken down")


# --- audit and purge (operators) ---------------------------------------------------------------


@click.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@json_option
@click.pass_obj
def audit_verify(obj: Ctx, as_json: bool) -> None:
    """Check the whole chain (operator): names every edited, reordered or removed row.

    Exits 1 if the log was tampered with.
    """
    out = _run(lambda: obj.client().audit_verify())
    text = f"{out['rows']} rows, head seq {out['head_seq']} hash {out['head_hash']}\n"
    text += (
        "audit log intact" if out["ok"] else "\n".join(f"TAMPERED: {p}" for p in out["problems"])
    )
    show(out, as_json, text)
    if not out["ok"]:
        raise SystemExit(1)


@audit.command("log")
@click.option("--after", type=int, default=0, help="Only rows after this seq.")
@click.option("--limit", type=int, default=50, show_default=True)
@json_option
@click.pass_obj
def audit_log(obj: Ctx, after: int, limit: int, as_json: bool) -> None:
    """Show audit rows (operators: all; users: about their account, cameos and jobs)."""
    out = _run(lambda: obj.client().audit_log(after, limit))
    lines = [
        f"{e['seq']:>6} {_when(e['at'])} {e['actor']:<14} {e['action']:<22} {e['subject']}"
        for e in out["entries"]
    ]
    show(out, as_json, "\n".join(lines) or "no entries")


@click.group()
def purge() -> None:
    """Run cameo purges by hand (the scheduler runs them while the farm is up)."""


@purge.command("run")
@click.pass_obj
def purge_run(obj: Ctx) -> None:
    """Run every unfinished purge now (operator key; use when the farm is down)."""
    from cameofarm.cameos.purge import run_due_purges

    api = obj.api()
    who = _run(lambda: api.authenticate(obj.api_key))
    if not who.operator:
        fail("only an operator runs purges by hand")
    for result in run_due_purges(obj.storage()):
        click.echo(f"{result.cameo_id}: removed {len(result.removed)} objects")


COMMANDS = [
    users,
    whoami,
    new_key,
    keys,
    follow,
    unfollow,
    webhook,
    cameos,
    cameo,
    uses,
    takedown,
    audit,
    purge,
]
