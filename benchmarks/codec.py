"""Codec benchmark (thin script): ``python benchmarks/codec.py [--specs a,b] [--repeats N] [--json]``.

Sets BLAS/OpenMP to one thread before numpy loads, so throughput is per core.
"""

import os
import sys
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fedcompress.bench.codec import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
