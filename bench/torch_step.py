"""PyTorch 1.13's side of the SimCLR step benchmark (bench/bench_step.c is
selfsup's): the same network, loss, optimizer, batch and input size, timed
the same way, printed as the same one JSON line.

Usage: /usr/bin/python3 bench/torch_step.py [--depth 18] [--width 64]
    [--stem small|imagenet] [--channels 1] [--size 28] [--batch 256]
    [--threads 2] [--warmup 2] [--steps 5] [--seed 1]

The step, as src/train/pretrain.c runs it:
  x = cat(view0, view1)                     (2B, C, H, W), one encoder pass
  h = encoder(x)                            torchvision ResNet (the class of
                                            tests/torch/gen_resnet.py: width
                                            multiplier, small stem 3x3/1 conv
                                            and no max-pool, fc = Identity)
  z = normalize(projector(h))               Linear(F,2048)-BN1d-ReLU-Linear(2048,128)
  loss = NT-Xent(z, T=0.2) over the 2B views
  zero_grad(); loss.backward(); LARS step
The optimizer is LARS with src/optim/optim.c's formula (SimCLR's TF LARS,
classic momentum; biases and BN affine excluded from decay and trust ratio),
lr 0.3 x B/256, wd 1e-6, momentum 0.9, eta 0.001: a few elementwise ops per
parameter, negligible next to the network.

Inputs: two random normalized batches made once and reused (the C side also
reuses one loader batch), so only the step is timed. PyTorch runs with its
defaults (float32, NCHW, oneDNN convolutions) and torch.set_num_threads(T).

FLOP convention, the same as the C side: encoder conv MACs of one forward of
one image x 2 (FLOP per MAC) x 3 (forward + backward) x 2 views. The MACs
are counted here from the modules' shapes by hooks on one image.
"""
import argparse
import json
import math
import os
import resource
import sys
import time

RSS_START_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torchvision.models.resnet import BasicBlock, Bottleneck  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "torch"))
from gen_resnet import WidthResNet  # noqa: E402

RSS_IMPORT_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
          50: (Bottleneck, [3, 4, 6, 3])}


def encoder_macs(encoder, c, size):
    """Conv multiply-accumulates of one forward of one image (as
    ssl_resnet_macs: convolutions only)."""
    total = [0]

    def hook(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        total[0] += out.numel() * k

    hs = [m.register_forward_hook(hook) for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        encoder(torch.zeros(1, c, size, size))
    encoder.train(was)
    for h in hs:
        h.remove()
    return total[0]


def ntxent(z, temperature):
    """z (2N, D) unit rows; row i's positive is (i + N) mod 2N; mean over 2N."""
    n2 = z.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(n2, dtype=torch.bool), float("-inf"))
    target = (torch.arange(n2) + n2 // 2) % n2
    return F.cross_entropy(sim, target)


class LARS:
    """src/optim/optim.c's LARS:
      d = g + wd*p                      (excluded: d = g)
      trust = eta*||p||/||d|| if both > 0 else 1   (excluded: 1)
      v = mu*v + lr*trust*d;  p -= v"""

    def __init__(self, params, momentum, weight_decay, eta):
        self.params = [p for p in params if p.requires_grad]
        self.mu, self.wd, self.eta = momentum, weight_decay, eta
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr):
        for p, v in zip(self.params, self.v):
            excluded = p.ndim == 1  # biases and BN affine
            d = p.grad if excluded else p.grad.add(p, alpha=self.wd)
            trust = 1.0
            if not excluded:
                pn, dn = torch.linalg.vector_norm(p).item(), torch.linalg.vector_norm(d).item()
                if pn > 0 and dn > 0:
                    trust = self.eta * pn / dn
            v.mul_(self.mu).add_(d, alpha=lr * trust)
            p.sub_(v)


def lr_at(step, total, peak):
    """ssl_lr_warmup_cosine with no warm-up, final lr 0."""
    return 0.5 * peak * (1 + math.cos(math.pi * min(step, total) / total))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--depth", type=int, default=18, choices=sorted(LAYERS))
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--stem", default="small", choices=["small", "imagenet"])
    ap.add_argument("--channels", type=int, default=1, choices=[1, 3])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    block, layers = LAYERS[a.depth]
    encoder = WidthResNet(block, layers, a.width, a.channels, a.stem == "small")
    feat = 8 * a.width * block.expansion
    projector = nn.Sequential(nn.Linear(feat, 2048), nn.BatchNorm1d(2048), nn.ReLU(inplace=True),
                              nn.Linear(2048, 128))
    encoder.train()
    projector.train()
    params = list(encoder.parameters()) + list(projector.parameters())
    opt = LARS(params, momentum=0.9, weight_decay=1e-6, eta=0.001)
    peak_lr = 0.3 * a.batch / 256

    shape = (a.batch, a.channels, a.size, a.size)
    views = [torch.randn(shape), torch.randn(shape)]
    total = a.warmup + a.steps
    timed, t_min, loss_v = 0.0, float("inf"), float("nan")
    for step in range(total):
        t0 = time.perf_counter()
        x = torch.cat(views, 0)
        z = F.normalize(projector(encoder(x)), dim=1)
        loss = ntxent(z, 0.2)
        encoder.zero_grad()
        projector.zero_grad()
        loss.backward()
        opt.step(lr_at(step, total, peak_lr))
        loss_v = loss.item()
        dt = time.perf_counter() - t0
        if not math.isfinite(loss_v):
            sys.exit(f"torch_step: step {step + 1}: loss is not finite")
        kind = "warm-up" if step < a.warmup else "timed"
        print(f"[torch_step] {kind} step {step + 1}/{total}: {dt:.3f} s, loss {loss_v:.4f}",
              file=sys.stderr)
        if step >= a.warmup:
            timed += dt
            t_min = min(t_min, dt)

    s_step = timed / a.steps
    ips = a.batch / s_step
    gflop_img = encoder_macs(encoder, a.channels, a.size) * 2 * 3 * 2 / 1e9
    print(json.dumps({
        "impl": "pytorch", "version": torch.__version__, "depth": a.depth, "width": a.width,
        "stem": a.stem, "in_channels": a.channels, "size": a.size, "batch": a.batch,
        "data": "random normal", "threads": torch.get_num_threads(), "warmup": a.warmup,
        "steps": a.steps, "img_per_s": round(ips, 3), "s_per_step": round(s_step, 4),
        "s_per_step_min": round(t_min, 4), "gflop_per_img": round(gflop_img, 5),
        "gflops": round(gflop_img * ips, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "rss_after_import_mb": round(RSS_IMPORT_MB, 1), "rss_start_mb": round(RSS_START_MB, 1),
        "last_loss": round(loss_v, 5)}))


if __name__ == "__main__":
    main()
