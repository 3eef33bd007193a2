from __future__ import annotations

import pytest
from cameofarm.configs import ConfigError, StageName, load_config


def test_defaults_load_with_both_tiers_and_five_pools():
    cfg = load_config(environ={})
    assert (cfg.tiers["plus"].width, cfg.tiers["plus"].height) == (1280, 720)
    assert cfg.tiers["plus"].max_seconds == 5
    assert (cfg.tiers["pro"].width, cfg.tiers["pro"].height) == (1920, 1080)
    assert cfg.tiers["pro"].max_seconds == 20
    assert set(cfg.pools) == set(StageName)
    assert cfg.database.url == ""
    assert cfg.cluster.address is None


def test_unknown_key_is_rejected_naming_file_and_key(tmp_path):
    (tmp_path / "tiers.yaml").write_text("tiers:\n  plus:\n    widht: 1280\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, environ={})
    msg = str(err.value)
    assert "tiers.yaml" in msg and "tiers.plus.widht" in msg


def test_out_of_range_value_names_env_var():
    with pytest.raises(ConfigError) as err:
        load_config(environ={"CAMEOFARM__TIERS__PRO__FPS": "0"})
    assert "env CAMEOFARM__TIERS__PRO__FPS" in str(err.value)
    assert "tiers.pro.fps" in str(err.value)


def test_env_overrides_file_values():
    cfg = load_config(
        environ={
            "CAMEOFARM__DATABASE__URL": "postgresql+psycopg://u@h/db",
            "CAMEOFARM__POOLS__FACE_SWAP__REPLICAS": "3",
        }
    )
    assert cfg.database.url == "postgresql+psycopg://u@h/db"
    assert cfg.pools[StageName.FACE_SWAP].replicas == 3


def test_odd_width_and_gpu_overcommit_are_explained(tmp_path):
    (tmp_path / "a.yaml").write_text("tiers:\n  plus:\n    width: 1281\n")
    with pytest.raises(ConfigError, match="must be even"):
        load_config(tmp_path, environ={})
    with pytest.raises(ConfigError, match="logical_gpus"):
        load_config(environ={"CAMEOFARM__POOLS__FACE_SWAP__NUM_GPUS": "4"})


def test_bad_yaml_and_missing_folder(tmp_path):
    (tmp_path / "x.yaml").write_text("tiers: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope", environ={})
