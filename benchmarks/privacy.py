"""Privacy benchmark (thin script): ``python benchmarks/privacy.py --help`` (same as ``fedcompress bench privacy``)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from simulations.bench.privacy import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
