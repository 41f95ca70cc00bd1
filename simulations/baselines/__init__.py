"""Baselines that run in the same harness as fedcompress: Flower's own DP wrapper (``runner = "flower-dp"``).

Plain FedAvg in float32 needs no module of its own: it is fedcompress with ``dp = "none"`` and ``codec = "none"``.
"""

from simulations.baselines.flower_dp import FLOWER_DP_LABEL, FLOWER_NOISE, check_flower_dp_config, run_flower_dp

__all__ = ["FLOWER_DP_LABEL", "FLOWER_NOISE", "check_flower_dp_config", "run_flower_dp"]
