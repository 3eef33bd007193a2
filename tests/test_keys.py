"""API keys that can be listed, revoked (at once, audited) and expire; failed
authentications limited per client address. In-process FastAPI app, no Ray."""

from __future__ import annotations

import secrets

import pytest

pytestmark = pytest.mark.databases


@pytest.fixture
def app_client(farm_config, storage):
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.http import build_app
    from fastapi.testclient import TestClient

    api = FarmAPI(farm_config, storage)
    ops_key = api.init_operator("ops", "farm")["api_key"]
    client = TestClient(build_app(farm_config, api_factory=lambda: api))
    return client, api, ops_key


def _auth(key):
    return {"Authorization": f"Bearer {key}"}


def test_a_revoked_key_fails_at_once_and_the_audit_names_who(app_client):
    client, api, ops = app_client
    ada = client.post("/v1/users", json={"user": "ada", "org": "acme"}, headers=_auth(ops))
    ada_key = ada.json()["api_key"]
    spare = client.post("/v1/me/keys", json={"label": "laptop"}, headers=_auth(ada_key))
    assert spare.status_code == 201
    spare_key = spare.json()["api_key"]
    assert client.get("/v1/me", headers=_auth(spare_key)).status_code == 200

    keys = client.get("/v1/me/keys", headers=_auth(ada_key)).json()["keys"]
    assert [(k["label"], k["state"]) for k in keys] == [
        ("first key", "active"),
        ("laptop", "active"),
    ]
    assert all("sha256" not in k and "api_key" not in k for k in keys)
    laptop = keys[1]["id"]

    # A stranger cannot see or revoke it; the operator can.
    bob = client.post("/v1/users", json={"user": "bob", "org": "acme"}, headers=_auth(ops))
    bob_key = bob.json()["api_key"]
    assert client.delete(f"/v1/keys/{laptop}", headers=_auth(bob_key)).status_code == 404
    assert client.get("/v1/users/ada/keys", headers=_auth(bob_key)).status_code == 404
    assert len(client.get("/v1/users/ada/keys", headers=_auth(ops)).json()["keys"]) == 2

    revoked = client.delete(f"/v1/keys/{laptop}", headers=_auth(ops))
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "ops"
    answer = client.get("/v1/me", headers=_auth(spare_key))
    assert answer.status_code == 401 and "revoked" in answer.json()["error"]
    assert client.get("/v1/me", headers=_auth(ada_key)).status_code == 200  # the other still works

    rows = [
        e for e in api.audit_log(api.authenticate(ops))["entries"] if e["action"] == "key.revoke"
    ]
    assert [(e["actor"], e["subject"], e["detail"]["key_id"]) for e in rows] == [
        ("ops", "ada", laptop)
    ]


def test_keys_expire(app_client, storage):
    from cameofarm.storage.db import ApiKeyRow

    client, _api, ops = app_client
    made = client.post(
        "/v1/me/keys", json={"label": "ci", "expires_in_days": 1}, headers=_auth(ops)
    )
    key = made.json()["api_key"]
    assert client.get("/v1/me", headers=_auth(key)).status_code == 200
    with storage.db.session() as s:  # a day passes
        row = s.query(ApiKeyRow).filter_by(label="ci").one()
        row.expires_at = row.created_at - 1
    answer = client.get("/v1/me", headers=_auth(key))
    assert answer.status_code == 401 and "expired" in answer.json()["error"]
    states = {
        k["label"]: k["state"] for k in client.get("/v1/me/keys", headers=_auth(ops)).json()["keys"]
    }
    assert states == {"first key": "active", "ci": "expired"}
    bad = client.post("/v1/me/keys", json={"expires_in_days": 0}, headers=_auth(ops))
    assert bad.status_code == 422


def test_the_cli_lists_and_revokes_keys(farm_config, storage, tmp_path):
    from cameofarm.service.cli import cli
    from cameofarm.service.farm_api import FarmAPI
    from click.testing import CliRunner

    api = FarmAPI(farm_config, storage)
    ops = api.init_operator("ops", "farm")["api_key"]
    env = {
        "CAMEOFARM_API_KEY": ops,
        "CAMEOFARM__DATA_DIR": farm_config.data_dir,
        "CAMEOFARM__DATABASE__URL": farm_config.database.url,
        "CAMEOFARM__ENROLLMENT__MIN_SPEECH_SECONDS": "4",
    }
    runner = CliRunner()
    made = runner.invoke(cli, ["new-key", "--label", "leaky"], env=env)
    assert made.exit_code == 0, made.output
    leaked = made.output.strip().splitlines()[-1]
    listing = runner.invoke(cli, ["keys", "list", "--json"], env=env)
    assert listing.exit_code == 0, listing.output
    import json

    key_id = next(k["id"] for k in json.loads(listing.output)["keys"] if k["label"] == "leaky")
    out = runner.invoke(cli, ["keys", "revoke", key_id], env=env)
    assert out.exit_code == 0 and "revoked by ops" in out.output, out.output
    refused = runner.invoke(cli, ["keys", "list"], env={**env, "CAMEOFARM_API_KEY": leaked})
    assert refused.exit_code != 0 and "revoked" in refused.output


def test_guessing_keys_is_throttled_per_client_address(farm_config, storage):
    """300 random keys from one address: the burst of failures answers 401, the rest 429.
    The refill is slowed to one a day so the count does not depend on the machine's speed."""
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.http import build_app
    from fastapi.testclient import TestClient

    api_cfg = farm_config.api.model_copy(update={"auth_failures_per_minute": 1 / 1440})
    config = farm_config.model_copy(update={"api": api_cfg})
    api = FarmAPI(config, storage)
    ops = api.init_operator("ops", "farm")["api_key"]
    client = TestClient(build_app(config, api_factory=lambda: api))
    codes = [
        client.get("/v1/me", headers=_auth("cf_" + secrets.token_urlsafe(32))).status_code
        for _ in range(300)
    ]
    burst = config.api.auth_failure_burst  # 10 by default
    assert codes == [401] * burst + [429] * (300 - burst)
    limited = client.get("/v1/me", headers=_auth(ops))
    # Past the limit the address waits, even with a good key: the guesser learns nothing.
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1


def test_the_per_key_rate_limit_answers_429_with_retry_after(farm_config, storage):
    """A slow refill (1 a minute) makes the limit independent of how fast requests go."""
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.http import build_app
    from fastapi.testclient import TestClient

    config = farm_config.model_copy(
        update={"api": farm_config.api.model_copy(update={"requests_per_minute": 1, "burst": 3})}
    )
    api = FarmAPI(config, storage)
    ops = api.init_operator("ops", "farm")["api_key"]
    other = api.issue_key(api.authenticate(ops), "second")["api_key"]
    client = TestClient(build_app(config, api_factory=lambda: api))

    codes = [client.get("/v1/me", headers=_auth(ops)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/v1/me", headers=_auth(ops))
    assert limited.status_code == 429 and 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "rate limit" in limited.json()["error"]
    assert client.get("/v1/me", headers=_auth(other)).status_code == 200  # per key
