"""The harness: single runs (simulation and multi-process), sweeps, reports and plots, and the CLI.

Laid out by role: :mod:`~simulations.run` (one federation on the simulation engine), :mod:`~simulations.deploy`
(a multi-process federation on loopback), :mod:`~simulations.sweep` (grids, cells, the results store),
:mod:`~simulations.report` (summaries, markdown, plots), :mod:`~simulations.baselines` (Flower's DP wrapper),
:mod:`~simulations.bench` (benchmarks that run federations), :mod:`~simulations.processes` (the one toolkit
for child processes) and :mod:`~simulations.commands` with :mod:`~simulations.cli` (the ``fedcompress``
command). The Python API is re-exported here; each name loads its module on first use, so importing the
package stays cheap (no Flower, torch or matplotlib until needed)::

    from fedcompress.config import RunConfig
    from simulations import simulate

    result = simulate(RunConfig(num_rounds=3, codec="ultra", out_dir="/abs/out"))
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulations.baselines import run_flower_dp
    from simulations.deploy import LocalFederation, federate
    from simulations.report import (
        pareto_front,
        plot_psnr_vs_epsilon,
        plot_psnr_vs_uplink,
        render_report,
        render_run_report,
        summarize,
    )
    from simulations.run import run_apps, simulate
    from simulations.sweep import (
        Cell,
        Sweep,
        SweepRunner,
        build_record,
        cell_id,
        latest_records,
        load_grid,
        read_records,
        run_sweep,
    )

__all__ = [
    "Cell",
    "LocalFederation",
    "Sweep",
    "SweepRunner",
    "build_record",
    "cell_id",
    "federate",
    "latest_records",
    "load_grid",
    "pareto_front",
    "plot_psnr_vs_epsilon",
    "plot_psnr_vs_uplink",
    "read_records",
    "render_report",
    "render_run_report",
    "run_apps",
    "run_flower_dp",
    "run_sweep",
    "simulate",
    "summarize",
]

_HOMES = {
    "simulations.baselines": ("run_flower_dp",),
    "simulations.deploy": ("LocalFederation", "federate"),
    "simulations.report": (
        "pareto_front",
        "plot_psnr_vs_epsilon",
        "plot_psnr_vs_uplink",
        "render_report",
        "render_run_report",
        "summarize",
    ),
    "simulations.run": ("run_apps", "simulate"),
    "simulations.sweep": (
        "Cell",
        "Sweep",
        "SweepRunner",
        "build_record",
        "cell_id",
        "latest_records",
        "load_grid",
        "read_records",
        "run_sweep",
    ),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    """Load a re-exported name's module on first use (PEP 562)."""
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'simulations' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
