"""Shared pieces of the method goldens (tests/torch/gen_method_*.py) that
tests/test_methods.c replays.

A golden file method_<name>.safetensors describes a few training steps of
one method on a tiny encoder (ResNet-18, width 4, small stem, 1 channel):

  metadata  method, config (JSON of the method's hyperparameters, keys as in
            selfsup's config JSON: "queue_size", ...), depth, width,
            in_channels, stem, steps (S), start_step, total_steps,
            steps_per_epoch, lr (plain SGD between steps: p -= lr * grad,
            no momentum, no weight decay; selfsup's ssl_optim SGD does the
            same), tol_grad (atol as a fraction of max |grad| and rtol)
  tensors   every tensor of selfsup's checkpoint before step 0, named as
            selfsup names them (encoder: torchvision names; heads:
            "projector.0.weight", ...; untrained state with its prefix:
            "teacher.encoder.conv1.weight", "queue", ...), float32, BN
            counters I64;
            step<k>.view<v>  (B, C, H_v, W_v) the inputs of step k;
            step<k>.loss     (1);
            step<k>.loss_scale (1, optional) the size of the loss's terms
                             when it is a mean of signed ones that may cancel
                             (SimSiam's cosines): the test's atol is 1e-4 of
                             it (float32 rounds at the terms' scale, not at
                             the mean's);
            step<k>.grad.<param>  d loss / d param of every trained
                             parameter (after the method's after-backward
                             rule, e.g. frozen prototypes have zero grads);
            step<k>.after.<name>  any tensor after step k's SGD update and
                             the method's non-gradient updates (EMA teacher,
                             queue, center, running stats).

Everything is computed in float64 from the float32 state and inputs, so it is
the exact answer a float32 implementation approximates.
"""
import json
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402
from gen_resnet import WidthResNet, randomize_bn  # noqa: E402
from torchvision.models.resnet import BasicBlock  # noqa: E402

DEPTH, WIDTH, IN_CH = 18, 4, 1
FEAT = 8 * WIDTH


def encoder():
    """selfsup's ResNet-18 w4 small stem; its output is (N, FEAT)."""
    return WidthResNet(BasicBlock, [2, 2, 2, 2], WIDTH, IN_CH, small_stem=True)


def mlp(dims, hidden_bn=True, last_bn=0, act="relu", no_bias_before_bn=False):
    """selfsup's ssl_mlp: Linear [BN] act ... Linear [BN]; last_bn 2 means
    BatchNorm1d(affine=False). Indices match nn.Sequential's."""
    layers = []
    n = len(dims) - 1
    for i in range(n):
        last = i == n - 1
        bn = last_bn if last else (1 if hidden_bn else 0)
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=not (bn and no_bias_before_bn)))
        if bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=(bn == 1)))
        if not last:
            layers.append(nn.GELU() if act == "gelu" else nn.ReLU())
    return nn.Sequential(*layers)


def views(gen, batch, sizes):
    """Random inputs, one (batch, IN_CH, s, s) tensor per view size."""
    return [torch.randn(batch, IN_CH, s, s, generator=gen) for s in sizes]


class Golden:
    """Collects a method golden: add the initial state of each named module,
    then per step the views, loss, grads and after-step tensors."""

    def __init__(self, method, config, steps, lr, total_steps=100, start_step=0,
                 steps_per_epoch=10, tol_grad=(1e-4, 1e-3)):
        self.t = {}
        self.meta = {"method": method, "config": json.dumps(config), "depth": DEPTH,
                     "width": WIDTH, "in_channels": IN_CH, "stem": "small", "steps": steps,
                     "start_step": start_step, "total_steps": total_steps,
                     "steps_per_epoch": steps_per_epoch, "lr": lr,
                     "tol_grad": json.dumps(list(tol_grad))}
        self.lr = lr

    def state(self, prefix, module):
        """Initial tensors of module (float32) under prefix."""
        for k, v in module.state_dict().items():
            self.t[prefix + k] = v.detach().clone()

    def tensor(self, name, value):
        self.t[name] = value.detach().clone()

    def step(self, k, view_list, loss, trained, loss_scale=None):
        """Records step k's views and loss (and its terms' scale, see the
        format) and, for each (prefix, module) in trained, the grads; then
        applies plain SGD to those params."""
        for v, x in enumerate(view_list):
            self.t["step%d.view%d" % (k, v)] = x
        self.t["step%d.loss" % k] = loss.detach().reshape(1)
        if loss_scale is not None:
            self.t["step%d.loss_scale" % k] = loss_scale.detach().reshape(1)
        with torch.no_grad():
            for prefix, module in trained:
                for name, p in module.named_parameters():
                    g = p.grad if p.grad is not None else torch.zeros_like(p)
                    self.t["step%d.grad.%s%s" % (k, prefix, name)] = g.clone()
                    p -= self.lr * g
                    p.grad = None

    def after(self, k, prefix, module, params=True, buffers=True):
        for name, p in module.named_parameters() if params else []:
            self.t["step%d.after.%s%s" % (k, prefix, name)] = p.detach().clone()
        for name, b in module.named_buffers() if buffers else []:
            if not name.endswith("num_batches_tracked"):
                self.t["step%d.after.%s%s" % (k, prefix, name)] = b.detach().clone()

    def save(self, outdir, name=None):
        """Writes method_<name>.safetensors (name: the method's by default)."""
        os.makedirs(outdir, exist_ok=True)
        save(os.path.join(outdir, "method_%s.safetensors" % (name or self.meta["method"])), self.t, self.meta)


def prepare(module, gen):
    """float32 init with BN stats away from 1/0, then float64 for the math."""
    randomize_bn(module, gen)
    return module


def f64(*modules):
    for m in modules:
        m.double()
        m.train()
