"""One federation on Flower's simulation engine, in this process, and the checks of its run folder."""

from simulations.run.folder import RUN_LOCK, check_out_dir, check_run_folder, default_out_dir, make_run_folder
from simulations.run.simulate import run_apps, simulate

__all__ = [
    "RUN_LOCK",
    "check_out_dir",
    "check_run_folder",
    "default_out_dir",
    "make_run_folder",
    "run_apps",
    "simulate",
]
