#!/usr/bin/env bash
# Builds "photo scenes", a small LABELLED RGB image-folder dataset for transfer
# evaluations on colour data (Debian ships no labelled RGB dataset):
#   scripts/photo_scenes.sh [OUT]     (OUT default data/photo-scenes; SEED=N, default 0)
# 10 classes, one per real photo that a Debian package ships; the samples of a
# class are crops of its photo:
#   OUT/train/<class>/0000.png .. 0499.png   500 crops per class
#   OUT/test/<class>/0000.png .. 0099.png    100 crops per class
#   OUT/README.txt                           parameters, sources, licences
# Each photo is scaled (PIL bicubic) so its shorter side is 256 px. The RIGHT 25%
# of its width is the test region; the train region is the rest less a 16 px
# gap at its right edge, so no train crop shares a pixel with a test crop (the
# test set is not the train set). A crop is a square of side uniform in
# [48, 96] px, capped at the test region's width (it must fit; the same cap for
# both splits, so a class's train and test crops have one scale distribution:
# 48-64 px for the 256 px wide square photos, 48-74 for hubble_deep_field,
# 48-95/96 for the others), at a uniform position fully inside the region,
# resized to 32 x 32 with PIL's BICUBIC (antialiased when shrinking). numpy
# default_rng([SEED, class index, split]) draws them: the same SEED gives the
# same files. A second run with OUT complete (counts and parameters match)
# does nothing; otherwise the dataset is built in OUT.tmp.PID and renamed.
#
# Sources, fetched as .debs with `apt-get download` (no root, nothing installed)
# and unpacked, like scripts/setup.sh does, into $SSL_PHOTOS_DIR (default
# /usr/local/share/selfsup/photos, setup.sh's folder) when writable, else into
# ${XDG_CACHE_HOME:-~/.cache}/selfsup/photos: a second run downloads nothing.
# Installed packages' copies are used first.
#   python3-skimage (0.19.3, skimage/data/; package copyright: BSD-3-Clause,
#   "2009-2018 the scikit-image team"); per photo, from skimage/data/_fetchers.py
#   (skimage/data/README.txt states no licences):
#     astronaut.png        Eileen Collins, NASA Great Images database: "No known
#                          copyright restrictions, released into the public domain."
#     chelsea.png          Chelsea the cat: "No copyright restrictions. CC0 by the
#                          photographer (Stefan van der Walt)."
#     coffee.png           courtesy of Pikolo Espresso Bar: "No copyright
#                          restrictions. CC0 by the photographer (Rachel Michetti)."
#     hubble_deep_field.jpg  HubbleSite, NASA: "may be freely used in the public domain"
#     ihc.png              immunohistochemistry, Center for Microscopy And Molecular
#                          Imaging (CMMI): "No known copyright restrictions."
#     motorcycle_left.png  Middlebury 2014 stereo benchmark (Scharstein et al., GCPR
#                          2014), downsampled 4x: no licence stated beyond the
#                          package's BSD-3-Clause; cite the paper when publishing.
#     retina.jpg           Wikimedia "Fundus photograph of normal left eye"
#                          (Mikael Haggstrom): CC0 1.0 Universal.
#     rocket.jpg           DSCOVR launch on Falcon 9, SpaceX: released into the public domain.
#   python3-sklearn (sklearn/datasets/images/README.txt):
#     china.jpg            CC-BY 2.0, "Some rights reserved by danielbuechele" (Flickr)
#     flower.jpg           CC-BY 2.0, "Some rights reserved by danielbuechele"
#                          (README's wording; the photo is flickr.com/photos/vultilion)
# Class names are the file names without extension (motorcycle_left: motorcycle).
# Needs /usr/bin/python3 with numpy and PIL (python3-numpy, python3-pil).
set -euo pipefail
out_arg=${1:-}
[ -z "$out_arg" ] || out_arg=$(realpath -m -- "$out_arg") # relative to the caller's folder
cd "$(dirname "$0")/.."
out=${out_arg:-$PWD/data/photo-scenes}
seed=${SEED:-0}
[[ "$seed" =~ ^[0-9]+$ ]] || { echo "photo_scenes: SEED must be a non-negative integer" >&2; exit 1; }
py=/usr/bin/python3
"$py" -c 'import numpy, PIL' 2>/dev/null ||
    { echo "photo_scenes: $py needs numpy and PIL (python3-numpy, python3-pil)" >&2; exit 1; }

n_train=500 n_test=100
skimage_photos=(astronaut.png chelsea.png coffee.png hubble_deep_field.jpg ihc.png
                motorcycle_left.png retina.jpg rocket.jpg)
