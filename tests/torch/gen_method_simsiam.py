"""Golden for tests/test_methods.c: three SimSiam steps on selfsup's tiny
encoder, written after facebookresearch/simsiam's builder.py and
main_simsiam.py. See method_golden.py for the format.

The projector is the official one, including the bias of its last Linear
(fc[6]) that the official code freezes in front of BN(affine=False). Here
it is frozen at 0: selfsup has no bias there, and any frozen value only
shifts that BN's running_mean (every output is the same). It is left out
of the saved tensors.

lr 0.02: with these tiny networks (BN over 8 samples, cosine losses) a
float32 rounding grows about tenfold per step, and at lr 0.05 the float32
answer (PyTorch's as well as selfsup's) drifts past the test's tolerances
by the third step; seed 15 also keeps every pre-ReLU value away from the
kink, where a rounding would flip a gradient.

Usage: /usr/bin/python3 tests/torch/gen_method_simsiam.py OUTDIR
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, prepare, views  # noqa: E402

PH, PD, QH, B, STEPS = 24, 16, 8, 8, 3
FROZEN = "projector.6.bias"


def projector(prev_dim, dim):
    """builder.py's encoder.fc (prev_dim is the backbone's feature size,
    here proj_hidden)."""
    fc = nn.Sequential(nn.Linear(FEAT, prev_dim, bias=False), nn.BatchNorm1d(prev_dim), nn.ReLU(),
                       nn.Linear(prev_dim, prev_dim, bias=False), nn.BatchNorm1d(prev_dim), nn.ReLU(),
                       nn.Linear(prev_dim, dim), nn.BatchNorm1d(dim, affine=False))
    fc[6].bias.requires_grad = False  # the official hack
    return fc


def predictor(dim, pred_dim):
    return nn.Sequential(nn.Linear(dim, pred_dim, bias=False), nn.BatchNorm1d(pred_dim), nn.ReLU(),
                         nn.Linear(pred_dim, dim))


def main():
    gen = torch.Generator().manual_seed(15)
    torch.manual_seed(15)
    enc = prepare(encoder(), gen)
    proj = projector(PH, PD)
    prepare(proj[:7], gen)  # randomize_bn needs affine BN; the last one below
    with torch.no_grad():
        proj[6].bias.zero_()
        proj[7].running_mean.copy_(0.1 * torch.randn(PD, generator=gen))
        proj[7].running_var.copy_(1 + 0.3 * torch.rand(PD, generator=gen))
        proj[7].num_batches_tracked.fill_(3)
    pred = prepare(predictor(PD, QH), gen)
    cfg = {"proj_hidden": PH, "proj_dim": PD, "pred_hidden": QH}
    g = Golden("simsiam", cfg, STEPS, lr=0.02)
    g.state("", enc)
    g.state("projector.", proj)
    g.state("predictor.", pred)
    f64(enc, proj, pred)
    criterion = nn.CosineSimilarity(dim=1)
    trained = [("", enc), ("projector.", proj), ("predictor.", pred)]

    for k in range(STEPS):
        v = views(gen, B, [12, 12])
        x1, x2 = v[0].double(), v[1].double()
        z1 = proj(enc(x1))
        z2 = proj(enc(x2))
        p1 = pred(z1)
        p2 = pred(z2)
        z1, z2 = z1.detach(), z2.detach()
        c12, c21 = criterion(p1, z2), criterion(p2, z1)
        loss = -(c12.mean() + c21.mean()) * 0.5
        loss.backward()
        # the loss is a mean of signed cosines (near 0 at these random
        # weights: 0.015-0.03 from terms of about 0.3)
        scale = (c12.abs().mean() + c21.abs().mean()) * 0.5
        g.step(k, v, loss, trained, loss_scale=scale)
        for prefix, module in trained:
            g.after(k, prefix, module)
    for name in [n for n in g.t if n.endswith(FROZEN)]:
        del g.t[name]
    g.save(sys.argv[1])


if __name__ == "__main__":
    main()
