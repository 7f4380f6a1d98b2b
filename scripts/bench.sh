#!/usr/bin/env bash
# SimCLR training step, selfsup vs PyTorch 1.13, side by side (`make bench`).
#
# 1. Measures the machine's FP32 FMA peak (bench/peak.c) on 1 and THREADS threads.
# 2. For each configuration runs bench/bench_step.c (selfsup) and
#    bench/torch_step.py (PyTorch) alternately, ROUNDS times each
#    (C, torch, C, torch), and keeps the best run (highest img/s) of each.
# 3. Prints a markdown table and writes it to $BUILD/bench.md; every run's
#    JSON line goes to $BUILD/bench.jsonl, progress lines to $BUILD/bench.log.
#
# Both sides time only the step (forward of both views concatenated, NT-Xent,
# zero grad, backward, LARS) on one batch made beforehand; the C side also
# reports its loader's ms per batch (1 worker thread) as a share of the step.
# GFLOP per image = encoder conv MACs x 2 x 3 (forward + backward ~ 3x forward)
# x 2 views, from ssl_resnet_macs; the same number is used for both sides.
#
# Environment:
#   THREADS   compute threads for both sides (default 2)
#   STEPS     timed steps per run, all configs (default: per config, below)
#   WARMUP    untimed warm-up steps per run (default: per config, below)
#   ROUNDS    alternating rounds (default 2)
#   CONFIGS   which configurations, e.g. "1 2" (default "1 2"):
#     1  ResNet-18 w64, small stem, 1x28x28 Fashion-MNIST, B=256 (warm-up 1, 3 steps)
#     2  ResNet-18 w16, small stem, 1x28x28 Fashion-MNIST, B=256 (the README default)
#     3  ResNet-18 w16, small stem, 3x32x32 random images, B=256
#     4  ResNet-18 w16, ImageNet stem, 3x64x64 random images, B=256
#   BACKEND   selfsup op backend for bench_step --backend (default: the library default)
#   PYTHON    the Python with PyTorch 1.13 (default /usr/bin/python3)
#   BUILD     build folder holding libselfsup.a (default build)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
CONFIGS=${CONFIGS:-"1 2"}
PYTHON=${PYTHON:-/usr/bin/python3}
CC=${CC:-cc}
BACKEND=${BACKEND:-}

# name | depth width stem channels size batch warmup steps
config() {
    case "$1" in
    1) echo "R18 w64 small 1x28x28 B256|18 64 small 1 28 256 1 3" ;;
    2) echo "R18 w16 small 1x28x28 B256|18 16 small 1 28 256 2 5" ;;
    3) echo "R18 w16 small 3x32x32 B256|18 16 small 3 32 256 2 5" ;;
    4) echo "R18 w16 imagenet 3x64x64 B256|18 16 imagenet 3 64 256 2 5" ;;
    *) return 1 ;;
    esac
}

for c in $CONFIGS; do
    config "$c" >/dev/null || { echo "bench.sh: CONFIGS: unknown configuration '$c' (1-4)" >&2; exit 2; }
