"""The farm's logs: JSON or text lines that name the job, tier, stage and replica."""

from __future__ import annotations

import io
import json
import logging
import threading

import pytest
from cameofarm.configs import LogConfig
from cameofarm.monitoring.logs import (
    add_log_fields,
    configure_process_logging,
    log_context,
    make_handler,
)


@pytest.fixture
def captured():
    """A logger writing through the farm's handler into a buffer, per format."""
    made = []

    def make(fmt: str) -> tuple[logging.Logger, io.StringIO]:
        out = io.StringIO()
        logger = logging.getLogger(f"cameofarm.test.{fmt}.{len(made)}")
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        logger.addHandler(make_handler(LogConfig(format=fmt), out))
        made.append(logger)
        return logger, out

    yield make
    for logger in made:
        logger.handlers.clear()


def _lines(out: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_json_lines_carry_the_job_tier_and_stage_of_where_they_were_logged(captured):
    log, out = captured("json")
    log.info("before any job")
    with log_context(job="job_1"):
        add_log_fields(tier="plus")
        with log_context(stage="face_swap"):
            log.warning("replica %s slow", "r0", extra={"replica": "face_swap-1"})
        log.info("between stages")
    log.info("after the job")
    first, slow, between, after = _lines(out)
    assert set(first) == {"ts", "level", "logger", "message", "pid"}
    assert first["ts"].endswith("+00:00") and first["message"] == "before any job"
    assert slow == {
        **{k: slow[k] for k in ("ts", "pid", "logger")},
        "level": "WARNING",
        "message": "replica r0 slow",
        "job": "job_1",
        "tier": "plus",
        "stage": "face_swap",
        "replica": "face_swap-1",
    }
    assert (between["job"], between["tier"]) == ("job_1", "plus") and "stage" not in between
    assert not {"job", "tier", "stage"} & set(after)  # the context ended with the job


def test_each_thread_has_its_own_job(captured):
    log, out = captured("json")
    inside = threading.Event()
    leave = threading.Event()

    def other_job() -> None:
        with log_context(job="job_2"):
            inside.set()
            leave.wait(30)
            log.info("in job 2")

    worker = threading.Thread(target=other_job)
    worker.start()
    assert inside.wait(30)
    with log_context(job="job_1"):
        log.info("in job 1")
        leave.set()
        worker.join(30)
    by_message = {line["message"]: line["job"] for line in _lines(out)}
    assert by_message == {"in job 1": "job_1", "in job 2": "job_2"}


def test_text_lines_tag_the_fields_before_a_traceback(captured):
    log, out = captured("text")
    with log_context(job="job_1", stage="voice"):
        try:
            raise ValueError("bad chunk")
        except ValueError:
            log.exception("stage failed")
    first, *trace = out.getvalue().splitlines()
    assert first.endswith("ERROR cameofarm.test.text.0: stage failed [job=job_1 stage=voice]")
    assert trace[0] == "Traceback (most recent call last):" and "ValueError: bad chunk" in trace


def test_a_process_is_configured_once_with_its_own_fields():
    logger = logging.getLogger("cameofarm")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    first, second = io.StringIO(), io.StringIO()
    try:
        configure_process_logging(LogConfig(format="json"), first, stage="voice", replica="v-0")
        configure_process_logging(
            LogConfig(format="json", level="WARNING"), second, stage="voice", replica="v-0"
        )
        ours = [h for h in logger.handlers if getattr(h, "cameofarm", False)]
        assert len(ours) == 1  # the second call replaced the first handler
        logging.getLogger("cameofarm.replica").info("quiet at WARNING")
        with log_context(job="job_9"):
            logging.getLogger("cameofarm.replica").warning("loud")
        assert first.getvalue() == ""
        (line,) = _lines(second)
        assert (line["stage"], line["replica"], line["job"]) == ("voice", "v-0", "job_9")
    finally:
        configure_process_logging(LogConfig())  # clears the process fields
        logger.handlers[:] = saved[0]
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def test_log_settings_are_part_of_what_a_replica_is_made_with(farm_config):
    from cameofarm.cluster.bootstrap import pool_settings
    from cameofarm.configs import StageName

    json_logs = farm_config.monitoring.model_copy(update={"log": LogConfig(format="json")})
    changed = farm_config.model_copy(update={"monitoring": json_logs})
    before = pool_settings(farm_config, StageName.VOICE)
    after = pool_settings(changed, StageName.VOICE)
    assert before["log"]["format"] == "text" and after["log"]["format"] == "json"
