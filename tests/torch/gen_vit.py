"""Golden values for tests/test_vit.c: the transformer ops of src/nn/graph_tf.c
and whole small ViTs (src/nn/vit.c) in PyTorch.

Usage: /usr/bin/python3 tests/torch/gen_vit.py OUTDIR
Writes OUTDIR/vit_ops.safetensors and OUTDIR/vit_<name>.safetensors for the
models of MODELS.

timm is not a dependency: the modules below are written after timm's
VisionTransformer (timm 0.4 to 0.6: PatchEmbed, Attention, Mlp, Block; LayerNorm
eps 1e-6, exact GELU, no dropout; drop path as timm's DropPath with the
per-sample keep masks that selfsup draws, reproduced through selfsup_rng.py)
with the same module and parameter names, so their state_dict is timm's. The sin-cos position table is
MAE's get_2d_sincos_pos_embed (util/pos_embed.py), copied verbatim.

Inputs and parameters are float32 draws (seeded); every result is computed in
float64 from them (the exact answer a float32 implementation approximates) and
stored as float32. A float32 PyTorch run of each model is compared with the
float64 one under the C test's tolerances (TOL); the script fails when
PyTorch's own float32 run uses more than a third of them, so the tolerances
are ones PyTorch itself meets with room to spare.

vit_ops.safetensors, per case <c>:
  ln, ln_big:      <c>.x (M, D), <c>.gamma, <c>.beta, <c>.r (M, D), <c>.eps (1),
                   <c>.out, <c>.grad_x, <c>.grad_gamma, <c>.grad_beta
                   (gradients of sum(r * layernorm(x)))
  attn, attn_big:  <c>.qkv (B*T, 3D), <c>.r (B*T, D), <c>.dims (B, T, heads) I32,
                   <c>.out (B*T, D), <c>.grad_qkv (of sum(r * out))
  pe:              pe.x (N, C, H, W), pe.w (D, C, p, p), pe.b (D), pe.r (N*T, D),
                   pe.out (N*T, D), pe.grad_x, pe.grad_w, pe.grad_b
  patchify:        patchify.x (N, C, H, W), patchify.out (N*T, p*p*C), MAE's order
                   (generalized to H != W), p = 4
  sincos:          sincos.out (1 + g*g, D) for D = 24, g = 4, with the zero row

vit_<name>.safetensors:
  <state_dict name>   every parameter and buffer (pos_embed is a buffer for
                      sin-cos, as MAE's frozen parameter)
  res.input (N, C, H, W)
  res.tokens (N*L, D)      encoder output (timm's forward_features, as rows)
  res.features (N, D)      the pooled feature (class token, or fc_norm(mean))
  res.r_tokens, res.r_features: weights of the two losses
  res.loss_tokens (1) = sum(r_tokens * tokens), res.grad_tokens.<param>
                           (zeros for a parameter the loss does not reach)
  res.loss_features (1) = sum(r_features * features), res.grad_features.<param>
  with a class token, MAE's encoder on visible patches:
  res.keep (N, K) I32, res.vis_tokens (N*(1+K), D), res.r_vis,
  res.loss_vis (1), res.grad_vis.<param>
  with drop path (every forward above then drops, each with the masks of
  the first training pass after ssl_vit_drop_path_key(dp_seed, dp_step)):
  res.dp_scales.<i> (2N) block i's scales of that pass (attention's, then
  the MLP's), res.features_nodrop (N, D) the features without drop path
Metadata: the config (img_size, patch, in_chans, embed_dim, depth, heads,
mlp_ratio, qkv_bias, pos, class_token, drop_path, dp_seed, dp_step) and the
share of the tolerances used by PyTorch's float32 run.
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from golden import save  # noqa: E402
from selfsup_rng import MASK, derive  # noqa: E402

# The C test's tolerances (tests/test_vit.c), as tests/test_resnet.c's ResNet-18.
TOL = {"out_atol": 1e-4, "out_rtol": 1e-3, "loss_rtol": 1e-5,  # loss: of sum |r y|
       "grad_atol_of_max": 1e-4, "grad_rtol": 1e-3}

MODELS = [
    # name, in_chans, pos, class_token, qkv_bias, drop path rate
    ("c1_learned", 1, "learned", 1, 1, 0.0),
    ("c3_sincos", 3, "sincos", 1, 1, 0.0),
    ("c3_avg", 3, "learned", 0, 0, 0.0),
    ("c1_droppath", 1, "learned", 1, 1, 0.5),
]
DP_TAG = 0x4450415448  # SSL_VIT_DROP_PATH_TAG (include/selfsup/vit.h)
DP_SEED, DP_STEP = 7, 5  # a key whose first pass drops some samples and keeps others
IMG, PATCH, DEPTH, DIM, HEADS, MLP_RATIO, BATCH, KEEP = 12, 4, 2, 24, 3, 4.0, 3, 5


# ---- MAE util/pos_embed.py (np.float replaced by np.float64, removed in numpy 1.24)
def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    pos_embed = get_2d_sincos_pos_embed_from_grid(embed_dim, grid)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def get_2d_sincos_pos_embed_from_grid(embed_dim, grid):
    assert embed_dim % 2 == 0
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)
    return np.concatenate([emb_h, emb_w], axis=1)  # (H*W, D)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    assert embed_dim % 2 == 0
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.
    omega = 1. / 10000**omega  # (D/2,)
    pos = pos.reshape(-1)  # (M,)
    out = np.einsum('m,d->md', pos, omega)  # (M, D/2), outer product
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D)


def drop_path_scales(seed, step, pass_, block, rate, n):
    """ssl_vit_drop_path_scales: 2n float32 scales, 0 (dropped) or 1 / keep."""
    keep = np.float32(1) - np.float32(rate)
    inv = np.float32(1) / keep
    r = derive((seed ^ DP_TAG) & MASK, step, (pass_ << 32) | block)
    return torch.tensor([float(inv) if r.uniform() < float(keep) else 0.0 for _ in range(2 * n)],
                        dtype=torch.float32)


# ---- timm's ViT modules (names and forward), without dropout
class PatchEmbed(nn.Module):
    def __init__(self, patch, in_chans, dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


class Attention(nn.Module):
    def __init__(self, dim, heads, qkv_bias):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=bool(qkv_bias))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        return self.proj(attention(self.qkv(x), self.heads, self.scale))


def attention(qkv, heads, scale):
    """timm's Attention.forward after the qkv projection: qkv (B, N, 3C)."""
    B, N, C3 = qkv.shape
    C = C3 // 3
    qkv = qkv.reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    attn = (q @ k.transpose(-2, -1)) * scale
    attn = attn.softmax(dim=-1)
    return (attn @ v).transpose(1, 2).reshape(B, N, C)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, qkv_bias):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.scale = None  # drop path: (2N) per-sample branch scales, or None

    def drop(self, h, k):
        """Branch k's output through drop path (k = 0 attention, 1 MLP)."""
        if self.scale is None:
            return h
        n = len(self.scale) // 2
        return h * self.scale[k * n:(k + 1) * n].to(h.dtype).view(-1, 1, 1)

    def forward(self, x):
        x = x + self.drop(self.attn(self.norm1(x)), 0)  # timm: x + drop_path(attn(norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)), 1)


