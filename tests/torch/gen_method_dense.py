"""Goldens for patch-level contrast ("dense", src/methods/dense.c): two
training steps on selfsup's tiny encoder, written from the method's
definition (VADeR / PixContrast-style exact correspondences, DenseCL's
two-term loss and dense head), not from the C code.

Per step, for B images and two views of one size:
  f      = encoder feature map of both views (one pass, BN over 2B)
  image  = NT-Xent(normalize(projector(avgpool(f))), T)   (SimCLR)
  e      = Conv2d(F, H, 1) -> ReLU -> Conv2d(H, D, 1) on f  (DenseCL's mlp2)
  points = per image, the fh x fw cell centres of the intersection of the
           two crop boxes (source pixels); images whose boxes do not
           overlap are left out
  q, k   = normalize(F.grid_sample(e, grid, align_corners=False)) of view
           0 / view 1 at those points, where a box maps to [-1, 1] of its
           view (x mirrored when the view was flipped)
  dense  = (CE(q k^T / T, arange) + CE(k q^T / T, arange)) / 2
  loss   = (1 - alpha) image + alpha dense

Files (method_golden.py describes the format):
  method_dense.safetensors      alpha 0.5, no geometry: the generic replay in
                                tests/test_methods.c gives none, and the
                                method then takes both views as the same box
  method_dense_geo.safetensors  alpha 0.7 with crop geometries
                                step<k>.geo<v> (B, 5) = (x0, y0, w, h,
                                flipped) per image, including an image seen
                                twice in the same box, one flipped, and
                                one whose crops do not overlap
                                (tests/test_dense_method.c replays it)

Usage: /usr/bin/python3 tests/torch/gen_method_dense.py OUTDIR
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_method_rotation import ReluMargin  # noqa: E402
from golden import save  # noqa: E402
from method_golden import FEAT, Golden, encoder, f64, mlp, prepare, views  # noqa: E402

T, HIDDEN, DIM, B, S, STEPS = 0.2, 24, 16, 8, 18, 2
SRC = 32  # side of the (notional) source images the geometries crop


def feature_map(enc, x):
    """torchvision ResNet.forward up to layer4 (no pool)."""
    x = enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))
    return enc.layer4(enc.layer3(enc.layer2(enc.layer1(x))))


def ntxent(z, t):
    m = z.shape[0]
    sim = (z @ z.t() / t).masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
    return F.cross_entropy(sim, (torch.arange(m) + m // 2) % m)


def grid_in(box, xs, ys):
    """Source points (P) -> grid_sample coordinates in the view of box."""
    x0, y0, w, h, flipped = box.tolist()
    gx = 2 * (xs - x0) / w - 1
    if flipped:
        gx = -gx
    return torch.stack([gx, 2 * (ys - y0) / h - 1], dim=1)


def dense_term(e, geo0, geo1, t):
    n, fh, fw = geo0.shape[0], e.shape[2], e.shape[3]
    qs, ks = [], []
    for i in range(n):
        a, b = geo0[i].double(), geo1[i].double()
        x0, x1 = max(a[0], b[0]), min(a[0] + a[2], b[0] + b[2])
        y0, y1 = max(a[1], b[1]), min(a[1] + a[3], b[1] + b[3])
        if x1 <= x0 or y1 <= y0:
            continue  # no common point: no positives
        gy, gx = torch.meshgrid((torch.arange(fh, dtype=torch.float64) + 0.5) / fh,
                                (torch.arange(fw, dtype=torch.float64) + 0.5) / fw, indexing="ij")
        xs = (x0 + gx * (x1 - x0)).reshape(-1)
        ys = (y0 + gy * (y1 - y0)).reshape(-1)
        for out, img, box in ((qs, e[i], a), (ks, e[n + i], b)):
            s = F.grid_sample(img[None], grid_in(box, xs, ys)[None, None], mode="bilinear",
                              padding_mode="zeros", align_corners=False)
            out.append(s[0, :, 0, :].t())
    q, k = F.normalize(torch.cat(qs), dim=1), F.normalize(torch.cat(ks), dim=1)
    labels = torch.arange(q.shape[0])
    return (F.cross_entropy(q @ k.t() / t, labels) + F.cross_entropy(k @ q.t() / t, labels)) / 2


def unit_geo(n):
    return torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]] * n)


def random_geo(gen, n):
    """Integer crop boxes as RandomResizedCrop makes them, random flips."""
    rows = []
    for _ in range(n):
        w = int(torch.randint(6, SRC + 1, (1,), generator=gen))
        h = int(torch.randint(6, SRC + 1, (1,), generator=gen))
        x0 = int(torch.randint(0, SRC - w + 1, (1,), generator=gen))
        y0 = int(torch.randint(0, SRC - h + 1, (1,), generator=gen))
        rows.append([x0, y0, w, h, int(torch.randint(0, 2, (1,), generator=gen))])
    return torch.tensor(rows, dtype=torch.float32)


def step_geometry(gen, k):
    g0, g1 = random_geo(gen, B), random_geo(gen, B)
    g1[0] = g0[0]                                     # the same box
    g1[1] = g0[1]
    g1[1, 4] = 1 - g0[1, 4]                           # the same box, one view flipped
    g0[2 + k] = torch.tensor([0.0, 0.0, 10.0, 12.0, 0.0])   # no overlap
    g1[2 + k] = torch.tensor([20.0, 15.0, 12.0, 9.0, 1.0])
    return g0, g1


def run(name, alpha, with_geo, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = prepare(encoder(), gen)
    proj = prepare(mlp([FEAT, HIDDEN, DIM]), gen)
    dproj = nn.Sequential(nn.Conv2d(FEAT, HIDDEN, 1), nn.ReLU(), nn.Conv2d(HIDDEN, DIM, 1))
    g = Golden("dense", {"temperature": T, "proj_hidden": HIDDEN, "proj_dim": DIM,
                         "dense_weight": alpha}, STEPS, lr=0.05)
    g.state("", enc)
    g.state("projector.", proj)
    g.state("dense_projector.", dproj)
    f64(enc, proj, dproj)
    margin = ReluMargin(enc, proj, dproj)
    for k in range(STEPS):
        v = views(gen, B, [S, S])
        geo = step_geometry(gen, k) if with_geo else (unit_geo(B), unit_geo(B))
        f = feature_map(enc, torch.cat(v).double())
        image = ntxent(F.normalize(proj(f.mean(dim=(2, 3))), dim=1), T)
        dense = dense_term(dproj(f), geo[0], geo[1], T)
        loss = (1 - alpha) * image + alpha * dense
        loss.backward()
        margin.check(k)
        if with_geo:
            g.tensor("step%d.geo0" % k, geo[0])
            g.tensor("step%d.geo1" % k, geo[1])
        g.step(k, v, loss, [("", enc), ("projector.", proj), ("dense_projector.", dproj)])
        g.after(k, "", enc)
        g.after(k, "projector.", proj)
        g.after(k, "dense_projector.", dproj)
    os.makedirs(sys.argv[1], exist_ok=True)
    save(os.path.join(sys.argv[1], "method_%s.safetensors" % name), g.t, g.meta)


def main():
    # torch seeds whose ReLU inputs keep their margin from 0 (ReluMargin)
    run("dense", 0.5, False, 10)
    run("dense_geo", 0.7, True, 16)


if __name__ == "__main__":
    main()
