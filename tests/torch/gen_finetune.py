"""Golden values for tests/test_finetune.c: two fine-tuning steps of a tiny
ViT + linear head as MAE's main_finetune.py takes them.

Usage: /usr/bin/python3 tests/torch/gen_finetune.py OUTDIR
Writes OUTDIR/finetune.safetensors.

The ViT is tests/torch/gen_vit.py's (timm's module and parameter names) with
a head nn.Linear(D, CLASSES) named "head" as timm's. Parameter groups come
from MAE's util/lr_decay.py param_groups_lrd (copied below: no weight decay
on 1-D parameters and on cls_token / pos_embed, lr_scale =
layer_decay ** (num_layers - layer_id)); each step sets every group's lr to
lr * lr_scale as MAE's util/lr_sched.py does, then takes torch.optim.AdamW's
step (betas 0.9, 0.999, eps 1e-8) on the label-smoothed cross-entropy of
timm's LabelSmoothingCrossEntropy (copied below), which MAE uses without
mixup.

Parameters and inputs are float32 draws; the steps run in float64 (the
answer a float32 implementation approximates) and are stored as float32. A
float32 PyTorch run is compared with the float64 one under the C test's
tolerances (TOL); the script fails when it uses more than a third of them.
The key part of each attn.qkv.bias (rows D..2D) is left out of that check
(and out of the C test's exact comparison): adding a constant to every key
leaves the softmax unchanged, so its gradient is exactly 0 and AdamW turns
float rounding noise of ~1e-9 into steps of up to lr * lr_scale.

finetune.safetensors:
  init.<name>      every parameter before the first step (ViT + head)
  x (N, 1, IMG, IMG), labels (N) I32, lr (STEPS) the schedule's lr per step
  loss (STEPS)     the loss of each step (before its update)
  step<k>.<name>   every parameter after step k (k = 1..STEPS)
  scale.<name>     (1) the parameter's lr_scale
Metadata: the ViT config, classes, layer_decay, weight_decay, smoothing.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402
from gen_vit import VisionTransformer, randomize, tol_share  # noqa: E402

TOL = {"param_atol": 5e-5, "param_rtol": 1e-5, "loss_rtol": 1e-5}  # tests/test_finetune.c
IMG, PATCH, IN_CHANS, DIM, DEPTH, HEADS, MLP_RATIO = 8, 4, 1, 24, 2, 3, 4.0
CLASSES, BATCH, STEPS = 5, 6, 2
LAYER_DECAY, WEIGHT_DECAY, SMOOTHING = 0.75, 0.05, 0.1
LRS = [float(np.float32(v)) for v in (0.02, 0.01)]  # the C test passes them as float


# ---- MAE util/lr_decay.py (verbatim but for the print)
def param_groups_lrd(model, weight_decay=0.05, no_weight_decay_list=[], layer_decay=.75):
    """
    Parameter groups for layer-wise lr decay
    Following BEiT: https://github.com/microsoft/unilm/blob/master/beit/optim_factory.py#L58
    """
    param_group_names = {}
    param_groups = {}

    num_layers = len(model.blocks) + 1

    layer_scales = list(layer_decay ** (num_layers - i) for i in range(num_layers + 1))

    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue

        # no decay: all 1D parameters and model specific ones
        if p.ndim == 1 or n in no_weight_decay_list:
            g_decay = "no_decay"
            this_decay = 0.
        else:
            g_decay = "decay"
            this_decay = weight_decay

        layer_id = get_layer_id_for_vit(n, num_layers)
        group_name = "layer_%d_%s" % (layer_id, g_decay)

        if group_name not in param_group_names:
            this_scale = layer_scales[layer_id]

            param_group_names[group_name] = {
                "lr_scale": this_scale,
                "weight_decay": this_decay,
                "params": [],
            }
            param_groups[group_name] = {
                "lr_scale": this_scale,
                "weight_decay": this_decay,
                "params": [],
            }

        param_group_names[group_name]["params"].append(n)
        param_groups[group_name]["params"].append(p)

    return list(param_groups.values()), param_group_names


def get_layer_id_for_vit(name, num_layers):
    """
    Assign a parameter with its layer id
    Following BEiT: https://github.com/microsoft/unilm/blob/master/beit/optim_factory.py#L33
    """
    if name in ['cls_token', 'pos_embed']:
        return 0
    elif name.startswith('patch_embed'):
        return 0
    elif name.startswith('blocks'):
        return int(name.split('.')[1]) + 1
    else:
        return num_layers


# ---- timm/loss/cross_entropy.py LabelSmoothingCrossEntropy.forward
def label_smoothing_ce(x, target, smoothing):
    confidence = 1. - smoothing
    logprobs = F.log_softmax(x, dim=-1)
    nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
    nll_loss = nll_loss.squeeze(1)
    smooth_loss = -logprobs.mean(dim=-1)
    loss = confidence * nll_loss + smoothing * smooth_loss
    return loss.mean()


class FinetuneViT(VisionTransformer):
    """timm's VisionTransformer with its classifier: head(class token)."""

    def __init__(self):
        super().__init__(IMG, PATCH, IN_CHANS, DIM, DEPTH, HEADS, MLP_RATIO, 1, "learned", 1)
        self.head = nn.Linear(DIM, CLASSES)

    def forward(self, x):
        return self.head(self.pool(self.forward_features(x)))


