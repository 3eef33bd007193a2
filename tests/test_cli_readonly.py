"""Read-only commands create nothing and say where to look, outside a farm's folder too."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*")}


def test_verify_and_status_outside_a_farm_create_nothing(tmp_path, monkeypatch):
    from cameofarm.service.cli import cli

    video = tmp_path / "someone-sent-me.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    monkeypatch.chdir(tmp_path)
    before = _files(tmp_path)
    env = {"CAMEOFARM__DATA_DIR": str(tmp_path / "not-a-farm")}

    verify = CliRunner().invoke(cli, ["verify", str(video)], env=env)
    assert verify.exit_code != 0
    assert "no trust root at" in verify.output and "--root" in verify.output

    status = CliRunner().invoke(cli, ["status"], env=env)
    assert status.exit_code != 0 and "is not running" in status.output

    assert _files(tmp_path) == before  # no .farm/keys, no new root, no data folder


def test_verify_names_the_trust_root_it_used(tmp_path):
    from cameofarm.models.reference.provenance import ensure_signing_chain
    from cameofarm.service.cli import cli

    chain = ensure_signing_chain(tmp_path / "keys")
    video = tmp_path / "v.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42")
    out = CliRunner().invoke(
        cli,
        ["verify", str(video), "--root", str(chain.root_cert)],
        env={"CAMEOFARM__DATA_DIR": str(tmp_path / "elsewhere")},
    )
    assert f"trust root: {chain.root_cert.resolve()}" in out.output
    assert out.exit_code == 1  # not a signed video: reported, not trusted
