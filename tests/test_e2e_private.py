"""Private federations end to end: the epsilon in result.json is the one the helpers give for its parameters."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedcompress.privacy import client_level_epsilon, epsilon

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.e2e


def _simulate(out: Path, settings: dict) -> dict:
    cmd = [sys.executable, "-m", "fedcompress.cli", "simulate", "--out", str(out)]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((out / "result.json").read_text())


def test_sample_level_epsilon_matches_the_accountant_and_the_clients(tmp_path):
    result = _simulate(
        tmp_path / "sample",
        {
            "num-clients": 2,
            "num-rounds": 2,
            "samples-per-client": 32,
            "test-samples": 16,
            "dp": "sample",
            "target-epsilon": 4,
            "local-epochs": 1,
        },
    )
    privacy = result["privacy"]
    assert (privacy["level"], privacy["accountant"], privacy["delta"]) == ("sample", "prv", 1e-5)
    assert privacy["sample_rate"] == 0.5 and privacy["steps"] == 4 and privacy["rounds"] == 2
    expected = epsilon(privacy["noise_multiplier"], 0.5, 4, 1e-5)
    assert math.isclose(privacy["epsilon"], expected, rel_tol=1e-9) and expected <= 4.0
    for row in result["rounds"]:  # each client's own Opacus accountant says the same
        assert math.isclose(row["client_epsilon_reported"], row["epsilon"], rel_tol=1e-9)
    assert "num-examples" in privacy["not_covered"] and "epsilon" in privacy["summary"]


def test_client_level_central_budget_stops_before_the_round_that_would_pass_it(tmp_path):
    z, q = 1.0, 0.5
    after = [
        client_level_epsilon(trust="central", noise_multiplier=z, rounds=r, delta=1e-5, sample_rate=q)
        for r in (1, 2, 3)
    ]
    budget = (after[1] + after[2]) / 2  # room for two rounds, not three
    result = _simulate(
        tmp_path / "central",
        {
            "num-clients": 4,
            "num-rounds": 5,
            "samples-per-client": 16,
            "test-samples": 16,
            "dp": "client",
            "dp-noise": "central",
            "client-sampling": "poisson",
            "fraction-train": q,
            "noise-multiplier": z,
            "clip-norm": 0.5,
            "max-epsilon": budget,
            "codec": "q8",
        },
    )
    assert result["status"] == "budget_exhausted" and "before round 3" in result["message"]
    assert len(result["rounds"]) == 2
    assert math.isclose(result["privacy"]["epsilon"], after[1], rel_tol=1e-9)
    assert result["privacy"]["trust"] == "central" and result["privacy"]["sample_rate"] == q
