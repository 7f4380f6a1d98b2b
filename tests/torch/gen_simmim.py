"""Golden values for tests/test_mim.c: SimMIM's loss and gradients
(src/methods/simmim.c) in PyTorch.

Usage: /usr/bin/python3 tests/torch/gen_simmim.py OUTDIR
Writes OUTDIR/simmim_<name>.safetensors for the cases of CASES.

The model is microsoft/SimMIM's models/simmim.py on the ViT of
tests/torch/gen_vit.py (timm's VisionTransformer, names and forward):
VisionTransformerForSimMIM.forward (patch embedding, masked patches replaced
by mask_token as x * (1 - w) + mask_token * w BEFORE the position
embedding, class token, blocks, norm, patch tokens to a (B, D, h, w) map),
SimMIM.decoder = nn.Sequential(Conv2d(D, p*p*C, 1), PixelShuffle(p)) (the
official hard-codes 3 output channels; C here), and the official loss
    (F.l1_loss(x, x_rec, reduction='none') * mask).sum() / (mask.sum() + 1e-5) / in_chans
with the token mask repeated to pixels. Masks come from SimMIM's
MaskGenerator (numpy, mask unit = model patch here) on a seeded generator.

Inputs and parameters are float32 draws; results are computed in float64
from them and stored as float32. A float32 PyTorch run is compared with the
float64 one under the C test's tolerances (gen_vit.py's TOL); the script fails
when PyTorch's own float32 run uses more than a third of them.

simmim_<name>.safetensors:
  <name>            every parameter: the encoder's state_dict names (cls_token,
                    pos_embed, patch_embed.proj.*, blocks.*, norm.*), mask_token,
                    decoder.0.weight (p*p*C, D, 1, 1), decoder.0.bias
  res.input (B, C, H, W), res.mask (B, T) U8, res.loss (1),
  res.grad.<name>   d loss / d parameter for every parameter
Metadata: the ViT config, mask_ratio, and the share of the tolerances used
by PyTorch's float32 run.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_vit import TOL, VisionTransformer, randomize, tol_share  # noqa: E402
from golden import save  # noqa: E402

CASES = [
    # name, in_chans, img, patch, mask_ratio
    ("c3_p2", 3, 8, 2, 0.6),
    ("c1_p4", 1, 8, 4, 0.5),
]
DIM, DEPTH, HEADS, MLP_RATIO, BATCH = 16, 2, 2, 4.0, 3


class MaskGenerator:
    """SimMIM data/data_simmim.py, with a numpy Generator instead of the global one."""

    def __init__(self, rng, input_size, mask_patch_size, model_patch_size, mask_ratio):
        self.rng = rng
        self.rand_size = input_size // mask_patch_size
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.rand_size ** 2
        self.mask_count = int(np.ceil(self.token_count * mask_ratio))

    def __call__(self):
        mask_idx = self.rng.permutation(self.token_count)[:self.mask_count]
        mask = np.zeros(self.token_count, dtype=int)
        mask[mask_idx] = 1
        mask = mask.reshape((self.rand_size, self.rand_size))
        return mask.repeat(self.scale, axis=0).repeat(self.scale, axis=1)


class VisionTransformerForSimMIM(VisionTransformer):
    """models/simmim.py's forward on gen_vit's timm ViT (learned positions,
    a class token; no relative position bias, no layer scale)."""

    def __init__(self, img, patch, in_chans):
        super().__init__(img, patch, in_chans, DIM, DEPTH, HEADS, MLP_RATIO, 1, "learned", 1)
        self.in_chans, self.patch_size, self.num_features = in_chans, patch, DIM
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DIM))

    def forward(self, x, mask):
        x = self.patch_embed(x)
        B, L, _ = x.shape
        mask_token = self.mask_token.expand(B, L, -1)
        w = mask.flatten(1).unsqueeze(-1).type_as(mask_token)
        x = x * (1 - w) + mask_token * w
        cls_tokens = self.cls_token.expand(B, -1, -1)
        x = torch.cat((cls_tokens, x), dim=1)
        x = x + self.pos_embed
        x = self.blocks(x)
        x = self.norm(x)
        x = x[:, 1:]
        B, L, C = x.shape
        H = W = int(L ** 0.5)
        return x.permute(0, 2, 1).reshape(B, C, H, W)


class SimMIM(nn.Module):
    def __init__(self, encoder, encoder_stride):
        super().__init__()
        self.encoder = encoder
        self.encoder_stride = encoder_stride
        self.decoder = nn.Sequential(
            nn.Conv2d(in_channels=encoder.num_features,
                      out_channels=encoder_stride ** 2 * encoder.in_chans, kernel_size=1),
            nn.PixelShuffle(encoder_stride))
        self.in_chans = encoder.in_chans
        self.patch_size = encoder.patch_size

    def forward(self, x, mask):
        z = self.encoder(x, mask)
        x_rec = self.decoder(z)
        mask = mask.repeat_interleave(self.patch_size, 1).repeat_interleave(self.patch_size, 2) \
                   .unsqueeze(1).contiguous()
        loss_recon = F.l1_loss(x, x_rec, reduction='none')
        return (loss_recon * mask).sum() / (mask.sum() + 1e-5) / self.in_chans


def c_name(n):
    """Our names: the encoder's without "encoder.", the head's as they are."""
    return n[len("encoder."):] if n.startswith("encoder.") else n


def run(model, x, mask):
    model.zero_grad(set_to_none=True)
    loss = model(x, mask)
    loss.backward()
    return loss.detach().reshape(1), {c_name(n): p.grad.detach().clone()
                                      for n, p in model.named_parameters()}


def make_case(out_dir, name, in_chans, img, patch, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    model = SimMIM(VisionTransformerForSimMIM(img, patch, in_chans), patch)
    randomize(model, g)  # also the mask token (a weight of 3 dims) and the decoder
    grid = img // patch
    gen = MaskGenerator(np.random.default_rng(seed), img, patch, patch, ratio)
    mask = torch.from_numpy(np.stack([gen() for _ in range(BATCH)])).reshape(BATCH, grid, grid)
    x = torch.randn(BATCH, in_chans, img, img, generator=g)

    params = {c_name(n): p.detach().clone() for n, p in model.named_parameters()}
    l64, g64 = run(model.double(), x.double(), mask)
    l32, g32 = run(model.float(), x, mask)

    share = tol_share(l64, l32, TOL["loss_rtol"] * float(l64.abs()), 0.0)
    for n in g64:
        atol = 1e-6 + TOL["grad_atol_of_max"] * float(g64[n].abs().max())
        share = max(share, tol_share(g64[n], g32[n], atol, TOL["grad_rtol"]))
    if share > 1 / 3:
        sys.exit("simmim %s: PyTorch float32 uses %.3f of the C tolerances (> 1/3); pick another seed"
                 % (name, share))

    t = dict(params)
    t["res.input"] = x
    t["res.mask"] = mask.reshape(BATCH, grid * grid).to(torch.uint8)
    t["res.loss"] = l64
    for n, gr in g64.items():
        t["res.grad." + n] = gr
    meta = {"img_size": img, "patch": patch, "in_chans": in_chans, "embed_dim": DIM,
            "depth": DEPTH, "heads": HEADS, "mlp_ratio": MLP_RATIO, "qkv_bias": 1,
            "pos": "learned", "class_token": 1, "mask_ratio": ratio,
            "masked_per_image": int(math.ceil(grid * grid * ratio)), "seed": seed,
            "torch_float32_tolerance_share": "%.4f" % share}
    save(os.path.join(out_dir, "simmim_%s.safetensors" % name), t, meta)
    print("simmim_%s: loss %.6f, PyTorch float32 uses %.3f of the tolerances"
          % (name, float(l64), share))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for i, (name, c, img, p, ratio) in enumerate(CASES):
        make_case(out, name, c, img, p, ratio, 2000 + i)


if __name__ == "__main__":
    main()
