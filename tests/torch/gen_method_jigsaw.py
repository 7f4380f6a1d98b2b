"""Golden for tests/test_methods.c: three jigsaw steps (Noroozi & Favaro
2016, the context-free network) on selfsup's tiny encoder, and the
permutation set tests/test_pretext.c checks selfsup's against.

A puzzle, after the reference PyTorch code's data loader (bbrattoli's
JigsawPuzzlePytorch): the view is split into 3x3 cells, each cell gives a
tile at a random position inside it, each tile is normalized on its own
(mean 0, std 1 per channel, unbiased std, a flat tile keeps std 1), and the
tiles are shown in the order of permutation `label`: position t shows cell
perms[label][t]. The network: the 9B tiles through the shared encoder in one
pass, each puzzle's 9 features concatenated in position order (fc7's input),
an MLP (hidden 24, BN) to the permutation logits, cross-entropy.

The random choices are selfsup's: per image b at step k a stream
ssl_rng_derive(pretext_seed, k, b) (reimplemented in selfsup_rng.py)
draws the permutation index, then each cell's (y, x) offset in row-major
cell order. Geometry for a side-S view: cells of S // 3 px, tiles of
cell * 64 // 75 px (the paper's 64 in 75), offsets 0..cell - tile.

Permutation set: greedy, as the paper's Algorithm 1 but adding the
permutation of maximal minimum Hamming distance to the chosen ones (ties:
maximal summed distance, then the first in lexicographic order), starting
from index Xoshiro(2016).below(9!). jigsaw_perms.safetensors holds the set
of 100 (and its min / mean pairwise distance) for tests/test_pretext.c.

Usage: /usr/bin/python3 tests/torch/gen_method_jigsaw.py OUTDIR
"""
import itertools
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402
from gen_method_rotation import ReluMargin  # noqa: E402
from selfsup_rng import Xoshiro, derive  # noqa: E402
from method_golden import FEAT, Golden, encoder, f64, mlp, prepare, views  # noqa: E402

B, S, P, HIDDEN, STEPS, SEED = 8, 24, 10, 24, 3, 0x5EED
TORCH_SEED = 4  # one whose ReLU inputs keep their margin from 0 (ReluMargin)
PERM_SEED = 2016


def permutation_set(n, seed=PERM_SEED):
    allp = np.array(list(itertools.permutations(range(9))), dtype=np.int8)
    taken = np.zeros(len(allp), bool)
    dmin = np.full(len(allp), 99, np.int64)
    dsum = np.zeros(len(allp), np.int64)
    idx = Xoshiro(seed).below(len(allp))
    chosen = []
    for _ in range(n):
        chosen.append(idx)
        taken[idx] = True
        d = (allp != allp[idx]).sum(1)
        dmin = np.minimum(dmin, d)
        dsum += d
        score = dmin * 100000 + dsum
        score[taken] = -1
        idx = int(np.argmax(score))
    return allp[chosen].astype(np.int64)


def hamming_stats(perms):
    d = (perms[:, None, :] != perms[None, :, :]).sum(2)
    off = d[~np.eye(len(perms), dtype=bool)]
    return int(off.min()), float(off.mean())


def tile_norm(t):
    c = t.shape[0]
    m = t.reshape(c, -1).mean(1)
    s = t.reshape(c, -1).std(1)
    s[s * s <= 1e-12] = 1
    return (t - m.view(c, 1, 1)) / s.view(c, 1, 1)


def puzzles(x, perms, seed, step):
    """(B, C, S, S) -> (9B, C, t, t) tiles in shuffled order and labels (B)."""
    n, side = x.shape[0], x.shape[2]
    cell = side // 3
    origin = (side - 3 * cell) // 2
    t = cell * 64 // 75
    out, labels = [], []
    for b in range(n):
        r = derive(seed, step, b)
        label = r.below(len(perms))
        offs = [(r.below(cell - t + 1), r.below(cell - t + 1)) for _ in range(9)]
        tiles = []
        for k in range(9):
            y = origin + (k // 3) * cell + offs[k][0]
            xx = origin + (k % 3) * cell + offs[k][1]
            tiles.append(tile_norm(x[b, :, y:y + t, xx:xx + t]))
        out += [tiles[perms[label][p]] for p in range(9)]
        labels.append(label)
    return torch.stack(out), torch.tensor(labels)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    p100 = permutation_set(100)
    mn, mean = hamming_stats(p100)
    save(os.path.join(out, "jigsaw_perms.safetensors"), {"perms100": p100},
         {"min_hamming": mn, "mean_hamming": "%.6f" % mean})
    print("100 permutations: min Hamming distance %d, mean %.4f" % (mn, mean))

    gen = torch.Generator().manual_seed(TORCH_SEED)
    torch.manual_seed(TORCH_SEED)
    enc = prepare(encoder(), gen)
    head = prepare(mlp([9 * FEAT, HIDDEN, P]), gen)
    perms = permutation_set(P)
    g = Golden("jigsaw", {"permutations": P, "head_hidden": HIDDEN, "view_size": 0}, STEPS,
               lr=0.1, start_step=4)
    g.state("", enc)
    g.state("head.", head)
    g.tensor("pretext_seed", torch.tensor(SEED, dtype=torch.int64))
    g.tensor("permutations", torch.tensor(perms, dtype=torch.float32))
    f64(enc, head)
    margin = ReluMargin(enc, head)
    for k in range(STEPS):
        v = views(gen, B, [S])
        tiles, y = puzzles(v[0].double(), perms, SEED, 4 + k)
        feats = enc(tiles).view(B, 9 * FEAT)  # each puzzle's 9 tile features, position order
        loss = F.cross_entropy(head(feats), y)
        loss.backward()
        margin.check(k)
        g.step(k, v, loss, [("", enc), ("head.", head)])
        g.after(k, "", enc)
        g.after(k, "head.", head)
    g.save(out)


if __name__ == "__main__":
    main()
