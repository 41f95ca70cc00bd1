"""The harness: single runs (simulation and multi-process), sweeps, reports and plots."""
