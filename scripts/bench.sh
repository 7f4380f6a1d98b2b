#!/usr/bin/env bash
# Training steps of SimCLR, BYOL and DINO, selfsup vs PyTorch 1.13, side by
# side (`make bench`).
#
# 1. Measures the machine's FP32 FMA peak (bench/peak.c) on 1 and THREADS threads.
# 2. For each configuration runs bench/bench_step.c (selfsup) and
#    bench/torch_step.py (PyTorch) alternately, ROUNDS times each
#    (C, torch, C, torch), and keeps the best run (highest img/s) of each.
# 3. Prints a markdown table and writes it to $BUILD/bench.md; every run's
#    JSON line goes to $BUILD/bench.jsonl, progress lines to $BUILD/bench.log.
#
# Both sides time only the step (the method's loss over all its views, zero
# grad, backward, the method's optimizer, its EMA / center update) on one
# batch made beforehand; the C side also reports its loader's ms per batch
# (1 worker thread, the method's augmentations) as a share of the step.
# GFLOP per image = encoder conv MACs x 2 x 3 (forward + backward ~ 3x
# forward) for every view the encoder trains on, each at its own size, plus
# MACs x 2 x 1 for every view a teacher encodes without gradient (BYOL's
# target: both views; DINO's teacher: the 2 global crops). selfsup counts it
# with ssl_resnet_macs, PyTorch with hooks; the table uses selfsup's for both
# sides and notes any difference.
#
# Environment:
#   THREADS   compute threads for both sides (default 2)
#   STEPS     timed steps per run, all configs (default: per config, below)
#   WARMUP    untimed warm-up steps per run, >= 2 (default: per config, below):
#             the first step sizes the arena and the second faults its pages in
#   ROUNDS    alternating rounds (default 2)
#   CONFIGS   which configurations, e.g. "2 7" (default "1 5 6 7 8", the issue's list):
#     1  SimCLR ResNet-18 w64, small stem, 1x28x28 Fashion-MNIST, B=256 (3 timed steps)
#     2  SimCLR ResNet-18 w16, small stem, 1x28x28 Fashion-MNIST, B=256 (the README default)
#     3  SimCLR ResNet-18 w16, small stem, 3x32x32 random images, B=256
#     4  SimCLR ResNet-18 w16, ImageNet stem, 3x64x64 random images, B=256
#     5  SimCLR ResNet-18 w64, small stem, 3x32x32 random images (CIFAR's shape), B=256 (3 timed)
#     6  SimCLR ResNet-50 w64, ImageNet stem, 3x64x64 random images, B=64
#     7  BYOL   ResNet-18 w16, small stem, 1x28x28 Fashion-MNIST, B=256
#     8  DINO   ResNet-18 w16, small stem, 1x28x28 Fashion-MNIST, B=256,
#               2 global 28x28 + 8 local 12x12 crops
#     9  BYOL   ResNet-18 w64, small stem, 1x28x28 Fashion-MNIST, B=256 (3 timed)
#     10 DINO   ResNet-18 w64, small stem, 1x28x28, B=256, 2x28 + 8x12 crops (3 timed)
#     11 MAE    ViT-tiny/4 (12 blocks), 1x28x28 Fashion-MNIST, B=256, mask 0.75,
#               decoder 128 wide x 2 blocks (3 timed)
#     12 DINO   ViT-tiny/4 (12 blocks), 1x28x28 Fashion-MNIST, B=64, 2x28 + 8x12
#               crops (local crops' position embeddings resampled) (3 timed)
#   PROFILE   1: selfsup runs with --profile 1 (time per op kind; adds the
#             timers' small overhead to its steps) and the table is followed
#             by the profile of each config's best selfsup run
#   BF16      1: both sides in bfloat16 mixed precision: selfsup's bf16
#             convolutions (bench_step --bf16 1, as pretrain --precision bf16;
#             needs AVX512-BF16 or AMX) and PyTorch's torch.autocast("cpu",
#             bfloat16) (default 0: fp32); "% of peak" stays the FP32 FMA peak
#   BACKEND   selfsup op backend for bench_step --backend (default: the library default)
#   PYTHON    the Python with PyTorch 1.13 (default /usr/bin/python3)
#   BUILD     build folder holding libselfsup.a (default build)
#   BIN       folder holding bench_step and peak already built (default:
#             built by make into $BUILD/bench)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
CONFIGS=${CONFIGS:-"1 5 6 7 8"}
PYTHON=${PYTHON:-/usr/bin/python3}
BACKEND=${BACKEND:-}
PROFILE=${PROFILE:-0}
BF16=${BF16:-0}

