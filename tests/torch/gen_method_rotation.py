"""Golden for tests/test_methods.c: three RotNet steps (Gidaris et al. 2018)
on selfsup's tiny encoder, written after the official FeatureLearningRotNet
data loader: each image in its four rotations 0/90/180/270 degrees, an
image's four consecutive in the batch (torch.stack(..., dim=1).view), labels
0..3 repeated, one network pass, a linear classifier on the features
(selfsup's default head), cross-entropy. Rotations are np.rot90's
(counter-clockwise), here torch.rot90 over (H, W). See method_golden.py for
the format; the method's random seed ("pretext_seed") is saved but unused.

Usage: /usr/bin/python3 tests/torch/gen_method_rotation.py OUTDIR
"""
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, mlp, prepare, views  # noqa: E402

B, S, STEPS = 4, 10, 3
SEED = 2  # torch's; one whose ReLU inputs keep MARGIN from 0 (see ReluMargin)
MARGIN = 1e-5


class ReluMargin:
    """The smallest |input| of the ReLUs of some modules during a step. A
    float32 replay computes those inputs to ~1e-6; one within that of 0 can
    flip its ReLU and change a gradient by a finite amount, so the golden
    would test rounding, not the method: check() refuses such a seed (the
    pretext goldens' tiny patches make near-zero inputs common)."""

    def __init__(self, *modules):
        self.low = float("inf")
        for m in modules:
            for r in m.modules():
                if isinstance(r, torch.nn.ReLU):
                    r.register_forward_pre_hook(self._hook)

    def _hook(self, mod, inp):
        self.low = min(self.low, float(inp[0].detach().abs().min()))

    def check(self, step):
        if self.low < MARGIN:
            raise SystemExit("step %d: a ReLU input is %.2e from 0 (< %g): choose another seed"
                             % (step, self.low, MARGIN))
        self.low = float("inf")


def rotnet_batch(x):
    """(B, C, S, S) -> (4B, C, S, S) and labels, as the official loader + collate."""
    rot = torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], dim=1)
    return rot.reshape(-1, *x.shape[1:]), torch.arange(4).repeat(x.shape[0])


def main():
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    enc = prepare(encoder(), gen)
    head = prepare(mlp([FEAT, 4]), gen)
    g = Golden("rotation", {"head_hidden": 0, "view_size": 0}, STEPS, lr=0.1, start_step=2)
    g.state("", enc)
    g.state("head.", head)
    g.tensor("pretext_seed", torch.tensor(77, dtype=torch.int64))
    f64(enc, head)
    margin = ReluMargin(enc, head)
    for k in range(STEPS):
        v = views(gen, B, [S])
        x, y = rotnet_batch(v[0].double())
        loss = F.cross_entropy(head(enc(x)), y)
        loss.backward()
        margin.check(k)
        g.step(k, v, loss, [("", enc), ("head.", head)])
        g.after(k, "", enc)
        g.after(k, "head.", head)
    g.save(sys.argv[1])


if __name__ == "__main__":
    main()
