#!/usr/bin/env bash
# Runs every test and prints "N passed, M failed" last; exits non-zero on any failure.
#   C unit tests (ops, autograd, models, optimizers, data, eval, IO), with golden
#   values from PyTorch 1.13 generated first into $BUILD/golden;
#   CLI tests (bad input, round trips, resume);
#   the end-to-end learning check on real Fashion-MNIST (skipped under SAN=1:
#   the sanitizer run covers the same code on the short CLI runs).
set -u
BUILD=${BUILD:-build}
SAN=${SAN:-0}
export SSL_GOLDEN_DIR=$BUILD/golden
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
mkdir -p "$SSL_GOLDEN_DIR"
passed=0
failed=0

count() { # adds the "N passed, M failed" of a log; a crash or bad exit counts one failure
    local log=$1 rc=$2 name=$3 line p f
    line=$(grep -E "[0-9]+ passed, [0-9]+ failed" "$log" | tail -n 1)
    p=0
    f=0
    if [ -n "$line" ]; then
        read -r p f < <(echo "$line" | grep -oE "[0-9]+ passed, [0-9]+ failed" | awk '{print $1, $3}')
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    passed=$((passed + p))
    failed=$((failed + f))
    printf '%-12s %s\n' "$name" "${line:-no result line (exit $rc)}"
    if [ "$f" -ne 0 ]; then grep -E "FAIL|ERROR|Sanitizer|runtime error" "$log" | head -n 20; fi
}

for g in tests/torch/gen_*.py; do
    if ! /usr/bin/python3 "$g" "$SSL_GOLDEN_DIR" >"$BUILD/golden/$(basename "$g").log" 2>&1; then
        echo "golden generator $g failed:"; tail -n 5 "$BUILD/golden/$(basename "$g").log"
        failed=$((failed + 1))
    fi
done

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    log=$BUILD/tests/$(basename "$t").log
    "$t" >"$log" 2>&1
    count "$log" $? "$(basename "$t")"
done

bash tests/cli.sh "$BUILD" >"$BUILD/tests/cli.log" 2>&1
count "$BUILD/tests/cli.log" $? cli

bash tests/imagefolder.sh "$BUILD" >"$BUILD/tests/imagefolder-cli.log" 2>&1
count "$BUILD/tests/imagefolder-cli.log" $? imagefolder-cli

if [ "$SAN" != 1 ] && [ "${SELFSUP_SKIP_E2E:-0}" != 1 ]; then
    bash tests/e2e.sh "$BUILD" >"$BUILD/tests/e2e.log" 2>&1
    count "$BUILD/tests/e2e.log" $? e2e
    grep -E "^\|" "$BUILD/tests/e2e.log" || true
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
