"""Consent without Ray: content rules, cameo limits, quotas, revocation at the very moment
of publishing, and deletion with its purge proof (in-process pools)."""

from __future__ import annotations

import pytest


@pytest.fixture
def api(farm_config, storage):
    from cameofarm.service.farm_api import FarmAPI

    return FarmAPI(farm_config, storage)


@pytest.fixture
def people(api):
    """An operator, the cameo fixture's owner ("tester") and another user, with their keys."""
    ops = api.authenticate(api.init_operator("ops", "farm")["api_key"])
    keys = {name: api.create_user(ops, name, "acme")["api_key"] for name in ("tester", "ada")}
    return {name: api.authenticate(key) for name, key in keys.items()}


def test_content_policy_refuses_with_the_rule_and_words(farm_config):
    from cameofarm.cameos.content import ContentError, check_script

    policy = farm_config.content
    check_script("Welcome to the quarterly safety training.", policy)
    for script, rule in [
        ("Let's get naked tonight", "sexual"),
        ("Send me n4k3d pictures", "sexual"),  # digits for letters
        ("Hello, I am the President of France.", "public_official"),
        ("Speaking as the prime minister: stay home.", "public_official"),
    ]:
        with pytest.raises(ContentError, match=rf"rule '{rule}'"):
            check_script(script, policy)
    check_script("Hello, Helen, happy sextant day", policy)  # whole words only


@pytest.mark.parametrize(
    ("script", "rule"),
    [
        ("Hello, I am the pres\u0456dent of France.", "public_official"),  # Cyrillic і
        ("This is the presi\u200bdent speaking.", "public_official"),  # zero-width space
        ("Let's talk about s\u0435x tonight.", "sexual"),  # Cyrillic е
        ("I am the PRES\u0399DENT.", "public_official"),  # Greek capital iota
        ("I am the \U0001d429resident.", "public_official"),  # mathematical bold p
        ("Let's get na\u0301ked.", "sexual"),  # combining accent
        ("Let's get nak\u00aded.", "sexual"),  # soft hyphen
        ("Let's get n\u2060aked.", "sexual"),  # word joiner
    ],
)
def test_lookalike_letters_and_invisible_characters_do_not_bypass_the_rules(
    farm_config, script, rule
):
    from cameofarm.cameos.content import ContentError, check_script

    with pytest.raises(ContentError, match=rf"rule '{rule}'"):
        check_script(script, farm_config.content)


def test_other_scripts_and_accents_are_not_refused_for_their_letters(farm_config):
    from cameofarm.cameos.content import check_script

    for script in [
        "Willkommen zur Sicherheitsschulung, liebe Kolleginnen und Kollegen.",
        "安全研修へようこそ。今日は火災訓練について話します。",
        "Добро пожаловать на тренинг по безопасности.",
        "Café résumé: the naïve coördinator presents.",
    ]:
        check_script(script, farm_config.content)


def test_owner_restrictions_and_cameo_limit(api, people, cameo):
    from cameofarm.service.farm_api import BadRequest, Forbidden

    owner, ada = people["tester"], people["ada"]
    api.set_permission(owner, cameo.id, "everyone")
    out = api.set_restrictions(owner, cameo.id, ["political"])
    assert out["restrictions"] == ["political"]
    with pytest.raises(BadRequest, match="does not allow political"):
        api.submit(ada, [cameo.id], "Vote for Bob on Tuesday!")
    with pytest.raises(BadRequest, match="owners may restrict"):
        api.set_restrictions(owner, cameo.id, ["sexual'); DROP TABLE cameos;--"])
    # The cameo limit is the config's (2: a dialogue on a two-actor scene), in may_cast.
    with pytest.raises(Forbidden, match="at most 2 cameos; this one names 3"):
        api.submit(ada, [cameo.id, "cam_b", "cam_c"], "Hello.")
    job = api.submit(ada, [cameo.id], "Hello from the onboarding team.")
    assert job["status"] == "QUEUED" and job["customer"] == "ada"
    # Restricting after the fact cancels the queued job that now breaks the rule, only that.
    api.set_restrictions(owner, cameo.id, [])
    political = api.submit(ada, [cameo.id], "Vote for Bob on Tuesday!")
    out = api.set_restrictions(owner, cameo.id, ["political"])
    assert out["cancelled_jobs"] == [political["id"]]
    assert api.get_job(ada, political["id"])["status"] == "CANCELLED"
    assert api.get_job(ada, job["id"])["status"] == "QUEUED"


def test_daily_quota_answers_429_with_retry_after(farm_config, storage, people, cameo):
    from cameofarm.service.farm_api import FarmAPI, RateLimited

    tight = farm_config.model_copy(
        update={"api": farm_config.api.model_copy(update={"jobs_per_day": 2})}
    )
    api = FarmAPI(tight, storage)
    owner = people["tester"]
    first = api.submit(owner, [cameo.id], "One.", client_token="a")
    api.submit(owner, [cameo.id], "Two.")
    with pytest.raises(RateLimited) as info:
        api.submit(owner, [cameo.id], "Three.")
    assert info.value.retry_after and 86000 < info.value.retry_after <= 86400
    # An idempotent retry of an accepted job is not a new job: it is answered, not limited.
    again = api.submit(owner, [cameo.id], "One.", client_token="a")
    assert again["id"] == first["id"] and again["replayed"]


