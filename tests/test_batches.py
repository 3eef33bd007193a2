"""Batches: a manifest checked as a whole, queued at once, followed, cancelled, retried and
reported, in process, over HTTP and through the CLI."""

from __future__ import annotations

import csv
import io
import json
import time

import pytest
from cameofarm.cameos.accounts import Principal
from cameofarm.cluster.batches import ManifestError, parse_manifest
from cameofarm.cluster.batches.manifest import fill_template
from cameofarm.cluster.jobs import JobStatus, list_jobs, set_job_status

TESTER = Principal("tester", "acme")
CAMEO = "cam_rowonly0001"


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


def _good_rows(n: int = 4) -> list[dict[str, str]]:
    names = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken"]
    return [
        {
            "cameo": CAMEO,
            "script": "Welcome to the team, {name}!",
            "name": names[i % len(names)],
            "tier": "plus" if i % 2 == 0 else "pro",
            "language": "en",
            "output": f"welcome-{i}",
        }
        for i in range(n)
    ]


# --- the manifest ----------------------------------------------------------------------------


def test_a_csv_manifest_fills_its_templates_and_numbers_rows_as_a_spreadsheet():
    data = _csv(_good_rows(2)) + b"\n" + f"{CAMEO};cam_other,Hi {{{{x}}}} {{name}},Bo,,,\n".encode()
    rows, problems = parse_manifest(data, "welcome.csv")
    assert problems == []
    assert [r.row for r in rows] == [2, 3, 5]  # the header is row 1; the blank line counts
    assert rows[0].script == "Welcome to the team, Ada!"
    assert (rows[0].tier, rows[0].language, rows[0].output) == ("plus", "en", "welcome-0")
    assert rows[2].cameo_ids == (CAMEO, "cam_other") and rows[2].script == "Hi {x} Bo"
    assert rows[2].output == "row-5" and rows[2].tier is None


def test_a_jsonl_manifest_takes_lists_of_cameos():
    lines = [
        {"cameos": [CAMEO, "cam_b"], "script": "A: Hello. / B: Hi.", "scene": "scn_1"},
        {"cameo": CAMEO, "script": "Hallo {who}", "who": "Welt", "language": "de"},
    ]
    data = "\n".join(json.dumps(line) for line in lines).encode()
    rows, problems = parse_manifest(data, "talks.jsonl")
    assert problems == [] and [r.row for r in rows] == [1, 2]
    assert rows[0].cameo_ids == (CAMEO, "cam_b") and rows[0].scene == "scn_1"
    assert rows[1].script == "Hallo Welt" and rows[1].language == "de"


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("Hi {missing}", "no missing value"),
        ("Hi {0.__class__.__mro__}", "stray brace"),
        ("Hi {name!r}", "stray brace"),
        ("Hi {", "stray brace"),
    ],
)
def test_a_template_is_filled_with_text_only(template, reason):
    with pytest.raises(ValueError, match=reason):
        fill_template(template, {"name": "Ada"})


def test_bad_rows_are_listed_with_their_numbers():
    rows = _good_rows(3)
    rows[1]["output"] = "../../etc/passwd"
    rows[2]["output"] = "welcome-0"  # row 2's
    rows.append({**_good_rows(1)[0], "cameo": "", "output": "x"})
    _, problems = parse_manifest(_csv(rows), "m.csv")
    assert [(p.row, p.reason.split(" ")[0]) for p in problems] == [
        (3, "output"),
        (4, "output"),
        (5, "no"),
    ]
    assert "also row 2's" in problems[1].reason


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"\xff\xfe\x00bad", "m.csv", "not UTF-8"),
        (b"name,text\nx,y\n", "m.csv", "cameo and script"),
        (b"", "m.csv", "is empty"),
        (b"cameo,script\n", "m.csv", "no rows"),
        (b"[1, 2]\n", "m.jsonl", "not a JSON object"),
        (b"cameo,script\nc,s\n", "m.xlsx", ".csv or .jsonl"),
    ],
)
def test_an_unreadable_manifest_says_why(data, name, message):
    with pytest.raises(ManifestError, match=message):
        parse_manifest(data, name)


# --- submitting and following ----------------------------------------------------------------


@pytest.fixture
def api(farm_config, storage, cameo_row):
    from cameofarm.service.farm_api import FarmAPI

    return FarmAPI(farm_config, storage)


