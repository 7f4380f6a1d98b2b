#!/usr/bin/env bash
# Installs the Debian packages selfsup needs, idempotently (as root, or via sudo).
#   scripts/setup.sh            build + run + test dependencies (PyTorch for the tests)
#   scripts/setup.sh --runtime  only what building and running need (no PyTorch)
set -euo pipefail
runtime=(build-essential make pkg-config libopenblas-dev zlib1g-dev libdnnl-dev dataset-fashion-mnist)
testing=(python3 python3-numpy python3-torch python3-torchvision)
pkgs=("${runtime[@]}")
[ "${1:-}" = "--runtime" ] || pkgs+=("${testing[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: all ${#pkgs[@]} packages present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
