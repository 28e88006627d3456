#!/usr/bin/env bash
# The CUDA path end to end in under 8 minutes: run it whenever a CUDA GPU is at hand, and put its table
# in the README. Needs lens installed with the gpu, export, smollm2 and gemma3 extras (inseq optional).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import onnxruntime as o, jax; print('onnxruntime', o.__version__, o.get_available_providers()); print('jax', jax.__version__, jax.devices())"
timeout 480 "$PY" bench/gpu_check.py
