"""Goldens for the context encoder (Pathak et al. 2016, "Context Encoders:
Feature Learning by Inpainting"), written from the paper's objective and
its official (DCGAN-style) training loop, float64 from float32 inputs:

method_inpainting.safetensors (tests/test_methods.c): three steps with
random-block masks and the adversarial term. Per image b at step k the
stream ssl_rng_derive(pretext_seed, k, b) (selfsup_rng.py's
reimplementation) places each of N squares of side round(mask_size /
sqrt(N) * S): top row below(S - side + 1), then left column likewise. The
encoder sees the view with the hole set to 0 (the dataset mean after
normalization), the decoder (per stride-2 encoder stage a
ConvTranspose2d(4, 2), BN + ReLU between, a bias on the last) reconstructs
the view; L_rec = sum M (y - x)^2 / sum M. The discriminator (DCGAN's:
Conv(4,2)-LReLU(0.2), Conv-BN-LReLU, Conv-BN-LReLU, global average pool,
Linear) sees real views and views with the hole filled by y; as the
official loop, errD = BCE(D(x), 1) + BCE(D(fake.detach()), 0) and
errG = (1 - w) L_rec + w BCE(D(fake), 1), where D's parameters get no
gradient from errG; one SGD step over all parameters minimizes
errD + errG (selfsup's single optimizer: simultaneous updates). D's BN
running statistics move in each of its three passes. w = 0.3 here (the
paper's 0.001 would leave the adversarial gradient below the tolerance).

inpainting_center.safetensors (tests/test_inpainting.c): two steps of the
default configuration: the central square of half the side, L2 only.

Usage: /usr/bin/python3 tests/torch/gen_method_inpainting.py OUTDIR
"""
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402
from selfsup_rng import derive  # noqa: E402
from gen_method_rotation import MARGIN  # noqa: E402
from method_golden import FEAT, IN_CH, WIDTH, Golden, encoder, f64, prepare, views  # noqa: E402

B, SEED = 6, 0xC0DE
SIZES = [12, 16, 12]
TORCH_SEED = 7


class KinkMargin:
    """As gen_method_rotation.ReluMargin, for ReLU and LeakyReLU inputs: a
    float32 replay must not cross a kink that float64 did not."""

    def __init__(self, *modules):
        self.low = float("inf")
        for m in modules:
            for r in m.modules():
                if isinstance(r, (nn.ReLU, nn.LeakyReLU)):
                    r.register_forward_pre_hook(self._hook)

    def _hook(self, mod, inp):
        self.low = min(self.low, float(inp[0].detach().abs().min()))

    def check(self, step):
        if self.low < MARGIN:
            raise SystemExit("step %d: a ReLU input is %.2e from 0: choose another seed" % (step, self.low))
        self.low = float("inf")


def decoder(n_up=3):
    """selfsup's decoder for the small stem: widths FEAT/2, FEAT/4, then IN_CH."""
    layers, ci = [], FEAT
    for t in range(n_up):
        last = t == n_up - 1
        co = IN_CH if last else FEAT >> (t + 1)
        layers.append(nn.ConvTranspose2d(ci, co, 4, 2, bias=last))
        if not last:
            layers += [nn.BatchNorm2d(co), nn.ReLU()]
        ci = co
    return nn.Sequential(*layers)


def discriminator():
    d = WIDTH
    return nn.Sequential(nn.Conv2d(IN_CH, d, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                         nn.Conv2d(d, 2 * d, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * d), nn.LeakyReLU(0.2),
                         nn.Conv2d(2 * d, 4 * d, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * d), nn.LeakyReLU(0.2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * d, 1))


def dense(enc, x):
    h = enc.maxpool(enc.relu(enc.bn1(enc.conv1(x))))
    return enc.layer4(enc.layer3(enc.layer2(enc.layer1(h))))


def decode(dec, h, side):
    sizes = [side]
    for _ in range(3):
        sizes.append((sizes[-1] + 1) // 2)
    convs = [m for m in dec if isinstance(m, nn.ConvTranspose2d)]
    for t, conv in enumerate(convs):
        out = sizes[2 - t]
        pad, opad = (1, 0) if out == 2 * h.shape[2] else (2, 1)
        h = F.conv_transpose2d(h, conv.weight, conv.bias, 2, pad, opad)
        if t < len(convs) - 1:
            h = dec[3 * t + 2](dec[3 * t + 1](h))
    return h


def masks(cfg, side, step):
    """(B, 1, side, side) holes as selfsup's ssl_inpainting_mask."""
    m = torch.zeros(B, 1, side, side, dtype=torch.float64)
    n = max(cfg["mask_blocks"], 1)
    s = max(1, min(side, int(math.floor(cfg["mask_size"] / math.sqrt(n) * side + 0.5))))
    for b in range(B):
        r = derive(SEED, step, b)
        for _ in range(n):
            if cfg["mask_blocks"] > 0:
                y0, x0 = r.below(side - s + 1), r.below(side - s + 1)
            else:
                y0 = x0 = (side - s) // 2
            m[b, 0, y0:y0 + s, x0:x0 + s] = 1
    return m


def run(name, cfg, steps, out, start=2):
    gen = torch.Generator().manual_seed(TORCH_SEED)
    torch.manual_seed(TORCH_SEED)
    enc = prepare(encoder(), gen)
    dec = prepare(decoder(), gen)
    adv = cfg["adv_weight"] > 0
    disc = prepare(discriminator(), gen) if adv else None
    g = Golden(name, cfg, steps, lr=0.05, start_step=start)
    g.meta["method"] = "inpainting"
    g.state("", enc)
    g.state("decoder.", dec)
    trained = [("", enc), ("decoder.", dec)]
    if adv:
        g.state("discriminator.", disc)
        trained.append(("discriminator.", disc))
    g.tensor("pretext_seed", torch.tensor(SEED, dtype=torch.int64))
    f64(enc, dec, *([disc] if adv else []))
    margin = KinkMargin(enc, dec, *([disc] if adv else []))
    w = cfg["adv_weight"]
    for k in range(steps):
        side = SIZES[k]
        v = views(gen, B, [side])
        x = v[0].double()
        m = masks(cfg, side, start + k)
        y = decode(dec, dense(enc, x * (1 - m)), side)
        rec = ((y - x) ** 2 * m).sum() / m.expand_as(y).sum()
        loss = rec
        if adv:
            fake = m * y + (1 - m) * x
            ones, zeros = torch.ones(B, 1, dtype=torch.float64), torch.zeros(B, 1, dtype=torch.float64)
            err_d = (F.binary_cross_entropy_with_logits(disc(x), ones) +
                     F.binary_cross_entropy_with_logits(disc(fake.detach()), zeros))
            for p in disc.parameters():
                p.requires_grad_(False)
            err_g = (1 - w) * rec + w * F.binary_cross_entropy_with_logits(disc(fake), ones)
            for p in disc.parameters():
                p.requires_grad_(True)
            loss = err_g + err_d
        loss.backward()
        margin.check(k)
        g.step(k, v, loss, trained)
        for prefix, module in trained:
            g.after(k, prefix, module)
    os.makedirs(out, exist_ok=True)
    save(os.path.join(out, name + ".safetensors"), g.t, g.meta)


def main():
    out = sys.argv[1]
    run("method_inpainting", {"mask_size": 0.5, "mask_blocks": 3, "adv_weight": 0.3, "view_size": 0}, 3, out)
    run("inpainting_center", {"mask_size": 0.5, "mask_blocks": 0, "adv_weight": 0.0, "view_size": 0}, 2, out)


if __name__ == "__main__":
    main()