class VisionTransformer(nn.Module):
    def __init__(self, img, patch, in_chans, dim, depth, heads, mlp_ratio, qkv_bias, pos,
                 class_token):
        super().__init__()
        self.grid = img // patch
        T = self.grid * self.grid
        self.class_token = class_token
        if class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        if pos == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, T + class_token, dim))
        else:  # MAE's fixed table; a buffer here, a frozen parameter there
            table = get_2d_sincos_pos_embed(dim, self.grid, cls_token=bool(class_token))
            self.register_buffer("pos_embed", torch.from_numpy(table).float().unsqueeze(0))
        self.patch_embed = PatchEmbed(patch, in_chans, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, qkv_bias) for _ in range(depth)])
        if class_token:
            self.norm = nn.LayerNorm(dim, eps=1e-6)
        else:  # timm's global_pool='avg': norm is the identity, fc_norm after pooling
            self.fc_norm = nn.LayerNorm(dim, eps=1e-6)
        self.drop_path = 0.0  # timm's dpr = linspace(0, drop_path, depth)

    def run_blocks(self, x):
        """The blocks; with drop path, the masks of the first training pass of
        selfsup's key (DP_SEED, DP_STEP), as the C test sets it before each pass."""
        depth = len(self.blocks)
        for i, blk in enumerate(self.blocks):
            rate = self.drop_path * i / (depth - 1) if depth > 1 else 0.0
            blk.scale = drop_path_scales(DP_SEED, DP_STEP, 0, i, rate, x.shape[0]) \
                if rate > 0 else None
            x = blk(x)
            blk.scale = None
        return x

    def forward_features(self, x):  # timm: -> (N, L, D)
        x = self.patch_embed(x)
        if self.class_token:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.run_blocks(x + self.pos_embed)
        return self.norm(x) if self.class_token else x

    def forward_resized(self, x):  # another image size: DINO's interpolate_pos_encoding,
        # bicubic to the exact target grid (no antialias)
        n = x.shape[0]
        t = self.patch_embed(x)
        g2 = int(round(t.shape[1] ** 0.5))
        D = t.shape[2]
        pos = self.pos_embed[:, self.class_token:, :]
        pos = F.interpolate(pos.reshape(1, self.grid, self.grid, D).permute(0, 3, 1, 2),
                            size=(g2, g2), mode="bicubic", align_corners=False)
        t = t + pos.permute(0, 2, 3, 1).reshape(1, g2 * g2, D)
        if self.class_token:
            cls = self.cls_token + self.pos_embed[:, :1, :]
            t = torch.cat((cls.expand(n, -1, -1), t), dim=1)
        t = self.run_blocks(t)
        return self.pool(self.norm(t) if self.class_token else t)

    def pool(self, x):
        return x[:, 0] if self.class_token else self.fc_norm(x.mean(dim=1))

    def forward_visible(self, x, keep):  # MAE's forward_encoder with given ids_keep
        x = self.patch_embed(x) + self.pos_embed[:, 1:, :]
        x = torch.gather(x, 1, keep.unsqueeze(-1).repeat(1, 1, x.shape[2]))
        cls = self.cls_token + self.pos_embed[:, :1, :]
        x = torch.cat((cls.expand(x.shape[0], -1, -1), x), dim=1)
        return self.norm(self.run_blocks(x))


