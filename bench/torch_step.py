"""PyTorch 1.13's side of the training-step benchmark (bench/bench_step.c is
selfsup's): the same method, network, heads, loss, optimizer, batch and view
sizes, timed the same way, printed as the same one JSON line.

Usage: /usr/bin/python3 bench/torch_step.py [--method simclr|byol|dino]
    [--depth 18] [--width 64] [--stem small|imagenet] [--channels 1]
    [--size 28] [--batch 256] [--threads 2] [--warmup 2] [--steps 5] [--seed 1]

The encoder is torchvision's ResNet class (tests/torch/gen_resnet.py's
WidthResNet: width multiplier, small stem 3x3/1 conv and no max-pool,
fc = Identity). Each method is written after its official code, float32,
with selfsup's defaults (src/methods/*.c: widths, temperatures, momenta and
the recipe optimizer of ssl_method_ops.optim):

  simclr  x = cat(view0, view1), one encoder pass; z = normalize(projector(h)),
          projector Linear(F,2048)-BN-ReLU-Linear(2048,128); NT-Xent T 0.2;
          LARS lr 0.075 x sqrt(B), wd 1e-6.
  byol    deepmind-research byol/: online encoder + projector
          Linear(F,4096)-BN-ReLU-Linear(4096,256, no bias) + predictor
          (256-4096-256, same form), one pass per view; target encoder +
          projector (EMA copies) on each view without gradient; loss
          mean(2 - 2 cos(p0, z1')) + mean(2 - 2 cos(p1, z0')); LARS lr 0.2 x
          B/256, wd 1.5e-6; after the step target = tau target + (1 - tau)
          online (parameters), tau cosine from 0.996 to 1.
  dino    facebookresearch/dino main_dino.py: MultiCropWrapper (one backbone
          pass per run of same-size crops, then the head on all), DINOHead
          Linear(F,2048)-GELU-Linear(2048,2048)-GELU-Linear(2048,256),
          L2-normalize, weight-normed bias-free Linear(256,4096) with g fixed
          to 1; teacher (EMA copy) on the 2 global crops in one pass without
          gradient; DINOLoss with student T 0.1, teacher T 0.04, centering
          (momentum 0.9); SGD lr 0.03 x B/256, momentum 0.9, wd 1e-4 (not on
          biases and norms); last layer's grad dropped in epoch 0
          (cancel_gradients_last_layer); after the step the teacher EMA with
          the cosine momentum from 0.996 to 1. Crops: 2 global of the image
          size + 8 local of size * 3 // 7 (selfsup's default: 12 px for 28).
          No gradient clipping (selfsup does not clip either).

The loop is src/train/pretrain.c's: loss, zero grads, backward, after-backward
rule, optimizer step at lr = warm-up + cosine, after-step update. The
schedule is bench_step.c's: warmup + steps steps, the warm-up steps being
epoch 0 (steps per epoch = max(1, warmup)), lr warm-up = warmup_epochs of it.

Inputs: random normal views of each view's size, made once and reused (the
C side also reuses one loader batch), so only the step is timed. PyTorch
runs with its defaults (float32, NCHW, oneDNN convolutions) and
torch.set_num_threads(T).

FLOP convention, the same as the C side, counted here independently by
forward hooks on a 2-image run of the method's loss after the timed steps:
every Conv2d call run with grad enabled counts MACs x 2 x 3 (forward +
backward ~ 3x forward), every call under no_grad (the teachers) MACs x 2 x 1.
Linear layers are counted the same way into head_gflop_per_img, which is
reported but not part of gflop_per_img.
"""
import argparse
import copy
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
from gen_vit import VisionTransformer  # noqa: E402
from gen_mae import MaskedAutoencoderViT  # noqa: E402

RSS_IMPORT_MB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

LAYERS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
          50: (Bottleneck, [3, 4, 6, 3])}


