#!/usr/bin/env bash
# CLI tests: bad input gets a one-line error and a non-zero exit (never a crash
# or a damaged checkpoint); round trips (eval reproduces pretrain's figures,
# embed writes arrays NumPy loads, resume continues exactly).
# usage: tests/cli.sh BUILD_DIR    (prints "cli: N passed, M failed")
set -u
BUILD=${1:-build}
SELFSUP=$BUILD/selfsup
PY=/usr/bin/python3
T=$(mktemp -d /tmp/selfsup-cli.XXXXXX)
trap 'rm -rf "$T"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL cli: $*" >&2; }

# expect_fail EXIT_CODE PATTERN -- command...: exit code, one stderr line
# containing PATTERN, nothing from the sanitizers.
expect_fail() {
    local want=$1 pat=$2
    shift 3
    "$@" >"$T/out" 2>"$T/err"
    local rc=$? lines
    lines=$(grep -c . "$T/err")
    if [ "$rc" -ne "$want" ]; then bad "$* -> exit $rc, want $want: $(head -c 300 "$T/err")"; return; fi
    if [ "$lines" -ne 1 ]; then bad "$* -> $lines lines on stderr, want 1: $(head -c 400 "$T/err")"; return; fi
    if ! grep -q -- "$pat" "$T/err"; then bad "$* -> message lacks '$pat': $(cat "$T/err")"; return; fi
    ok
}

expect_ok() {
    "$@" >"$T/out" 2>"$T/err"
    local rc=$?
    if [ "$rc" -ne 0 ]; then bad "$* -> exit $rc: $(tail -c 400 "$T/err")"; return 1; fi
    if grep -q -E "AddressSanitizer|runtime error|LeakSanitizer" "$T/err"; then bad "$* -> sanitizer report"; return 1; fi
    ok
}

# A small real dataset (2000 train / 500 test images of Fashion-MNIST).
$PY tests/make_subset.py "$T/sub" 2000 500 || bad "make_subset.py failed"
SMALL=(--data "$T/sub" --width 4 --batch-size 32 --proj-hidden 64 --proj-dim 32 --threads 2 --quiet)
DINO_SMALL=("${SMALL[@]/--proj-dim/--bottleneck-dim}") # DINO's head has a bottleneck, no proj-dim
# The pretext tasks have a classifier head, no projector
PRETEXT_SMALL=(--data "$T/sub" --width 4 --batch-size 32 --head-hidden 16 --threads 2 --quiet)
# Colorization needs RGB: a small CIFAR-format folder of blocky colour images
# (200 train / 60 test); inpainting (a decoder, no head) runs on the gray subset.
$PY - "$T/rgb" <<'EOF' || bad "making the RGB folder failed"
import os, sys
import numpy as np
rng = np.random.default_rng(0)
os.makedirs(sys.argv[1], exist_ok=True)
def batch(name, n):
    img = np.kron(rng.integers(0, 256, (n, 3, 4, 4)), np.ones((1, 1, 8, 8))).astype(np.uint8)
    labels = rng.integers(0, 10, (n, 1)).astype(np.uint8)
    open(os.path.join(sys.argv[1], name), "wb").write(np.concatenate([labels, img.reshape(n, -1)], 1).tobytes())
for i in range(1, 6):
    batch("data_batch_%d.bin" % i, 40)
batch("test_batch.bin", 60)
EOF
COLOR_SMALL=(--data "$T/rgb" --width 4 --batch-size 32 --threads 2 --quiet)
DECODER_SMALL=(--data "$T/sub" --width 4 --batch-size 32 --threads 2 --quiet)
# masked image modeling: a one-block ViT with 7-px patches
MIM_SMALL=(--data "$T/sub" --arch vit_tiny --vit-depth 1 --patch-size 7 --batch-size 32 --threads 2 --quiet)

# ---- usage errors (exit 2) ----
expect_fail 2 "unknown option '--bogus'" -- $SELFSUP pretrain --bogus 1
expect_fail 2 "--method 'nosuch' unknown" -- $SELFSUP pretrain --method nosuch
expect_fail 2 "--width: 'abc' is not a valid integer" -- $SELFSUP pretrain --width abc
expect_fail 2 "needs a value" -- $SELFSUP pretrain --epochs
expect_fail 2 "unknown command 'frobnicate'" -- $SELFSUP frobnicate
expect_fail 2 "no CUDA backend" -- $SELFSUP pretrain --device cuda
expect_fail 2 "--precision 'fp16' unknown (fp32, bf16)" -- $SELFSUP pretrain --precision fp16
expect_fail 2 "--precision bf16 runs on the dnnl backend only, not 'cpu'" -- \
    $SELFSUP pretrain --precision bf16 --device cpu
# oneDNN held to AVX2 (or no oneDNN in the build): bf16 refused before any work
expect_fail 2 "AVX512-BF16 or AMX\|dnnl backend only" -- \
    env DNNL_MAX_CPU_ISA=AVX2 $SELFSUP pretrain --precision bf16
