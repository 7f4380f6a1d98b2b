"""Goldens for colorization (Zhang, Isola & Efros 2016, "Colorful Image
Colorization"), written from the paper and its official code's choices,
float64 from float32 inputs:

method_colorization.safetensors (tests/test_methods.c): three steps of the
classification objective on selfsup's tiny encoder (1 input channel: L).
A view is normalized RGB (CIFAR-10 mean/std, what selfsup's loader gives);
it is turned back into [0, 1] RGB, then CIE Lab by skimage.color.rgb2lab's
formulas (sRGB gamma, skimage's sRGB->XYZ matrix, D65 white, f(t) = cbrt
above 0.008856); the encoder sees (L/100 - 0.286) / 0.353; the targets are
the ab averaged over 4x4-ish cells (F.adaptive_avg_pool2d to the encoder's
side halved twice); a pixel's label is its nearest in-gamut bin of the
10-unit grid; an image with no |a| or |b| above 5 is ignored (the paper's
NonGrayMask); the decoder is ConvTranspose2d(F, F, 4, 2) - BN - ReLU -
Conv2d(F, Q, 1) on the last feature map; the loss is the paper's
sum_p w(label_p) CE_p / #pixels with class weights w (here random: the
golden checks that the loss uses them; their computation is checked below).
Views of 12 px (a 2 -> 3 transposed convolution, padding 2, output padding
1) and 16 px (2 -> 4, padding 1).

colorization_regression.safetensors (tests/test_colorization.c): two steps
of the paper's regression baseline, L2 on ab / 110.

colorization_extra.safetensors (tests/test_colorization.c): reference
values for the pieces: rgb2lab and lab2rgb (skimage's formulas), the
in-gamut bin set (the ab of every 8-bit sRGB colour on the faces of the RGB
cube rounded to the grid), nearest-bin labels, the class-rebalancing
weights from a histogram (the paper: p~ = Gaussian-smoothed (sigma 5)
empirical distribution, here a kernel density at the bin centres of ab
rounded to 1 unit; w ~ (0.5 p~ + 0.5 / Q)^-1 normalized to E_p~[w] = 1), the
same computed from a tiny uint8 dataset end to end, the annealed mean
(T = 0.38), and the lightness images an encoder is evaluated on.

Usage: /usr/bin/python3 tests/torch/gen_method_colorization.py OUTDIR
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402
from gen_method_rotation import ReluMargin  # noqa: E402
from method_golden import FEAT, Golden, encoder, f64, prepare  # noqa: E402

B = 6
SIZES = [12, 12, 16]
TORCH_SEED = 4
F32 = np.float32
RGB_MEAN = np.array([0.4914, 0.4822, 0.4465], F32)  # selfsup's 3-channel normalization
RGB_STD = np.array([0.2470, 0.2435, 0.2616], F32)
L_MEAN, L_STD = float(F32(0.2860)), float(F32(0.3530))  # its 1-channel normalization
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
WHITE = np.array([0.95047, 1.0, 1.08883])
SIGMA, LAMBDA, GRAY, AB_NORM = 5.0, 0.5, 5.0, 110.0
MARGIN = 1e-3  # in ab units: labels and the gray test must not hinge on rounding


# ---- colour (numpy, float64) ----
def rgb2lab(rgb):
    """rgb (..., 3) in [0, 1] -> Lab (..., 3), skimage.color.rgb2lab."""
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = lin @ XYZ_FROM_RGB.T / WHITE
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], -1)


def lab2rgb(lab):
    """skimage.color.lab2rgb: negative z clipped to 0, result clipped to [0, 1]."""
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = np.maximum(fy - lab[..., 2] / 200, 0)
    f = np.stack([fx, fy, fz], -1)
    xyz = np.where(f > 0.2068966, f ** 3, (f - 16.0 / 116.0) / 7.787) * WHITE
    lin = np.maximum(xyz @ np.linalg.inv(XYZ_FROM_RGB).T, 0)
    rgb = np.where(lin > 0.0031308, 1.055 * lin ** (1 / 2.4) - 0.055, 12.92 * lin)
    return np.clip(rgb, 0, 1)


def gamut_bins():
    """(Q, 2) centres of the cells the ab of 8-bit sRGB colours round to,
    (a, b) row-major over the grid -110..110."""
    v = np.arange(256) / 255.0
    u, w = np.meshgrid(v, v, indexing="ij")
    faces = []
    for axis in range(3):
        for side in (0.0, 1.0):
            c = np.empty(u.shape + (3,))
            c[..., axis] = side
            c[..., (axis + 1) % 3] = u
            c[..., (axis + 2) % 3] = w
            faces.append(c.reshape(-1, 3))
    lab = rgb2lab(np.concatenate(faces))
    cells = set(zip(np.floor(lab[:, 1] / 10 + 0.5).astype(int), np.floor(lab[:, 2] / 10 + 0.5).astype(int)))
    return np.array([(10 * i, 10 * j) for i in range(-11, 12) for j in range(-11, 12) if (i, j) in cells], F32)


def nearest_bin(bins, a, b):
    """Labels of float32 ab arrays: the rounded cell when in gamut, else the
    nearest centre (first on ties)."""
    index = {(int(p[0]) // 10, int(p[1]) // 10): k for k, p in enumerate(bins)}
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    out = []
    for x, y in zip(a, b):
        k = index.get((int(np.floor(x / 10 + 0.5)), int(np.floor(y / 10 + 0.5))))
        if k is None:
            k = int(np.argmin((bins[:, 0] - x) ** 2 + (bins[:, 1] - y) ** 2))
        out.append(k)
    return np.array(out, np.int64)


def label_margin(a):
    """Distance (ab units) of values to the nearest rounding boundary of the grid."""
    r = np.asarray(a, np.float64) / 10 + 0.5
    return 10 * np.abs(r - np.round(r)).min()


def class_weights(hist, bins):
    """hist (256, 256) counts of (round(a) + 128, round(b) + 128) -> prior, weights (Q)."""
    vals = np.arange(256) - 128.0
    ga = np.exp(-(bins[:, 0:1].astype(np.float64) - vals) ** 2 / (2 * SIGMA ** 2))  # (Q, 256)
    gb = np.exp(-(bins[:, 1:2].astype(np.float64) - vals) ** 2 / (2 * SIGMA ** 2))
    p = np.einsum("qa,ab,qb->q", ga, hist, gb)
    p /= p.sum()
    q = len(bins)
    w = 1.0 / ((1 - LAMBDA) * p + LAMBDA / q)
    return p, w / (p * w).sum()


def pool(x, t):
    return F.adaptive_avg_pool2d(torch.from_numpy(np.ascontiguousarray(x)), t).numpy()


def quarter(s):
    return ((s + 1) // 2 + 1) // 2


# ---- the method (torch, float64) ----
def decoder(q):
    return nn.Sequential(nn.ConvTranspose2d(FEAT, FEAT, 4, 2, bias=False), nn.BatchNorm2d(FEAT),
                         nn.ReLU(), nn.Conv2d(FEAT, q, 1))


def dense(enc, x):
    """The encoder's last feature map (selfsup's ssl_resnet_forward_dense)."""
    h = enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))
    return enc.layer4(enc.layer3(enc.layer2(enc.layer1(h))))


def decode(dec, h, t):
    pad, opad = (1, 0) if t == 2 * h.shape[2] else (2, 1)
    h = F.conv_transpose2d(h, dec[0].weight, None, 2, pad, opad)
    return dec[3](dec[2](dec[1](h)))


def make_views(gen, s, gray_first=False):
    """Smooth random colour images (B, 3, s, s) in [0, 1], normalized as
    selfsup's loader does, float32."""
    lo = torch.rand(B, 3, 3, 3, generator=gen, dtype=torch.float64)
    rgb = F.interpolate(lo, size=(s, s), mode="bilinear", align_corners=False)
    rgb = (rgb + 0.08 * torch.randn(B, 3, s, s, generator=gen, dtype=torch.float64)).clamp(0, 1)
    if gray_first:
        rgb[0] = rgb[0].mean(0, keepdim=True)
    x = (rgb.numpy().astype(F32) - RGB_MEAN.reshape(1, 3, 1, 1)) / RGB_STD.reshape(1, 3, 1, 1)
    return torch.from_numpy(x.astype(F32))