class LARS:
    """src/optim/optim.c's LARS:
      d = g + wd*p                      (excluded: d = g)
      trust = eta*||p||/||d|| if both > 0 else 1   (excluded: 1)
      v = mu*v + lr*trust*d;  p -= v"""

    def __init__(self, params, momentum, weight_decay, eta=0.001):
        self.params = [p for p in params if p.requires_grad]
        self.mu, self.wd, self.eta = momentum, weight_decay, eta
        self.v = [torch.zeros_like(p) for p in self.params]

    @torch.no_grad()
    def step(self, lr):
        for p, v in zip(self.params, self.v):
            if p.grad is None:
                continue
            excluded = p.ndim == 1  # biases and BN affine
            d = p.grad if excluded else p.grad.add(p, alpha=self.wd)
            trust = 1.0
            if not excluded:
                pn, dn = torch.linalg.vector_norm(p).item(), torch.linalg.vector_norm(d).item()
                if pn > 0 and dn > 0:
                    trust = self.eta * pn / dn
            v.mul_(self.mu).add_(d, alpha=lr * trust)
            p.sub_(v)


class SGD:
    """torch.optim.SGD (dampening 0) with main_dino.py's param groups: no
    weight decay on biases and norms (ndim 1), as selfsup's no_decay."""

    def __init__(self, params, momentum, weight_decay):
        params = [p for p in params if p.requires_grad]
        self.opt = torch.optim.SGD(
            [{"params": [p for p in params if p.ndim > 1]},
             {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}],
            lr=0.0, momentum=momentum, weight_decay=weight_decay)

    def step(self, lr):
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()


