"""Compression-front benchmark (thin script), the same as ``fedcompress bench front``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from simulations.bench.front import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
