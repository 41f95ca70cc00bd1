"""Benchmarks that run whole federations (``fedcompress bench federation|privacy|front``): measurements.

They run the harness (``fedcompress simulate`` per cell, or a sweep), so they live with it; the codec benchmark
measures the library alone and stays in :mod:`fedcompress.bench`.
"""

from simulations.bench.federation import run_cell
from simulations.bench.front import GRIDS
from simulations.bench.privacy import time_local_epochs

__all__ = ["GRIDS", "run_cell", "time_local_epochs"]
