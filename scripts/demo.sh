#!/usr/bin/env bash
# The README's main job: install, build, pretrain SimCLR on Fashion-MNIST,
# evaluate it against raw pixels and a random-init encoder, print the table.
# Extra arguments go to `selfsup pretrain` and win over these (e.g. --epochs 10
# --time-budget 0 for a longer run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --runtime
make -j"$(nproc)"
# 3 epochs: what fits in about 10 minutes of pretraining here (184 s an epoch
# on 2 cores; time to accuracy in README.md: k-NN keeps climbing past epoch 3
# but slowly). --time-budget: a slower machine gets a schedule fitted to 630 s
# of pretraining, so the whole job stays near 15 minutes.
exec ./build/selfsup pretrain --baselines --epochs 3 --time-budget 630 --out runs/demo "$@"