expect_fail 2 "--protocol must be" -- $SELFSUP eval x.safetensors --protocol nope
expect_fail 1 "--arch 'resnet99' unknown" -- $SELFSUP pretrain "${SMALL[@]}" --arch resnet99 --steps 1
expect_fail 1 "--temperature must be > 0" -- $SELFSUP pretrain "${SMALL[@]}" --temperature 0 --steps 1
expect_fail 1 "--batch-size 4096 must be in" -- $SELFSUP pretrain "${SMALL[@]}" --batch-size 4096 --steps 1
# bad method configurations: one line before any training step
expect_fail 2 "--temperature: '-1' must be a non-negative number" -- $SELFSUP pretrain --method byol --temperature -1
expect_fail 2 "--weight-decay: '-1' must be a non-negative number" -- $SELFSUP pretrain --weight-decay -1
expect_fail 2 "--clip-grad: '-1' must be a non-negative number" -- $SELFSUP pretrain --method dino --clip-grad -1
expect_fail 2 "--knn-every: '-1' must be a non-negative number" -- $SELFSUP pretrain --knn-every -1
expect_fail 1 "--knn-every 200000 must be in .0, 100000. epochs" -- $SELFSUP pretrain "${SMALL[@]}" --knn-every 2e5 --steps 1
expect_fail 2 "--weight-decay-end, --clip-grad and --min-lr must be finite" -- $SELFSUP pretrain --weight-decay-end inf
expect_fail 2 "--queue-size: '1.5' must be a non-negative integer" -- $SELFSUP pretrain --method moco --queue-size 1.5
expect_fail 1 "--queue-size 1000 must be a multiple of the batch size 32" -- $SELFSUP pretrain "${SMALL[@]}" --method moco --queue-size 1000 --steps 1
expect_fail 1 "must be a multiple of the batch size" -- $SELFSUP pretrain "${SMALL[@]}" --method swav --queue-size 40 --steps 1
expect_fail 1 "--local-crops must be >= 1: dino is a multi-crop method" -- $SELFSUP pretrain "${DINO_SMALL[@]}" --method dino --local-crops 0 --steps 1
expect_fail 1 "--local-crops must be >= 1: swav is a multi-crop method" -- $SELFSUP pretrain "${SMALL[@]}" --method swav --local-crops 0 --steps 1
expect_fail 1 "--teacher-temp and --warmup-teacher-temp must be > 0" -- $SELFSUP pretrain "${DINO_SMALL[@]}" --method dino --teacher-temp 0 --steps 1
expect_fail 1 "--temperature must be > 0" -- $SELFSUP pretrain "${SMALL[@]}" --method moco --temperature 0 --steps 1
expect_fail 1 "--prototypes does not apply to simclr" -- $SELFSUP pretrain "${SMALL[@]}" --prototypes 10 --steps 1
expect_fail 1 "--global-scale-min must be in (0, 1] (got 1.5)" -- $SELFSUP pretrain "${SMALL[@]}" --method byol --global-scale-min 1.5 --steps 1
expect_fail 1 "--global-scale-min does not apply to rotation" -- $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method rotation --global-scale-min 0.5 --steps 1
expect_fail 1 "--sinkhorn-iters must be >= 1" -- $SELFSUP pretrain "${SMALL[@]}" --method swav --sinkhorn-iters 0 --steps 1
expect_fail 1 "--global-crops + --local-crops must be <= 12" -- $SELFSUP pretrain "${DINO_SMALL[@]}" --method dino --local-crops 11 --steps 1
expect_fail 1 "--permutations must be in 2..2000" -- $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method jigsaw --permutations 1 --steps 1
expect_fail 1 "--color-drop must be 0 or 1" -- $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method relloc --color-drop 2 --steps 1
expect_fail 1 "--permutations does not apply to rotation" -- $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method rotation --permutations 10 --steps 1
expect_fail 1 "the 3x3 grid needs views of >= 9 px" -- $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method relloc --view-size 8 --steps 1
expect_fail 1 "--proj-hidden does not apply to jigsaw" -- $SELFSUP pretrain "${SMALL[@]}" --method jigsaw --steps 1
expect_fail 1 "--dense-weight must be in .0, 1. (got 1.5)" -- $SELFSUP pretrain "${SMALL[@]}" --method dense --dense-weight 1.5 --steps 1
expect_fail 1 "--dense-weight does not apply to simclr" -- $SELFSUP pretrain "${SMALL[@]}" --method simclr --dense-weight 0.5 --steps 1
expect_fail 1 "colorization needs RGB images (3 channels), the data has 1" -- $SELFSUP pretrain "${DECODER_SMALL[@]}" --method colorization --steps 1
expect_fail 1 "--color-regression must be 0 or 1 (got 2)" -- $SELFSUP pretrain "${COLOR_SMALL[@]}" --method colorization --color-regression 2 --steps 1
expect_fail 1 "--mask-size does not apply to colorization" -- $SELFSUP pretrain "${COLOR_SMALL[@]}" --method colorization --mask-size 0.3 --steps 1
expect_fail 1 "--mask-size must be in (0, 1)" -- $SELFSUP pretrain "${DECODER_SMALL[@]}" --method inpainting --mask-size 1.5 --steps 1
expect_fail 1 "--mask-size 0.99 masks the whole 28-px view" -- $SELFSUP pretrain "${DECODER_SMALL[@]}" --method inpainting --mask-size 0.99 --steps 1
expect_fail 1 "--adv-weight must be in .0, 1): lambda_rec is 1 minus it (got 1)" -- $SELFSUP pretrain "${DECODER_SMALL[@]}" --method inpainting --adv-weight 1 --steps 1
for cmd in pretrain eval embed info show; do
    expect_ok $SELFSUP $cmd --help && grep -q "usage: selfsup $cmd" "$T/out" && ok || bad "$cmd --help"
