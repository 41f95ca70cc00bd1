"""Federation benchmark (thin script), the same as ``fedcompress bench federation``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from simulations.bench.federation import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
