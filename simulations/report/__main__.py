"""``python -m simulations.report DIR``: the report command."""

import sys

from simulations.commands.report import main

sys.exit(main())