def lr_at(step, warmup, total, peak):
    """ssl_lr_warmup_cosine with final lr 0."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if step >= total:
        return 0.0
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def momentum_cosine(step, total, base):
    """ssl_momentum_cosine: 1 - (1 - base) (cos(pi step / total) + 1) / 2."""
    step = min(max(step, 0), total)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total) + 1.0) * 0.5


@torch.no_grad()
def ema(target, online, tau):
    """target = tau target + (1 - tau) online, parameters only."""
    for pt, po in zip(target.parameters(), online.parameters()):
        pt.mul_(tau).add_((1 - tau) * po.detach())


def ntxent(z, temperature):
    """z (2N, D) unit rows; row i's positive is (i + N) mod 2N; mean over 2N."""
    n2 = z.shape[0]
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(n2, dtype=torch.bool), float("-inf"))
    target = (torch.arange(n2) + n2 // 2) % n2
    return F.cross_entropy(sim, target)


class SimCLR:
    recipe = ("lars", 0.075, "sqrt", 1e-6, 0.9, 0.5)  # src/methods/simclr.c .optim
    teacher_views = 0
    temperature = 0.2  # selfsup's --temperature default

    def __init__(self, encoder, feat, size):
        self.encoder = encoder
        self.projector = nn.Sequential(nn.Linear(feat, 2048), nn.BatchNorm1d(2048),
                                       nn.ReLU(inplace=True), nn.Linear(2048, 128))
        self.sizes = [size, size]

    def trained(self):
        return [self.encoder, self.projector]

    def loss(self, views, step, spe):
        h = self.encoder(torch.cat(views, 0))
        return ntxent(F.normalize(self.projector(h), dim=1), self.temperature)

    def after_backward(self, step, spe):
        pass

    def after_step(self, step, total):
        pass


def byol_mlp(d_in, hidden, out):
    """networks.MLP: Linear(bias) BN ReLU Linear(with_bias=False)."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out, bias=False))


class BYOL:
    recipe = ("lars", 0.2, "linear", 1.5e-6, 0.9, 0.5)  # src/methods/byol.c .optim
    teacher_views = 2
    base_momentum = 0.996

    def __init__(self, encoder, feat, size):
        self.encoder = encoder
        self.projector = byol_mlp(feat, 4096, 256)
        self.predictor = byol_mlp(256, 4096, 256)
        self.t_encoder = copy.deepcopy(encoder)
        self.t_projector = copy.deepcopy(self.projector)
        for p in list(self.t_encoder.parameters()) + list(self.t_projector.parameters()):
            p.requires_grad = False
        self.sizes = [size, size]

    def trained(self):
        return [self.encoder, self.projector, self.predictor]

    def loss(self, views, step, spe):
        # apply_once_fn per view: BN statistics per view, online and target
        p = [self.predictor(self.projector(self.encoder(x))) for x in views]
        with torch.no_grad():
            z = [self.t_projector(self.t_encoder(x)) for x in views]

        def regression(x, y):  # 2 - 2 cos
            return ((F.normalize(x, dim=-1) - F.normalize(y, dim=-1)) ** 2).sum(-1)

        return regression(p[0], z[1].detach()).mean() + regression(p[1], z[0].detach()).mean()

    def after_backward(self, step, spe):
        pass

    def after_step(self, step, total):
        tau = momentum_cosine(step, total, self.base_momentum)
        ema(self.t_encoder, self.encoder, tau)
        ema(self.t_projector, self.projector, tau)


class DINOHead(nn.Module):
    """main_dino.py's DINOHead(use_bn=False, norm_last_layer=True, nlayers=3)."""

    def __init__(self, in_dim, out_dim=4096, hidden_dim=2048, bottleneck_dim=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
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
    """main_dino.py's: one backbone pass per run of equal-resolution crops,
    then the head on all features."""

    def __init__(self, backbone, head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x):
        if not isinstance(x, list):
            x = [x]
        idx_crops = torch.cumsum(torch.unique_consecutive(
            torch.tensor([inp.shape[-1] for inp in x]), return_counts=True)[1], 0)
        start_idx, output = 0, torch.empty(0)
        for end_idx in idx_crops:
            _out = self.backbone(torch.cat(x[start_idx:end_idx]))
            output = torch.cat((output, _out))
            start_idx = end_idx
        return self.head(output)


class DINOLoss(nn.Module):
    """main_dino.py's, on one process, teacher temperature constant (selfsup's
    default: 0.04 with no warm-up)."""

    def __init__(self, out_dim, ncrops, teacher_temp=0.04, student_temp=0.1,
                 center_momentum=0.9):
        super().__init__()
        self.student_temp, self.teacher_temp = student_temp, teacher_temp
        self.center_momentum = center_momentum
        self.ncrops = ncrops
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student_output, teacher_output):
        student_out = (student_output / self.student_temp).chunk(self.ncrops)
        teacher_out = F.softmax((teacher_output - self.center) / self.teacher_temp, dim=-1)
        teacher_out = teacher_out.detach().chunk(2)
        total_loss, n_loss_terms = 0, 0
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


class DINO:
    recipe = ("sgd", 0.03, "linear", 1e-4, 0.9, 0.5)  # src/methods/dino.c .optim
    teacher_views = 2
    base_momentum = 0.996
    freeze_last_layer = 1  # epochs

    def __init__(self, encoder, feat, size):
        self.student = MultiCropWrapper(encoder, DINOHead(feat))
        # a weight-normed module cannot be deep-copied: built anew, as main_dino.py
        self.teacher = MultiCropWrapper(copy.deepcopy(encoder), DINOHead(feat))
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad = False
        self.sizes = [size] * 2 + [size * 3 // 7] * 8
        self.dino_loss = DINOLoss(4096, len(self.sizes))

    def trained(self):
        return [self.student]

    def loss(self, views, step, spe):
        with torch.no_grad():
            teacher_output = self.teacher(views[:2])  # only the 2 global views
        student_output = self.student(views)
        return self.dino_loss(student_output, teacher_output)

    def after_backward(self, step, spe):
        if step // spe >= self.freeze_last_layer:
            return
        for n, p in self.student.named_parameters():
            if "last_layer" in n:
                p.grad = None

    def after_step(self, step, total):
        tau = momentum_cosine(step, total, self.base_momentum)
        ema(self.teacher, self.student, tau)


class ViTEncoder(nn.Module):
    """gen_vit.py's timm-named ViT -> the [CLS] feature; other image sizes
    (DINO's local crops) through DINO's bicubic position resampling, as
    selfsup's ssl_vit_embed."""

    def __init__(self, vit, img):
        super().__init__()
        self.vit, self.img = vit, img

    def forward(self, x):
        if x.shape[-1] == self.img:
            return self.vit.pool(self.vit.forward_features(x))
        return self.vit.forward_resized(x)


def vit_config(arch):
    return {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}[arch]


class MAEModel(MaskedAutoencoderViT):
    """models_mae.MaskedAutoencoderViT (tests/torch/gen_mae.py's copy of the
    official methods) at any size: src/methods/mae.c's defaults (decoder 128
    wide, 2 blocks, 4 heads; norm_pix_loss; mask ratio 0.75)."""

    def __init__(self, img, patch, in_chans, dim, depth, heads, dec_dim=128, dec_depth=2,
                 dec_heads=4):
        VisionTransformer.__init__(self, img, patch, in_chans, dim, depth, heads, 4.0, 1,
                                   "learned", 1)
        self.patch, self.in_chans = patch, in_chans
        self.decoder_embed = nn.Linear(dim, dec_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        from gen_vit import Block, get_2d_sincos_pos_embed
        table = get_2d_sincos_pos_embed(dec_dim, self.grid, cls_token=True)
        self.register_buffer("decoder_pos_embed", torch.from_numpy(table).float().unsqueeze(0))
        self.decoder_blocks = nn.ModuleList([Block(dec_dim, dec_heads, 4.0, 1)
                                             for _ in range(dec_depth)])
        self.decoder_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dec_dim, patch ** 2 * in_chans, bias=True)


class MAE:
    recipe = ("adamw", 1.5e-4, "linear", 0.05, 0.9, 0.5)  # src/methods/mae.c .optim
    beta2 = 0.95
    teacher_views = 0

    def __init__(self, model, size):
        self.model = model
        self.sizes = [size]

    def trained(self):
        return [self.model]

    def loss(self, views, step, spe):
        x = views[0]
        noise = torch.rand(x.shape[0], self.model.grid ** 2)
        return self.model(x, 0.75, noise, True)[0]

    def after_backward(self, step, spe):
        pass

    def after_step(self, step, total):
        pass


class AdamW:
    """torch.optim.AdamW with the lr set per step; no weight decay on
    1-D parameters and the position / class / mask tokens (selfsup's
    no_decay flags)."""

    def __init__(self, named, weight_decay, beta2):
        decay = [p for n, p in named if p.dim() > 1 and n.split(".")[-1] not in
                 ("pos_embed", "cls_token")]
        no = [p for n, p in named if not (p.dim() > 1 and n.split(".")[-1] not in
                                          ("pos_embed", "cls_token"))]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                      {"params": no, "weight_decay": 0.0}],
                                     lr=1e-3, betas=(0.9, beta2))

    def step(self, lr):
        for grp in self.opt.param_groups:
            grp["lr"] = lr
        self.opt.step()