def _jobs(storage):
    return list_jobs(storage.db)


@pytest.mark.databases
def test_a_batch_with_bad_rows_queues_nothing_and_names_exactly_those_rows(api, storage):
    from cameofarm.service.areas.batches import BatchRefused

    rows = _good_rows(5)
    rows[1]["cameo"] = "cam_nobody00000"  # unknown cameo
    rows[3]["language"] = "xx"  # no voice speaks it
    data = _csv(rows)
    with pytest.raises(BatchRefused) as refused:
        api.submit_batch(TESTER, data, "welcome.csv")
    assert [p.row for p in refused.value.problems] == [3, 5]
    assert "cam_nobody00000" in refused.value.problems[0].reason
    assert "xx" in refused.value.problems[1].reason
    assert "2 of 5 rows fail" in refused.value.message
    assert _jobs(storage) == []  # nothing queued

    skipped = api.submit_batch(TESTER, data, "welcome.csv", skip_invalid=True)
    assert (skipped["jobs"], skipped["rows"]) == (3, 5)
    assert [s["row"] for s in skipped["skipped"]] == [3, 5]
    assert len(_jobs(storage)) == 3


def test_a_row_asks_for_burned_captions_its_font_must_draw(api, storage):
    from cameofarm.service.areas.batches import BatchRefused

    rows = [{**row, "captions": ""} for row in _good_rows(4)]
    rows[0]["captions"] = "Burned"
    rows[1].update(script="こんにちは、みなさん。", language="ja", captions="burned")
    rows[2]["captions"] = "on"
    with pytest.raises(BatchRefused) as refused:
        api.submit_batch(TESTER, _csv(rows), "captions.csv")
    assert [p.row for p in refused.value.problems] == [3, 4]
    assert "burned-in captions cannot show こ" in refused.value.problems[0].reason
    assert "captions must be one of sidecar, burned" in refused.value.problems[1].reason
    rows[1].update(captions="")  # sidecar captions show Japanese in the player's font
    rows[2].update(captions="sidecar")
    api.submit_batch(TESTER, _csv(rows), "captions.csv")
    assert sorted(j.captions for j in _jobs(storage)) == ["burned", "sidecar", "sidecar", "sidecar"]


def test_the_same_file_again_is_the_same_batch(api, storage):
    rows = _good_rows(4)
    rows[1].update(script="Willkommen im Team, {name}!", language="de")
    rows[2].update(script="ようこそ、{name}さん。", name="はなこ", language="ja")  # kana
    data = _csv(rows)
    first = api.submit_batch(TESTER, data, "welcome.csv")
    assert first["replayed"] is False and first["jobs"] == 4
    again = api.submit_batch(TESTER, data, "renamed.csv")
    assert again["replayed"] is True and again["batch_id"] == first["batch_id"]
    assert len(_jobs(storage)) == 4  # nothing new queued
    jobs = _jobs(storage)
    assert sorted(j.tier for j in jobs) == ["plus", "plus", "pro", "pro"]
    assert sorted(j.language for j in jobs) == ["de", "en", "en", "ja"]
    assert any(j.script == "ようこそ、はなこさん。" for j in jobs)


