#!/usr/bin/env bash
# The prepared GPU benchmark (< 5 minutes on one H100/H200): AlexNet-BN NAT vs supervised images/s on synthetic
# 224x224 data (2-GPU scaling when two are present), then the ImageNet-size NAT state with targets on the GPU.
# Writes benchmarks/results/{gpu,state_cuda}.json and their sections of docs/benchmarks.md; with $OUT set
# (a device machine) it copies them there too.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/../src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 gpu.py "$@"
python3 state.py --device cuda --steps 100
python3 profile_step.py
if [ -n "${OUT:-}" ]; then
    cp results/gpu.json results/state_cuda.json results/profile_step.json ../docs/benchmarks.md "$OUT"/
fi