done

# ---- bad datasets (exit 1, message names the file or folder) ----
expect_fail 1 "/nonexistent/folder" -- $SELFSUP pretrain --data /nonexistent/folder --steps 1
mkdir -p "$T/empty"
expect_fail 1 "$T/empty" -- $SELFSUP pretrain --data "$T/empty" --steps 1
mkdir -p "$T/trunc" && cp "$T/sub"/* "$T/trunc/"
head -c 100000 "$T/sub/t10k-images-idx3-ubyte" >"$T/trunc/t10k-images-idx3-ubyte"
gzip -dc "$T/sub/train-images-idx3-ubyte.gz" | head -c 50000 | gzip >"$T/trunc/train-images-idx3-ubyte.gz"
expect_fail 1 "train-images-idx3-ubyte.gz: truncated" -- $SELFSUP pretrain --data "$T/trunc" --steps 1
mkdir -p "$T/lying" && cp "$T/sub"/* "$T/lying/"
# header claims 3000 test images, the file holds 500
$PY - "$T/lying/t10k-images-idx3-ubyte" <<'EOF'
import struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[4:8] = struct.pack(">I", 3000)
open(p, "wb").write(bytes(b))
EOF
expect_fail 1 "t10k-images-idx3-ubyte" -- $SELFSUP pretrain "${SMALL[@]}" --data "$T/lying" --steps 1 --out "$T/lyrun"
mkdir -p "$T/badmagic" && cp "$T/sub"/* "$T/badmagic/"
printf '\x00\x00\x09\x03' | dd of="$T/badmagic/t10k-images-idx3-ubyte" bs=1 conv=notrunc 2>/dev/null
expect_fail 1 "t10k-images-idx3-ubyte" -- $SELFSUP pretrain "${SMALL[@]}" --data "$T/badmagic" --steps 1 --out "$T/bmrun"
mkdir -p "$T/cifar"
head -c 30000 /dev/urandom >"$T/cifar/data_batch_1.bin"   # not a multiple of 3073
for i in 2 3 4 5; do head -c 3073 /dev/zero >"$T/cifar/data_batch_$i.bin"; done
head -c 3073 /dev/zero >"$T/cifar/test_batch.bin"
expect_fail 1 "data_batch_1.bin" -- $SELFSUP pretrain --data "$T/cifar" --steps 1

# ---- a short real run, then its checkpoint ----
RUN="$T/run"
if expect_ok $SELFSUP pretrain "${SMALL[@]}" --steps 8 --out "$RUN" --json; then
    tail -n 1 "$T/out" >"$T/pretrain.json"
fi
CK="$RUN/last.safetensors"
[ -s "$CK" ] && ok || bad "no checkpoint written"
[ -s "$RUN/log.jsonl" ] && $PY -c "import json,sys; [json.loads(l) for l in open(sys.argv[1])]" "$RUN/log.jsonl" && ok || bad "log.jsonl is not JSON lines"
ls "$RUN" | grep -q "\.tmp\." && bad "temporary file left in $RUN" || ok

# eval reproduces the figures pretraining printed
if expect_ok $SELFSUP eval "$CK" --threads 2 --json; then
    tail -n 1 "$T/out" >"$T/eval.json"
    $PY - "$T/pretrain.json" "$T/eval.json" <<'EOF' && ok || bad "eval does not reproduce pretrain's figures"
import json, sys
a = json.load(open(sys.argv[1]))["eval"]["encoder"]
b = json.load(open(sys.argv[2]))["eval"]["encoder"]
keys = ["knn_top1_k200", "knn_top1_k20", "linear_top1"]
diff = {k: (a[k], b[k]) for k in keys if a[k] != b[k]}
if diff:
    print("differ:", diff, file=sys.stderr)
    sys.exit(1)
EOF
fi
# bf16 convolutions where the CPU has them: the same short run trains (finite
# losses) and its checkpoint evaluates; the loss curve against fp32's over a
# real budget is measured in README (Benchmark -> bf16), not here
if $SELFSUP pretrain "${SMALL[@]}" --steps 8 --log-every 1 --precision bf16 --out "$T/bf16" \
    --json >"$T/out" 2>"$T/err"; then
    $PY - "$T/bf16/log.jsonl" "$T/out" <<'EOF' && ok || bad "bf16 run: losses or evaluation"
import json, math, sys
losses = [r["loss"] for r in map(json.loads, open(sys.argv[1])) if "loss" in r]
ev = json.loads(open(sys.argv[2]).read().splitlines()[-1])["eval"]["encoder"]
assert len(losses) == 8 and all(math.isfinite(l) for l in losses), losses
assert ev["knn_top1_k20"] > 10 and ev["linear_top1"] > 10, ev
EOF
elif grep -q "needs a CPU with AVX512-BF16\|dnnl backend only" "$T/err"; then
    echo "cli: bf16 run SKIPPED: $(cat "$T/err")"
else
    bad "pretrain --precision bf16: $(tail -c 300 "$T/err")"
fi
expect_ok $SELFSUP eval "$CK" --protocol knn --threads 2 --json &&
    $PY -c "import json,sys; r=json.loads(open(sys.argv[1]).read().splitlines()[-1])['eval']['encoder']; assert r['linear_top1'] is None and r['knn_top1_k20'] > 10" "$T/out" && ok || bad "eval --protocol knn"

# embed: arrays NumPy loads, labels equal to the dataset's
if expect_ok $SELFSUP embed "$CK" --prefix "$T/emb" --split test --threads 2; then
    $PY - "$T/emb" "$T/sub" <<'EOF' && ok || bad "embed arrays"
import sys, numpy as np
f = np.load(sys.argv[1] + "_features.npy"); y = np.load(sys.argv[1] + "_labels.npy")
raw = open(sys.argv[2] + "/t10k-labels-idx1-ubyte", "rb").read()[8:]
assert f.dtype == np.float32 and f.shape == (500, 32), f.shape
assert y.dtype == np.int32 and (y == np.frombuffer(raw, np.uint8)).all()
assert np.isfinite(f).all() and f.std() > 0
EOF
fi

# show: PNG pictures it lists, which PIL opens (a method without a picture
# shows its augmented views; rotation its own picture, 3 rows of 4 columns)
expect_fail 2 "--out DIR is required" -- $SELFSUP show "$CK"
if expect_ok $SELFSUP show "$CK" --out "$T/pics/simclr" --images 3 --threads 2 &&
    cp "$T/out" "$T/show1.out" &&
    expect_ok $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method rotation --steps 2 --no-eval --out "$T/rot" &&
    expect_ok $SELFSUP show "$T/rot/last.safetensors" --out "$T/pics/rot" --images 3 --first 5 --threads 2; then
    $PY - "$T/pics" "$T/show1.out" "$T/out" <<'EOF' && ok || bad "show pictures"
import sys
from PIL import Image
d = sys.argv[1]
want = {2: ["pca.png", "views.png"], 3: ["pca.png", "rotation.png"]}
for arg, sub in ((2, "simclr"), (3, "rot")):
    lines = open(sys.argv[arg]).read().split("\n")
    assert [l for l in lines if l] == ["wrote %s/%s/%s" % (d, sub, f) for f in want[arg]], lines
    for f in want[arg]:
        Image.open("%s/%s/%s" % (d, sub, f)).load()
im = Image.open(d + "/rot/rotation.png")
# 28-px views at 4x: 112-px cells + 8-px pads, a title line, one caption line
assert im.mode == "RGB" and im.size == (8 + 4 * 120, 14 + 8 + 3 * (112 + 15 + 8)), im.size
EOF
fi

# info
expect_ok $SELFSUP info "$CK" && grep -q "simclr" "$T/out" && grep -q "layer4.1.conv2.weight\|tensors" "$T/out" && ok || bad "info output"
expect_ok $SELFSUP info "$CK" --json && $PY -c "import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert d['metadata']['method']=='simclr' and d['tensors']>100" "$T/out" && ok || bad "info --json"

# ---- a pretext task reports its accuracy: in the log, and held out in the
# evaluation, the same from pretrain and eval (choices depend on the image) ----
if expect_ok $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method relloc --steps 4 --log-every 2 --protocol knn --out "$T/prt" --json; then
    tail -n 1 "$T/out" >"$T/prt.json"
    expect_ok $SELFSUP eval "$T/prt/last.safetensors" --protocol knn --threads 2 --json && tail -n 1 "$T/out" >"$T/prte.json"
    $PY - "$T/prt/log.jsonl" "$T/prt.json" "$T/prte.json" <<'EOF' && ok || bad "pretext metrics"
import json, sys
log = [json.loads(l) for l in open(sys.argv[1])]
assert all(0 <= r["pretext_acc"] <= 1 for r in log), log
a = json.load(open(sys.argv[2]))["eval"]["encoder"]
b = json.load(open(sys.argv[3]))["eval"]["encoder"]
assert a["pretext_classes"] == 8 and 0 <= a["pretext_top1"] <= 100, a
assert (a["pretext_top1"], a["pretext_loss"]) == (b["pretext_top1"], b["pretext_loss"]), (a, b)
EOF
fi
grep -q pretext "$RUN/log.jsonl" && bad "simclr's log has pretext fields" || ok

# ---- the dense pretext tasks: colorization (RGB in, the encoder sees L; its
# evaluation and embedding feed L, also of gray data, where the task itself has
# no figure) and inpainting (a regression task: a held-out loss, no accuracy) ----
if expect_ok $SELFSUP pretrain "${COLOR_SMALL[@]}" --method colorization --steps 3 --protocol knn --baselines --out "$T/col" --json; then
    tail -n 1 "$T/out" >"$T/col.json"
    expect_ok $SELFSUP eval "$T/col/last.safetensors" --protocol knn --threads 2 --json && tail -n 1 "$T/out" >"$T/cole.json"
    expect_ok $SELFSUP eval "$T/col/last.safetensors" --data "$T/sub" --protocol knn --threads 2 --json && tail -n 1 "$T/out" >"$T/colg.json"
    expect_ok $SELFSUP embed "$T/col/last.safetensors" --prefix "$T/colemb" --threads 2
    $PY - "$T/col.json" "$T/cole.json" "$T/colg.json" "$T/colemb_features.npy" "$T/col/last.safetensors" <<'EOF' && ok || bad "colorization round trip"
import json, struct, sys
import numpy as np
a, b, g = (json.load(open(p))["eval"] for p in sys.argv[1:4])
assert a["encoder"]["pretext_classes"] == 261 and 0 <= a["encoder"]["pretext_top1"] <= 100, a
assert (a["encoder"]["pretext_top1"], a["encoder"]["pretext_loss"]) == (b["encoder"]["pretext_top1"], b["encoder"]["pretext_loss"]), (a, b)
assert "pretext_loss" not in g["encoder"] and g["encoder"]["knn_top1_k20"] > 0, g
f = np.load(sys.argv[4])
assert f.shape == (60, 32) and np.isfinite(f).all()
raw = open(sys.argv[5], "rb").read()
meta = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])["__metadata__"]
assert meta["in_channels"] == "1", meta["in_channels"]
EOF
fi
if expect_ok $SELFSUP pretrain "${DECODER_SMALL[@]}" --method inpainting --steps 3 --log-every 1 --protocol knn --out "$T/inp" --json; then
    tail -n 1 "$T/out" >"$T/inp.json"
    expect_ok $SELFSUP eval "$T/inp/last.safetensors" --protocol knn --threads 2 --json && tail -n 1 "$T/out" >"$T/inpe.json"
    $PY - "$T/inp.json" "$T/inpe.json" "$T/inp/log.jsonl" <<'EOF' && ok || bad "inpainting round trip"
import json, sys
a, b = (json.load(open(p))["eval"]["encoder"] for p in sys.argv[1:3])
assert a["pretext_loss"] > 0 and "pretext_top1" not in a, a
assert a["pretext_loss"] == b["pretext_loss"], (a, b)
assert not any("pretext_acc" in l for l in open(sys.argv[3])), "a regression task logs no accuracy"
EOF
fi

# ---- finetune: the checkpoint's encoder + a head on 20 labels per class,
# a ViT from scratch, bad input ----
if expect_ok $SELFSUP finetune "$CK" --epochs 2 --batch-size 32 --labels-per-class 20 --threads 1 --quiet --out "$T/ft" --json; then
    $PY - "$T/out" "$T/ft" <<'EOF' && ok || bad "finetune output"
import json, os, struct, sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert d["labelled_images"] == 200 and len(d["epochs"]) == 2 and d["steps"] == 12, d
log = [json.loads(l) for l in open(os.path.join(sys.argv[2], "finetune_log.jsonl"))]
assert [e["epoch"] for e in log] == [1, 2] and abs(100 * log[-1]["test_top1"] - d["test_top1"]) < 0.01, log
b = open(os.path.join(sys.argv[2], "finetune.safetensors"), "rb").read()
h = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])
assert h["fc.weight"]["shape"] == [10, 32] and "layer4.1.conv2.weight" in h, sorted(h)[:5]
assert h["__metadata__"]["format"] == "selfsup-finetune" and h["__metadata__"]["epoch"] == "2"
EOF
fi
expect_ok $SELFSUP finetune --from-scratch --arch vit_tiny --vit-depth 1 --patch-size 7 --data "$T/sub" --steps 3 --batch-size 16 --threads 1 --quiet --out "$T/ftv" &&
    grep -q "from scratch vit" "$T/out" && ok || bad "finetune --from-scratch"
expect_ok $SELFSUP finetune --help && grep -q "usage: selfsup finetune" "$T/out" && ok || bad "finetune --help"
expect_fail 2 "needs a checkpoint path" -- $SELFSUP finetune
expect_fail 2 "--layer-decay must be in" -- $SELFSUP finetune "$CK" --layer-decay 1.5
expect_fail 1 "nonexistent.safetensors: cannot open" -- $SELFSUP finetune "$T/nonexistent.safetensors"
expect_fail 1 "fewer than the 5000 labels per class" -- $SELFSUP finetune "$CK" --labels-per-class 5000 --threads 1

# ---- bad checkpoints ----
expect_fail 1 "$T/missing.safetensors" -- $SELFSUP eval "$T/missing.safetensors"
head -c 5 "$CK" >"$T/tiny.safetensors"
expect_fail 1 "$T/tiny.safetensors" -- $SELFSUP info "$T/tiny.safetensors"
size=$(stat -c %s "$CK")
head -c $((size / 2)) "$CK" >"$T/half.safetensors"
expect_fail 1 "$T/half.safetensors" -- $SELFSUP eval "$T/half.safetensors"
cp "$CK" "$T/corrupt.safetensors"
printf 'XXXXXXXX' | dd of="$T/corrupt.safetensors" bs=1 seek=20 conv=notrunc 2>/dev/null
expect_fail 1 "$T/corrupt.safetensors" -- $SELFSUP eval "$T/corrupt.safetensors"
printf '\xff\xff\xff\xff\xff\xff\xff\x7f' | dd of="$T/lyingck.safetensors" bs=1 conv=notrunc 2>/dev/null
cat "$CK" | tail -c +9 >>"$T/lyingck.safetensors"
expect_fail 1 "$T/lyingck.safetensors" -- $SELFSUP info "$T/lyingck.safetensors"
expect_fail 1 "another architecture" -- $SELFSUP eval "$CK" --arch resnet34
expect_fail 1 "another architecture" -- $SELFSUP eval "$CK" --width 8
$PY -c "import sys; sys.path.insert(0, 'tests/torch'); import golden, numpy as np; golden.save(sys.argv[1], {'w': np.zeros((2, 3), np.float32)}, {'format': 'other'})" "$T/other.safetensors"
expect_fail 1 "not a selfsup checkpoint" -- $SELFSUP eval "$T/other.safetensors"

# ---- resume continues exactly where the run stopped, for every method
# (teachers, queues, centers and schedules included) ----
METHODS=$($SELFSUP pretrain --help | awk '/^methods/{on=1; next} on && /^  [a-z]/{print $1} /^$/{if (on) exit}')
[ -n "$METHODS" ] && ok || bad "pretrain --help lists no methods"
for m in $METHODS; do
    args=("${SMALL[@]}")
    [ $m = dino ] && args=("${DINO_SMALL[@]}")
    case $m in rotation | relloc) args=("${PRETEXT_SMALL[@]}") ;; jigsaw) args=("${PRETEXT_SMALL[@]}" --permutations 10) ;; esac
    case $m in colorization) args=("${COLOR_SMALL[@]}") ;; inpainting) args=("${DECODER_SMALL[@]}" --adv-weight 0.001 --mask-blocks 2) ;; esac
    case $m in mae) args=("${MIM_SMALL[@]}" --decoder-dim 16 --decoder-depth 1 --decoder-heads 2) ;; simmim) args=("${MIM_SMALL[@]}") ;; beit) args=("${MIM_SMALL[@]}" --vocab-size 16 --tokenizer-steps 20) ;; esac
    expect_ok $SELFSUP pretrain "${args[@]}" --method $m --steps 6 --no-eval --out "$T/full_$m" || continue
    expect_ok $SELFSUP pretrain "${args[@]}" --method $m --steps 6 --stop-after 3 --no-eval --out "$T/part_$m" || continue
    expect_ok $SELFSUP pretrain --resume "$T/part_$m/last.safetensors" --threads 2 --quiet --no-eval || continue
    $PY tests/same_checkpoint.py "$T/full_$m/last.safetensors" "$T/part_$m/last.safetensors" step=6 &&
        ok || bad "$m: resumed run differs from the uninterrupted one"
done
# --recipe cifar (solo-learn's: BYOL with its clipped LARS, lr 1.0, EMA 0.99):
# the checkpoint names recipe and optimizer, and a resume continues exactly
if expect_ok $SELFSUP pretrain "${SMALL[@]}" --method byol --recipe cifar --steps 6 --no-eval --out "$T/larc_full" &&
    expect_ok $SELFSUP pretrain "${SMALL[@]}" --method byol --recipe cifar --steps 6 --stop-after 3 --no-eval --out "$T/larc_part" &&
    expect_ok $SELFSUP pretrain --resume "$T/larc_part/last.safetensors" --threads 2 --quiet --no-eval; then
    $PY tests/same_checkpoint.py "$T/larc_full/last.safetensors" "$T/larc_part/last.safetensors" step=6 &&
        $PY -c 'import json, struct, sys; b = open(sys.argv[1], "rb").read(); m = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]; c = json.loads(m["config"]); assert c["optimizer"] == "larc" and c["recipe"] == "cifar" and c["lr"] == 1 and abs(c["base_momentum"] - 0.99) < 1e-6, c' "$T/larc_full/last.safetensors" &&
        ok || bad "--recipe cifar: resumed run differs from the uninterrupted one, or the checkpoint does not hold the recipe"
fi
# MoCo's key encoder on a cosine ramp (--final-momentum): a resume continues
# exactly (the momentum is a function of the step)
if expect_ok $SELFSUP pretrain "${SMALL[@]}" --method moco --base-momentum 0.9 --final-momentum 0.99 --steps 6 --no-eval --out "$T/mf_full" &&
    expect_ok $SELFSUP pretrain "${SMALL[@]}" --method moco --base-momentum 0.9 --final-momentum 0.99 --steps 6 --stop-after 3 --no-eval --out "$T/mf_part" &&
    expect_ok $SELFSUP pretrain --resume "$T/mf_part/last.safetensors" --threads 2 --quiet --no-eval; then
    $PY tests/same_checkpoint.py "$T/mf_full/last.safetensors" "$T/mf_part/last.safetensors" step=6 &&
        ok || bad "moco --final-momentum: resumed run differs from the uninterrupted one"
fi
expect_fail 1 "--base-momentum and --final-momentum must be in .0, 1. (got 0.999, 1.5)" -- $SELFSUP pretrain "${SMALL[@]}" --method moco --final-momentum 1.5 --steps 1
expect_fail 1 "final-momentum" -- $SELFSUP pretrain "${SMALL[@]}" --method simclr --final-momentum 0.99 --steps 1
expect_fail 1 "--optimizer 'lamb' unknown (lars, larc, sgd, adamw)" -- $SELFSUP pretrain "${SMALL[@]}" --optimizer lamb --steps 1
# Barlow Twins' --scale-loss multiplies the loss (same first batch, same weights)
if expect_ok $SELFSUP pretrain "${SMALL[@]}" --method barlow --steps 1 --log-every 1 --no-eval --out "$T/bt_s1" &&
    expect_ok $SELFSUP pretrain "${SMALL[@]}" --method barlow --scale-loss 0.25 --steps 1 --log-every 1 --no-eval --out "$T/bt_s4"; then
    $PY - "$T/bt_s1/log.jsonl" "$T/bt_s4/log.jsonl" <<'EOF' && ok || bad "--scale-loss 0.25 does not scale Barlow Twins' loss"
import json, sys
a, b = ([r["loss"] for r in map(json.loads, open(p)) if "loss" in r][0] for p in sys.argv[1:])
assert abs(b - 0.25 * a) <= 1e-5 * abs(a), (a, b)
EOF
fi
expect_fail 1 "--scale-loss must be a finite number > 0" -- $SELFSUP pretrain "${SMALL[@]}" --method barlow --scale-loss 0 --steps 1
expect_fail 1 "--recipe 'imagenet' unknown (paper, cifar)" -- $SELFSUP pretrain "${SMALL[@]}" --recipe imagenet --steps 1
expect_fail 1 "--recipe cifar: rotation has no CIFAR recipe" -- $SELFSUP pretrain "${PRETEXT_SMALL[@]}" --method rotation --recipe cifar --steps 1

# ---- DINO on a ViT (AdamW recipe): the last layer is frozen for 2 of 6
# steps, so its Adam step count (torch's per-param state['step']) lags the
# optimizer's; the checkpoint keeps it and the resume continues exactly. A
# lying count is refused. (Also runs the default local crop: 14 px at patch 7,
# and with 2 blocks the recipe's drop path 0.1 on the second: its draws are
# keyed to the step, so the resume repeats them; without it the run differs.) ----
DV=("${MIM_SMALL[@]}" --vit-depth 2 --method dino --proj-hidden 64 --bottleneck-dim 32 --out-dim 256
    --local-crops 2 --freeze-last-layer-epochs 0.03 --steps 6 --no-eval)
if expect_ok $SELFSUP pretrain "${DV[@]}" --out "$T/dv_full" &&
    expect_ok $SELFSUP pretrain "${DV[@]}" --stop-after 3 --out "$T/dv_part"; then
    $PY - "$T/dv_part/last.safetensors" "$T/dv_lie.safetensors" <<'EOF' && ok || bad "dino vit: optim_param_steps"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
meta = h["__metadata__"]
assert meta["optim_steps"] == "3" and meta["optim_param_steps"] == "head.last_layer.weight_v=1", meta.get("optim_param_steps")
cfg = json.loads(meta["config"])
assert cfg["local_size"] == 14 and abs(cfg["drop_path"] - 0.1) < 1e-7 and abs(cfg["min_lr"] - 1e-6) < 1e-12, meta["config"]
meta["optim_param_steps"] = "head.last_layer.weight_v=4"
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
EOF
    expect_fail 1 "updated 4 times in 3 steps" -- $SELFSUP pretrain --resume "$T/dv_lie.safetensors" --threads 2 --quiet --no-eval
    expect_ok $SELFSUP pretrain --resume "$T/dv_part/last.safetensors" --threads 2 --quiet --no-eval &&
        $PY tests/same_checkpoint.py "$T/dv_full/last.safetensors" "$T/dv_part/last.safetensors" step=6 \
            optim_param_steps=head.last_layer.weight_v=4 && ok || bad "dino vit: resumed run differs from the uninterrupted one"
    expect_ok $SELFSUP pretrain "${DV[@]}" --drop-path 0 --out "$T/dv_nodrop" &&
        ! $PY tests/same_checkpoint.py "$T/dv_full/last.safetensors" "$T/dv_nodrop/last.safetensors" \
            2>/dev/null && ok || bad "dino vit: --drop-path 0 trains the same as drop path 0.1"
fi
expect_fail 1 "--drop-path needs a ViT" -- $SELFSUP pretrain "${SMALL[@]}" --drop-path 0.1 --steps 1
expect_fail 2 "--drop-path must be in" -- $SELFSUP pretrain --method dino --drop-path 1.5
expect_fail 2 "--min-lr must be finite" -- $SELFSUP pretrain --min-lr inf

# ---- BEiT writes its tokenizer beside the model; --tokenizer reuses it
# (the run is then the same as the one that trained it); wrong files are refused ----
BT=("${MIM_SMALL[@]}" --method beit --vocab-size 16 --tokenizer-steps 20 --steps 4 --no-eval)
if expect_ok $SELFSUP pretrain "${BT[@]}" --out "$T/bt1" &&
    expect_ok $SELFSUP pretrain "${BT[@]}" --tokenizer "$T/bt1/tokenizer.safetensors" --out "$T/bt2"; then
    cmp -s "$T/bt1/tokenizer.safetensors" "$T/bt2/tokenizer.safetensors" && ok || bad "beit: the reused tokenizer was not saved as it was"
    $PY - "$T/bt1/last.safetensors" "$T/bt2/last.safetensors" <<'EOF' && ok || bad "beit: a run with the saved tokenizer differs"
import json, struct, sys
def load(p):
    b = open(p, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__")
    return {k: b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in h.items()}
ta, tb = load(sys.argv[1]), load(sys.argv[2])
assert ta.keys() == tb.keys() and any(k.startswith("tokenizer.") for k in ta)
diff = [k for k in ta if ta[k] != tb[k]]
assert not diff, diff[:5]
EOF
    expect_fail 1 "the model needs F32 \[32," -- $SELFSUP pretrain "${BT[@]}" --vocab-size 32 --tokenizer "$T/bt1/tokenizer.safetensors" --out "$T/bt3"
    expect_fail 1 "not a selfsup state file" -- $SELFSUP pretrain "${BT[@]}" --tokenizer "$T/bt1/last.safetensors" --out "$T/bt3"
    expect_fail 1 "applies to a method with a tokenizer" -- $SELFSUP pretrain "${SMALL[@]}" --steps 2 --no-eval --tokenizer "$T/bt1/tokenizer.safetensors" --out "$T/bt3"
    expect_fail 1 "is for a new run" -- $SELFSUP pretrain --resume "$T/bt1/last.safetensors" --tokenizer "$T/bt1/tokenizer.safetensors"
    expect_fail 1 "cannot open" -- $SELFSUP pretrain "${BT[@]}" --tokenizer "$T/none.safetensors" --out "$T/bt3"
fi

# ---- PyTorch loads the encoder into torchvision's ResNet-18 and agrees ----
if expect_ok $SELFSUP pretrain --data "$T/sub" --width 64 --batch-size 16 --steps 2 --no-eval --quiet --threads 2 --out "$T/w64" &&
    expect_ok $SELFSUP embed "$T/w64/last.safetensors" --prefix "$T/w64emb" --threads 2; then
    $PY tests/torch/load_into_torchvision.py "$T/w64/last.safetensors" "$T/w64emb" "$T/sub" >"$T/tv.log" 2>&1 && ok ||
        bad "torchvision load: $(tail -n 3 "$T/tv.log")"
fi

# ---- a time budget shortens the schedule and the checkpoint keeps the fitted length ----
expect_ok $SELFSUP pretrain "${SMALL[@]}" --steps 100000 --time-budget 2 --no-eval --out "$T/budget" &&
    $PY - "$T/budget/last.safetensors" <<'EOF' && ok || bad "--time-budget"
import json, struct, sys
b = open(sys.argv[1], "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
steps = int(meta["step"])
assert 6 <= steps < 100000 and json.loads(meta["config"])["steps"] == steps, (steps, meta["config"])
EOF

# ---- --knn-every: k-NN lines at the epoch end (62 steps of 32) and at the
# end of each run; a resume keeps the option and continues the clock, and its
# --json gives the whole run's training time (run_train_seconds) ----
if expect_ok $SELFSUP pretrain "${SMALL[@]}" --steps 70 --stop-after 66 --knn-every 1 --no-eval --out "$T/knn" &&
    expect_ok $SELFSUP pretrain --resume "$T/knn/last.safetensors" --threads 2 --quiet --no-eval --json; then
    $PY - "$T/knn/log.jsonl" "$T/knn/last.safetensors" "$T/out" <<'EOF' && ok || bad "--knn-every log lines, or a resume's run_train_seconds"
import json, struct, sys
knn = [r for r in map(json.loads, open(sys.argv[1])) if r.get("event") == "knn"]
assert [r["step"] for r in knn] == [62, 66, 70] and knn[0]["epoch"] == 1, knn
assert all(0 <= r["knn_top1_k20"] <= 100 and 0 <= r["knn_top1_k200"] <= 100 and r["eval_seconds"] > 0 for r in knn), knn
assert 0 < knn[0]["train_seconds"] < knn[1]["train_seconds"] < knn[2]["train_seconds"], knn
b = open(sys.argv[2], "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert json.loads(meta["config"])["knn_every"] == 1 and float(meta["train_seconds"]) > 0, meta
r = json.loads(open(sys.argv[3]).read().splitlines()[-1])
# the resume ran steps 67-70: its own seconds, and the run's from step 0 (the
# clock of the last k-NN line, taken at the same step)
assert r["steps"] == 70 and 0 < r["train_seconds"] < r["run_train_seconds"], r
assert abs(r["run_train_seconds"] - knn[2]["train_seconds"]) < 0.05 + 0.01 * knn[2]["train_seconds"], (r, knn[2])
EOF
fi
# a fraction of an epoch: every round(0.25 x 62) = 16 steps, and at the end
if expect_ok $SELFSUP pretrain "${SMALL[@]}" --steps 40 --knn-every 0.25 --no-eval --out "$T/knnq"; then
    $PY - "$T/knnq/log.jsonl" "$T/knnq/last.safetensors" <<'EOF' && ok || bad "--knn-every 0.25 log lines"
import json, struct, sys
knn = [r for r in map(json.loads, open(sys.argv[1])) if r.get("event") == "knn"]
assert [r["step"] for r in knn] == [16, 32, 40] and abs(knn[0]["epoch"] - 16 / 62) < 1e-5, knn
b = open(sys.argv[2], "rb").read()
meta = json.loads(b[8:8 + struct.unpack("<Q", b[:8])[0]])["__metadata__"]
assert json.loads(meta["config"])["knn_every"] == 0.25, meta
EOF
fi

# ---- a NaN loss stops the run with an error and writes no checkpoint ----
expect_fail 1 "loss is" -- $SELFSUP pretrain "${SMALL[@]}" --optimizer sgd --lr 3e38 --steps 10 --no-eval --out "$T/nan"
[ ! -e "$T/nan/last.safetensors" ] && ok || bad "a checkpoint was written after a NaN loss"

echo "cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
