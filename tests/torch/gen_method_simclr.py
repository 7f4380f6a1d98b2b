"""Golden for tests/test_methods.c: two SimCLR steps (Chen et al. 2020,
Algorithm 1) on selfsup's tiny encoder. See method_golden.py for the format.

Usage: /usr/bin/python3 tests/torch/gen_method_simclr.py OUTDIR
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, mlp, prepare, views  # noqa: E402

T, HIDDEN, DIM, B, STEPS = 0.2, 24, 16, 8, 2


def ntxent(z, t):
    """Row i's positive is row (i+N) mod 2N; the diagonal is excluded."""
    m = z.shape[0]
    sim = (z @ z.t() / t).masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
    return F.cross_entropy(sim, (torch.arange(m) + m // 2) % m)


def main():
    gen = torch.Generator().manual_seed(11)
    torch.manual_seed(11)
    enc = prepare(encoder(), gen)
    proj = prepare(mlp([FEAT, HIDDEN, DIM]), gen)
    g = Golden("simclr", {"temperature": T, "proj_hidden": HIDDEN, "proj_dim": DIM}, STEPS, lr=0.05)
    g.state("", enc)
    g.state("projector.", proj)
    f64(enc, proj)
    for k in range(STEPS):
        v = views(gen, B, [12, 12])
        z = F.normalize(proj(enc(torch.cat(v).double())), dim=1)
        loss = ntxent(z, T)
        loss.backward()
        g.step(k, v, loss, [("", enc), ("projector.", proj)])
        g.after(k, "", enc)
        g.after(k, "projector.", proj)
    g.save(sys.argv[1])


if __name__ == "__main__":
    main()