@pytest.mark.databases
def test_status_cancel_retry_and_results(api, storage, farm_config):
    from cameofarm.service.areas.batches import results_csv
    from cameofarm.service.farm_api import NotFound

    batch = api.submit_batch(TESTER, _csv(_good_rows(4)), "welcome.csv")
    bid = batch["batch_id"]
    jobs = {j.id: j for j in _jobs(storage)}
    sheet = api.batch_results(TESTER, bid)["rows"]
    first, second, third, _ = (r["job_id"] for r in sheet)
    set_job_status(storage.db, first, JobStatus.RUNNING, "dispatched")
    voice = {  # a stored voice report (VoiceQuality.to_dict): under the gain target
        "encoder": "resemblyzer:ge2e@1",
        "to_cameo": 0.78,
        "base_to_cameo": 0.72,
        "words_recovered": 0.8,
        "meets_targets": False,
        "clear": True,
    }
    set_job_status(
        storage.db,
        first,
        JobStatus.SUCCEEDED,
        "published",
        output_key="o/1.mp4",
        quality={"voice": voice},
    )
    set_job_status(storage.db, second, JobStatus.RUNNING, "dispatched")
    set_job_status(storage.db, second, JobStatus.FAILED, "the face swap broke")
    set_job_status(storage.db, third, JobStatus.RUNNING, "dispatched")

    status = api.batch_status(TESTER, bid)
    assert status["counts"] == {
        "QUEUED": 1,
        "RUNNING": 1,
        "SUCCEEDED": 1,
        "FAILED": 1,
        "CANCELLED": 0,
    }
    assert status["done"] is False and status["eta_s"] is not None

    retried = api.retry_failed(TESTER, bid)
    assert [r["row"] for r in retried["retried"]] == [3] and retried["refused"] == []
    rows = {r["row"]: r for r in api.batch_results(TESTER, bid)["rows"]}
    assert rows[3]["status"] == "QUEUED" and rows[3]["job_id"] not in jobs

    cancelled = api.cancel_batch(TESTER, bid)
    assert cancelled["cancelled"] is True and cancelled["done"] is True
    assert cancelled["counts"]["SUCCEEDED"] == 1  # what was published stays
    assert cancelled["counts"]["CANCELLED"] == 3

    results = api.batch_results(TESTER, bid)
    assert [r["row"] for r in results["rows"]] == [2, 3, 4, 5]
    assert results["rows"][0]["output_key"] == "o/1.mp4"
    published = results["rows"][0]  # its voice's figures and verdict, to filter the sheet on
    assert published["voice_to_cameo"] == 0.78 and published["voice_gain"] == 0.06
    assert published["voice_words_recovered"] == 0.8
    assert published["voice_meets_targets"] is False and published["voice_clear"] is True
    assert results["rows"][1]["voice_gain"] is None  # nothing published: no voice
    text = results_csv(results).splitlines()
    assert text[0].startswith("row,output,job_id,status,error")
    assert text[1].startswith("2,welcome-0,")

    with pytest.raises(NotFound):  # another user's batch does not exist for them
        api.batch_status(Principal("mallory", "evil"), bid)
    with pytest.raises(NotFound):
        api.cancel_batch(Principal("mallory", "evil"), bid)
    assert api.list_batches(Principal("mallory", "evil")) == {"batches": []}


def test_a_batch_over_the_queue_limit_is_refused_whole(api, storage, farm_config):
    from cameofarm.service.farm_api import BadRequest, FarmAPI

    plus = farm_config.tiers["plus"].model_copy(update={"max_queued": 2})
    small = farm_config.model_copy(update={"tiers": {**farm_config.tiers, "plus": plus}})
    with pytest.raises(BadRequest, match="room for 2 more jobs"):
        FarmAPI(small, storage).submit_batch(TESTER, _csv(_good_rows(6)), "m.csv")
    assert _jobs(storage) == []


# --- over HTTP and the CLI ---------------------------------------------------------------------


def test_batches_over_http(api, farm_config):
    from cameofarm.service.http import build_app
    from fastapi.testclient import TestClient

    ops = api.init_operator("ops", "acme")["api_key"]
    key = api.create_user(Principal("ops", "acme", True), "tester", "acme")["api_key"]
    client = TestClient(build_app(farm_config, api_factory=lambda: api))
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/octet-stream"}
    rows = _good_rows(3)
    rows[2]["script"] = "Hi {nobody}"
    bad = client.post("/v1/batches?filename=m.csv", content=_csv(rows), headers=headers)
    assert bad.status_code == 422
    assert bad.json()["problems"] == [{"row": 4, "reason": bad.json()["problems"][0]["reason"]}]
    good = client.post("/v1/batches?filename=m.csv", content=_csv(_good_rows(2)), headers=headers)
    assert good.status_code == 201, good.text
    bid = good.json()["batch_id"]
    again = client.post("/v1/batches?filename=m.csv", content=_csv(_good_rows(2)), headers=headers)
    assert again.status_code == 200 and again.json()["batch_id"] == bid
    assert client.get(f"/v1/batches/{bid}", headers=headers).json()["jobs"] == 2
    sheet = client.get(f"/v1/batches/{bid}/results?format=csv", headers=headers)
    assert sheet.headers["content-type"].startswith("text/csv")
    assert len(sheet.text.splitlines()) == 3
    assert client.get("/v1/batches/bat_000000000000", headers=headers).status_code == 404
    assert client.get("/v1/batches/../etc", headers=headers).status_code == 404
    odd = client.post("/v1/batches?filename=../x.csv", content=b"a", headers=headers)
    assert odd.status_code == 422
    assert client.get("/v1/batches", headers={"Authorization": f"Bearer {ops}"}).json() == {
        "batches": []
    }


