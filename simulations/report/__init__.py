"""Reports and plots: a sweep's ``report.md`` from its store, one run's report, and the compression front.

``fedcompress report DIR`` (:mod:`simulations.commands.report`) writes :func:`render_report` for a sweep folder
and :func:`render_run_report` for a run folder. Importing this package selects matplotlib's Agg backend.
"""

from simulations.report.extras import EXTRAS, audit_rows, extra_rows, extras_table
from simulations.report.front import front_rows, seed_means, write_front
from simulations.report.markdown import baselines_table, cells_table, eps_text, markdown_table, series_table
from simulations.report.plots import (
    bytes_axis,
    human_bytes,
    leakage_curves,
    legend_outside,
    min_span,
    plot_convergence,
    plot_leakage_vs_epsilon,
    plot_pareto,
    plot_psnr_vs_epsilon,
    plot_psnr_vs_uplink,
)
from simulations.report.run import render_run_report
from simulations.report.summary import PSNR_TIE_DB, finite, pareto_front, summarize
from simulations.report.sweep import PLOTS_DIR, REPORT_FILE, render_report

__all__ = [
    "EXTRAS",
    "PLOTS_DIR",
    "PSNR_TIE_DB",
    "REPORT_FILE",
    "audit_rows",
    "baselines_table",
    "bytes_axis",
    "cells_table",
    "eps_text",
    "extra_rows",
    "extras_table",
    "finite",
    "front_rows",
    "human_bytes",
    "leakage_curves",
    "legend_outside",
    "markdown_table",
    "min_span",
    "pareto_front",
    "plot_convergence",
    "plot_leakage_vs_epsilon",
    "plot_pareto",
    "plot_psnr_vs_epsilon",
    "plot_psnr_vs_uplink",
    "render_report",
    "render_run_report",
    "seed_means",
    "series_table",
    "summarize",
    "write_front",
]
