"""Golden for tests/test_methods.c: two VICReg steps on selfsup's tiny
encoder, written as the official code (facebookresearch/vicreg
main_vicreg.py, class VICReg and Projector) with its ResNet-50 swapped for
the tiny encoder and its one-device all-gather dropped. See
method_golden.py for the format.

Usage: /usr/bin/python3 tests/torch/gen_method_vicreg.py OUTDIR
"""
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, prepare, views  # noqa: E402

# Coefficients away from the defaults 25/25/1 so that the config reaches the
# loss, and a tenth of their size: at 25 the gradients reach ~50, and the
# exactly-zero gradient of a bias before BN is then float32 noise above the
# test's 1e-6 floor. SGD steps of ~5% of the weights keep step 1 well
# conditioned.
SIM, STD, COV, HIDDEN, DIM, B, STEPS, LR = 2.0, 1.5, 0.2, 24, 16, 8, 2, 2e-3


def off_diagonal(x):
    n, m = x.shape
    assert n == m
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def Projector(mlp_spec):
    layers = []
    f = list(map(int, mlp_spec.split("-")))
    for i in range(len(f) - 2):
        layers.append(nn.Linear(f[i], f[i + 1]))
        layers.append(nn.BatchNorm1d(f[i + 1]))
        layers.append(nn.ReLU(True))
    layers.append(nn.Linear(f[-2], f[-1], bias=False))
    return nn.Sequential(*layers)


class VICReg(nn.Module):
    def __init__(self, mlp_spec, batch_size, sim_coeff, std_coeff, cov_coeff):
        super().__init__()
        self.batch_size = batch_size
        self.sim_coeff, self.std_coeff, self.cov_coeff = sim_coeff, std_coeff, cov_coeff
        self.num_features = int(mlp_spec.split("-")[-1])
        self.backbone = encoder()
        self.projector = Projector(mlp_spec)

    def forward(self, x, y):
        x = self.projector(self.backbone(x))
        y = self.projector(self.backbone(y))

        repr_loss = F.mse_loss(x, y)

        x = x - x.mean(dim=0)
        y = y - y.mean(dim=0)

        std_x = torch.sqrt(x.var(dim=0) + 0.0001)
        std_y = torch.sqrt(y.var(dim=0) + 0.0001)
        std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2

        cov_x = (x.T @ x) / (self.batch_size - 1)
        cov_y = (y.T @ y) / (self.batch_size - 1)
        cov_loss = off_diagonal(cov_x).pow_(2).sum().div(
            self.num_features
        ) + off_diagonal(cov_y).pow_(2).sum().div(self.num_features)

        return self.sim_coeff * repr_loss + self.std_coeff * std_loss + self.cov_coeff * cov_loss


def main():
    gen = torch.Generator().manual_seed(17)
    torch.manual_seed(17)
    model = VICReg("%d-%d-%d-%d" % (FEAT, HIDDEN, HIDDEN, DIM), B, SIM, STD, COV)
    prepare(model, gen)
    with torch.no_grad():
        # half of the embedding dimensions above std 1, so that the variance
        # hinge is inactive there (its relu has both branches)
        model.projector[-1].weight[: DIM // 2] *= 4
    g = Golden("vicreg", {"sim_coeff": SIM, "std_coeff": STD, "cov_coeff": COV,
                          "proj_hidden": HIDDEN, "proj_dim": DIM}, STEPS, lr=LR)
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
