"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation gets generated requests, valid and invalid, sent by an operator: no answer may
be a 5xx, every status code, content type, header and body must be the documented one, and
requests the schema allows must not be rejected as invalid. The app is the one Ray Serve
runs (`service.http.build_app`), called in-process over ASGI against a real farm folder, so
the run is bounded by examples, not by a farm's start-up. Examples are derandomized: CI runs
the same cases every time, and a failure names the case to reproduce.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

EXAMPLES = 25  # per operation
# Operations whose rules no schema can state, so a schema-valid request may still be refused
# (422, with the reason): a webhook URL whose host resolves to an internal address (SSRF
# guard), uploads whose bytes must decode as a real image or video of usable size (a scene's
# must show one stand-in actor throughout; an audio bed's must decode and carry no speech; a
# batch manifest's must be UTF-8 CSV or JSONL whose every row is a job the farm accepts), and
# a job whose script, spoken, runs over its tier or holds words its language's voice cannot
# read.
BEYOND_THE_SCHEMA = {
    "POST /v1/jobs",
    "PUT /v1/me/webhook",
    "POST /v1/backgrounds",
    "POST /v1/scenes",
    "POST /v1/audio-beds",
    "POST /v1/batches",
    "PUT /v1/enrollment/sessions/{session_id}/id-photo",
    "POST /v1/enrollment/sessions/{session_id}/recording",
}


def _build():
    """The app over a fresh farm folder (the schema is read when the module loads, so the
    app exists before any fixture does); its FarmAPI opens on the first request."""
    from cameofarm.configs import load_config
    from cameofarm.service.farm_api import FarmAPI
    from cameofarm.service.http import build_app
    from cameofarm.storage import open_farm_storage

    data = tempfile.mkdtemp(prefix="cameofarm-fuzz-")
    config = load_config(
        environ={
            "CAMEOFARM__DATA_DIR": data,
            # The fuzzer sends thousands of requests with one key; limits have their own tests.
            "CAMEOFARM__API__REQUESTS_PER_MINUTE": "1000000",
            "CAMEOFARM__API__BURST": "100000",
        }
    )
    holder = {}

    def api():
        if "api" not in holder:
            holder["api"] = FarmAPI(config, open_farm_storage(config))
        return holder["api"]

    return build_app(config, api_factory=api), api, data


APP, FARM_API, DATA = _build()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def operator_key():
    try:
        yield FARM_API().init_operator("ops", "farm")["api_key"]
    finally:
        shutil.rmtree(DATA, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,  # the same cases on every run and machine: nothing replayed from .hypothesis
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case, operator_key):
    excluded = []
    if case.operation.label in BEYOND_THE_SCHEMA:
        excluded.append(positive_data_acceptance)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {operator_key}"}, excluded_checks=excluded
    )
