#!/usr/bin/env bash
# The GPU check of pml-bench (see benchmarks/gpu_check.py): ResNet-50 at 224 px in bfloat16 on a
# generated CUB-layout tree, the runner against a hand-written PML loop, steps and images per
# second. Run from the repository root on a machine with a CUDA GPU, in a Python environment that
# has the package's dependencies with its bench and vision extras (PYTHON selects the
# interpreter; the package itself is used from this checkout). It stops after 8 minutes.
# Extra arguments go to gpu_check.py, e.g. `bash benchmarks/gpu_check.sh --iterations 200`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device: this check needs a GPU'"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 "$PYTHON" benchmarks/gpu_check.py "$@"
