"""Golden for tests/test_methods.c: three DINO steps (Caron et al. 2021) as
facebookresearch/dino main_dino.py trains, on selfsup's tiny encoder with
multi-crop (2 global 12x12 + 2 local 6x6 views). See method_golden.py for
the format.

Covers: student backbone BN per resolution (MultiCropWrapper), the DINO head
(GELU MLP, L2-normalize, weight-normalized last layer with g fixed to 1),
the teacher on the global crops only, centering (center starts at 0 and
moves after every step), the teacher temperature warm-up (linspace(0.04,
0.07, 3) over epochs 0-2 at one step per epoch), the last layer frozen in
epoch 0 only, and the EMA teacher with a cosine momentum (base 0.9 over 6
steps, so the schedule is visible). A second golden, method_dino_bn, has
BatchNorm after the head's hidden layers (DINOHead use_bn=True, selfsup's
--head-bn 1), the teacher's head normalising its own batch.

Usage: /usr/bin/python3 tests/torch/gen_method_dino.py OUTDIR
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from method_golden import FEAT, Golden, encoder, f64, prepare, views  # noqa: E402

STUDENT_T = 0.1
WARMUP_T, TEACHER_T, WARMUP_T_EPOCHS = 0.04, 0.07, 3
HIDDEN, BOTTLENECK, OUT, B, STEPS = 24, 12, 20, 8, 3
SIZES = [12, 12, 6, 6]          # 2 global + 2 local crops
SPE, TOTAL = 1, 6               # steps per epoch, total steps (6 epochs)
BASE_MOMENTUM, CENTER_MOMENTUM, FREEZE_LAST_LAYER = 0.9, 0.9, 1


class DINOHead(nn.Module):
    """main_dino.py's DINOHead(use_bn, norm_last_layer=True, nlayers=3)."""

    def __init__(self, in_dim, out_dim, hidden_dim, bottleneck_dim, use_bn=False):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden_dim)]
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, hidden_dim))
        if use_bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)
        self.last_layer.weight_g.requires_grad = False

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class MultiCropWrapper(nn.Module):
    """One backbone pass per run of equal-resolution crops, then the head on
    all features."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        idx_crops = torch.cumsum(torch.unique_consecutive(
            torch.tensor([inp.shape[-1] for inp in x]), return_counts=True)[1], 0)
        start_idx, outs = 0, []
        for end_idx in idx_crops:
            outs.append(self.backbone(torch.cat(x[start_idx:end_idx])))
            start_idx = end_idx
        return self.head(torch.cat(outs))


class DINOLoss(nn.Module):
    """main_dino.py's, on one process."""

    def __init__(self, out_dim, ncrops, warmup_teacher_temp, teacher_temp,
                 warmup_teacher_temp_epochs, nepochs, student_temp=0.1, center_momentum=0.9):
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.teacher_temp_schedule = np.concatenate((
            np.linspace(warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs),
            np.ones(nepochs - warmup_teacher_temp_epochs) * teacher_temp))

    def forward(self, student_output, teacher_output, epoch):
        student_out = student_output / self.student_temp
        student_out = student_out.chunk(self.ncrops)
        temp = self.teacher_temp_schedule[epoch]
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)
        total_loss = 0
        n_loss_terms = 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        self.update_center(teacher_output)
        return total_loss

    @torch.no_grad()
    def update_center(self, teacher_output):
        batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
        self.center = self.center * self.center_momentum + batch_center * (1 - self.center_momentum)


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep):
    """utils.cosine_scheduler without warm-up."""
    iters = np.arange(epochs * niter_per_ep)
    return final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))


def cancel_gradients_last_layer(epoch, model, freeze_last_layer):
    if epoch >= freeze_last_layer:
        return
    for n, p in model.named_parameters():
        if "last_layer" in n:
            p.grad = None


def main(outdir, use_bn=False):
    gen = torch.Generator().manual_seed(31)
    torch.manual_seed(31)
    enc = prepare(encoder(), gen)
    head = DINOHead(FEAT, OUT, HIDDEN, BOTTLENECK, use_bn)
    # The test replays from whatever state this file holds, so the MLP starts
    # from nn.Linear's default init instead of DINO's std 0.02: on this tiny
    # encoder the 0.02 init lets one step's bias update dominate the head, so
    # every sample lands on one prototype and the one-hot targets would hide
    # the centering and the temperature.
    for layer in head.mlp:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    student = MultiCropWrapper(enc, head)
    teacher = MultiCropWrapper(encoder(), DINOHead(FEAT, OUT, HIDDEN, BOTTLENECK, use_bn))
    teacher.load_state_dict(student.state_dict())  # BN statistics included
    for p in teacher.parameters():
        p.requires_grad = False
    nepochs = TOTAL // SPE
    dino_loss = DINOLoss(OUT, len(SIZES), WARMUP_T, TEACHER_T, WARMUP_T_EPOCHS, nepochs,
                         STUDENT_T, CENTER_MOMENTUM)
    momentum_schedule = cosine_scheduler(BASE_MOMENTUM, 1, nepochs, SPE)
    config = {"temperature": STUDENT_T, "proj_hidden": HIDDEN, "bottleneck_dim": BOTTLENECK,
              "out_dim": OUT, "base_momentum": BASE_MOMENTUM, "teacher_temp": TEACHER_T,
              "warmup_teacher_temp": WARMUP_T, "warmup_teacher_temp_epochs": WARMUP_T_EPOCHS,
              "center_momentum": CENTER_MOMENTUM, "freeze_last_layer_epochs": FREEZE_LAST_LAYER,
              "global_crops": 2, "local_crops": len(SIZES) - 2}
    if use_bn:
        config["head_bn"] = 1
    # A small lr, as for SwAV: 6x6 crops make layer4 1x1, where one ReLU
    # flipped by float32 rounding moves whole-image gradients by percents.
    g = Golden("dino", config, STEPS, lr=0.002, total_steps=TOTAL, steps_per_epoch=SPE)
    g.state("", enc)
    g.state("head.", head)
    g.state("teacher.", teacher.backbone)
    g.state("teacher.head.", teacher.head)
    g.tensor("center", dino_loss.center)
    f64(student, teacher, dino_loss)
    for it in range(STEPS):
        epoch = it // SPE
        v = views(gen, B, SIZES)
        x = [t.double() for t in v]
        teacher_output = teacher(x[:2])  # only the 2 global views pass through the teacher
        student_output = student(x)
        loss = dino_loss(student_output, teacher_output, epoch)
        loss.backward()
        cancel_gradients_last_layer(epoch, student, FREEZE_LAST_LAYER)
        g.step(it, v, loss, [("", enc), ("head.", head)])
        with torch.no_grad():
            m = momentum_schedule[it]
            for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
        g.after(it, "", enc)
        g.after(it, "head.", head)
        g.after(it, "teacher.", teacher.backbone)
        g.after(it, "teacher.head.", teacher.head)
        g.t["step%d.after.center" % it] = dino_loss.center.clone()
    g.save(outdir, "dino_bn" if use_bn else None)


if __name__ == "__main__":
    main(sys.argv[1])
    main(sys.argv[1], use_bn=True)
