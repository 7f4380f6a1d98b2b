"""Golden values for tests/test_losses.c: the SSL objectives of src/nn/graph_loss.c
(cosine, soft cross-entropy, MoCo InfoNCE with a queue, Barlow Twins, VICReg)
and GELU, written as the reference code of each method computes them.

Usage: /usr/bin/python3 tests/torch/gen_losses.py OUTDIR   (writes OUTDIR/losses.safetensors)

Inputs are float32 draws (seeded); losses and gradients are computed in float64
by autograd from those float32 values, so they are the exact answer the C
float32 code is compared with. Keys, per case <c>:
  <c>.in0, <c>.in1       the op's tensor inputs (float32)
  <c>.extra              soft_ce targets (N, K) or the MoCo queue (K, D)
  <c>.hp                 hyperparameters (float32), in the C call's order
  <c>.loss (1,)          the loss; <c>.parts (3,) VICReg's unweighted terms
  <c>.grad0, <c>.grad1   d loss / d input, only for inputs that take a gradient
GELU: gelu.in0, gelu.r (weights), gelu.out and gelu.grad0 = d sum(r * gelu(x)) / dx.
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402


def f32(x):
    return float(np.float32(x))


def off_diagonal(x):
    # facebookresearch/barlowtwins and /vicreg
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def cosine_loss(p, z, a, b):
    cos = (F.normalize(p, dim=1, eps=1e-12) * F.normalize(z, dim=1, eps=1e-12)).sum(1)
    return a + b * cos.mean()


def soft_ce(logits, targets, T):
    return torch.sum(-targets * F.log_softmax(logits / T, dim=-1), dim=-1).mean()


def infonce(q, k, queue, T):
    # MoCo (facebookresearch/moco, builder.py); k is the momentum encoder's output
    k = k.detach()
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue.t()])
    logits = torch.cat([l_pos, l_neg], dim=1) / T
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, labels)


def barlow(z1, z2, lam):
    # facebookresearch/barlowtwins main.py, with batch_size = N and one process
    N, D = z1.shape
    bn = torch.nn.BatchNorm1d(D, affine=False).double().train()
    c = bn(z1).T @ bn(z2)
    c = c / N
    on_diag = torch.diagonal(c).add_(-1).pow_(2).sum()
    off_diag = off_diagonal(c).pow_(2).sum()
    return on_diag + lam * off_diag


def vicreg(x, y, sim, var, cov, eps):
    # facebookresearch/vicreg main_vicreg.py, with batch_size = N and one process
    N, D = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + eps)
    std_y = torch.sqrt(y.var(dim=0) + eps)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (N - 1)
    cov_y = (y.T @ y) / (N - 1)
    cov_loss = off_diagonal(cov_x).pow_(2).sum().div(D) + off_diagonal(cov_y).pow_(2).sum().div(D)
    loss = sim * repr_loss + var * std_loss + cov * cov_loss
    return loss, torch.stack([repr_loss, std_loss, cov_loss]), std_x, std_y


def run(t, name, fn, inputs, grads, hp, extra=None):
    """Evaluates fn(*inputs64) in float64; stores inputs, loss and gradients."""
    xs = [x.double().requires_grad_(g) for x, g in zip(inputs, grads)]
    out = fn(*xs)
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    for i, (x, g) in enumerate(zip(inputs, grads)):
        t["%s.in%d" % (name, i)] = x
        if g:
            t["%s.grad%d" % (name, i)] = xs[i].grad
    t[name + ".loss"] = loss.detach().reshape(1)
    t[name + ".hp"] = torch.tensor([f32(h) for h in hp], dtype=torch.float32)
    if extra is not None:
        t[name + ".extra"] = extra
    return out


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(2024)
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t = {}

    # cosine: BYOL (both inputs take a gradient) and SimSiam (z detached)
    a, b = f32(2.0), f32(-2.0)
    run(t, "cos_byol", lambda p, z: cosine_loss(p, z, a, b), [randn(5, 7), randn(5, 7)],
        [True, True], [a, b])
    p = randn(6, 16)
    z = p + 0.7 * randn(6, 16)
    run(t, "cos_simsiam", lambda p, z: cosine_loss(p, z, 0.0, -1.0), [p, z], [True, False],
        [0.0, -1.0])

    # soft cross-entropy: DINO-like sharp teacher at T = 0.1, SwAV-like at T = 1
    T = f32(0.1)
    tgt = F.softmax(randn(5, 7) / 0.4, dim=1).float()
    run(t, "softce_dino", lambda l: soft_ce(l, tgt.double(), T), [randn(5, 7)], [True], [T],
        extra=tgt)
    T = f32(1.0)
    tgt = F.softmax(randn(4, 9), dim=1).float()
    run(t, "softce_swav", lambda l: soft_ce(l, tgt.double(), T), [2 * randn(4, 9)], [True], [T],
        extra=tgt)

    # MoCo: unit-norm q, k and queue; K = 11 and K = 0
    T = f32(0.2)
    q = F.normalize(randn(5, 7), dim=1)
    k = F.normalize(q + 0.5 * randn(5, 7), dim=1)
    queue = F.normalize(randn(11, 7), dim=1)
    run(t, "moco", lambda q, k: infonce(q, k, queue.double(), T), [q, k], [True, False],
        [T, 11], extra=queue)
    T = f32(0.07)
    run(t, "moco_k0", lambda q, k: infonce(q, k, torch.zeros(0, 7, dtype=torch.float64), T),
        [q, k], [True, False], [T, 0])

    # Barlow Twins: correlated views (diagonal of c away from 0 and 1), the
    # paper's lambda; and independent views of other scales with lambda 1
    lam = f32(0.0051)
    z1 = randn(5, 7)
    z2 = z1 + 0.6 * randn(5, 7)
    run(t, "barlow", lambda x, y: barlow(x, y, lam), [z1, z2], [True, True], [lam])
    scale = torch.linspace(0.1, 4.0, 6)
    run(t, "barlow_l1", lambda x, y: barlow(x, y, 1.0),
        [randn(8, 6) * scale + 3.0, randn(8, 6) - 1.0], [True, True], [1.0])

    # VICReg: some dimensions collapsed (std < 1, the hinge active), others
    # not; every std kept 0.1 away from the kink at 1
    sim, var, cov, eps = 25.0, 25.0, 1.0, f32(1e-4)
    for name, N, D in (("vicreg", 5, 7), ("vicreg_big", 16, 12)):
        while True:
            col = torch.where(torch.arange(D) % 3 == 0, torch.tensor(2.5), torch.tensor(0.3))
            x = randn(N, D) * col
            y = x + 0.4 * randn(N, D) * col
            s = torch.cat([x.double().var(0), y.double().var(0)]).add(eps).sqrt()
            if (s - 1).abs().min() > 0.1:
                break
        res = run(t, name, lambda x, y: vicreg(x, y, sim, var, cov, eps), [x, y], [True, True],
                  [sim, var, cov, eps])
        t[name + ".parts"] = res[1].detach()
        assert (res[2] < 1).any() and (res[2] > 1).any() and (res[3] < 1).any()

    # GELU (exact), through a weighted sum
    x = 2.5 * randn(5, 7)
    r = randn(5, 7)
    xd = x.double().requires_grad_(True)
    y = torch.nn.GELU()(xd)
    (y * r.double()).sum().backward()
    t["gelu.in0"], t["gelu.r"], t["gelu.out"], t["gelu.grad0"] = x, r, y.detach(), xd.grad

    save(os.path.join(out, "losses.safetensors"), t,
         {"generator": "tests/torch/gen_losses.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