def randomize(model, g):
    """Weights away from the init's near-identity, so every path matters:
    linear and conv weights ~ 1/sqrt(fan_in), biases and LayerNorm affine
    off their defaults, sizeable class token and position embeddings."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or \
               name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif name in ("cls_token", "pos_embed"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def tol_share(ref, got, atol, rtol):
    """Largest |got - ref| / (atol + rtol |ref|)."""
    return float(((got.double() - ref.double()).abs() / (atol + rtol * ref.double().abs())).max())


def resized(x, which):
    """The input cut to 2 patches a side fewer, or padded to 2 more."""
    if which == "small":
        return x[:, :, :IMG - 2 * PATCH, :IMG - 2 * PATCH]
    return F.pad(x, (PATCH, PATCH, PATCH, PATCH))


def run_model(model, x, keep, r):
    """Outputs and parameter gradients of the three losses; model and x in one dtype."""
    out = {}
    for loss_name in ("tokens", "features", "vis", "small", "large"):
        if loss_name == "vis" and keep is None:
            continue
        model.zero_grad(set_to_none=True)
        if loss_name == "vis":
            y = model.forward_visible(x, keep)
        elif loss_name in ("small", "large"):  # other sizes, pos embeddings resampled
            y = model.forward_resized(resized(x, loss_name))
        else:
            tok = model.forward_features(x)
            y = tok if loss_name == "tokens" else model.pool(tok)
        y = y.reshape(-1, y.shape[-1])
        loss = (y * r[loss_name].to(y.dtype)).sum()
        loss.backward()
        # a parameter the loss does not reach (fc_norm for the tokens) gets zeros
        out[loss_name] = (y.detach(), loss.detach().reshape(1),
                          {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                           for n, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    return out


def make_model(out_dir, name, in_chans, pos, class_token, qkv_bias, drop_path, seed):
    g = torch.Generator().manual_seed(seed)
    model = VisionTransformer(IMG, PATCH, in_chans, DIM, DEPTH, HEADS, MLP_RATIO, qkv_bias, pos,
                              class_token)
    randomize(model, g)
    model.drop_path = drop_path
    T = (IMG // PATCH) ** 2
    x = torch.randn(BATCH, in_chans, IMG, IMG, generator=g)
    keep = None
    if class_token:  # MAE: ids_keep = argsort(noise)[:, :K], not sorted
        keep = torch.argsort(torch.rand(BATCH, T, generator=g), dim=1)[:, :KEEP]
    L = T + class_token
    r = {"tokens": torch.randn(BATCH * L, DIM, generator=g),
         "features": torch.randn(BATCH, DIM, generator=g),
         "vis": torch.randn(BATCH * (1 + KEEP), DIM, generator=g),
         "small": torch.randn(BATCH, DIM, generator=g),
         "large": torch.randn(BATCH, DIM, generator=g)}

    t = {k: v.clone() for k, v in model.state_dict().items()}
    res64 = run_model(model.double(), x.double(), keep, r)
    res32 = run_model(model.float(), x, keep, r)

    # PyTorch's own float32 run against the float64 answer, under the C tolerances
    share = 0.0
    for k, (y64, l64, g64) in res64.items():
        y32, l32, g32 = res32[k]
        # the loss is a sum with cancellation: its tolerance is relative to sum |r y|
        loss_scale = float((y64 * r[k].double()).abs().sum())
        share = max(share, tol_share(y64, y32, TOL["out_atol"], TOL["out_rtol"]),
                    tol_share(l64, l32, TOL["loss_rtol"] * loss_scale, 0.0))
        for n in g64:
            atol = 1e-6 + TOL["grad_atol_of_max"] * float(g64[n].abs().max())
            share = max(share, tol_share(g64[n], g32[n], atol, TOL["grad_rtol"]))
    if share > 1 / 3:
        sys.exit("%s: PyTorch float32 uses %.3f of the C tolerances (> 1/3); pick another seed"
                 % (name, share))

    t["res.input"] = x
    t["res.input_small"] = resized(x, "small").contiguous()
    t["res.input_large"] = resized(x, "large").contiguous()
    for k, (y, loss, grads) in res64.items():
        key = {"tokens": "tokens", "features": "features", "vis": "vis_tokens",
               "small": "small_features", "large": "large_features"}[k]
        t["res." + key] = y
        t["res.r_" + k] = r[k]
        t["res.loss_" + k] = loss
        for n, gr in grads.items():
            t["res.grad_%s.%s" % (k, n)] = gr
    if keep is not None:
        t["res.keep"] = keep.to(torch.int32)
    if drop_path > 0:
        for i in range(1, DEPTH):
            sc = drop_path_scales(DP_SEED, DP_STEP, 0, i, drop_path * i / (DEPTH - 1), BATCH)
            if (sc == 0).all() or (sc != 0).all():
                sys.exit("%s: DP_SEED/DP_STEP should drop some branches and keep others" % name)
            t["res.dp_scales.%d" % i] = sc
        model.drop_path = 0.0
        with torch.no_grad():
            t["res.features_nodrop"] = model.double().pool(model.forward_features(x.double()))
        model.float()
    meta = {"img_size": IMG, "patch": PATCH, "in_chans": in_chans, "embed_dim": DIM,
            "depth": DEPTH, "heads": HEADS, "mlp_ratio": MLP_RATIO, "qkv_bias": qkv_bias,
            "pos": pos, "class_token": class_token, "keep": KEEP if keep is not None else 0,
            "drop_path": drop_path, "dp_seed": DP_SEED, "dp_step": DP_STEP,
            "seed": seed, "torch_float32_tolerance_share": "%.4f" % share}
    save(os.path.join(out_dir, "vit_%s.safetensors" % name), t, meta)
    print("vit_%s: PyTorch float32 uses %.3f of the tolerances" % (name, share))


def ops(out_dir):
    g = torch.Generator().manual_seed(606)
    randn = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    t = {}

    def ln_case(c, M, D, eps, shift, scale):
        x = shift + scale * randn(M, D)
        gamma, beta, r = 1 + 0.3 * randn(D), 0.3 * randn(D), randn(M, D)
        xs = [v.double().requires_grad_() for v in (x, gamma, beta)]
        y = F.layer_norm(xs[0], (D,), xs[1], xs[2], eps)
        (y * r.double()).sum().backward()
        t.update({c + ".x": x, c + ".gamma": gamma, c + ".beta": beta, c + ".r": r,
                  c + ".eps": torch.tensor([eps], dtype=torch.float32), c + ".out": y.detach(),
                  c + ".grad_x": xs[0].grad, c + ".grad_gamma": xs[1].grad,
                  c + ".grad_beta": xs[2].grad})

    ln_case("ln", 7, 12, 1e-6, 0.0, 1.0)
    ln_case("ln_big", 40, 96, 1e-5, 3.0, 0.5)  # a mean far from 0, as in a residual stream

    def attn_case(c, B, T, D, heads, scale_in):
        qkv = scale_in * randn(B * T, 3 * D)
        r = randn(B * T, D)
        q64 = qkv.double().requires_grad_()
        y = attention(q64.reshape(B, T, 3 * D), heads, (D // heads) ** -0.5).reshape(B * T, D)
        (y * r.double()).sum().backward()
        t.update({c + ".qkv": qkv, c + ".r": r, c + ".out": y.detach(),
                  c + ".grad_qkv": q64.grad,
                  c + ".dims": torch.tensor([B, T, heads], dtype=torch.int32)})

    attn_case("attn", 2, 5, 12, 3, 1.0)
    attn_case("attn_big", 3, 17, 16, 2, 2.0)  # sharper softmax, longer rows

    # patch embedding on a non-square image
    N, C, H, W, D, p = 2, 3, 8, 12, 5, 4
    x, w, b = randn(N, C, H, W), randn(D, C, p, p) / (C * p * p) ** 0.5, 0.3 * randn(D)
    r = randn(N * (H // p) * (W // p), D)
    xs = [v.double().requires_grad_() for v in (x, w, b)]
    y = F.conv2d(xs[0], xs[1], xs[2], stride=p).flatten(2).transpose(1, 2).reshape(-1, D)
    (y * r.double()).sum().backward()
    t.update({"pe.x": x, "pe.w": w, "pe.b": b, "pe.r": r, "pe.out": y.detach(),
              "pe.grad_x": xs[0].grad, "pe.grad_w": xs[1].grad, "pe.grad_b": xs[2].grad})

    # MAE's patchify: reshape(N, C, h, p, w, p), einsum('nchpwq->nhwpqc')
    x = randn(N, C, H, W)
    h, wd = H // p, W // p
    y = torch.einsum("nchpwq->nhwpqc", x.reshape(N, C, h, p, wd, p)).reshape(N * h * wd, p * p * C)
    t.update({"patchify.x": x, "patchify.out": y})

    t["sincos.out"] = torch.from_numpy(get_2d_sincos_pos_embed(24, 4, cls_token=True)).float()
    save(os.path.join(out_dir, "vit_ops.safetensors"), t)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    ops(out)
    for i, (name, c, pos, cls, qb, dp) in enumerate(MODELS):
        make_model(out, name, c, pos, cls, qb, dp, 1000 + i)


if __name__ == "__main__":
    main()
