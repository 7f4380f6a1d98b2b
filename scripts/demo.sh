#!/usr/bin/env bash
# The README's main job: install, build, pretrain SimCLR on Fashion-MNIST,
# evaluate it against raw pixels and a random-init encoder, print the table.
# Extra arguments go to `selfsup pretrain` (e.g. --epochs 20 for a longer run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --runtime
make -j"$(nproc)"
# --time-budget: 2 epochs take about 570 s here; a slower machine gets a
# schedule fitted to 630 s of pretraining so the whole job stays near 15 minutes.
exec ./build/selfsup pretrain --baselines --time-budget 630 --out runs/demo "$@"
