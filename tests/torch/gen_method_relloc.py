"""Golden for tests/test_methods.c: three steps of relative patch location
(Doersch et al. 2015) on selfsup's tiny encoder.

A pair: the view's 3x3 grid of cells; the centre cell's patch and the patch
of one of its 8 neighbours, numbered in row-major order around the centre
(0 1 2 / 3 . 4 / 5 6 7, the paper's figure 2) - the label. Both patches go
through the shared encoder (all 2B patches in one pass), their features are
concatenated centre first (the paper's late fusion after fc6), an MLP
(hidden 16, BN) gives the 8 logits, cross-entropy.

The random choices are selfsup's: per image b at step k a stream
ssl_rng_derive(pretext_seed, k, b) (reimplemented in selfsup_rng.py)
draws the neighbour, then the centre's and the neighbour's (y, x) offsets.
Geometry for a side-S view (the paper's 96-px patches, 48-px gap, jitter
up to 7 px on a 144-px cell, scaled): cells of S // 3 px, patches of
2 * cell // 3, the gap between patches never below round(34/48 of the free
cell - patch pixels), patches centred in their cells. Grayscale images, so
no colour dropping.

Usage: /usr/bin/python3 tests/torch/gen_method_relloc.py OUTDIR
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_method_rotation import ReluMargin  # noqa: E402
from selfsup_rng import derive  # noqa: E402
from method_golden import FEAT, Golden, encoder, f64, mlp, prepare, views  # noqa: E402

B, S, HIDDEN, STEPS, SEED = 8, 24, 16, 3, 0xD0E
TORCH_SEED = 2  # one whose ReLU inputs keep their margin from 0 (ReluMargin)
NEIGHBOURS = [(i, j) for i in range(3) for j in range(3) if (i, j) != (1, 1)]


def pairs(x, seed, step):
    """(B, C, S, S) -> (2B, C, p, p) centre/neighbour pairs and labels (B)."""
    n, side = x.shape[0], x.shape[2]
    cell = side // 3
    origin = (side - 3 * cell) // 2
    p = 2 * cell // 3
    free = cell - p
    min_gap = int(free * 34 / 48 + 0.5)
    jitter, base = free - min_gap, min_gap // 2
    out, labels = [], []
    for b in range(n):
        r = derive(seed, step, b)
        label = r.below(8)
        for ci, cj in [(1, 1), NEIGHBOURS[label]]:
            oy, ox = r.below(jitter + 1), r.below(jitter + 1)
            y = origin + ci * cell + base + oy
            xx = origin + cj * cell + base + ox
            out.append(x[b, :, y:y + p, xx:xx + p])
        labels.append(label)
    return torch.stack(out), torch.tensor(labels)


def main():
    gen = torch.Generator().manual_seed(TORCH_SEED)
    torch.manual_seed(TORCH_SEED)
    enc = prepare(encoder(), gen)
    head = prepare(mlp([2 * FEAT, HIDDEN, 8]), gen)
    g = Golden("relloc", {"head_hidden": HIDDEN, "view_size": 0, "color_drop": 1}, STEPS,
               lr=0.1, start_step=7)
    g.state("", enc)
    g.state("head.", head)
    g.tensor("pretext_seed", torch.tensor(SEED, dtype=torch.int64))
    f64(enc, head)
    margin = ReluMargin(enc, head)
    for k in range(STEPS):
        v = views(gen, B, [S])
        x, y = pairs(v[0].double(), SEED, 7 + k)
        feats = enc(x).view(B, 2 * FEAT)  # centre features, then the neighbour's
        loss = F.cross_entropy(head(feats), y)
        loss.backward()
        margin.check(k)
        g.step(k, v, loss, [("", enc), ("head.", head)])
        g.after(k, "", enc)
        g.after(k, "head.", head)
    g.save(sys.argv[1])


if __name__ == "__main__":
    main()
