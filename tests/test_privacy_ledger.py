"""Ledger entries always carry their parameters; the budget guard stops before the budget is passed."""

from __future__ import annotations

import dataclasses
import json

import pytest

import fedcompress.privacy as privacy
from fedcompress.errors import PrivacyBudgetExhausted
from fedcompress.privacy import (
    NOT_COVERED,
    Accountant,
    BudgetGuard,
    LedgerEntry,
    PrivacyLedger,
    epsilon,
    max_over_clients,
    predict_epsilon_after_round,
)

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
    ):
        assert text in line, text
    central = _entry(level="client", trust="central", max_over=()).describe()
    assert "central noise" in central and "max over" not in central


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


def test_federation_guarantee_is_the_max_over_clients():
    entries = [_entry(epsilon=e, max_over=(c,)) for c, e in [(0, 1.0), (1, 2.5), (2, 2.5), (3, 0.4)]]
    worst = max_over_clients(entries)
    assert worst.epsilon == 2.5 and worst.max_over == (1, 2)
    with pytest.raises(ValueError, match="mix"):
        max_over_clients([entries[0], _entry(delta=1e-6)])
    with pytest.raises(ValueError, match="central"):
        max_over_clients([_entry(level="client", trust="central", max_over=())])


def test_ledger_is_json_and_states_what_it_does_not_cover():
    ledger = PrivacyLedger()
    ledger.record_clients([_entry(round=1, epsilon=0.5, max_over=(0,)), _entry(round=1, epsilon=0.7, max_over=(1,))])
    ledger.record(_entry(round=2, epsilon=0.9, max_over=(1,)))
    data = json.loads(json.dumps(ledger.to_dict()))
    assert [e["epsilon"] for e in data["entries"]] == [0.7, 0.9]
    assert "maximum over clients" in data["guarantee"]
    assert data["not_covered"] == NOT_COVERED
    assert PrivacyLedger.from_dict(data).entries == ledger.entries
    with pytest.raises(ValueError, match="round 1"):
        ledger.record(_entry(round=1))


def test_not_covered_names_every_side_channel():
    for text in ("num-examples", "loss", "took part", "timing", "minimal", "secure_mode"):
        assert text in NOT_COVERED, text


def test_prediction_does_not_touch_the_accountant():
    accountant = Accountant("prv")
    accountant.step(1.5, 0.25, 8)
    predicted = predict_epsilon_after_round(accountant, noise_multiplier=1.5, sample_rate=0.25, steps=4, delta=DELTA)
    assert accountant.steps == 8
    assert predicted == epsilon(1.5, 0.25, 12, DELTA)


def test_budget_guard_stops_before_the_budget_is_passed():
    z, q, steps_per_round, budget = 3.0, 0.25, 4, 1.5  # 4 rounds fit: 0.77, 1.05, 1.28, 1.47, then 1.64
    guard = BudgetGuard(budget, delta=DELTA)
    clients = {c: Accountant("prv") for c in range(3)}
    rounds_run = 0
    for server_round in range(1, 50):
        training = {c: clients[c] for c in ((0, 1) if server_round % 2 else (1, 2))}  # client 1 trains every round
        check = guard.check(training, noise_multiplier=z, sample_rate=q, steps=steps_per_round)
        if not check.allowed:
            assert check.worst == 1 and check.predicted_epsilon > budget
            assert "past max-epsilon 1.5" in check.describe()
            break
        for accountant in training.values():
            accountant.step(z, q, steps_per_round)
        rounds_run = server_round
    spent = {c: a.epsilon(DELTA) for c, a in clients.items()}
    assert max(spent.values()) == spent[1] <= budget
    assert rounds_run == clients[1].steps // steps_per_round == 4
    assert epsilon(z, q, (rounds_run + 1) * steps_per_round, DELTA) > budget  # it did not stop early
    with pytest.raises(PrivacyBudgetExhausted, match="past max-epsilon"):
        guard.ensure({1: clients[1]}, noise_multiplier=z, sample_rate=q, steps=steps_per_round)


def test_zero_budget_means_no_budget():
    guard = BudgetGuard(0.0, delta=DELTA)
    result = guard.ensure({"server": Accountant("rdp")}, noise_multiplier=0.5, sample_rate=1.0, steps=100)
    assert result.allowed and result.predicted_epsilon > 100
    with pytest.raises(ValueError, match="max_epsilon"):
        BudgetGuard(-1.0, delta=DELTA)