def targets(x, bins):
    """A view batch (float32) -> encoder input (B, 1, s, s), pooled ab (B, 2, t, t)
    as selfsup keeps it (float32), labels (B, t, t) with -1 for gray images."""
    xn = x.numpy()
    rgb = np.clip(xn * RGB_STD.reshape(1, 3, 1, 1) + RGB_MEAN.reshape(1, 3, 1, 1), 0, 1)  # float32 ops
    lab = rgb2lab(rgb.astype(np.float64).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    l_in = (lab[:, :1] / 100 - L_MEAN) / L_STD
    t = quarter(x.shape[2])
    ab = pool(lab[:, 1:].astype(F32).astype(np.float64), t).astype(F32)
    labels = nearest_bin(bins, ab[:, 0], ab[:, 1]).reshape(x.shape[0], t, t)
    colored = (np.abs(ab) > GRAY).reshape(x.shape[0], -1).any(1)
    labels[~colored] = -1
    amax = np.abs(ab).reshape(x.shape[0], -1).max(1)
    if label_margin(ab[colored]) < MARGIN or np.abs(amax - GRAY).min() < MARGIN:
        raise SystemExit("a label or the gray test is within %g of a boundary: choose another seed" % MARGIN)
    return torch.from_numpy(l_in), ab, torch.from_numpy(labels)


def run(name, config, steps, lr, out, regression=False):
    gen = torch.Generator().manual_seed(TORCH_SEED)
    torch.manual_seed(TORCH_SEED)
    bins = gamut_bins()
    q = len(bins)
    enc = prepare(encoder(), gen)
    dec = prepare(decoder(2 if regression else q), gen)
    weights = (0.5 + 1.5 * torch.rand(q, generator=gen)).float()
    g = Golden(name, config, steps, lr=lr, start_step=1)
    g.meta["method"] = "colorization"
    g.state("", enc)
    g.state("decoder.", dec)
    g.tensor("ab_bins", torch.from_numpy(bins))
    g.tensor("color_prior", torch.full((q,), 1.0 / q))
    g.tensor("color_weights", weights)
    f64(enc, dec)
    margin = ReluMargin(enc, dec)
    for k in range(steps):
        x = make_views(gen, SIZES[k], gray_first=k == 1)
        l_in, ab, labels = targets(x, bins)
        logits = decode(dec, dense(enc, l_in), quarter(SIZES[k]))
        if regression:
            m = (labels[:, None, :, :] >= 0).double()
            target = torch.from_numpy(ab).double() / AB_NORM
            loss = ((logits - target) ** 2 * m).sum() / m.expand_as(logits).sum()
        else:
            n = int((labels >= 0).sum())
            loss = F.cross_entropy(logits, labels, weight=weights.double(), ignore_index=-1,
                                   reduction="sum") / n
        loss.backward()
        margin.check(k)
        g.step(k, [x], loss, [("", enc), ("decoder.", dec)])
        g.after(k, "", enc)
        g.after(k, "decoder.", dec)
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, name + ".safetensors"), g.t, g.meta)