def test_the_cli_lists_bad_rows_and_follows_a_batch(api, farm_config, storage, tmp_path):
    from cameofarm.service.cli import cli
    from click.testing import CliRunner

    api.init_operator("ops", "acme")
    key = api.create_user(Principal("ops", "acme", True), "tester", "acme")["api_key"]
    env = {
        "CAMEOFARM__DATA_DIR": farm_config.data_dir,
        "CAMEOFARM__DATABASE__URL": str(farm_config.database.url),
        "CAMEOFARM_API_KEY": key,
    }
    rows = _good_rows(3)
    rows[0]["tier"] = "gold"
    bad = tmp_path / "bad.csv"
    bad.write_bytes(_csv(rows))
    out = CliRunner().invoke(cli, ["batch", "submit", str(bad)], env=env)
    assert out.exit_code == 1
    assert "row 2:" in out.output and "gold" in out.output and "nothing was queued" in out.output

    good = tmp_path / "good.csv"
    good.write_bytes(_csv(_good_rows(2)))
    out = CliRunner().invoke(cli, ["batch", "submit", str(good), "--json"], env=env)
    assert out.exit_code == 0, out.output
    bid = json.loads(out.output)["batch_id"]
    for job in _jobs(storage):
        set_job_status(storage.db, job.id, JobStatus.RUNNING, "dispatched")
        set_job_status(storage.db, job.id, JobStatus.FAILED, "broken")
    waited = CliRunner().invoke(cli, ["batch", "wait", bid], env=env)
    assert waited.exit_code == 1 and "[xxxxxxxxxx" in waited.output
    assert "2 failed" in waited.output and "2 jobs failed" in waited.output
    results = CliRunner().invoke(cli, ["batch", "results", bid, "--csv"], env=env)
    assert results.output.splitlines()[1].split(",")[3] == "FAILED"
    got = CliRunner().invoke(cli, ["batch", "download", bid, str(tmp_path / "out")], env=env)
    assert got.exit_code == 0, got.output
    assert "0 videos fetched" in got.output and "2 rows not published" in got.output
    assert (tmp_path / "out" / "results.csv").read_text().count("FAILED") == 2


@pytest.mark.databases
def test_the_last_job_of_a_batch_sends_batch_completed_once(api, storage):
    from cameofarm.storage.db import UserRow, WebhookDeliveryRow

    api.create_user(Principal("ops", "acme", True), "tester", "acme")
    with storage.db.session() as s:
        s.get(UserRow, "tester").webhook_url = "https://hooks.example/cameofarm"
    bid = api.submit_batch(TESTER, _csv(_good_rows(2)), "m.csv")["batch_id"]
    first, _last = (r["job_id"] for r in api.batch_results(TESTER, bid)["rows"])
    set_job_status(storage.db, first, JobStatus.RUNNING, "dispatched")
    set_job_status(storage.db, first, JobStatus.SUCCEEDED, "published", output_key="o/1.mp4")
    assert api.batch_status(TESTER, bid)["completed_at"] is None
    api.cancel_batch(TESTER, bid)  # the second job was the last one open
    with storage.db.session() as s:
        sent = [json.loads(d.body) for d in s.query(WebhookDeliveryRow).order_by("id")]
    assert [b["event"] for b in sent] == ["job.succeeded", "job.cancelled", "batch.completed"]
    assert sent[2]["batch_id"] == bid and sent[2]["name"] == "m.csv"
    assert sent[2]["counts"] == {"SUCCEEDED": 1, "FAILED": 0, "CANCELLED": 1}
    assert api.batch_status(TESTER, bid)["completed_at"] is not None


# --- on a real farm ----------------------------------------------------------------------------


