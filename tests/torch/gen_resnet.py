"""Golden values for tests/test_resnet.c: one SimCLR training step of a ResNet
encoder + projection head + NT-Xent in PyTorch.

Usage: /usr/bin/python3 tests/torch/gen_resnet.py OUTDIR
Writes OUTDIR/resnet18s.safetensors (ResNet-18, width 8, small stem, 1 channel,
8 images of 16x16), OUTDIR/resnet50.safetensors (ResNet-50, width 4, ImageNet
stem, 3 channels, 4 images of 64x64: at 32x32 layer4 normalizes 4 values per
channel, too ill-conditioned for float32 to agree with anything) and
OUTDIR/ntxent.safetensors.

The encoders are torchvision's own ResNet class (its BasicBlock, Bottleneck and
_make_layer, so module names and the forward are torchvision's) with the base
width 64 made a parameter, the small stem (3x3/1 conv, no max-pool) as an
option, and fc removed. The script checks that at width 64 with the ImageNet
stem the state_dict equals torchvision.models.resnet18()/resnet50()'s (minus
fc), and stores resnet18's names and shapes in resnet18s.safetensors as
metadata "torchvision.resnet18" (JSON [[name, shape], ...], state_dict order)
so the C test can check its width-64 registry against torchvision itself.

Parameters and inputs are float32; every result is computed in float64 from
them (so it is the exact answer a float32 implementation approximates) and
stored as float32. Keys of a model file:
  <state_dict name>        encoder and projector ("projector.0.weight", ...)
                           before the step; num_batches_tracked as I64
  input (2N, C, H, W)      2N views, view i's positive is view (i+N) mod 2N
  features (2N, F)         encoder output, train mode (batch statistics)
  projection (2N, 16)      head output before normalization
  loss (1)                 NT-Xent, temperature 0.5
  grad.<param>             d loss / d param for every parameter
  after.<buffer>           running stats and counters after the forward
  eval_features (2N, F)    model.eval() forward of the same input, after the
                           train forward updated the running stats
Metadata: temperature, the model config (depth, width, in_channels, stem), the
seed used and how much of the C tolerances PyTorch's own float32 run used.

ntxent.safetensors: z (6, 5) unit rows, loss, grad (dL/dz) at T = 0.5;
x (6, 5) raw rows, loss_x, grad_x for NT-Xent(F.normalize(x)) at T = 0.2.
"""
import json
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402

TEMPERATURE = 0.5


class WidthResNet(ResNet):
    """torchvision's ResNet with the base width and stem as parameters.

    Mirrors ResNet.__init__ (torchvision 0.14) except for the width, the stem
    choice and fc = Identity; the forward is inherited unchanged."""

    def __init__(self, block, layers, width, in_channels, small_stem):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = 1
        self.base_width = 64  # Bottleneck's inner width = planes, as in resnet50
        if small_stem:
            self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 4 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 8 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def shapes(module):
    return [[k, list(v.shape)] for k, v in module.state_dict().items()]


def check_torchvision_names():
    """Our class at width 64 has exactly torchvision's state_dict (minus fc).
    The C test checks its own width-64 ResNet-18 against the stored list; its
    ResNet-50 names are checked through resnet50.safetensors (width 4), whose
    class this assertion ties to torchvision's resnet50."""
    meta = {}
    for arch, block, layers in (("resnet18", BasicBlock, [2, 2, 2, 2]),
                                ("resnet50", Bottleneck, [3, 4, 6, 3])):
        tv = getattr(torchvision.models, arch)()
        tv.fc = nn.Identity()
        ours = WidthResNet(block, layers, 64, 3, small_stem=False)
        assert shapes(tv) == shapes(ours), arch
        if arch == "resnet18":
            meta["torchvision." + arch] = json.dumps(shapes(tv))
    return meta