def test_revocation_while_publishing_removes_the_output(api, people, cameo, pools, storage):
    """The owner narrows the permission at the last moment: nothing is published."""
    from cameofarm.cluster.jobs import JobChanged, dispatch_job, finish_published, get_job
    from cameofarm.pipelines.render import RenderJob, render_job

    owner, ada = people["tester"], people["ada"]
    api.set_permission(owner, cameo.id, "approved")
    api.approve(owner, cameo.id, "ada")
    sub = api.submit(ada, [cameo.id], "Hello there.")
    assert dispatch_job(storage.db, api.config, sub["id"]) is not None

    def finalize(key, quality):
        assert storage.objects.exists(key)  # written, not yet published
        api.unapprove(owner, cameo.id, "ada")  # revoked right now
        finish_published(storage.db, api.config, sub["id"], key)

    job = RenderJob(sub["id"], "plus", (cameo.id,), sub["script"])
    with pytest.raises(JobChanged, match="not published"):
        render_job(job, api.config, pools, storage, finalize=finalize)
    assert not storage.objects.exists(f"outputs/{sub['id']}.mp4")
    view = get_job(storage.db, sub["id"])
    assert view.status.value == "CANCELLED" and "consent withdrawn" in (view.error or "")
    assert api.owner_view(owner)["uses"][0]["published"] is False


def test_delete_purges_every_object_and_the_scan_proves_it(api, people, cameo, pools, storage):
    from cameofarm.cameos.purge import run_due_purges
    from cameofarm.cluster.jobs import dispatch_job, finish_published
    from cameofarm.pipelines.render import RenderJob, render_job
    from cameofarm.service.farm_api import Forbidden, Gone, NotFound

    owner, ada = people["tester"], people["ada"]
    sub = api.submit(owner, [cameo.id], "A video to be purged.")
    dispatch_job(storage.db, api.config, sub["id"])
    render_job(
        RenderJob(sub["id"], "plus", (cameo.id,), sub["script"]),
        api.config,
        pools,
        storage,
        finalize=lambda key, quality: finish_published(storage.db, api.config, sub["id"], key),
    )
    before = api.scan_cameo(owner, cameo.id)
    assert not before["clean"] and f"outputs/{sub['id']}.mp4" in before["remaining"]
    assert sum(len(h["cached"]) for h in pools.health()) > 0  # replicas hold its assets

    # Take-down: not by a stranger (who cannot even see the job), by the owner at once.
    with pytest.raises(NotFound):
        api.takedown(ada, sub["id"])
    assert api.download(owner, sub["id"], "http://farm")["url"]
    assert api.captions(owner, sub["id"], "srt").startswith("1\n00:00:")
    assert f"outputs/{sub['id']}.vtt" in before["remaining"]  # captions are the video's too
    down = api.takedown(owner, sub["id"])
    assert down["taken_down_at"] and not down["published"]
    for ext in ("mp4", "vtt", "srt"):  # the video and its captions come down together
        assert not storage.objects.exists(f"outputs/{sub['id']}.{ext}")
    with pytest.raises(Gone):
        api.download(owner, sub["id"], "http://farm")
    with pytest.raises(Gone):
        api.captions(owner, sub["id"])

    with pytest.raises(NotFound):  # only the owner deletes (others see no such cameo)
        api.delete_cameo(ada, cameo.id)
    out = api.delete_cameo(owner, cameo.id)
    assert out["status"] == "DELETED" and out["purge_deadline"] > 0
    with pytest.raises(Forbidden, match="DELETED"):
        api.submit(owner, [cameo.id], "Still here?")  # unusable at once

    done = run_due_purges(storage, forget=pools.forget)
    assert [d.cameo_id for d in done] == [cameo.id] and done[0].removed
    assert sum(len(h["cached"]) for h in pools.health()) == 0
    after = api.scan_cameo(owner, cameo.id)
    assert after["clean"] and after["remaining"] == [], after
    assert not [k for k in storage.objects.list("") if cameo.id in k]
    status = api.purge_status(owner, cameo.id)
    assert status["finished_at"] and len(status["removed"]) == len(done[0].removed)
    assert api.get_cameo(owner, cameo.id)["status"] == "DELETED"
    from cameofarm.cameos.audit import verify_audit

    assert verify_audit(storage.db).ok


def test_dispatch_checks_consent_again(api, people, cameo, storage):
    """A grant that vanished without the usual enforcement is still caught at dispatch."""
    from cameofarm.cluster.jobs import dispatch_job, get_job
    from cameofarm.storage.db import CameoGrantRow

    owner, ada = people["tester"], people["ada"]
    api.set_permission(owner, cameo.id, "approved")
    api.approve(owner, cameo.id, "ada")
    sub = api.submit(ada, [cameo.id], "Hello there.")
    with storage.db.session() as s:
        s.delete(s.get(CameoGrantRow, (cameo.id, "ada")))
    assert dispatch_job(storage.db, api.config, sub["id"]) is None
    view = get_job(storage.db, sub["id"])
    assert view.status.value == "CANCELLED" and "consent check at dispatch" in (view.error or "")
