#!/usr/bin/env bash
# The ResNet-18 CIFAR-10 benchmark in one GPU call (docs/results.md, "ResNet-18 on CIFAR-10"): NAT with the
# paper's and a SimCLR-style augmentation, supervised and random init, 200-NN and linear probes on the pooled
# 512-d features next to lightly's published 200-epoch table.
#   bash benchmarks/cifar_resnet.sh                     # 200 epochs per row
#   BUDGET_MINUTES=9 bash benchmarks/cifar_resnet.sh    # epochs fitted to 9 minutes of training in all
#   CIFAR10=download bash benchmarks/cifar_resnet.sh    # torchvision's CIFAR-10 (needs internet) in ./data
#   RECIPE_ROWS=preset,mlp,random-init bash benchmarks/cifar_resnet.sh
#       # first the recipe study's full rows (benchmarks/resnet_recipe.py, issue 23: 10,000 images, per-stage
#       # probes, seeds $SEEDS, default 1111,1112), then the benchmark of the preset
# Data: $CIFAR10, a folder with train/ and test/ (default ../shared/data/cifar10 beside the repository).
# With $OUT set (a device machine) the JSON and docs/results.md are copied there.
set -euo pipefail
cd "$(dirname "$0")"
export PYTHONPATH="$PWD/../src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
if [ -n "${RECIPE_ROWS:-}" ]; then
    python3 resnet_recipe.py --stage full --stages --rows "$RECIPE_ROWS" --seeds "${SEEDS:-1111,1112}" \
        ${CIFAR10:+--cifar10 "$CIFAR10"} --runs "${RUNS:-runs}"
fi
python3 cifar_resnet.py --cifar10 "${CIFAR10:-$PWD/../../shared/data/cifar10}" \
    --budget-minutes "${BUDGET_MINUTES:-0}" --runs "${RUNS:-runs}" "$@"
if [ -n "${OUT:-}" ]; then
    cp results/cifar_resnet_gpu.json ../docs/results.md "$OUT"/
    if [ -n "${RECIPE_ROWS:-}" ]; then cp results/resnet_recipe.json "$OUT"/; fi
fi
