#!/usr/bin/env bash
# Set up fedcompress in ./.venv without ever pulling a CUDA build of torch on a CPU machine.
#
#   bash install.sh            # CPU: torch 2.13.0 (CPU build), fedcompress, test and edge extras
#   FEDCOMPRESS_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash install.sh
#                              # a CPU machine whose pip would otherwise pick the CUDA wheel from PyPI
#   FEDCOMPRESS_TORCH_INDEX=https://download.pytorch.org/whl/cu128 bash install.sh   # a GPU machine
#
# torch is installed FIRST and pinned by constraints-cpu.txt, so no later requirement (opacus, flwr) can
# replace it with another build.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
if [ -n "${FEDCOMPRESS_TORCH_INDEX:-}" ]; then
  pip install --quiet --index-url "$FEDCOMPRESS_TORCH_INDEX" torch==2.13.0
else
  pip install --quiet torch==2.13.0
fi
pip install --quiet -c constraints-cpu.txt -e ".[test]"
python -c "import torch, flwr, opacus; print('fedcompress ready: torch', torch.__version__, '| flwr', flwr.__version__, '| opacus', opacus.__version__)"
