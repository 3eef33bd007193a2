"""Starting the farm's own Ray head on an overloaded machine (no Ray started here)."""

from __future__ import annotations

import pytest
from cameofarm.cluster import ray_head


def test_a_start_that_timed_out_under_load_is_tried_again(monkeypatch, farm_config):
    tries = []

    def once(config):
        tries.append(config)
        if len(tries) < 3:
            raise ray_head._Overloaded("Exception: The current node timed out during startup.")
        return ray_head.Head("127.0.0.1:1", "/tmp/x", {})

    monkeypatch.setattr(ray_head, "_start_head_once", once)
    assert ray_head.start_head(farm_config).address == "127.0.0.1:1"
    assert len(tries) == 3


def test_a_start_that_keeps_timing_out_says_why(monkeypatch, farm_config):
    def once(_config):
        raise ray_head._Overloaded("Exception: The current node timed out during startup.")

    monkeypatch.setattr(ray_head, "_start_head_once", once)
    with pytest.raises(ray_head.HeadError, match=r"did not register in time, 2 times.*overloaded"):
        ray_head.start_head(farm_config, attempts=2)


def test_other_start_failures_are_not_retried(monkeypatch, farm_config):
    tries = []

    def once(_config):
        tries.append(1)
        raise ray_head.HeadError("`ray start --head` failed: port in use")

    monkeypatch.setattr(ray_head, "_start_head_once", once)
    with pytest.raises(ray_head.HeadError, match="port in use"):
        ray_head.start_head(farm_config)
    assert tries == [1]