@pytest.mark.integration
def test_a_batch_renders_on_the_farm_and_another_organisation_gets_the_next_slot(
    farm_config, storage, cameo, tmp_path
):
    """Three rows in three languages render to a results sheet whose every video has captions
    and a valid C2PA manifest; another organisation's single Plus job, submitted while the
    batch runs, starts within one free slot; `batch download` fetches it all."""
    from cameofarm.cluster.bootstrap import farm_down, farm_up
    from cameofarm.cluster.jobs import get_job
    from cameofarm.models.reference.provenance import verify_mp4
    from cameofarm.service.cli import cli
    from cameofarm.service.farm_api import FarmAPI
    from click.testing import CliRunner

    scheduler = farm_config.scheduler.model_copy(update={"max_running_jobs": 1})
    config = farm_config.model_copy(update={"scheduler": scheduler})  # one slot at a time
    api = FarmAPI(config, storage)
    ops = api.authenticate(api.init_operator("ops", "farm")["api_key"])
    key = api.create_user(ops, "tester", "acme")["api_key"]
    tester = api.authenticate(key)
    bob = api.authenticate(api.create_user(ops, "bob", "globex")["api_key"])
    api.set_permission(tester, cameo.id, "approved")
    api.approve(tester, cameo.id, "bob")
    rows = [
        {"cameo": cameo.id, "script": "Welcome, {name}.", "name": "Ada", "language": "en"},
        {"cameo": cameo.id, "script": "Willkommen im Team, {name}.", "name": "Jonas"},
        {"cameo": cameo.id, "script": "ようこそ、{name}さん。", "name": "はなこ"},
    ]
    rows[1]["language"], rows[2]["language"] = "de", "ja"
    for row in rows:
        row.update(tier="plus", output=f"welcome-{row['language']}")
    try:
        farm_up(config, progress=lambda _: None)
        batch = api.submit_batch(tester, _csv(rows), "welcome.csv")
        sheet = api.batch_results(tester, batch["batch_id"])["rows"]
        batch_jobs = [r["job_id"] for r in sheet]
        while get_job(storage.db, batch_jobs[0]).status is JobStatus.QUEUED:
            time.sleep(0.2)  # until the batch holds the farm's one slot
        single = api.submit(bob, [cameo.id], "Hello from Globex.", "plus")
        done = _wait_done(api, tester, batch["batch_id"], storage, single["id"])
        assert done["counts"]["SUCCEEDED"] == 3, api.batch_results(tester, batch["batch_id"])
        bobs = get_job(storage.db, single["id"])
        assert bobs.status is JobStatus.SUCCEEDED, bobs.error
        # Batch rows that took a slot after Bob asked and before Bob got one: at most one.
        overtook = [
            j
            for j in batch_jobs
            if bobs.submitted_at <= (get_job(storage.db, j).started_at or 0) < bobs.started_at
        ]
        assert len(overtook) <= 1, "the other organisation's job waited more than one slot"
    finally:
        farm_down(config, progress=lambda _: None)

    root = (storage.keys_dir / "root.pem").read_bytes()
    results = api.batch_results(tester, batch["batch_id"])["rows"]
    assert [r["output"] for r in results] == ["welcome-en", "welcome-de", "welcome-ja"]
    for r in results:
        assert r["status"] == "SUCCEEDED" and r["captions_vtt"] and r["captions_srt"]
        manifest = verify_mp4(storage.objects.get_bytes(r["output_key"]), root)
        assert manifest.valid and manifest.extra["captions"]["vtt"] == r["captions_vtt"]
        assert r["c2pa_manifest"] == manifest.manifest_id
        assert isinstance(r["voice_meets_targets"], bool) and r["voice_gain"] is not None
        assert (r["voice_clear"] is None) == (r["language"] != "en")  # English words only
    ja = storage.objects.get_bytes(results[2]["captions_vtt"]).decode()
    assert "ようこそ、はなこさん。" in ja

    env = {
        "CAMEOFARM__DATA_DIR": config.data_dir,
        "CAMEOFARM__DATABASE__URL": str(config.database.url),
        "CAMEOFARM_API_KEY": key,
    }
    out = tmp_path / "out"
    got = CliRunner().invoke(cli, ["batch", "download", batch["batch_id"], str(out)], env=env)
    assert got.exit_code == 0, got.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [f"welcome-{lang}.{ext}" for lang in ("en", "de", "ja") for ext in ("mp4", "vtt", "srt")]
        + ["results.csv", "results.json"]
    )


def _wait_done(api, who, batch_id, storage, *others, limit_s=1800.0):
    """Follow the batch (and other jobs) until all have ended."""
    from cameofarm.cluster.jobs import TERMINAL, get_job

    deadline = time.monotonic() + limit_s
    while True:
        status = api.batch_status(who, batch_id)
        if status["done"] and all(get_job(storage.db, j).status in TERMINAL for j in others):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(1.0)
