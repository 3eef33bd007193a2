"""The hash-chained audit log: each kind of tampering is detected and the row is named."""

from __future__ import annotations

import pytest
from sqlalchemy import text

pytestmark = pytest.mark.databases


@pytest.fixture
def chain(storage):
    from cameofarm.cameos.audit import append

    for i in range(1, 7):
        append(storage.db, f"user{i}", "test.action", f"subject{i}", n=i)
    return storage.db


def _sql(db, statement, **params):
    with db.engine.begin() as conn:
        conn.execute(text(statement), params)


def _problems(db):
    from cameofarm.cameos.audit import verify_audit

    return verify_audit(db).problems


def test_untouched_chain_verifies(chain):
    from cameofarm.cameos.audit import verify_audit

    report = verify_audit(chain)
    assert report.ok and report.rows == 6 and report.head_seq == 6


def test_edited_row_is_named(chain):
    _sql(chain, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    problems = _problems(chain)
    assert problems and problems[0].startswith("row 3 edited"), problems


def test_edited_and_rehashed_row_is_named(chain):
    from cameofarm.cameos.audit import entry_hash

    with chain.session() as s:
        row = s.execute(
            text("SELECT prev_hash, at, action, subject, detail FROM audit_log WHERE seq=3")
        ).one()
    import json

    detail = row[4] if isinstance(row[4], dict) else json.loads(row[4])  # PostgreSQL: a dict
    forged = entry_hash(row[0], row[1], "mallory", row[2], row[3], detail)
    _sql(chain, "UPDATE audit_log SET actor='mallory', hash=:h WHERE seq=3", h=forged)
    problems = _problems(chain)
    assert any(p.startswith("row 3 edited") for p in problems), problems


def test_reordered_rows_are_named(chain):
    _sql(chain, "UPDATE audit_log SET seq = 100 WHERE seq = 4")
    _sql(chain, "UPDATE audit_log SET seq = 4 WHERE seq = 5")
    _sql(chain, "UPDATE audit_log SET seq = 5 WHERE seq = 100")
    problems = _problems(chain)
    assert any("row 4 moved" in p for p in problems), problems
    assert any("row 5 moved" in p for p in problems), problems


def test_removed_row_is_named(chain):
    _sql(chain, "DELETE FROM audit_log WHERE seq = 2")
    assert _problems(chain) == ["row 2 removed (row 3 follows row 1)"]


def test_removed_tail_is_named(chain):
    _sql(chain, "DELETE FROM audit_log WHERE seq >= 5")
    assert _problems(chain) == ["rows 5..6 removed from the end"]


def test_cli_audit_verify_names_the_edited_row(farm_config, chain):
    from cameofarm.service.cli import cli
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.storage import FarmStorage
    from cameofarm.storage.objects import LocalObjectStore
    from click.testing import CliRunner

    api = FarmAPI(
        farm_config,
        FarmStorage(chain, LocalObjectStore(farm_config.data_dir), farm_config.data_dir),
    )
    key = api.init_operator("ops", "farm")["api_key"]
    env = {
        "CAMEOFARM__DATA_DIR": farm_config.data_dir,
        "CAMEOFARM__DATABASE__URL": farm_config.database.url,
        "CAMEOFARM_API_KEY": key,
    }
    runner = CliRunner()
    ok = runner.invoke(cli, ["audit", "verify"], env=env)
    assert ok.exit_code == 0 and "audit log intact" in ok.output, ok.output
    _sql(chain, "UPDATE audit_log SET detail = '{\"n\": 99}' WHERE seq = 4")
    bad = runner.invoke(cli, ["audit", "verify"], env=env)
    assert bad.exit_code == 1 and "TAMPERED: row 4 edited" in bad.output, bad.output
    # Only operators may run it.
    user_key = api.create_user(api.authenticate(key), "ada", "acme")["api_key"]
    denied = runner.invoke(cli, ["audit", "verify"], env={**env, "CAMEOFARM_API_KEY": user_key})
    assert denied.exit_code == 1 and "only an operator" in denied.output


def test_concurrent_appends_keep_one_unbroken_chain(storage):
    """Writers on four threads (the API, the scheduler, the CLI at once): every append gets
    its own seq and the chain still verifies."""
    import threading

    from cameofarm.cameos.audit import append, verify_audit

    append(storage.db, "ops", "test.genesis", "farm")  # the head row exists
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                append(storage.db, f"writer{n}", "test.concurrent", f"s{n}-{i}", i=i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = verify_audit(storage.db)
    assert report.ok, report.problems
    assert report.rows == report.head_seq == 101