def randomize_bn(module, gen):
    """BN affine params and running stats away from 1/0 so that they matter."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                m.weight.copy_(1 + 0.2 * torch.randn(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(1 + 0.3 * torch.rand(c, generator=gen))
                m.num_batches_tracked.fill_(3)


def ntxent(z, temperature):
    """SimCLR Algorithm 1: row i's positive is row (i+N) mod 2N, the diagonal
    is excluded, mean of the 2N cross-entropies."""
    m = z.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
    target = (torch.arange(m) + m // 2) % m
    return F.cross_entropy(sim, target)


# Tolerances of tests/test_resnet.c (keep in sync): (atol, rtol) for features,
# projection and eval features; rtol of the loss; gradients (atol as a
# fraction of the tensor's max |grad|, rtol); running stats (atol, rtol).
TOL = {
    "resnet18s": {"feat": (1e-4, 1e-3), "loss": 1e-5, "grad": (1e-4, 1e-3), "after": (1e-5, 1e-4)},
    "resnet50": {"feat": (1e-4, 1e-3), "loss": 1e-4, "grad": (1e-3, 1e-2), "after": (1e-5, 1e-4)},
}
GRAD_FLOOR = 1e-6  # absolute atol floor: projector.0.bias has an exactly zero gradient


def new_models(block, layers, width, in_channels, small_stem):
    enc = WidthResNet(block, layers, width, in_channels, small_stem)
    feat = 8 * width * (4 if block is Bottleneck else 1)
    proj = nn.Sequential(nn.Linear(feat, 32), nn.BatchNorm1d(32), nn.ReLU(inplace=True),
                         nn.Linear(32, 16))
    return enc, proj


def build(state, arch, dtype):
    enc, proj = new_models(*arch)
    enc.load_state_dict({k: v for k, v in state.items() if not k.startswith("projector.")})
    proj.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("projector.")})
    return enc.to(dtype), proj.to(dtype)


def step(state, arch, x, dtype):
    """One training forward/backward and an eval forward in `dtype`."""
    enc, proj = build(state, arch, dtype)
    enc.train()
    proj.train()
    h = enc(x.to(dtype))
    p = proj(h)
    loss = ntxent(F.normalize(p, dim=1), TEMPERATURE)
    loss.backward()
    t = {"features": h, "projection": p, "loss": loss.reshape(1)}
    for prefix, mod in (("", enc), ("projector.", proj)):
        for name, prm in mod.named_parameters():
            t["grad." + prefix + name] = prm.grad
        for name, b in mod.named_buffers():
            t["after." + prefix + name] = b.clone()
    enc.eval()
    with torch.no_grad():
        t["eval_features"] = enc(x.to(dtype))
    return {k: v.detach() for k, v in t.items()}


def ratio(a, b, atol, rtol):
    return ((a.double() - b.double()).abs() / (atol + rtol * b.double().abs())).max().item()


def fp32_error(t32, t64, tol):
    """How much of the C test's tolerance PyTorch's own float32 run uses
    against the float64 result (1 = all of it)."""
    worst = 0.0
    for k, ref in t64.items():
        if k.endswith("num_batches_tracked"):
            continue
        if k.startswith("grad."):
            r = ratio(t32[k], ref, GRAD_FLOOR + tol["grad"][0] * ref.abs().max().item(), tol["grad"][1])
        elif k.startswith("after."):
            r = ratio(t32[k], ref, *tol["after"])
        elif k == "loss":
            r = ratio(t32[k], ref, 0.0, tol["loss"])
        else:
            r = ratio(t32[k], ref, *tol["feat"])
        worst = max(worst, r)
    return worst


def model_golden(name, block, layers, width, in_channels, small_stem, n2, hw, seed):
    """Random state and input; the golden is the float64 result of the
    float32 values. Deep nets with batch statistics over few values are
    ill-conditioned for some draws (float32 itself then misses float64 by
    more than any useful tolerance), so seeds are tried in order until
    PyTorch's float32 run stays within a third of the C test's tolerances."""
    arch = (block, layers, width, in_channels, small_stem)
    for s in range(seed, seed + 20):
        torch.manual_seed(s)
        gen = torch.Generator().manual_seed(s + 1)
        enc, proj = new_models(*arch)
        randomize_bn(enc, gen)
        randomize_bn(proj, gen)
        state = dict(enc.state_dict())
        state.update({"projector." + k: v for k, v in proj.state_dict().items()})
        state = {k: v.clone() for k, v in state.items()}
        x = torch.randn(n2, in_channels, hw, hw, generator=gen)
        t64 = step(state, arch, x, torch.float64)
        err = fp32_error(step(state, arch, x, torch.float32), t64, TOL[name])
        if err < 1 / 3:
            break
    else:
        raise SystemExit("gen_resnet: no well-conditioned draw for " + name)
    t = dict(state)
    t["input"] = x
    t.update(t64)
    meta = {"temperature": TEMPERATURE, "depth": 18 if block is BasicBlock else 50,
            "width": width, "in_channels": in_channels,
            "stem": "small" if small_stem else "imagenet", "seed": s,
            "torch_fp32_tolerance_used": "%.3f" % err}
    return t, meta


def ntxent_golden(path):
    """float32 inputs, float64 autograd."""
    gen = torch.Generator().manual_seed(7)
    z = F.normalize(torch.randn(6, 5, generator=gen), dim=1).double().requires_grad_()
    loss = ntxent(z, TEMPERATURE)
    loss.backward()
    x = torch.randn(6, 5, generator=gen).double().requires_grad_()
    loss_x = ntxent(F.normalize(x, dim=1), 0.2)
    loss_x.backward()
    save(path, {"z": z, "loss": loss.reshape(1), "grad": z.grad,
                "x": x, "loss_x": loss_x.reshape(1), "grad_x": x.grad},
         {"temperature": TEMPERATURE, "temperature_x": 0.2})


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    tv_meta = check_torchvision_names()
    t, meta = model_golden("resnet18s", BasicBlock, [2, 2, 2, 2], 8, 1, True, 8, 16, 100)
    meta.update(tv_meta)
    save(os.path.join(out, "resnet18s.safetensors"), t, meta)
    t, meta = model_golden("resnet50", Bottleneck, [3, 4, 6, 3], 4, 3, False, 4, 64, 200)
    save(os.path.join(out, "resnet50.safetensors"), t, meta)
    ntxent_golden(os.path.join(out, "ntxent.safetensors"))


if __name__ == "__main__":
    main()