# name | method depth width stem channels size batch warmup steps [arch]
config() {
    case "$1" in
    1) echo "SimCLR R18 w64 small 1x28x28 B256|simclr 18 64 small 1 28 256 2 3" ;;
    2) echo "SimCLR R18 w16 small 1x28x28 B256|simclr 18 16 small 1 28 256 2 5" ;;
    3) echo "SimCLR R18 w16 small 3x32x32 B256|simclr 18 16 small 3 32 256 2 5" ;;
    4) echo "SimCLR R18 w16 imagenet 3x64x64 B256|simclr 18 16 imagenet 3 64 256 2 5" ;;
    5) echo "SimCLR R18 w64 small 3x32x32 B256|simclr 18 64 small 3 32 256 2 3" ;;
    6) echo "SimCLR R50 w64 imagenet 3x64x64 B64|simclr 50 64 imagenet 3 64 64 2 5" ;;
    7) echo "BYOL R18 w16 small 1x28x28 B256|byol 18 16 small 1 28 256 2 5" ;;
    8) echo "DINO R18 w16 small 1x28x28 B256|dino 18 16 small 1 28 256 2 5" ;;
    9) echo "BYOL R18 w64 small 1x28x28 B256|byol 18 64 small 1 28 256 2 3" ;;
    10) echo "DINO R18 w64 small 1x28x28 B256|dino 18 64 small 1 28 256 2 3" ;;
    11) echo "MAE ViT-tiny/4 1x28x28 B256|mae 18 64 small 1 28 256 2 3 vit_tiny" ;;
    12) echo "DINO ViT-tiny/4 1x28x28 B64|dino 18 64 small 1 28 64 2 3 vit_tiny" ;;
    *) return 1 ;;
    esac
}

for c in $CONFIGS; do
    config "$c" >/dev/null || { echo "bench.sh: CONFIGS: unknown configuration '$c' (1-12)" >&2; exit 2; }