done
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: THREADS '$THREADS' must be a positive integer" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: ROUNDS '$ROUNDS' must be a positive integer" >&2; exit 2; }
[[ -z "${STEPS:-}" || "$STEPS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: STEPS '$STEPS' must be a positive integer" >&2; exit 2; }
[[ -z "${WARMUP:-}" || "$WARMUP" =~ ^[0-9]+$ ]] || { echo "bench.sh: WARMUP '$WARMUP' must be an integer >= 0" >&2; exit 2; }
if [[ ! -f "$BUILD/libselfsup.a" ]]; then
    echo "bench.sh: $BUILD/libselfsup.a not found: run 'make' first" >&2
    exit 1
fi

BIN="$BUILD/bench"
mkdir -p "$BIN"
# Built by the Makefile, with the libraries the library was built with.
make -s BUILD="$BUILD" "$BIN/bench_step" "$BIN/peak"

HAVE_TORCH=1
if ! "$PYTHON" -c 'import torch, torchvision' 2>/dev/null; then
    echo "bench.sh: $PYTHON has no torch/torchvision: PyTorch columns will be n/a" >&2
    HAVE_TORCH=0
fi

JSONL="$BUILD/bench.jsonl"
LOG="$BUILD/bench.log"
: >"$JSONL"
: >"$LOG"

echo "== FP32 FMA peak ($THREADS threads)"
PEAK=$("$BIN/peak" "$THREADS")
echo "$PEAK" | tee -a "$JSONL"

# Runs one side; appends its JSON line to $JSONL and prints it.
run_side() {
    local side=$1 args=$2 out
    if [[ $side == c ]]; then
        [[ -n "$BACKEND" ]] && args="$args --backend $BACKEND"
        out=$("$BIN/bench_step" $args 2>>"$LOG") || { echo "bench.sh: bench_step $args failed (see $LOG)" >&2; tail -3 "$LOG" >&2; return 1; }
    else
        out=$("$PYTHON" bench/torch_step.py $args 2>>"$LOG") || { echo "bench.sh: torch_step.py $args failed (see $LOG)" >&2; tail -3 "$LOG" >&2; return 1; }
    fi
    echo "$out" >>"$JSONL"
    echo "$out"
}

T0=$(date +%s)
for c in $CONFIGS; do
    IFS='|' read -r name spec <<<"$(config "$c")"
    read -r depth width stem ch size batch warmup steps <<<"$spec"
    steps=${STEPS:-$steps}
    warmup=${WARMUP:-$warmup}
    args="--depth $depth --width $width --stem $stem --channels $ch --size $size --batch $batch --threads $THREADS --warmup $warmup --steps $steps"
    for ((r = 1; r <= ROUNDS; r++)); do
        echo "== config $c ($name), round $r/$ROUNDS: selfsup"
        run_side c "$args" | sed "s/^/   /"
        if [[ $HAVE_TORCH == 1 ]]; then
            echo "== config $c ($name), round $r/$ROUNDS: PyTorch"
            run_side torch "$args" | sed "s/^/   /"
        fi
    done
done
T1=$(date +%s)

# The table, from the JSON lines: best img/s of each side per config.
"$PYTHON" - "$JSONL" "$THREADS" "$ROUNDS" "$((T1 - T0))" "$CONFIGS" <<'EOF' | tee "$BUILD/bench.md"
import json, sys
path, threads, rounds, secs, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
rows = [json.loads(l) for l in open(path) if l.strip()]
peak = rows[0]
# The machine's nominal peak: threads x the best single-thread rate (lscpu
# shows one thread per core, so cores do not share FMA units). The T-thread
# measurement is shown too: on a busy machine it falls below this.
peak_t = threads * peak["gflops_1t"]
key = lambda r: (r["depth"], r["width"], r["stem"], r["in_channels"], r["size"], r["batch"])
order, best = [], {}
for r in rows[1:]:
    k = key(r)
    if k not in order:
        order.append(k)
    b = best.setdefault(k, {})
    if r["impl"] not in b or r["img_per_s"] > b[r["impl"]]["img_per_s"]:
        b[r["impl"]] = r
backend = next((r["backend"] for r in rows if r.get("impl") == "selfsup" and "backend" in r), "default")
print(f"## SimCLR training step: selfsup ({backend} backend) vs PyTorch {next((r['version'] for r in rows if r.get('impl') == 'pytorch'), 'n/a')}, {threads} threads\n")
print("| config | selfsup img/s | PyTorch img/s | ratio | selfsup GFLOP/s | % of peak "
      "| PyTorch GFLOP/s | RSS selfsup | RSS torch | loader ms/batch (% of step) |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
notes, fastest = [], []
for k in order:
    c, t = best[k].get("selfsup"), best[k].get("pytorch")
    ref = c or t
    name = f"R{k[0]} w{k[1]} {k[2]} {k[3]}x{k[4]}x{k[4]} B{k[5]}"
    g = ref["gflop_per_img"]  # the C side's count, used for both
    if c and t and abs(c["gflop_per_img"] - t["gflop_per_img"]) > 1e-3 * g:
        notes.append(f"{name}: FLOP counts differ (selfsup {c['gflop_per_img']}, "
                     f"torch hooks {t['gflop_per_img']}); selfsup's is used")
    def cell(r, fmt):
        return fmt(r) if r else "n/a"
    cells = [
        name,
        cell(c, lambda r: "%.1f" % r["img_per_s"]),
        cell(t, lambda r: "%.1f" % r["img_per_s"]),
        cell(c and t, lambda _: "%.2fx" % (c["img_per_s"] / t["img_per_s"])),
        cell(c, lambda r: "%.1f" % (g * r["img_per_s"])),
        cell(c, lambda r: "%.0f%%" % (100 * g * r["img_per_s"] / peak_t)),
        cell(t, lambda r: "%.1f" % (g * r["img_per_s"])),
        cell(c, lambda r: "%.0f MB" % r["peak_rss_mb"]),
        cell(t, lambda r: "%.0f MB" % r["peak_rss_mb"]),
        cell(c, lambda r: "%.1f (%.2f%%)" % (r["loader_ms_per_batch"], 100 * r["loader_frac_of_step"])),
    ]
    print("| " + " | ".join(cells) + " |")
    # The machine may be shared: the fastest single step says what each side
    # does when left alone, the mean above what it did.
    fast = [f"{n} {min(r['s_per_step_min'] for r in rows[1:] if key(r) == k and r['impl'] == i):.2f} s"
            for n, i in (("selfsup", "selfsup"), ("PyTorch", "pytorch")) if best[k].get(i)]
    fastest.append(f"{name}: " + ", ".join(fast))
print()
print(f"- Peak FP32 FMA ({peak['isa']}): {peak['gflops_1t']:.1f} GFLOP/s on 1 thread, "
      f"{peak['gflops_t']:.1f} measured on {threads}; % of peak is against "
      f"{threads} x 1-thread = {peak_t:.1f} GFLOP/s.")
print("- GFLOP per image = encoder conv MACs x 2 x 3 (forward + backward ~ 3x forward) x 2 views "
      "(projector, BN, loss not counted); the same number for both sides: "
      + ", ".join(f"R{k[0]} w{k[1]} {k[4]}px: {(best[k].get('selfsup') or best[k].get('pytorch'))['gflop_per_img']:.3f}" for k in order) + ".")
print(f"- Best of {rounds} alternating rounds (selfsup, PyTorch, ...); img/s = batch / mean timed step; "
      "each image is 2 views. Both sides time the step on one pre-made batch; the loader column is "
      "selfsup's loader alone (1 worker thread, SimCLR augmentation of 2 views) per batch, as a share of its step.")
print("- RSS is the process's peak (ru_maxrss); PyTorch's includes about "
      f"{next((r['rss_after_import_mb'] for r in rows if r.get('impl') == 'pytorch'), 0):.0f} MB "
      "for importing torch and torchvision.")
print("- Fastest single step of all rounds (the machine may be shared): " + "; ".join(fastest) + ".")
for n in notes:
    print(f"- NOTE: {n}")
print(f"- Total bench time {secs} s. Raw JSON lines: {path}.")
EOF
