"""The subcommands of ``fedcompress`` that the harness owns, one module each with ``register(subparsers)``.

Each module imports only argparse and light settings code at registration; the run, sweep or report it starts
loads when the command runs. The library's own commands (``distill``, ``audit``) register the same way from
:mod:`fedcompress.distill.cli` and :mod:`fedcompress.audit.cli`; :mod:`simulations.cli` lists them all.
"""

from simulations.commands.options import add_run_options, add_settings_options, build_config, finished

__all__ = ["add_run_options", "add_settings_options", "build_config", "finished"]