def extra(out):
    rng = np.random.default_rng(5)
    bins = gamut_bins()
    t = {"ab_bins": bins}
    # colour conversion: corners, the linear/gamma boundary, random colours
    rgb = np.concatenate([np.array([[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                                    [0.04, 0.0405, 0.041], [0.5, 0.5, 0.5], [0.2, 0.7, 0.1]]),
                          rng.random((56, 3))]).astype(F32)
    t["rgb"] = rgb
    t["lab"] = rgb2lab(rgb.astype(np.float64))
    lab_in = np.concatenate([rgb2lab(rng.random((24, 3))),  # in gamut: a round trip
                             np.stack([rng.uniform(0, 100, 16), rng.uniform(-110, 110, 16),
                                       rng.uniform(-110, 110, 16)], 1)]).astype(F32)  # clipped
    t["lab_in"] = lab_in
    t["lab_rgb"] = lab2rgb(lab_in.astype(np.float64))
    # labels: grid points, boundaries' neighbourhoods, out of gamut
    ab = rng.uniform(-125, 125, (400, 2)).astype(F32)
    ab = ab[[label_margin(p) > MARGIN for p in ab]]
    t["ab_points"] = ab
    t["ab_labels"] = nearest_bin(bins, ab[:, 0], ab[:, 1]).astype(np.int32)
    # class weights from a histogram
    hist = np.zeros((256, 256))
    for a, b, n in [(10, 40, 900), (-20, -30, 300), (60, 60, 50), (0, 0, 4000), (-80, 70, 7)]:
        hist[a + 128, b + 128] = n
    hist[128 - 5:128 + 5, 128 - 5:128 + 5] += rng.integers(0, 20, (10, 10))
    t["hist"] = hist.astype(F32)
    p, w = class_weights(hist, bins)
    t["hist_prior"], t["hist_weights"] = p, w
    # end to end from a uint8 dataset (5 images 3 x 20 x 20, the third gray)
    img = rng.integers(0, 256, (5, 3, 4, 4))
    img = np.kron(img, np.ones((1, 1, 5, 5))).astype(np.uint8)  # blocks of colour
    img[2] = img[2, :1]
    lab = rgb2lab((img / 255.0).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    ab = pool(lab[:, 1:].astype(F32).astype(np.float64), quarter(20)).astype(F32)
    colored = (np.abs(ab) > GRAY).reshape(5, -1).any(1)
    hist = np.zeros((256, 256))
    for i in np.nonzero(colored)[0]:
        for a, b in zip(ab[i, 0].ravel(), ab[i, 1].ravel()):
            hist[int(np.floor(float(a) + 0.5)) + 128, int(np.floor(float(b) + 0.5)) + 128] += 1
    p, w = class_weights(hist, bins)
    t["data_images"], t["data_prior"], t["data_weights"] = img, p, w
    # annealed mean of random logits over 3 pixels
    logits = (3 * rng.standard_normal((len(bins), 3))).astype(F32)
    z = logits.astype(np.float64) / 0.38
    pr = np.exp(z - z.max(0))
    pr /= pr.sum(0)
    t["logits"] = logits
    t["annealed_ab"] = pr.T @ bins.astype(np.float64)  # (3, 2)
    # the lightness images (round(2.55 L)) of the RGB dataset and of a gray one
    t["data_lightness"] = np.rint(2.55 * lab[:, 0]).clip(0, 255).astype(np.uint8)
    gray = rng.integers(0, 256, (2, 1, 3, 3)).astype(np.uint8)
    t["gray_images"] = gray
    g3 = np.repeat(gray / 255.0, 3, 1).transpose(0, 2, 3, 1)
    t["gray_lightness"] = np.rint(2.55 * rgb2lab(g3)[..., 0]).clip(0, 255).astype(np.uint8)
    save(os.path.join(out, "colorization_extra.safetensors"),
         {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items()}, {"q": len(bins)})
    print("colorization: %d in-gamut ab bins" % len(bins))


def main():
    out = sys.argv[1]
    run("method_colorization", {"color_regression": 0, "view_size": 0}, 3, 0.05, out)
    run("colorization_regression", {"color_regression": 1, "view_size": 0}, 2, 0.05, out,
        regression=True)
    extra(out)


if __name__ == "__main__":
    main()
