#!/usr/bin/env bash
# Time to accuracy (issue 3): the wall time selfsup and PyTorch 1.13 need, on
# the same SimCLR recipe (`selfsup pretrain` defaults: ResNet-18 small stem
# width 16, batch 256, the SimCLR augmentations, LARS, warm-up + cosine),
# to reach 80% and 85% k-NN (k=20) top-1 on the Fashion-MNIST test split.
#
# 1. selfsup pretrain --knn-every KNN_EVERY --no-eval (its log.jsonl "knn"
#    lines), then bench/torch_pretrain.py with the same options: one after
#    the other, never at the same time. Both evaluate with the same k-NN
#    (k=20 and 200, T=0.1, the whole train split as the bank, the test split
#    as queries) every KNN_EVERY epochs and at the end, and log
#    train_seconds: training wall time without the evaluations, loader
#    waits included. A threshold's time is that of the first evaluation at
#    or above it (resolution: one evaluation interval).
# 2. Prints a markdown table (time to each threshold per side, their ratio,
#    final k-NN) and writes it with the settings and the machine to
#    $OUT/results.md; progress lines go to $OUT/selfsup.log and
#    $OUT/pytorch.log.
#
# Run it on a quiet machine: other processes on the cores skew both clocks.
#
# Environment:
#   EPOCHS      epochs of each run (default 10)
#   THREADS     compute threads of each side (default 2)
#   WORKERS     loader threads (selfsup) / DataLoader worker processes (PyTorch) (default 1)
#   KNN_EVERY   epochs between k-NN evaluations, fractions allowed: 0.25 is
#               every round(steps per epoch / 4) steps (default 1)
#   CROP_MIN    smallest crop area of the random resized crops (default 0.08,
#               SimCLR's; selfsup's --global-scale-min)
#   BATCH       batch size (default 256)
#   TEMPERATURE NT-Xent temperature of both sides (default 0.2, SimCLR's
#               recipe here; selfsup's --temperature)
#   WIDTH       ResNet-18 base width of both sides (default 16, selfsup's default)
#   SEED        (default 1)
#   THRESHOLDS  k-NN k=20 top-1 targets in percent (default "80 85")
#   DATA        fashion-mnist (default) or a folder of the four MNIST-named IDX
#               files, plain or .gz (a small one from tests/make_subset.py for a smoke test)
#   TORCH_CAP   R > 0: stop PyTorch at its first k-NN evaluation past R times
#               selfsup's time to the highest threshold it reached (a "> R x"
#               answer for the thresholds PyTorch has not reached by then, at
#               a fraction of the cost; PyTorch's schedule is still that of
#               EPOCHS); 0 (default): PyTorch runs all EPOCHS
#   SIDES       which runs to do (default "selfsup pytorch"; "" for none); a side left out
#               is reported from its earlier log in $OUT, if there is one
#   OUT         results folder (default runs/tta)
#   BUILD       build folder of selfsup (default build; built with make if missing)
#   PYTHON      the Python with PyTorch 1.13 (default /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."

EPOCHS=${EPOCHS:-10}
THREADS=${THREADS:-2}
WORKERS=${WORKERS:-1}
KNN_EVERY=${KNN_EVERY:-1}
BATCH=${BATCH:-256}
WIDTH=${WIDTH:-16}
SEED=${SEED:-1}
THRESHOLDS=${THRESHOLDS:-"80 85"}
DATA=${DATA:-fashion-mnist}
SIDES=${SIDES-"selfsup pytorch"} # SIDES="" (set, empty): report the earlier logs only
OUT=${OUT:-runs/tta}
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}

CROP_MIN=${CROP_MIN:-0.08}
TEMPERATURE=${TEMPERATURE:-0.2}
TORCH_CAP=${TORCH_CAP:-0}
if ! awk -v k="$TORCH_CAP" 'BEGIN { exit !(k ~ /^[0-9]*\.?[0-9]+$/) }'; then
    echo "time_to_accuracy: TORCH_CAP must be a number >= 0 (got '$TORCH_CAP')" >&2
    exit 2
fi
if ! awk -v k="$KNN_EVERY" 'BEGIN { exit !(k ~ /^[0-9]*\.?[0-9]+$/ && k > 0) }'; then
    echo "time_to_accuracy: KNN_EVERY must be a number > 0 (got '$KNN_EVERY')" >&2
    exit 2
fi
mkdir -p "$OUT"
[ -x "$BUILD/selfsup" ] || make -s "$BUILD/selfsup" BUILD="$BUILD"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

