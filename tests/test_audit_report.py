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
    informed_epsilons=[8.0],
    iterations=3,
    restarts=1,
    dp_check_codecs=["none"],
    dp_check_trials=1000,
    dp_check_selection_trials=300,
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
    assert saved["schema_version"] == 2 and saved["threat_model"]
    rows = {row["condition"]: row for row in saved["leakage"]}
    assert list(rows) == ["none", "codec=zstd", "dp=8", "dp=8+informed-server", "dp=8+seeded-noise+informed-server"]
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
    assert dp["randomness"] == "secret" and dp["adversary"] == "honest-but-curious" and not dp["control"]
    # the informed server: same release parameters; the noise is removed only where the client used seeded noise
    secret, seeded = rows["dp=8+informed-server"], rows["dp=8+seeded-noise+informed-server"]
    for row in (secret, seeded):
        assert row["adversary"] == "informed" and row["dp"] == "sample"
        assert {k: row[k] for k in ("epsilon", "noise_multiplier", "delta")} == {
            k: dp[k] for k in ("epsilon", "noise_multiplier", "delta")
        }
    assert secret["randomness"] == "secret" and not secret["control"] and secret["recovered_rel_error"] > 10
    assert seeded["randomness"] == "seeded" and seeded["control"] and seeded["recovered_rel_error"] < 1e-3
    assert rows["none"]["recovered_rel_error"] is None
    assert saved["grids"] == ["grid_b1_s1.png"] and (out / "grid_b1_s1.png").stat().st_size > 1000
    checks = [(row["mechanism"], row["adversary"], row["control"], row["passed"]) for row in saved["dp_check"]]
    assert checks == [
        ("LocalNoiseClient + codec none", "honest-but-curious", False, True),
        ("LocalNoiseClient + codec none", "informed", False, True),
        ("negative control: noise x 0.1", "honest-but-curious", True, False),
        ("negative control: seeded noise", "informed", True, False),
    ]
    assert all(row["trials"] == 1000 and row["selection_trials"] == 300 for row in saved["dp_check"])
    assert saved["config"]["codecs"] == ["zstd"] and saved["config"]["informed-epsilons"] == [8.0]
    text = (out / "audit.txt").read_text()
    assert "dp=8+seeded-noise+informed-server" in text and "flagged (as it must)" in text


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


@pytest.mark.parametrize(
    ("real_passed", "control_passed", "status"), [(True, False, 0), (False, False, 1), (True, True, 1)]
)
def test_cli_exits_1_when_the_real_mechanism_is_flagged_or_a_control_is_not(
    tmp_path, monkeypatch, real_passed, control_passed, status
):
    def row(control, passed):
        return {
            "mechanism": "m",
            "adversary": "informed",
            "control": control,
            "passed": passed,
            "epsilon_lower_bound": 1.0,
            "epsilon": 4.4,
            "noise_multiplier": 1.0,
            "clip_norm": 0.05,
            "delta": 1e-5,
            "accountant": "prv",
            "confidence": 0.95,
            "trials": 10,
            "selection_trials": 10,
        }

    result = {"leakage": [], "dp_check": [row(False, real_passed), row(True, control_passed)], "seconds": 0.0}
    monkeypatch.setattr("fedcompress.audit.runner.run_audit", lambda config, out_dir: result)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", "--out", str(tmp_path / "o")])
    assert args.func(args) == status


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
    with pytest.raises(ConfigError, match="informed-epsilons"):
        AuditConfig.from_mapping({"informed-epsilons": [0.0]})
    with pytest.raises(ConfigError, match="dp-check-selection-trials"):
        AuditConfig.from_mapping({"dp-check-selection-trials": 5})
