#!/usr/bin/env bash
# CLI end to end on an image folder made from the real photos of python3-sklearn
# (scripts/setup.sh unpacks them): random crops of china.jpg and flower.jpg
# as JPEG and PNG in train/ and val/ class folders, plus one truncated JPEG.
# Pretrains SimCLR for a few steps, evaluates, re-evaluates the checkpoint,
# and checks the image-folder errors (one line, right exit code).
# usage: tests/imagefolder.sh BUILD_DIR    (prints "imagefolder-cli: N passed, M failed")
set -u
BUILD=${1:-build}
SELFSUP=$BUILD/selfsup
PY=/usr/bin/python3
PHOTOS=${SSL_PHOTOS_DIR:-}
for d in "$PHOTOS" /usr/lib/python3/dist-packages/sklearn/datasets/images /usr/local/share/selfsup/photos; do
    if [ -n "$d" ] && [ -f "$d/china.jpg" ]; then PHOTOS=$d; break; fi
done
if [ ! -f "$PHOTOS/china.jpg" ] || ! $PY -c "import PIL" 2>/dev/null; then
    echo "note: no photos or no PIL (run scripts/setup.sh): skipped"
    echo "imagefolder-cli: 0 passed, 0 failed"
    exit 0
fi
T=$(mktemp -d /tmp/selfsup-imagefolder.XXXXXX)
trap 'rm -rf "$T"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL imagefolder-cli: $*" >&2; }

# expect_fail EXIT_CODE PATTERN -- command...: exit code, one stderr line with PATTERN
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

$PY - "$PHOTOS" "$T/photos" <<'EOF' || bad "making the photo folder failed"
import os, random, sys
from PIL import Image
random.seed(1)
src, dst = sys.argv[1], sys.argv[2]
for cls in ("china", "flower"):
    im = Image.open(os.path.join(src, cls + ".jpg")).convert("RGB")
    for split, n in (("train", 110), ("val", 30)):
        os.makedirs(os.path.join(dst, split, cls), exist_ok=True)
        for i in range(n):
            s = random.randint(100, 400)
            h = min(im.height, int(s * random.uniform(0.7, 1.3)))
            x, y = random.randint(0, im.width - s), random.randint(0, im.height - h)
            crop = im.crop((x, y, x + s, y + h))
            ext = "png" if i % 4 == 0 else "jpg"
            crop.save(os.path.join(dst, split, cls, "%03d.%s" % (i, ext)))
data = open(os.path.join(dst, "train", "china", "001.jpg"), "rb").read()
open(os.path.join(dst, "train", "flower", "zz_broken.jpg"), "wb").write(data[: len(data) // 3])
EOF
D=$T/photos
RUN=(--image-size 32 --width 4 --batch-size 32 --proj-hidden 64 --proj-dim 32 --threads 2 --quiet)

# the truncated file stops the run, naming it; skipped with a warning on request
expect_fail 1 "zz_broken.jpg: truncated JPEG" -- $SELFSUP pretrain --data "$D" "${RUN[@]}" --steps 2 --out "$T/r0"
$SELFSUP pretrain --data "$D" "${RUN[@]}" --steps 4 --skip-bad-images --out "$T/r1" --json \
    >"$T/out" 2>"$T/err"
rc=$?
if [ $rc -eq 0 ]; then ok; else bad "pretrain on the photo folder -> exit $rc: $(tail -c 400 "$T/err")"; fi
if grep -q "warning: skipped .*zz_broken.jpg" "$T/err"; then ok; else bad "no skip warning: $(head -c 300 "$T/err")"; fi
if grep -q '"linear_top1"' "$T/out"; then ok; else bad "no evaluation in the JSON: $(tail -c 300 "$T/out")"; fi
# the checkpoint remembers the folder's options: eval sees the same 32 px images
$SELFSUP eval "$T/r1/last.safetensors" --protocol knn --threads 2 >"$T/out" 2>"$T/err"
if [ $? -eq 0 ] && grep -q "size=32,skip-bad" "$T/out"; then ok; else bad "eval of the checkpoint: $(tail -c 400 "$T/err")"; fi

# errors of the folder options
mkdir -p "$T/flat" "$T/empty"
cp "$D"/train/china/*.jpg "$T/flat/"
expect_fail 1 "has 1 channels, the encoder takes 3" -- $SELFSUP eval "$T/r1/last.safetensors" --data "$T/flat" --channels 1
expect_fail 1 "has no labels" -- $SELFSUP pretrain --data "$T/flat" --holdout 0.2 "${RUN[@]}" --steps 1 --out "$T/r2"
expect_fail 1 "no test split" -- $SELFSUP pretrain --data "$T/flat" "${RUN[@]}" --steps 1 --out "$T/r2"
if $SELFSUP pretrain --data "$T/flat" "${RUN[@]}" --steps 1 --no-eval --out "$T/r2" 2>"$T/err"; then ok; else bad "flat folder with --no-eval: $(cat "$T/err")"; fi
expect_fail 1 "no dataset files found" -- $SELFSUP pretrain --data "$T/empty" "${RUN[@]}" --steps 1
expect_fail 2 "--channels: '2' must be 1 or 3" -- $SELFSUP pretrain --data "$D" --channels 2
expect_fail 2 "give it with --data" -- $SELFSUP eval "$T/r1/last.safetensors" --image-size 48
expect_fail 1 "unknown option 'colour'" -- $SELFSUP pretrain --data "$D#colour=1" "${RUN[@]}" --steps 1
expect_fail 1 "are for JPEG/PNG image folders" -- $SELFSUP pretrain --data "fashion-mnist" --image-size 32 --steps 1

echo "imagefolder-cli: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