def run(model, x, labels):
    """STEPS steps of MAE's fine-tuning loop; model and x in one dtype."""
    groups, names = param_groups_lrd(model, WEIGHT_DECAY, ["pos_embed", "cls_token"], LAYER_DECAY)
    opt = torch.optim.AdamW(groups, lr=LRS[0], betas=(0.9, 0.999), eps=1e-8)
    losses, states = [], []
    for lr in LRS:
        for g in opt.param_groups:  # util/lr_sched.py adjust_learning_rate
            g["lr"] = lr * g["lr_scale"]
        loss = label_smoothing_ce(model(x), labels, SMOOTHING)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.detach().reshape(1))
        states.append({n: p.detach().clone() for n, p in model.named_parameters()})
    scales = {n: g["lr_scale"] for g in names.values() for n in g["params"]}
    return torch.cat(losses), states, scales


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    g = torch.Generator().manual_seed(6009)
    model = FinetuneViT()
    randomize(model, g)
    x = torch.randn(BATCH, IN_CHANS, IMG, IMG, generator=g)
    labels = torch.randint(0, CLASSES, (BATCH,), generator=g)
    init = {n: p.detach().clone() for n, p in model.named_parameters()}

    m64 = FinetuneViT().double()
    m64.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
    l64, s64, scales = run(m64, x.double(), labels)
    l32, s32, _ = run(model, x, labels)

    share = tol_share(l64, l32, 0.0, TOL["loss_rtol"])
    for k in range(STEPS):
        for n in s64[k]:
            a, b = s64[k][n], s32[k][n]
            if n.endswith("attn.qkv.bias"):  # without the key part (see above)
                a, b = torch.cat((a[:DIM], a[2 * DIM:])), torch.cat((b[:DIM], b[2 * DIM:]))
            share = max(share, tol_share(a, b, TOL["param_atol"], TOL["param_rtol"]))
    if share > 1 / 3:
        sys.exit("finetune: PyTorch float32 uses %.3f of the C tolerances (> 1/3); pick another seed"
                 % share)

    t = {"init." + n: v for n, v in init.items()}
    t["x"] = x
    t["labels"] = labels.to(torch.int32)
    t["lr"] = torch.tensor(LRS, dtype=torch.float32)
    t["loss"] = l64
    for k in range(STEPS):
        for n, v in s64[k].items():
            t["step%d.%s" % (k + 1, n)] = v
    for n, s in scales.items():
        t["scale." + n] = torch.tensor([s], dtype=torch.float32)
    meta = {"img_size": IMG, "patch": PATCH, "in_chans": IN_CHANS, "embed_dim": DIM,
            "depth": DEPTH, "heads": HEADS, "mlp_ratio": MLP_RATIO, "classes": CLASSES,
            "layer_decay": LAYER_DECAY, "weight_decay": WEIGHT_DECAY, "smoothing": SMOOTHING,
            "torch_float32_tolerance_share": "%.4f" % share}
    save(os.path.join(out, "finetune.safetensors"), t, meta)
    print("finetune: PyTorch float32 uses %.3f of the tolerances" % share)


if __name__ == "__main__":
    main()
