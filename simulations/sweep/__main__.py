"""``python -m simulations.sweep``: the sweep command, or (``--cell DIR``) one cell in this process."""

import sys

from simulations.commands.sweep import main

sys.exit(main())
