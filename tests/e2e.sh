#!/usr/bin/env bash
# End-to-end learning check on real data: a short SimCLR pretraining on a
# 10000-image part of Fashion-MNIST must beat the random-init encoder of the
# same architecture on k-NN by a clear margin (3 points at k=20 and k=200,
# on 2000 test images). It asserts learning, never time.
# usage: tests/e2e.sh BUILD_DIR     (prints "e2e: N passed, M failed")
set -u
BUILD=${1:-build}
T=$(mktemp -d /tmp/selfsup-e2e.XXXXXX)
trap 'rm -rf "$T"' EXIT
/usr/bin/python3 tests/make_subset.py "$T/data" 10000 2000
"$BUILD/selfsup" pretrain --data "$T/data" --width 8 --batch-size 128 --steps 300 \
    --log-every 50 --out "$T/run" --baselines --protocol knn --json | tee "$T/out"
rc=${PIPESTATUS[0]}
/usr/bin/python3 - "$T/out" "$rc" <<'PY'
import json, sys
passed = failed = 0
def check(cond, what):
    global passed, failed
    if cond: passed += 1
    else: failed += 1; print("FAIL e2e:", what)
check(sys.argv[2] == "0", "selfsup pretrain exited %s" % sys.argv[2])
try:
    r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["eval"]
    for k in ("knn_top1_k20", "knn_top1_k200"):
        s, b = r["encoder"][k], r["random_init"][k]
        print("%s: simclr %.2f%%, random init %.2f%%, raw pixels %.2f%%" % (k, s, b, r["raw"][k]))
        check(s >= b + 3.0, "%s: simclr %.2f%% not 3 points above random init %.2f%%" % (k, s, b))
except Exception as e:
    check(False, "no JSON result: %r" % e)
print("e2e: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
PY