done
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: THREADS '$THREADS' must be a positive integer" >&2; exit 2; }
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: ROUNDS '$ROUNDS' must be a positive integer" >&2; exit 2; }
[[ -z "${STEPS:-}" || "$STEPS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: STEPS '$STEPS' must be a positive integer" >&2; exit 2; }
# One warm-up step is not enough: the first step grows the arena, the second
# is the first to touch all of its pages (up to ~25 s of page faults at w64).
[[ -z "${WARMUP:-}" || ("$WARMUP" =~ ^[0-9]+$ && "$WARMUP" -ge 2) ]] || { echo "bench.sh: WARMUP '$WARMUP' must be an integer >= 2" >&2; exit 2; }
[[ "$PROFILE" == 0 || "$PROFILE" == 1 ]] || { echo "bench.sh: PROFILE '$PROFILE' must be 0 or 1" >&2; exit 2; }
[[ "$BF16" == 0 || "$BF16" == 1 ]] || { echo "bench.sh: BF16 '$BF16' must be 0 or 1" >&2; exit 2; }

if [[ -n "${BIN:-}" ]]; then
    for b in bench_step peak; do
        [[ -x "$BIN/$b" ]] || { echo "bench.sh: BIN: $BIN/$b not found" >&2; exit 1; }
    done
else
    if [[ ! -f "$BUILD/libselfsup.a" ]]; then
        echo "bench.sh: $BUILD/libselfsup.a not found: run 'make' first" >&2
        exit 1
    fi
    BIN="$BUILD/bench"
    mkdir -p "$BIN"
    # Built by the Makefile, with the libraries the library was built with.
    make -s BUILD="$BUILD" "$BIN/bench_step" "$BIN/peak"
fi

HAVE_TORCH=1
if ! "$PYTHON" -c 'import torch, torchvision' 2>/dev/null; then
    echo "bench.sh: $PYTHON has no torch/torchvision: PyTorch columns will be n/a" >&2
    HAVE_TORCH=0
fi

mkdir -p "$BUILD"
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
    [[ "$BF16" == 1 ]] && args="$args --bf16 1"
    if [[ $side == c ]]; then
        [[ -n "$BACKEND" ]] && args="$args --backend $BACKEND"
        [[ "$PROFILE" == 1 ]] && args="$args --profile 1"
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
    read -r method depth width stem ch size batch warmup steps arch <<<"$spec"
    steps=${STEPS:-$steps}
    warmup=${WARMUP:-$warmup}
    args="--method $method --depth $depth --width $width --stem $stem --channels $ch --size $size --batch $batch --threads $THREADS --warmup $warmup --steps $steps"
    [[ -n "${arch:-}" ]] && args="$args --arch $arch --patch 4"
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
"$PYTHON" - "$JSONL" "$THREADS" "$ROUNDS" "$((T1 - T0))" "$PROFILE" <<'EOF' | tee "$BUILD/bench.md"
import json, sys
path, threads, rounds, secs, profile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"
rows = [json.loads(l) for l in open(path) if l.strip()]
peak = rows[0]
# The machine's nominal peak: threads x the best single-thread rate (lscpu
# shows one thread per core, so cores do not share FMA units). The T-thread
# measurement is shown too: on a busy machine it falls below this.
peak_t = threads * peak["gflops_1t"]
NAMES = {"simclr": "SimCLR", "byol": "BYOL", "dino": "DINO", "mae": "MAE"}
key = lambda r: (r["method"], r["depth"], r["width"], r["stem"], r["in_channels"], r["size"], r["batch"],
                 r.get("arch", "resnet"), r.get("patch", 0))
order, best = [], {}
for r in rows[1:]:
    k = key(r)
    if k not in order:
        order.append(k)
    b = best.setdefault(k, {})
    if r["impl"] not in b or r["img_per_s"] > b[r["impl"]]["img_per_s"]:
        b[r["impl"]] = r
backend = next((r["backend"] for r in rows if r.get("impl") == "selfsup" and "backend" in r), "default")
backend = backend.replace(" (profiled)", "") + " backend" + (", profiled" if profile else "")
version = next((r["version"] for r in rows if r.get("impl") == "pytorch"), "n/a")
def name(k):
    if k[7] != "resnet":
        return f"{NAMES.get(k[0], k[0])} {k[7].replace('vit_', 'ViT-')}/{k[8]} {k[4]}x{k[5]}x{k[5]} B{k[6]}"
    return f"{NAMES.get(k[0], k[0])} R{k[1]} w{k[2]} {k[3]} {k[4]}x{k[5]}x{k[5]} B{k[6]}"
bf16 = any(r.get("bf16") for r in rows[1:])
precision = (", bf16 (selfsup's bf16 convolutions, PyTorch's autocast; % of the FP32 peak)"
             if bf16 else "")
print(f"## Training step: selfsup ({backend}) vs PyTorch {version}, {threads} threads{precision}\n")
print("| config | views | GFLOP/img | selfsup img/s | PyTorch img/s | ratio | selfsup GFLOP/s "
      "| % of peak | PyTorch GFLOP/s | % of peak | RSS selfsup | RSS torch | loader ms/batch (% of step) |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
notes, fastest, heads = [], [], []
for k in order:
    c, t = best[k].get("selfsup"), best[k].get("pytorch")
    ref = c or t
    n = name(k)
    g = ref["gflop_per_img"]  # the C side's count, used for both
    if c and t:
        if abs(c["gflop_per_img"] - t["gflop_per_img"]) > 1e-3 * g:
            notes.append(f"{n}: FLOP counts differ (selfsup {c['gflop_per_img']}, "
                         f"torch hooks {t['gflop_per_img']}); selfsup's is used")
        if c["views"] != t["views"] or c["optimizer"] != t["optimizer"] or \
                abs(c["peak_lr"] - t["peak_lr"]) > 1e-5 * c["peak_lr"]:
            notes.append(f"{n}: the sides differ: selfsup views {c['views']} {c['optimizer']} lr "
                         f"{c['peak_lr']}, PyTorch views {t['views']} {t['optimizer']} lr {t['peak_lr']}")
    if t and "head_gflop_per_img" in t:
        heads.append(f"{n}: {t['head_gflop_per_img']:.3f}")
    # Steady timed steps: the best run's slowest step within 25% of its fastest.
    for side, r in (("selfsup", c), ("PyTorch", t)):
        if r and r["s_per_step_max"] > 1.25 * r["s_per_step_min"]:
            notes.append(f"{n}: {side}'s timed steps are not steady "
                         f"({', '.join('%.2f' % s for s in r['step_s'])} s)")
    def cell(r, fmt):
        return fmt(r) if r else "n/a"
    cells = [
        n,
        ref["views"] + (f" (teacher {ref['teacher_views']})" if ref["teacher_views"] else ""),
        "%.3f" % g,
        cell(c, lambda r: "%.1f" % r["img_per_s"]),
        cell(t, lambda r: "%.1f" % r["img_per_s"]),
        cell(c and t, lambda _: "%.2fx" % (c["img_per_s"] / t["img_per_s"])),
        cell(c, lambda r: "%.1f" % (g * r["img_per_s"])),
        cell(c, lambda r: "%.0f%%" % (100 * g * r["img_per_s"] / peak_t)),
        cell(t, lambda r: "%.1f" % (g * r["img_per_s"])),
        cell(t, lambda r: "%.0f%%" % (100 * g * r["img_per_s"] / peak_t)),
        cell(c, lambda r: "%.0f MB" % r["peak_rss_mb"]),
        cell(t, lambda r: "%.0f MB" % r["peak_rss_mb"]),
        cell(c, lambda r: "%.1f (%.2f%%)" % (r["loader_ms_per_batch"], 100 * r["loader_frac_of_step"])),
    ]
    print("| " + " | ".join(cells) + " |")
    # The machine may be shared: the fastest single step says what each side
    # does when left alone, the mean above what it did.
    fast = [f"{s} {min(r['s_per_step_min'] for r in rows[1:] if key(r) == k and r['impl'] == i):.2f} s"
            for s, i in (("selfsup", "selfsup"), ("PyTorch", "pytorch")) if best[k].get(i)]
    fastest.append(f"{n}: " + ", ".join(fast))
print()
print(f"- Peak FP32 FMA ({peak['isa']}): {peak['gflops_1t']:.1f} GFLOP/s on 1 thread, "
      f"{peak['gflops_t']:.1f} measured on {threads}; % of peak is against "
      f"{threads} x 1-thread = {peak_t:.1f} GFLOP/s.")
print("- GFLOP per image = encoder conv MACs x 2 x 3 (forward + backward ~ 3x forward) for each "
      "view the encoder trains on, at its own size, + MACs x 2 x 1 for each view a teacher encodes "
      "without gradient (the views column: count x side; teacher n = views through a teacher); "
      "heads, BN, losses and the optimizer are not counted. selfsup counts it from "
      "ssl_resnet_macs, PyTorch by hooks on its convolutions; selfsup's number is used for both "
      "sides (they agree unless a NOTE says otherwise).")
if heads:
    print("- Not in GFLOP/img: the heads' linear layers, counted the same way by PyTorch's hooks, "
          "GFLOP per image: " + "; ".join(heads) + ".")
print(f"- Best of {rounds} alternating rounds (selfsup, PyTorch, ...); img/s = batch / mean timed step; "
      "each image is all its views. Both sides time the step (loss, backward, optimizer, EMA / "
      "center update) on one pre-made batch; the loader column is selfsup's loader alone (1 worker "
      "thread, the method's augmentation of all views) per batch, as a share of its step.")
print("- RSS is the process's peak (ru_maxrss); PyTorch's includes about "
      f"{next((r['rss_after_import_mb'] for r in rows if r.get('impl') == 'pytorch'), 0):.0f} MB "
      "for importing torch and torchvision.")
print("- Fastest single step of all rounds (the machine may be shared): " + "; ".join(fastest) + ".")
for n in notes:
    print(f"- NOTE: {n}")
print(f"- Total bench time {secs} s. Raw JSON lines: {path}.")

if profile:
    profs = [(k, best[k]["selfsup"]) for k in order if "profile" in best[k].get("selfsup", {})]
    if profs:
        kinds = list(profs[0][1]["profile"])
        print(f"\n### selfsup profile: seconds per timed step by op kind (share of the step)\n")
        print("| config | s/step | " + " | ".join(kinds) + " |")
        print("|---|---:|" + "---:|" * len(kinds))
        for k, r in profs:
            s = r["s_per_step"]
            print(f"| {name(k)} | {s:.3f} | " +
                  " | ".join("%.3f (%.0f%%)" % (r["profile"][q], 100 * r["profile"][q] / s) for q in kinds) + " |")
        print("\n- From each config's best selfsup run above, run with --profile 1 (its timers are "
              "in its step times); \"other\" is the step's time outside the backend ops: sums, "
              "concatenation, heads' elementwise ops, losses, optimizer, EMA.")
EOF