sklearn_photos=(china.jpg flower.jpg)
skimage_data=/usr/lib/python3/dist-packages/skimage/data
sklearn_images=/usr/lib/python3/dist-packages/sklearn/datasets/images
photos_dir=${SSL_PHOTOS_DIR:-/usr/local/share/selfsup/photos}
user_cache=${XDG_CACHE_HOME:-$HOME/.cache}/selfsup/photos
# what the files must say for a complete OUT to be kept (bump v when the recipe changes)
params="photo-scenes v1 seed=$seed train=$n_train test=$n_test size=32 short=256 test-frac=0.25 gap=16 side=48-96"

# --- 1. nothing to do? -------------------------------------------------------
complete() {
    [ -f "$out/README.txt" ] && grep -qxF "params: $params" "$out/README.txt" || return 1
    local split n c k
    for split in train test; do
        n=$n_train; [ "$split" = test ] && n=$n_test
        [ "$(find "$out/$split" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)" = 10 ] || return 1
        for c in "$out/$split"/*/; do
            k=$(find "$c" -maxdepth 1 -type f -name '*.png' | wc -l)
            [ "$k" = "$n" ] || return 1
        done
    done
}
if complete; then
    echo "photo_scenes: $out is complete (10 classes, $n_train train + $n_test test each, seed $seed): nothing to do"
    exit 0
fi
# (OUT is replaced at the end: never a folder that holds something else)
if [ -e "$out" ] && [ -n "$(ls -A "$out" 2>/dev/null)" ] &&
   ! head -n 1 "$out/README.txt" 2>/dev/null | grep -q '^photo scenes:'; then
    echo "photo_scenes: $out exists and is not a photo-scenes dataset: not touching it" >&2
    exit 1
fi

# --- 2. the photos -------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
find_photo() { # name -> path on stdout, or nothing
    local d
    for d in "$skimage_data" "$sklearn_images" "$photos_dir" "$user_cache"; do
        [ -f "$d/$1" ] && { echo "$d/$1"; return 0; }
    done
    return 0
}
cache=""
cache_dir() { # the first writable photo folder
    [ -n "$cache" ] && return 0
    if mkdir -p "$photos_dir" 2>/dev/null && [ -w "$photos_dir" ]; then cache=$photos_dir
    else mkdir -p "$user_cache"; cache=$user_cache; fi
}
fetch() { # package, folder in the package, files...: unpack them into the cache
    local pkg=$1 dir=$2; shift 2
    cache_dir
    echo "photo_scenes: fetching $pkg for ${*} into $cache"
    # (as root apt warns that it cannot drop to its _apt user in a private dir)
    (cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null) ||
        { echo "photo_scenes: apt-get download $pkg failed" >&2; exit 1; }
    local f members=()
    for f in "$@"; do members+=("./$dir/$f"); done
    dpkg-deb --fsys-tarfile "$tmp/${pkg}"_*.deb | tar -x -C "$tmp" "${members[@]}"
    for f in "$@"; do cp "$tmp/$dir/$f" "$cache/$f"; done
    rm -f "$tmp/${pkg}"_*.deb
}
missing=()
for f in "${skimage_photos[@]}"; do [ -n "$(find_photo "$f")" ] || missing+=("$f"); done
if [ ${#missing[@]} -gt 0 ]; then
    fetch python3-skimage usr/lib/python3/dist-packages/skimage/data "${missing[@]}"
fi
missing=()
for f in "${sklearn_photos[@]}"; do [ -n "$(find_photo "$f")" ] || missing+=("$f"); done
if [ ${#missing[@]} -gt 0 ]; then # with the README that holds their licence, as setup.sh
    fetch python3-sklearn usr/lib/python3/dist-packages/sklearn/datasets/images "${missing[@]}" README.txt
fi
sources=()
for f in "${skimage_photos[@]}" "${sklearn_photos[@]}"; do
    p=$(find_photo "$f")
    [ -n "$p" ] || { echo "photo_scenes: $f not found after fetching" >&2; exit 1; }
    sources+=("$p")
done

# --- 3. the crops ---------------------------------------------------------------
mkdir -p "$(dirname "$out")"
build="$out.tmp.$$"
trap 'rm -rf "$tmp" "$build"' EXIT
rm -rf "$build"
nice -n 10 "$py" - "$build" "$seed" "$n_train" "$n_test" "$params" "${sources[@]}" <<'EOF'
import os, sys
import numpy as np
from PIL import Image

build, seed, n_train, n_test, params = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
paths = sys.argv[6:]
BICUBIC = getattr(Image, "Resampling", Image).BICUBIC
SHORT, SIZE, TEST_FRAC, GAP, SIDE_MIN, SIDE_MAX = 256, 32, 0.25, 16, 48, 96

def class_name(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    return "motorcycle" if stem == "motorcycle_left" else stem

photos = sorted((class_name(p), p) for p in paths)
assert len(photos) == 10 and len({c for c, _ in photos}) == 10, photos
lines = []
for ci, (cls, path) in enumerate(photos):
    im = Image.open(path)
    if im.mode != "RGB":
        sys.exit(f"photo_scenes: {path} is {im.mode}, not RGB")
    w0, h0 = im.size
    if min(w0, h0) < 300:
        sys.exit(f"photo_scenes: {path} is only {w0}x{h0}")
    s = SHORT / min(w0, h0)
    w, h = max(SHORT, round(w0 * s)), max(SHORT, round(h0 * s))
    im = im.resize((w, h), BICUBIC)
    test_x0 = w - round(w * TEST_FRAC)           # test: [test_x0, w)
    train_x1 = test_x0 - GAP                     # train: [0, train_x1)
    side_max = min(SIDE_MAX, w - test_x0, h)     # a crop fits in either region
    assert side_max >= SIDE_MIN, (cls, w, h)
    regions = {"train": (0, train_x1, n_train), "test": (test_x0, w, n_test)}
    for si, split in enumerate(("train", "test")):
        x0, x1, n = regions[split]
        rng = np.random.default_rng([seed, ci, si])
        d = os.path.join(build, split, cls)
        os.makedirs(d)
        for i in range(n):
            side = int(rng.integers(SIDE_MIN, side_max + 1))
            x = int(rng.integers(x0, x1 - side + 1))
            y = int(rng.integers(0, h - side + 1))
            crop = im.crop((x, y, x + side, y + side)).resize((SIZE, SIZE), BICUBIC)
            crop.save(os.path.join(d, f"{i:04d}.png"))
    lines.append(f"{cls:18s} {os.path.basename(path):22s} {w0}x{h0} -> {w}x{h}: "
                 f"train x [0,{train_x1}) test x [{test_x0},{w}) side {SIDE_MIN}-{side_max}")
    print(f"photo_scenes: {lines[-1]}", flush=True)

with open(os.path.join(build, "README.txt"), "w") as f:
    f.write(f"""photo scenes: a small labelled RGB dataset made by scripts/photo_scenes.sh
params: {params}
10 classes, one per photo; samples are {SIZE}x{SIZE} crops of it (PIL bicubic): the
train crops from the left part of the photo, the test crops from its right 25%,
with a {GAP} px gap between the two regions (photo scaled to a shorter side of {SHORT}).
{chr(10).join(lines)}

Licences (from the Debian packages that ship the photos):
 python3-skimage 0.19.3 (skimage/data/_fetchers.py; package: BSD-3-Clause):
  astronaut.png: NASA Great Images database, public domain
  chelsea.png: CC0, Stefan van der Walt
  coffee.png: CC0, Rachel Michetti (courtesy of Pikolo Espresso Bar)
  hubble_deep_field.jpg: NASA/HubbleSite, public domain
  ihc.png: CMMI, no known copyright restrictions
  motorcycle_left.png: Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014),
    no licence stated beyond the package's BSD-3-Clause
  retina.jpg: Mikael Haggstrom, Wikimedia Commons, CC0 1.0
  rocket.jpg: SpaceX, public domain
 python3-sklearn (sklearn/datasets/images/README.txt):
  china.jpg: CC-BY 2.0, danielbuechele, https://www.flickr.com/photos/danielbuechele/6061409035
  flower.jpg: CC-BY 2.0, https://www.flickr.com/photos/vultilion/6056698931
""")
EOF
rm -rf "$out"
mv "$build" "$out"
trap 'rm -rf "$tmp"' EXIT
complete || { echo "photo_scenes: $out is incomplete after the build" >&2; exit 1; }
echo "photo_scenes: $out: classes (label order):"
for c in "$out"/train/*/; do
    c=$(basename "$c")
    printf '  %-18s train %d  test %d\n' "$c" \
        "$(find "$out/train/$c" -name '*.png' | wc -l)" "$(find "$out/test/$c" -name '*.png' | wc -l)"
done
echo "photo_scenes: 10 classes, $((10 * n_train)) train + $((10 * n_test)) test 32x32 RGB PNGs, seed $seed"
