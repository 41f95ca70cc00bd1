"""A whole (tiny) audit run: audit.json's documented fields, the image grid, the CLI and the settings file."""

import argparse
import json

import pytest

import fedcompress.audit as audit
from fedcompress.audit import LEAKAGE_FIELDS, AuditConfig, load_audit_config, run_audit
from fedcompress.audit.cli import register
from fedcompress.errors import ConfigError

TINY = dict(
    width=4,
    image_size=16,
    targets=[[1, 1]],
    defence_targets=[[1, 1]],
    codecs=["zstd"],
    epsilons=[8.0],
    combined=[],
    iterations=3,
    restarts=1,
    dp_check_codecs=["none"],
    dp_check_trials=1000,
    threads=1,
    workers=2,  # the default: attacks in a process pool
)


def test_every_public_name_imports():
    for name in audit.__all__:
        assert getattr(audit, name) is not None
    assert len(set(audit.__all__)) == len(audit.__all__)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    return out, run_audit(AuditConfig.from_mapping(TINY), out)


def test_audit_json_has_the_documented_fields(tiny_run):
    out, _ = tiny_run
    saved = json.loads((out / "audit.json").read_text())
    assert saved["schema_version"] == 1 and saved["threat_model"]
    rows = {row["condition"]: row for row in saved["leakage"]}
    assert list(rows) == ["none", "codec=zstd", "dp=8"]
    for row in rows.values():
        assert set(LEAKAGE_FIELDS) <= set(row)
        assert row["batch_size"] == 1 and row["local_steps"] == 1
        assert row["psnr_max"] >= row["psnr_mean"] and len(row["psnr_per_image"]) == 1
    assert rows["none"]["dp"] == "none" and rows["none"]["epsilon"] is None
    assert rows["codec=zstd"]["attack_reused_from"] == "none"  # lossless: the same update, attacked once
    dp = rows["dp=8"]
    assert dp["dp"] == "sample" and 0 < dp["epsilon"] <= 8.0 and dp["target_epsilon"] == 8.0
    assert dp["delta"] == 1e-5 and dp["sample_rate"] == 1.0 and dp["steps"] == 1 and dp["accountant"] == "prv"
    assert dp["noise_multiplier"] > 0 and dp["clip_norm"] == 0.05
    assert saved["grids"] == ["grid_b1_s1.png"] and (out / "grid_b1_s1.png").stat().st_size > 1000
    checks = {row["control"]: row for row in saved["dp_check"]}
    assert checks[False]["passed"] and not checks[True]["passed"]
    assert saved["config"]["codecs"] == ["zstd"]


def test_cli_runs_quick_audit_from_a_config_file(tmp_path, monkeypatch):
    calls = {}

    def fake_run(config, out_dir):
        calls["config"] = config
        return {"leakage": [], "dp_check": [], "seconds": 0.0}

    monkeypatch.setattr("fedcompress.audit.runner.run_audit", fake_run)
    (tmp_path / "a.toml").write_text("[audit]\nwidth = 8\ntargets = [[2, 3]]\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", "--config", str(tmp_path / "a.toml"), "--out", str(tmp_path / "o")])
    assert args.func(args) == 0
    assert calls["config"].width == 8 and calls["config"].targets == ((2, 3),)
    args = parser.parse_args(["audit", "--quick", "--out", str(tmp_path / "o")])
    assert args.func(args) == 0 and calls["config"].iterations == AuditConfig().quick().iterations


def test_settings_name_the_bad_key(tmp_path):
    (tmp_path / "bad.toml").write_text("iteratons = 5\n")
    with pytest.raises(ConfigError, match="iteratons"):
        load_audit_config(tmp_path / "bad.toml")
    with pytest.raises(ConfigError, match="targets"):
        AuditConfig.from_mapping({"targets": [[0, 1]]})
    with pytest.raises(ConfigError, match="codec"):
        AuditConfig.from_mapping({"codecs": ["zip"]})
    with pytest.raises(ConfigError, match="model-init"):
        AuditConfig(model_init="trained")