for side in $SIDES; do
    case $side in
    selfsup)
        echo "time_to_accuracy: selfsup, $EPOCHS epochs on $THREADS threads (progress: $OUT/selfsup.log)" >&2
        "$BUILD/selfsup" pretrain --data "$DATA" --epochs "$EPOCHS" --batch-size "$BATCH" --width "$WIDTH" \
            --threads "$THREADS" --workers "$WORKERS" --seed "$SEED" --knn-every "$KNN_EVERY" \
            --global-scale-min "$CROP_MIN" --temperature "$TEMPERATURE" --no-eval --out "$OUT/selfsup" 2>"$OUT/selfsup.log" ||
            { tail -n 3 "$OUT/selfsup.log" >&2; exit 1; }
        ;;
    pytorch)
        stop=0
        if awk -v k="$TORCH_CAP" 'BEGIN { exit !(k > 0) }'; then
            stop=$("$PYTHON" - "$OUT/selfsup/log.jsonl" "$THRESHOLDS" "$TORCH_CAP" <<'CAP'
import json, os, sys
path, ts, cap = sys.argv[1], [float(t) for t in sys.argv[2].split()], float(sys.argv[3])
rows = [r for r in map(json.loads, open(path)) if r.get("event") == "knn"] if os.path.exists(path) else []
hits = [h for h in (next((r["train_seconds"] for r in rows if r["knn_top1_k20"] >= t), None) for t in ts)
        if h is not None]
print("%.2f" % (cap * max(hits)) if hits else 0)
CAP
)
            [ "$stop" = 0 ] && echo "time_to_accuracy: TORCH_CAP: selfsup reached no threshold, PyTorch runs all $EPOCHS epochs" >&2
        fi
        echo "time_to_accuracy: PyTorch, $EPOCHS epochs on $THREADS threads$([ "$stop" != 0 ] && echo ", stopped past $stop s of training") (progress: $OUT/pytorch.log)" >&2
        "$PYTHON" bench/torch_pretrain.py --data "$DATA" --epochs "$EPOCHS" --batch-size "$BATCH" --width "$WIDTH" \
            --threads "$THREADS" --workers "$WORKERS" --seed "$SEED" --knn-every "$KNN_EVERY" \
            --global-scale-min "$CROP_MIN" --temperature "$TEMPERATURE" --stop-seconds "$stop" --out "$OUT/pytorch.jsonl" >/dev/null 2>"$OUT/pytorch.log" ||
            { tail -n 3 "$OUT/pytorch.log" >&2; exit 1; }
        ;;
    *)
        echo "time_to_accuracy: SIDES: '$side' unknown (selfsup, pytorch)" >&2
        exit 2
        ;;
    esac
done

SETTINGS="data $DATA, width $WIDTH, batch $BATCH, $EPOCHS epochs, $THREADS compute threads and $WORKERS loader worker(s) per side, seed $SEED, crop area [$CROP_MIN, 1], temperature $TEMPERATURE, k-NN every $KNN_EVERY epoch(s) and at the end"
"$PYTHON" - "$OUT" "$THRESHOLDS" "$SETTINGS" "$LOAD_BEFORE" <<'EOF'
import json, os, platform, sys, time
out, thresholds = sys.argv[1], [float(t) for t in sys.argv[2].split()]
settings, load_before = sys.argv[3], sys.argv[4]

def knn_lines(path):
    if not os.path.exists(path):
        return None
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return [r for r in rows if r.get("event") == "knn"] or None

sides = [("selfsup", knn_lines(os.path.join(out, "selfsup", "log.jsonl"))),
         ("PyTorch", knn_lines(os.path.join(out, "pytorch.jsonl")))]

def reach(rows, t):
    """(train_seconds, epoch) of the first evaluation at or above t, else None."""
    return next(((r["train_seconds"], r["epoch"]) for r in rows if r["knn_top1_k20"] >= t), None)

def cell(rows, t):
    if rows is None:
        return "no run"
    hit = reach(rows, t)
    if hit:
        return "%.0f s (epoch %g)" % hit
    best = max(rows, key=lambda r: r["knn_top1_k20"])
    return "not reached, best %.2f%% at %.0f s" % (best["knn_top1_k20"], best["train_seconds"])

def ratio(t):
    a, b = (reach(r, t) if r else None for _, r in sides)
    if a and b and a[0] > 0:
        return "%.2fx" % (b[0] / a[0])
    if a and a[0] > 0 and sides[1][1]:  # PyTorch never got there in the time it ran
        return "> %.2fx" % (sides[1][1][-1]["train_seconds"] / a[0])
    return "-"

lines = ["| | selfsup | PyTorch | PyTorch / selfsup |", "|---|---|---|---|"]
for t in thresholds:
    lines.append("| time to %g%% k-NN k=20 | %s | %s | %s |" % (t, cell(sides[0][1], t), cell(sides[1][1], t), ratio(t)))
def final(rows, fmt):
    return fmt(rows[-1]) if rows else "no run"
lines.append("| final k-NN k=20 / k=200 | %s | %s | |" % tuple(
    final(r, lambda x: "%.2f%% / %.2f%%" % (x["knn_top1_k20"], x["knn_top1_k200"])) for _, r in sides))
lines.append("| epochs, training time | %s | %s | %s |" % (
    *(final(r, lambda x: "%g, %.0f s" % (x["epoch"], x["train_seconds"])) for _, r in sides),
    "%.2fx" % (sides[1][1][-1]["train_seconds"] / sides[0][1][-1]["train_seconds"])
    if all(r for _, r in sides) and sides[1][1][-1]["step"] == sides[0][1][-1]["step"] else ""))
lines.append("| evaluation time (off the clock) | %s | %s | |" % tuple(
    "%.0f s in %d evaluations" % (sum(x["eval_seconds"] for x in r), len(r)) if r else "no run" for _, r in sides))
table = "\n".join(lines)
print(table)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
try:
    import torch
    torch_v = torch.__version__
except ImportError:
    torch_v = "?"
with open(os.path.join(out, "results.md"), "w") as f:
    f.write("# Time to accuracy: SimCLR on Fashion-MNIST, selfsup vs PyTorch\n\n")
    f.write("%s, %s (%d cores), load average before the runs: %s; PyTorch %s\n\n"
            % (time.strftime("%Y-%m-%d %H:%M"), cpu, os.cpu_count(), load_before, torch_v))
    f.write("Recipe: `selfsup pretrain` defaults (SimCLR, ResNet-18 small stem, "
            "LARS lr 0.075 x sqrt(B), warm-up 0.5 epochs + cosine) and bench/torch_pretrain.py, "
            "run one after the other: %s. k-NN k=20 (T=0.1, train split as the bank, test "
            "split as queries); times are training wall time without the evaluations (loader "
            "waits included), read at the first evaluation at or above each threshold.\n\n"
            % settings)
    f.write(table + "\n")
print("wrote %s" % os.path.join(out, "results.md"))
EOF
