#!/usr/bin/env bash
# Installs the Debian packages selfsup needs, idempotently (as root, or via sudo).
#   scripts/setup.sh            build + run + test dependencies (PyTorch for the tests)
#   scripts/setup.sh --runtime  only what building and running need (no PyTorch)
# The tests also use two real photos (china.jpg, flower.jpg, CC-BY 2.0, see the
# README.txt beside them) that Debian's python3-sklearn ships. Installing
# that package would pull in SciPy, Pythran and the Boost headers (~230 MB), so
# its .deb (2 MB) is fetched with apt and only the photos are unpacked, into
# $SSL_PHOTOS_DIR (default /usr/local/share/selfsup/photos).
set -euo pipefail
runtime=(build-essential make pkg-config libopenblas-dev zlib1g-dev libdnnl-dev
         libjpeg62-turbo-dev libpng-dev dataset-fashion-mnist)
testing=(python3 python3-numpy python3-torch python3-torchvision python3-pil)
pkgs=("${runtime[@]}")
photos_dir=${SSL_PHOTOS_DIR:-/usr/local/share/selfsup/photos}
sklearn_images=/usr/lib/python3/dist-packages/sklearn/datasets/images
need_photos=0
if [ "${1:-}" != "--runtime" ]; then
    pkgs+=("${testing[@]}")
    [ -f "$sklearn_images/china.jpg" ] || [ -f "$photos_dir/china.jpg" ] || need_photos=1
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ] && [ "$need_photos" = 0 ]; then
    echo "setup: all ${#pkgs[@]} packages present"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]} photos" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$need_photos" = 1 ]; then
    echo "setup: unpacking the test photos of python3-sklearn into $photos_dir"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # (as root apt warns that it cannot drop to its _apt user in a private dir)
    (cd "$tmp" && apt-get download -qq python3-sklearn 2>/dev/null) ||
        { echo "setup: apt-get download python3-sklearn failed" >&2; exit 1; }
    dpkg-deb --fsys-tarfile "$tmp"/python3-sklearn_*.deb |
        tar -x -C "$tmp" "./usr/lib/python3/dist-packages/sklearn/datasets/images"
    $SUDO mkdir -p "$photos_dir"
    $SUDO cp "$tmp/usr/lib/python3/dist-packages/sklearn/datasets/images/"{china.jpg,flower.jpg,README.txt} \
        "$photos_dir/"
fi
echo "setup: done"
