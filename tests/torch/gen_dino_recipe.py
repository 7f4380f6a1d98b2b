"""Golden for tests/test_dino_vit_recipe.c: DINO's ViT optimizer recipe as
facebookresearch/dino main_dino.py runs it: the weight-decay cosine schedule
(utils.cosine_scheduler), per-parameter gradient clipping
(utils.clip_gradients) and AdamW steps where only the regularized param group
takes the scheduled weight decay.

Usage: /usr/bin/python3 tests/torch/gen_dino_recipe.py OUTDIR
       (writes OUTDIR/dino_recipe.safetensors)

Keys:
  wd_schedule (15,)        cosine_scheduler(0.04, 0.4, epochs=3, niter_per_ep=5)
  lr_schedule (20,)        cosine_scheduler(LR, 1e-6, epochs=4, niter_per_ep=5,
                           warmup_epochs=1): main_dino.py's lr with min_lr
  clip.grad.<i>, clip.clipped.<i> (i = 0..4): gradients before and after
                           clip_gradients(model, 3.0); clip.norms (5,) its result
  adamw.init.<p>           p = weight (6, 5) regularized, bias (6,) not,
                           last_layer (4, 5) regularized, its grad None (frozen,
                           cancel_gradients_last_layer) on steps 0 and 1
  adamw.grad.<k>.<p>       raw gradient of step k = 0..3 (before clipping)
  adamw.clipped.<k>.<p>    after clip_gradients
  adamw.step<k>.<p>        params after step k = 1..4
  adamw.lr (4,), adamw.wd (4,)  each step's lr (float32 values, as C gets them)
                           and weight decay (from cosine_scheduler(0.04, 0.4, 2, 2))
Every input is a float32 value; the schedules are computed in float64 from them.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402

CLIP = 3.0
FREEZE_STEPS = 2
WD, WD_END = float(np.float32(0.04)), float(np.float32(0.4))
LR, MIN_LR = float(np.float32(1e-3)), float(np.float32(1e-6))


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0,
                     start_warmup_value=0):
    """facebookresearch/dino utils.py, cosine_scheduler (verbatim)."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)

    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))

    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def clip_gradients(model, clip):
    """facebookresearch/dino utils.py, clip_gradients (verbatim)."""
    norms = []
    for name, p in model.named_parameters():
        if p.grad is not None:
            param_norm = p.grad.data.norm(2)
            norms.append(param_norm.item())
            clip_coef = clip / (param_norm + 1e-6)
            if clip_coef < 1:
                p.grad.data.mul_(clip_coef)
    return norms


def get_params_groups(model):
    """facebookresearch/dino utils.py, get_params_groups (verbatim)."""
    regularized = []
    not_regularized = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # we do not regularize biases nor Norm parameters
        if name.endswith(".bias") or len(param.shape) == 1:
            not_regularized.append(param)
        else:
            regularized.append(param)
    return [{'params': regularized}, {'params': not_regularized, 'weight_decay': 0.}]


class Params(nn.Module):
    """A model that is only its parameters, named as given."""

    def __init__(self, tensors):
        super().__init__()
        for name, t in tensors:
            self.register_parameter(name, nn.Parameter(t.clone()))


def with_norm(g, shape, norm):
    t = torch.randn(shape, generator=g, dtype=torch.float32)
    return (t * (norm / float(t.double().norm()))).float()


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    t = {"wd_schedule": torch.tensor(cosine_scheduler(WD, WD_END, 3, 5), dtype=torch.float64),
         "lr_schedule": torch.tensor(cosine_scheduler(LR, MIN_LR, 4, 5, warmup_epochs=1),
                                     dtype=torch.float64)}
    g = torch.Generator().manual_seed(6)

    # Clipping: norms above and below the clip, a zero gradient, one just
    # below 3 (coefficient just over 1: untouched) and one large parameter
    # (the C code sums big ones on several threads).
    shapes_norms = [((7, 3), 5.0), ((11,), 0.5), ((4, 2), 0.0), ((3, 3), 2.9999),
                    ((40000,), 17.0)]
    grads = [with_norm(g, s, n) if n > 0 else torch.zeros(s) for s, n in shapes_norms]
    model = Params([("p%d" % i, torch.zeros(s)) for i, (s, _) in enumerate(shapes_norms)])
    for p, gr in zip(model.parameters(), grads):
        p.grad = gr.clone()
    norms = clip_gradients(model, CLIP)
    for i, (p, gr) in enumerate(zip(model.parameters(), grads)):
        t["clip.grad.%d" % i] = gr
        t["clip.clipped.%d" % i] = p.grad.detach().clone()
    t["clip.norms"] = torch.tensor(norms, dtype=torch.float64)

    # AdamW as main_dino.py's train_one_epoch: per iteration the schedules set
    # each group's lr and group 0's weight decay, then backward,
    # clip_gradients, optimizer.step().
    steps = 4
    init = [("weight", torch.randn(6, 5, generator=g)), ("bias", torch.randn(6, generator=g) * 0.1),
            ("last_layer", torch.randn(4, 5, generator=g))]
    model = Params(init)
    groups = get_params_groups(model)
    assert len(groups[0]["params"]) == 2 and len(groups[1]["params"]) == 1
    opt = torch.optim.AdamW(groups, lr=0.0, foreach=False)  # betas (0.9, 0.999), eps 1e-8
    lr = [float(np.float32(x)) for x in cosine_scheduler(1e-2, 1e-6, 2, 2, warmup_epochs=1)]
    lr[0] = float(np.float32(5e-3))  # linspace's first warm-up value is 0: no step
    wd = cosine_scheduler(WD, WD_END, 2, 2)
    # weight gradients above the clip on steps 0 and 2, below on 1 and 3
    wnorm, bnorm = [4.0, 1.0, 8.0, 2.0], [0.3, 5.0, 0.2, 0.4]
    for name, v in init:
        t["adamw.init." + name] = v
    for it in range(steps):
        for i, param_group in enumerate(opt.param_groups):
            param_group["lr"] = lr[it]
            if i == 0:  # only the first group is regularized
                param_group["weight_decay"] = wd[it]
        gw = with_norm(g, (6, 5), wnorm[it])
        gb = with_norm(g, (6,), bnorm[it])
        gl = with_norm(g, (4, 5), 2.0)
        model.weight.grad, model.bias.grad = gw.clone(), gb.clone()
        model.last_layer.grad = gl.clone()
        clip_gradients(model, CLIP)
        t["adamw.grad.%d.weight" % it], t["adamw.grad.%d.bias" % it] = gw, gb
        t["adamw.grad.%d.last_layer" % it] = gl
        t["adamw.clipped.%d.weight" % it] = model.weight.grad.detach().clone()
        t["adamw.clipped.%d.bias" % it] = model.bias.grad.detach().clone()
        t["adamw.clipped.%d.last_layer" % it] = model.last_layer.grad.detach().clone()
        if it < FREEZE_STEPS:  # main_dino.py: cancel_gradients_last_layer after the clip
            model.last_layer.grad = None
        opt.step()
        for name, _ in init:
            t["adamw.step%d.%s" % (it + 1, name)] = getattr(model, name).detach().clone()
    t["adamw.lr"] = torch.tensor(lr, dtype=torch.float32)
    t["adamw.wd"] = torch.tensor(wd, dtype=torch.float64)
    assert not math.isclose(wd[0], wd[-1])
    save(os.path.join(out, "dino_recipe.safetensors"), t,
         {"generator": "tests/torch/gen_dino_recipe.py", "torch": torch.__version__})


if __name__ == "__main__":
    main()
