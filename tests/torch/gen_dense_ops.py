"""Golden values for tests/test_dense_ops.c: the dense-task ops of src/nn/graph_dense.c
(transposed convolution, upsampling, per-channel bias, sigmoid / tanh / leaky ReLU,
masked MSE, per-pixel and binary cross-entropy, grid sampling, dense InfoNCE),
each written with the torch.nn / torch.nn.functional call it must match.

Usage: /usr/bin/python3 tests/torch/gen_dense_ops.py OUTDIR   (writes OUTDIR/dense_ops.safetensors)

Inputs are float32 draws (seeded) on odd shapes (N=3, C=5, 7x9); outputs and
gradients are computed in float64 by autograd from those float32 values, so
they are the exact answer the C float32 code is compared with. 4-D tensors are
NCHW (the C test converts them to each layout it checks). Keys, per case <c>:
  <c>.x, <c>.w, <c>.b   the op's tensor inputs (float32); dense InfoNCE: x = q, w = k
  <c>.hp                hyperparameters (float32), in the C call's order
  <c>.out               the output (a loss: shape (1,))
  <c>.r                 for ops with a tensor output: weights R (output's shape);
                        the gradients are of sum(R * out)
  <c>.gx, <c>.gw, <c>.gb, <c>.gk   d(loss or sum(R * out)) / d input
  <c>.t, <c>.m          masked_mse target and mask; bce targets (<c>.t)
  <c>.labels (int32), <c>.cw     pixel CE labels (N*H*W, -1 ignored) and class weights
  <c>.coords            grid_sample points (N, P, 2) in feature-map pixels (u, v)
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402

N, C, H, W = 3, 5, 7, 9


def f32(x):
    return float(np.float32(x))


def d64(*ts):
    return [t.double().requires_grad_(True) for t in ts]


def weighted(t, name, out, r, inputs):
    """Stores out and the gradients of sum(r * out) into inputs {key: tensor64}."""
    (out * r.double()).sum().backward()
    t[name + ".out"] = out.detach()
    t[name + ".r"] = r
    for key, x in inputs.items():
        t["%s.%s" % (name, key)] = x.grad


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    g = torch.Generator().manual_seed(77)
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    rand = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    t = {}

    # transposed convolution: the decoder's k4 s2 p1, output padding, a
    # rectangular kernel with stride 3, and stride 1
    for name, co, (r, s), stride, pad, opad, bias in (
            ("convt_k4s2p1", 4, (4, 4), 2, 1, 0, True),
            ("convt_k3s2p1o1", 6, (3, 3), 2, 1, 1, False),
            ("convt_k3x2s3p2o2", 3, (3, 2), 3, 2, 2, True),
            ("convt_k3s1p0", 2, (3, 3), 1, 0, 0, True)):
        x, w = randn(N, C, H, W), randn(C, co, r, s) * 0.3
        b = randn(co)
        xd, wd, bd = d64(x, w, b)
        y = F.conv_transpose2d(xd, wd, bd if bias else None, stride=stride, padding=pad,
                               output_padding=opad)
        m = torch.nn.ConvTranspose2d(C, co, (r, s), stride, pad, opad, bias=bias)
        assert m(x).shape == y.shape
        t[name + ".x"], t[name + ".w"] = x, w
        grads = {"gx": xd, "gw": wd}
        if bias:
            t[name + ".b"] = b
            grads["gb"] = bd
        t[name + ".hp"] = torch.tensor([stride, pad, opad], dtype=torch.float32)
        weighted(t, name, y, randn(*y.shape), grads)

    # upsampling, integer factors 2 and 3 (mode 0 nearest, 1 bilinear)
    for name, f, mode in (("up_nearest2", 2, "nearest"), ("up_nearest3", 3, "nearest"),
                          ("up_bilinear2", 2, "bilinear"), ("up_bilinear3", 3, "bilinear")):
        x = randn(N, C, H, W)
        (xd,) = d64(x)
        if mode == "nearest":
            y = torch.nn.Upsample(scale_factor=f, mode=mode)(xd)
        else:
            y = torch.nn.Upsample(scale_factor=f, mode=mode, align_corners=False)(xd)
        t[name + ".x"] = x
        t[name + ".hp"] = torch.tensor([f, 0 if mode == "nearest" else 1], dtype=torch.float32)
        weighted(t, name, y, randn(*y.shape), {"gx": xd})

    # per-channel bias, 4-D and 2-D
    for name, shape in (("bias4d", (N, C, H, W)), ("bias2d", (N, C))):
        x, b = randn(*shape), randn(C)
        xd, bd = d64(x, b)
        y = xd + (bd.view(1, C, 1, 1) if len(shape) == 4 else bd.view(1, C))
        t[name + ".x"], t[name + ".b"] = x, b
        weighted(t, name, y, randn(*y.shape), {"gx": xd, "gb": bd})

    # activations over a wide range; leaky ReLU with the DCGAN slope and a
    # negative one
    for name, fn, hp in (("sigmoid", torch.sigmoid, 0.0), ("tanh", torch.tanh, 0.0),
                         ("leaky", lambda v: F.leaky_relu(v, f32(0.2)), f32(0.2)),
                         ("leaky_neg", lambda v: F.leaky_relu(v, f32(-0.3)), f32(-0.3))):
        x = 3 * randn(N, C, H, W)
        (xd,) = d64(x)
        t[name + ".x"] = x
        t[name + ".hp"] = torch.tensor([hp], dtype=torch.float32)
        weighted(t, name, fn(xd), randn(N, C, H, W), {"gx": xd})

    # masked MSE: a per-pixel central block (a context encoder's mask), a
    # soft per-element mask with zeros, and no mask
    pix = torch.zeros(N, 1, H, W)
    pix[:, :, 2:5, 3:7] = 1
    pix[1, :, 0, :] = 1  # masks differ between images
    pix[2, :, 2:5, 3:7] = 0.5
    elem = rand(N, C, H, W) * (rand(N, C, H, W) > 0.3).float()
    for name, m in (("mse_pixel", pix), ("mse_elem", elem), ("mse_nomask", None)):
        x, tg = randn(N, C, H, W), randn(N, C, H, W)
        (xd,) = d64(x)
        if m is None:
            loss = F.mse_loss(xd, tg.double())
        else:
            md = m.double()
            loss = ((xd - tg.double()) ** 2 * md).sum() / md.expand_as(xd).sum()
            t[name + ".m"] = m
        loss.backward()
        t[name + ".x"], t[name + ".t"] = x, tg
        t[name + ".hp"] = torch.tensor([1 if m is pix else C], dtype=torch.float32)
        t[name + ".out"], t[name + ".gx"] = loss.detach().reshape(1), xd.grad

    # per-pixel cross-entropy: class weights (one 0) with ignored pixels; plain;
    # and 13 classes with weights
    for name, Q, weights, ignore in (("pce_w", C, True, True), ("pce", C, False, False),
                                     ("pce_q13", 13, True, True)):
        x = 2 * randn(N, Q, H, W)
        labels = torch.randint(0, Q, (N, H, W), generator=g)
        if ignore:
            labels[rand(N, H, W) < 0.2] = -1
        cw = 0.2 + 2 * rand(Q) if weights else None
        if weights:
            cw[1] = 0
            t[name + ".cw"] = cw
        (xd,) = d64(x)
        loss = F.cross_entropy(xd, labels, weight=None if cw is None else cw.double(),
                               ignore_index=-1)
        loss.backward()
        t[name + ".x"], t[name + ".labels"] = x, labels.int()
        t[name + ".out"], t[name + ".gx"] = loss.detach().reshape(1), xd.grad

    # binary cross-entropy on logits: a PatchGAN-like map with hard and soft
    # targets, and (N, 1) "real" labels
    for name, shape, tg in (("bce4d", (N, 1, H, W), None), ("bce2d", (6, 1), torch.ones(6, 1))):
        x = 3 * randn(*shape)
        if tg is None:
            tg = (rand(*shape) > 0.5).float()
            tg[0, 0, 0, :] = 0.9
        (xd,) = d64(x)
        loss = F.binary_cross_entropy_with_logits(xd, tg.double())
        loss.backward()
        t[name + ".x"], t[name + ".t"] = x, tg
        t[name + ".out"], t[name + ".gx"] = loss.detach().reshape(1), xd.grad

    # grid sample: points inside, on cell centres, at the border, half
    # outside and far outside; 11 per image
    P = 11
    x = randn(N, C, H, W)
    u = rand(N, P) * (W + 1) - 1  # [-1, W]
    v = rand(N, P) * (H + 1) - 1
    u[:, 0], v[:, 0] = 3.0, 2.0            # a cell centre
    u[:, 1], v[:, 1] = W - 1, H - 1        # the last centre
    u[:, 2], v[:, 2] = -0.5, 3.25          # half outside on the left
    u[:, 3], v[:, 3] = W - 0.25, -0.75     # outside two sides
    u[:, 4], v[:, 4] = 40.0, -30.0         # far outside: zero
    coords = torch.stack([u, v], dim=2)     # (N, P, 2)
    grid = torch.stack([(2 * u.double() + 1) / W - 1, (2 * v.double() + 1) / H - 1], dim=2)
    (xd,) = d64(x)
    y = F.grid_sample(xd, grid.view(N, 1, P, 2), mode="bilinear", padding_mode="zeros",
                      align_corners=False)  # (N, C, 1, P)
    y = y.view(N, C, P).permute(0, 2, 1).reshape(N * P, C)
    t["grid.x"], t["grid.coords"] = x, coords
    weighted(t, "grid", y, randn(N * P, C), {"gx": xd})

    # dense InfoNCE: 3 images x 5 patches, unit rows; both sides take a
    # gradient, then the keys detached at a lower temperature
    Pn, D = 5, 8
    for name, T, k_grad in (("dnce", f32(0.2), True), ("dnce_det", f32(0.07), False)):
        q = F.normalize(randn(N * Pn, D), dim=1)
        k = F.normalize(q + 0.8 * randn(N * Pn, D), dim=1)
        qd, kd = d64(q, k)
        logits = qd @ (kd if k_grad else kd.detach()).t() / T
        loss = F.cross_entropy(logits, torch.arange(N * Pn))
        loss.backward()
        t[name + ".x"], t[name + ".w"] = q, k
        t[name + ".hp"] = torch.tensor([T], dtype=torch.float32)
        t[name + ".out"], t[name + ".gx"] = loss.detach().reshape(1), qd.grad
        if k_grad:
            t[name + ".gk"] = kd.grad

    save(os.path.join(out_dir, "dense_ops.safetensors"), t,
         {"generator": "tests/torch/gen_dense_ops.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
