import math
import tomllib
from pathlib import Path

import pytest

from fedcompress.config import RunConfig, load_config_file, parse_overrides, toml_document
from fedcompress.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_app_config_matches_schema_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert list(table) == list(RunConfig.keys())
    assert RunConfig.from_mapping(table) == RunConfig()


def test_kebab_and_snake_keys_and_string_values_are_coerced():
    cfg = RunConfig.from_mapping({"num-rounds": "7", "non_iid": "0.25", "error-feedback": "false"})
    assert (cfg.num_rounds, cfg.non_iid, cfg.error_feedback) == (7, 0.25, "off")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("num-rounds", 0, "num-rounds"),
        ("num-rounds", 2.5, "whole number"),
        ("fraction-train", 0.0, "fraction-train"),
        ("lr", float("nan"), "lr"),
        ("dp", "maybe", "choose one of"),
        ("error-feedback", "yes", "choose one of"),
        ("error-feedback", 1, "must be a string"),
        ("nonexistent", 1, "unknown setting"),
        ("codec", 3, "must be a string"),
        ("codec", "topk:2", "codec spec"),
        ("downlink-codec", "gzip", "codec spec"),
    ],
)
def test_bad_values_name_the_key(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        RunConfig.from_mapping({key: value})
    assert key.split("-")[0] in str(info.value) or "unknown" in str(info.value)


def test_relations_are_checked():
    with pytest.raises(ConfigError, match="min-clients"):
        RunConfig.from_mapping({"num-clients": 2, "min-clients": 3})
    with pytest.raises(ConfigError, match="target-epsilon"):
        RunConfig.from_mapping({"dp": "sample"})
    with pytest.raises(ConfigError, match="not both"):
        RunConfig.from_mapping({"dp": "sample", "target-epsilon": 4, "noise-multiplier": 1.0})
    with pytest.raises(ConfigError, match="poisson"):
        RunConfig.from_mapping({"dp": "client", "dp-noise": "central", "noise-multiplier": 1.0})
    with pytest.raises(ConfigError, match="student-width"):
        RunConfig.from_mapping({"width": 4, "student-width": 4, "distill": True})
    with pytest.raises(ConfigError, match="pre-noise"):
        RunConfig.from_mapping({"pre-noise": "randk:0.1"})


def test_to_dict_round_trips():
    cfg = RunConfig.from_mapping({"codec": "aggressive", "seed": 3})
    assert RunConfig.from_mapping(cfg.to_dict()) == cfg


def test_overrides_and_config_files(tmp_path):
    assert parse_overrides(["a=1", "codec='q8'"]) == {"a": "1", "codec": "q8"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
    plain = tmp_path / "run.toml"
    plain.write_text('num-rounds = 3\ncodec = "q8"\n')
    assert load_config_file(plain) == {"num-rounds": 3, "codec": "q8"}
    assert load_config_file(ROOT / "pyproject.toml")["num-rounds"] == RunConfig().num_rounds
    broken = tmp_path / "broken.toml"
    broken.write_text("num-rounds = = 3")
    with pytest.raises(ConfigError, match=r"broken\.toml"):
        load_config_file(broken)


def test_toml_document_round_trips_run_and_audit_settings_and_awkward_strings():
    from fedcompress.audit.settings import AuditConfig

    awkward = {"codec": "topk:0.01 + q'8' + \"zstd\"", "pre-noise": "a\\b\nc\tdé\x7f"}
    settings = {**RunConfig().to_dict(), **awkward}
    assert tomllib.loads(toml_document(settings)) == settings
    audit = AuditConfig().to_dict()  # nested lists: targets, combined
    assert AuditConfig.from_mapping(tomllib.loads(toml_document(audit))) == AuditConfig()
    with pytest.raises(ValueError, match="finite"):
        toml_document({"lr": math.inf})
    with pytest.raises(ValueError, match="lists of them"):
        toml_document({"x": {"a": 1}})


def test_every_setting_is_documented_and_the_document_reads_back(tmp_path):
    from fedcompress.config import load_config_file
    from fedcompress.config_doc import DOCS, settings_document

    assert set(DOCS) == set(RunConfig.keys())
    cfg = RunConfig(dp="sample", target_epsilon=4.0, codec="aggressive", num_rounds=3)
    path = tmp_path / "run.toml"
    path.write_text(settings_document(cfg))
    assert RunConfig.from_mapping(load_config_file(path)) == cfg
    text = path.read_text()
    assert "# DP clip norm C" in text and "allowed one of none, sample, client" in text and "default 8" in text


def test_a_misspelt_setting_suggests_the_closest_one():
    with pytest.raises(ConfigError, match="did you mean 'num-rounds'"):
        RunConfig.from_mapping({"num-round": 3})
    with pytest.raises(ConfigError, match="fedcompress settings"):
        RunConfig.from_mapping({"zzzz": 3})


def test_the_settings_command_prints_a_file_that_config_reads_back(tmp_path):
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "simulations.cli", "settings", "--set", "codec=aggressive", "--set", "num-rounds=3"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path / "settings.toml"
    path.write_text(done.stdout)
    from fedcompress.config import load_config_file

    assert RunConfig.from_mapping(load_config_file(path)) == RunConfig(codec="aggressive", num_rounds=3)


def test_the_codec_setting_names_every_preset():
    from fedcompress.codec import PRESETS
    from fedcompress.config_doc import DOCS

    assert all(name in DOCS["codec"] for name in PRESETS)
