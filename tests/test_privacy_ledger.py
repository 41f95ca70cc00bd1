"""Ledger entries always carry their parameters, threat model and randomness; the ledger is result.json's privacy."""

from __future__ import annotations

import dataclasses
import json

import pytest

import fedcompress.privacy as privacy
from fedcompress.privacy import NOT_COVERED, THREAT_MODELS, LedgerEntry, NoiseSource, PrivacyLedger

DELTA = 1e-5


def _entry(**changes) -> LedgerEntry:
    base = LedgerEntry(
        round=3,
        epsilon=1.2345,
        delta=DELTA,
        noise_multiplier=1.1,
        clip_norm=0.05,
        sample_rate=0.25,
        steps=12,
        rounds=3,
        accountant="prv",
        level="sample",
        max_over=(2,),
        randomness=NoiseSource().describe("torch"),
    )
    return dataclasses.replace(base, **changes)


def test_public_names_import_and_all_is_sorted():
    def isort_key(name: str) -> tuple[int, str]:  # ruff's RUF022 order: CONSTANTS, Classes, functions
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert privacy.__all__ == sorted(privacy.__all__, key=isort_key)
    assert len(set(privacy.__all__)) == len(privacy.__all__)
    for name in privacy.__all__:
        assert getattr(privacy, name) is not None


def test_describe_never_shows_epsilon_without_its_parameters():
    line = _entry().describe()
    for text in (
        "round 3",
        "epsilon 1.234",
        "delta 1e-05",
        "sample-level",
        "noise multiplier 1.1",
        "clip norm 0.05",
        "sample rate 0.25",
        "12 steps",
        "3 rounds",
        "PRV",
        "client",
        "threat model: the server and everyone after it see only DP-SGD outputs",
        "secret: torch generator",
    ):
        assert text in line, text
    central = _entry(level="client", trust="central", max_over=()).describe()
    assert "central noise" in central and "max over" not in central and "trusted server" in central
    seeded = _entry(randomness=NoiseSource("seeded", 3).describe()).describe()
    assert "NO guarantee against anyone who knows the seed" in seeded
    assert set(THREAT_MODELS) == {("sample", None), ("client", "local"), ("client", "central")}


def test_entry_round_trips_through_json_with_the_ledger_keys():
    entry = _entry(max_over=(0, 5))
    data = json.loads(json.dumps(entry.to_dict()))
    assert set(data) == {
        "round",
        "epsilon",
        "delta",
        "noise_multiplier",
        "clip_norm",
        "sample_rate",
        "steps",
        "rounds",
        "accountant",
        "level",
        "trust",
        "max_over",
        "randomness",
    }
    assert LedgerEntry.from_dict(data) == entry
    with pytest.raises(ValueError, match="unknown"):
        LedgerEntry.from_dict({**data, "eps": 1.0})


def test_entry_validates_level_and_trust():
    with pytest.raises(ValueError, match="trust"):
        _entry(trust="local")  # sample level has no trust model
    with pytest.raises(ValueError, match="trust"):
        _entry(level="client", trust=None)
    with pytest.raises(ValueError, match="accountant"):
        _entry(accountant="gdp")


def test_ledger_is_results_privacy_object_and_states_what_it_does_not_cover():
    ledger = PrivacyLedger()
    assert ledger.to_dict()["summary"].startswith("no privacy budget spent")
    ledger.record(_entry(round=1, epsilon=0.7, max_over=(1,)))
    ledger.record(_entry(round=2, epsilon=0.9, max_over=(1,)))
    ledger.record(_entry(round=2, epsilon=1.1, max_over=(1,)))  # a replayed round is recorded again
    data = json.loads(json.dumps(ledger.to_dict()))
    assert [e["epsilon"] for e in data["ledger"]] == [0.7, 0.9, 1.1]
    assert data["epsilon"] == 1.1 and data["round"] == 2 and data["level"] == "sample"
    assert "maximum over clients" in data["guarantee"] and "DP-SGD outputs" in data["threat_model"]
    assert data["not_covered"] == NOT_COVERED and "epsilon 1.1" in data["summary"]
    assert PrivacyLedger.from_dict(data).entries == ledger.entries
    with pytest.raises(ValueError, match="round 1"):
        ledger.record(_entry(round=1))
    old = {k: v for k, v in _entry().to_dict().items() if k != "randomness"}  # result.json of earlier versions
    assert LedgerEntry.from_dict(old).randomness == ""


def test_not_covered_names_every_side_channel():
    for text in ("num-examples", "loss", "took part", "timing", "minimal", "compressed sizes", "secret OS entropy"):
        assert text in NOT_COVERED, text
