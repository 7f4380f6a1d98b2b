"""Golden for tests/test_methods.c: two Barlow Twins steps on selfsup's tiny
encoder, written as the official code (facebookresearch/barlowtwins
main.py, class BarlowTwins) with its ResNet-50 swapped for the tiny encoder
and its one-device all_reduce dropped. See method_golden.py for the format.

Usage: /usr/bin/python3 tests/torch/gen_method_barlow.py OUTDIR
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, prepare, views  # noqa: E402

# lambda away from the default 0.0051 so that the config reaches the loss and
# the off-diagonal term weighs in the gradients. The loss (~20) has gradients
# up to ~150: SGD steps of ~5% of the weights keep step 1 well conditioned.
LAMBD, HIDDEN, DIM, B, STEPS, LR = 0.02, 24, 16, 8, 2, 5e-4


def off_diagonal(x):
    # return a flattened view of the off-diagonal elements of a square matrix
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


class BarlowTwins(nn.Module):
    def __init__(self, sizes, lambd, batch_size):
        super().__init__()
        self.lambd, self.batch_size = lambd, batch_size
        self.backbone = encoder()
        layers = []
        for i in range(len(sizes) - 2):
            layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=False))
            layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Linear(sizes[-2], sizes[-1], bias=False))
        self.projector = nn.Sequential(*layers)
        # normalization layer for the representations z1 and z2
        self.bn = nn.BatchNorm1d(sizes[-1], affine=False)

    def forward(self, y1, y2):
        z1 = self.projector(self.backbone(y1))
        z2 = self.projector(self.backbone(y2))
        # empirical cross-correlation matrix
        c = self.bn(z1).T @ self.bn(z2)
        c.div_(self.batch_size)
        on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
        off_diag = off_diagonal(c).pow_(2).sum()
        return on_diag + self.lambd * off_diag


def main():
    gen = torch.Generator().manual_seed(13)
    torch.manual_seed(13)
    model = BarlowTwins([FEAT, HIDDEN, HIDDEN, DIM], LAMBD, B)
    prepare(model.backbone, gen)
    prepare(model.projector, gen)
    g = Golden("barlow", {"lambda": LAMBD, "proj_hidden": HIDDEN, "proj_dim": DIM}, STEPS,
               lr=LR)
    g.state("", model.backbone)
    g.state("projector.", model.projector)
    f64(model)
    for k in range(STEPS):
        v = views(gen, B, [12, 12])
        loss = model(v[0].double(), v[1].double())
        loss.backward()
        g.step(k, v, loss, [("", model.backbone), ("projector.", model.projector)])
        g.after(k, "", model.backbone)
        g.after(k, "projector.", model.projector)
    g.save(sys.argv[1])


if __name__ == "__main__":
    main()
