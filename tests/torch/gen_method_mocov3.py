"""Golden for tests/test_methods.c: three MoCo v3 steps on selfsup's tiny
encoder (a ResNet: MoCo_ResNet's heads), written after
facebookresearch/moco-v3 (moco/builder.py MoCo and MoCo_ResNet,
main_moco.py's train loop with --moco-m-cos, one process). See
method_golden.py for the format.

Per step k (main_moco.py): m_k = adjust_moco_momentum(epoch + i /
iters_per_epoch); MoCo.forward(x1, x2, m_k): q1, q2 = predictor(base(x)),
each view its own pass; then without gradient the momentum update with m_k
and k1, k2 = momentum_encoder(x); loss = ctr(q1, k2) + ctr(q2, k1) with
ctr(q, k) = CE(normalize(q) normalize(k)^T / T, arange(N)) * 2T. The
base encoder is the backbone with its fc replaced by the projector.

The update that step k+1's forward starts with (m_{k+1}, the weights step
k produced) is the last change to the momentum encoder before step k+1
reads it; selfsup makes it at the end of step k, so the golden records the
momentum encoder's "after step k" right after that update (run below at
the end of each step, and not again at the start of the next forward). At
step 0 the update is the identity (the momentum encoder is a copy); it is
run anyway, as the official forward does.

The schedule: total_steps 4 in 2 epochs of 2 steps, base 0.8, so
m = 0.8, 0.829, 0.9, 0.971 at steps 0..3: a constant momentum or one
step off is caught. T = 0.7 (not the default 0.2, and 2T != 1) so that
the temperature and the 2T factor are both seen.

B = 32, lr 0.02, seed 1: the gradients of these tiny networks react to
their weights some 100-fold (a 1e-7 relative change of the state moves
step 1's gradients by ~1e-5), and with B = 8 that gain can reach 1e5 by
step 2, so float32 (PyTorch's as well as selfsup's) drifts past the test's
tolerances; BN over 32 samples keeps it near 100-400 per step, and this
seed and rate leave selfsup's float32 replay within a tenth of them.

Usage: /usr/bin/python3 tests/torch/gen_method_mocov3.py OUTDIR
"""
import copy
import math
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, views  # noqa: E402

T, PH, PD, QH, B, BASE, STEPS = 0.7, 24, 16, 20, 32, 0.8, 3
EPOCHS, ITERS = 2, 2  # total_steps 4


def build_mlp(num_layers, input_dim, mlp_dim, output_dim, last_bn=True):
    """builder.py MoCo._build_mlp."""
    mlp = []
    for l in range(num_layers):
        dim1 = input_dim if l == 0 else mlp_dim
        dim2 = output_dim if l == num_layers - 1 else mlp_dim
        mlp.append(nn.Linear(dim1, dim2, bias=False))
        if l < num_layers - 1:
            mlp.append(nn.BatchNorm1d(dim2))
            mlp.append(nn.ReLU(inplace=True))
        elif last_bn:
            mlp.append(nn.BatchNorm1d(dim2, affine=False))
    return nn.Sequential(*mlp)


def randomize_bn(module, gen):
    """BN affine params (where there are) and running stats away from 1/0,
    as method_golden.prepare, which needs affine BN."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                if m.affine:
                    m.weight.copy_(1 + 0.2 * torch.randn(c, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(1 + 0.3 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(3)
    return module


class Base(nn.Module):
    """torchvision ResNet with its fc replaced by the projector
    (MoCo_ResNet): parameters backbone first, then fc."""

    def __init__(self, backbone, fc):
        super().__init__()
        self.backbone, self.fc = backbone, fc

    def forward(self, x):
        return self.fc(self.backbone(x))


def adjust_moco_momentum(epoch, moco_m, epochs):
    """main_moco.py."""
    return 1. - 0.5 * (1. + math.cos(math.pi * epoch / epochs)) * (1. - moco_m)


@torch.no_grad()
def update_momentum_encoder(base, mom, m):
    """MoCo._update_momentum_encoder: parameters only."""
    for param_b, param_m in zip(base.parameters(), mom.parameters()):
        param_m.data = param_m.data * m + param_b.data * (1. - m)


def contrastive_loss(q, k):
    """MoCo.contrastive_loss in one process (rank 0, no gather)."""
    q = nn.functional.normalize(q, dim=1)
    k = nn.functional.normalize(k, dim=1)
    logits = torch.einsum('nc,mc->nm', [q, k]) / T
    N = logits.shape[0]
    labels = torch.arange(N, dtype=torch.long)
    return nn.CrossEntropyLoss()(logits, labels) * (2 * T)


def main():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    backbone = randomize_bn(encoder(), gen)
    fc = randomize_bn(build_mlp(2, FEAT, PH, PD), gen)
    predictor = randomize_bn(build_mlp(2, PD, QH, PD, False), gen)
    base = Base(backbone, fc)
    # The momentum encoder is built anew and takes the base parameters; its
    # BN running statistics are its own (randomized apart to tell them).
    mom = copy.deepcopy(base)
    randomize_bn(mom, gen)
    for param_b, param_m in zip(base.parameters(), mom.parameters()):
        param_m.data.copy_(param_b.data)
        param_m.requires_grad = False

    cfg = {"temperature": T, "proj_hidden": PH, "proj_dim": PD, "pred_hidden": QH,
           "base_momentum": BASE}
    g = Golden("mocov3", cfg, STEPS, lr=0.02, total_steps=EPOCHS * ITERS, steps_per_epoch=ITERS)
    g.state("", backbone)
    g.state("projector.", fc)
    g.state("predictor.", predictor)
    g.state("teacher.", mom.backbone)
    g.state("teacher.projector.", mom.fc)
    f64(base, predictor, mom)

    def moco_m(step):
        epoch, i = divmod(step, ITERS)
        return adjust_moco_momentum(epoch + i / ITERS, BASE, EPOCHS)

    for k in range(STEPS):
        v = views(gen, B, [12, 12])
        x1, x2 = v[0].double(), v[1].double()
        # MoCo.forward(x1, x2, m_k)
        q1 = predictor(base(x1))
        q2 = predictor(base(x2))
        with torch.no_grad():
            if k == 0:  # later steps' updates ran at the end of the step before
                update_momentum_encoder(base, mom, moco_m(k))
            k1 = mom(x1)
            k2 = mom(x2)
        loss = contrastive_loss(q1, k2) + contrastive_loss(q2, k1)
        loss.backward()
        g.step(k, v, loss, [("", backbone), ("projector.", fc), ("predictor.", predictor)])
        # the first thing step k+1's forward does after its queries
        update_momentum_encoder(base, mom, moco_m(k + 1))
        g.after(k, "", backbone)
        g.after(k, "projector.", fc)
        g.after(k, "predictor.", predictor)
        g.after(k, "teacher.", mom.backbone)
        g.after(k, "teacher.projector.", mom.fc)
    g.save(sys.argv[1])


if __name__ == "__main__":
    main()