METHODS = {"simclr": SimCLR, "byol": BYOL, "dino": DINO, "mae": MAE}


def count_gflop(method, views):
    """(conv GFLOP, linear GFLOP) per image of one loss evaluation: forward
    hooks count each call's MACs x 2 x 3 with grad enabled, x 2 without."""
    total = {"conv": 0, "linear": 0}

    def hook(mod, inp, out):
        if isinstance(mod, nn.Conv2d):
            kind, k = "conv", mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        else:
            kind, k = "linear", mod.in_features
        total[kind] += out.numel() * k * 2 * (3 if torch.is_grad_enabled() else 1)

    mods = [m for t in method.trained() for m in t.modules()]
    for name in ("t_encoder", "t_projector", "teacher"):
        if hasattr(method, name):
            mods += list(getattr(method, name).modules())
    hs = [m.register_forward_hook(hook) for m in set(mods) if isinstance(m, (nn.Conv2d, nn.Linear))]
    n = 2  # images: BN in train mode needs 2
    method.loss([v[:n] for v in views], 10 ** 6, 1)
    for h in hs:
        h.remove()
    return total["conv"] / n / 1e9, total["linear"] / n / 1e9


def views_spec(sizes):
    """"2x28+8x12": runs of equal sizes."""
    runs = []
    for s in sizes:
        if runs and runs[-1][1] == s:
            runs[-1][0] += 1
        else:
            runs.append([1, s])
    return "+".join(f"{c}x{s}" for c, s in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default="simclr", choices=sorted(METHODS))
    ap.add_argument("--depth", type=int, default=18, choices=sorted(LAYERS))
    ap.add_argument("--arch", default="resnet",
                    choices=["resnet", "vit_tiny", "vit_small", "vit_base"])
    ap.add_argument("--patch", type=int, default=4)
    ap.add_argument("--vit-depth", type=int, default=12)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--stem", default="small", choices=["small", "imagenet"])
    ap.add_argument("--channels", type=int, default=1, choices=[1, 3])
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--bf16", type=int, default=0, choices=[0, 1],
                    help="1: the loss under torch.autocast('cpu', bfloat16), PyTorch's mixed "
                         "precision (convolutions and matrix products in bf16)")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if a.arch == "resnet":
        block, layers = LAYERS[a.depth]
        encoder = WidthResNet(block, layers, a.width, a.channels, a.stem == "small")
        feat = 8 * a.width * block.expansion
        arch = f"R{a.depth} w{a.width}"
    else:
        dim, heads = vit_config(a.arch)
        feat = dim
        arch = f"{a.arch}/{a.patch} depth {a.vit_depth}"
        if a.method != "mae":
            encoder = ViTEncoder(VisionTransformer(a.size, a.patch, a.channels, dim, a.vit_depth,
                                                   heads, 4.0, 1, "learned", 1), a.size)
    if a.method == "mae":
        if a.arch == "resnet":
            sys.exit("torch_step: --method mae needs --arch vit_*")
        method = MAE(MAEModel(a.size, a.patch, a.channels, dim, a.vit_depth, heads), a.size)
    else:
        method = METHODS[a.method](encoder, feat, a.size)
    for t in method.trained():
        t.train()
    params = [p for t in method.trained() for p in t.parameters()]
    kind, base_lr, scale, wd, mom, warmup_epochs = method.recipe
    if kind == "adamw":
        named = [(n, p) for t in method.trained() for n, p in t.named_parameters()]
        opt = AdamW(named, wd, getattr(method, "beta2", 0.999))
    else:
        opt = (LARS(params, mom, wd) if kind == "lars" else SGD(params, mom, wd))
    peak_lr = (base_lr * math.sqrt(a.batch) if scale == "sqrt"
               else base_lr * a.batch / 256 if scale == "linear" else base_lr)
    total = a.warmup + a.steps
    spe = max(1, a.warmup)
    lr_warmup = int(warmup_epochs * spe)

    views = [torch.randn(a.batch, a.channels, s, s) for s in method.sizes]
    print(f"[torch_step] {a.method} {arch} {a.channels}x{a.size}x{a.size} "
          f"B{a.batch}, views {views_spec(method.sizes)}, {kind} lr {peak_lr:.4g}, "
          f"{torch.get_num_threads()} threads{', bf16 autocast' if a.bf16 else ''}", file=sys.stderr)
    timed, step_s, loss_v = 0.0, [], float("nan")
    for step in range(total):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(a.bf16)):
            loss = method.loss(views, step, spe)
        for t in method.trained():
            t.zero_grad()
        loss.backward()
        method.after_backward(step, spe)
        opt.step(lr_at(step, lr_warmup, total, peak_lr))
        method.after_step(step, total)
        loss_v = loss.item()
        dt = time.perf_counter() - t0
        if not math.isfinite(loss_v):
            sys.exit(f"torch_step: step {step + 1}: loss is not finite")
        k = "warm-up" if step < a.warmup else "timed"
        print(f"[torch_step] {k} step {step + 1}/{total}: {dt:.3f} s, loss {loss_v:.4f}",
              file=sys.stderr)
        if step >= a.warmup:
            timed += dt
            step_s.append(dt)

    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    s_step = timed / a.steps
    ips = a.batch / s_step
    gflop_img, head_gflop_img = count_gflop(method, views)
    print(json.dumps({
        "impl": "pytorch", "version": torch.__version__, "arch": a.arch, "patch": a.patch,
        "vit_depth": a.vit_depth if a.arch != "resnet" else 0, "method": a.method, "bf16": a.bf16,
        "depth": a.depth,
        "width": a.width, "stem": a.stem, "in_channels": a.channels, "size": a.size,
        "batch": a.batch, "views": views_spec(method.sizes), "n_views": len(method.sizes),
        "teacher_views": method.teacher_views, "data": "random normal",
        "threads": torch.get_num_threads(), "warmup": a.warmup, "steps": a.steps,
        "optimizer": kind, "peak_lr": peak_lr, "img_per_s": round(ips, 3),
        "s_per_step": round(s_step, 4), "s_per_step_min": round(min(step_s), 4),
        "s_per_step_max": round(max(step_s), 4), "step_s": [round(s, 4) for s in step_s],
        "gflop_per_img": round(gflop_img, 5), "head_gflop_per_img": round(head_gflop_img, 5),
        "gflops": round(gflop_img * ips, 3), "peak_rss_mb": round(peak_rss, 1),
        "rss_after_import_mb": round(RSS_IMPORT_MB, 1), "rss_start_mb": round(RSS_START_MB, 1),
        "last_loss": round(loss_v, 5)}))


if __name__ == "__main__":
    main()
