#!/usr/bin/env bash
# The README's test command: install what the tests need, build warnings-clean,
# run every test, then the unit and CLI tests again under ASan + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
make -j"$(nproc)" CFLAGS_EXTRA=-Werror
make test
make -j"$(nproc)" SAN=1 CFLAGS_EXTRA=-Werror tests
make SAN=1 test
