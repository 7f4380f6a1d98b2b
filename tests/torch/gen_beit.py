"""Golden values for tests/test_mim.c: BEiT's loss (src/methods/beit.c) and
the VQ tokenizer (src/methods/vq_tokenizer.c) in PyTorch.

Usage: /usr/bin/python3 tests/torch/gen_beit.py OUTDIR
Writes OUTDIR/beit_<name>.safetensors for the cases of CASES and
OUTDIR/vq_<name>.safetensors for those of VQ_CASES.

BEiT: microsoft/unilm beit/modeling_pretrain.py's
VisionTransformerForMaskedImageModeling on the ViT of tests/torch/gen_vit.py
(timm's names and forward; no relative position bias, no layer scale):
forward_features (patch embedding, masked patches replaced by mask_token as
x * (1 - w) + mask_token * w before the position embedding, class token,
blocks, norm), lm_head on x[:, 1:][bool_masked_pos], and
engine_for_pretraining.py's nn.CrossEntropyLoss() against the visual tokens
of the masked positions. Masks come from beit/masking_generator.py's
MaskingGenerator (Python's random, seeded); tokens are random ids.

VQ tokenizer: a per-patch VQ-VAE (van den Oord et al. 2017) as the C one:
patches in (c, ky, kx) order, encoder Linear-ReLU-Linear, codebook
nn.Embedding, nearest code by squared Euclidean distance (argmin, first of
equals), straight-through z + (e - z).detach() into a Linear-ReLU-Linear
decoder, loss = mse(recon, patches) + mse(e, z.detach()) + beta mse(z, e.detach()).

Inputs and parameters are float32 draws; results are computed in float64
and stored as float32. PyTorch's float32 run must use at most a third of the
C test's tolerances (gen_vit.py's TOL) and choose the same codes.

beit_<name>.safetensors:
  <name>          every parameter: the encoder's state_dict names, mask_token,
                  lm_head.weight (vocab, D), lm_head.bias
  res.input (B, C, H, W), res.mask (B, T) U8, res.tokens (B, T) I32, res.loss (1),
  res.grad.<name> for every parameter
vq_<name>.safetensors:
  <name>          encoder.0.*, encoder.2.*, codebook.weight, decoder.0.*, decoder.2.*
  res.input (B, C, H, W), res.codes (B*T) I32, res.loss (1),
  res.parts (3) (recon MSE, codebook term, commitment term), res.grad.<name>
Metadata: the configs and the share of the tolerances PyTorch's float32 run used.
"""
import math
import os
import random
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_vit import TOL, VisionTransformer, randomize, tol_share  # noqa: E402
from golden import save  # noqa: E402

CASES = [
    # name, in_chans, img, patch, vocab, num_masking, min_block
    ("c1_p2", 1, 8, 2, 12, 6, 2),
    ("c3_p4", 3, 8, 4, 7, 2, 1),
]
DIM, DEPTH, HEADS, MLP_RATIO, BATCH = 16, 2, 2, 4.0, 3

VQ_CASES = [
    # name, in_chans, img, patch, hidden, code_dim, codes, beta
    ("c3_p2", 3, 8, 2, 16, 8, 10, 0.25),
    ("c1_p4", 1, 8, 4, 12, 6, 5, 0.25),
]


class MaskingGenerator:
    """beit/masking_generator.py (np.int -> int, removed from numpy)."""

    def __init__(self, input_size, num_masking_patches, min_num_patches=4, max_num_patches=None,
                 min_aspect=0.3, max_aspect=None):
        if not isinstance(input_size, tuple):
            input_size = (input_size, ) * 2
        self.height, self.width = input_size
        self.num_patches = self.height * self.width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def _mask(self, mask, max_mask_patches):
        delta = 0
        for attempt in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = random.randint(0, self.height - h)
                left = random.randint(0, self.width - w)
                num_masked = mask[top: top + h, left: left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    def __call__(self):
        mask = np.zeros(shape=(self.height, self.width), dtype=int)
        mask_count = 0
        while mask_count < self.num_masking_patches:
            max_mask_patches = self.num_masking_patches - mask_count
            max_mask_patches = min(max_mask_patches, self.max_num_patches)
            delta = self._mask(mask, max_mask_patches)
            if delta == 0:
                break
            mask_count += delta
        return mask


class VisionTransformerForMaskedImageModeling(VisionTransformer):
    def __init__(self, img, patch, in_chans, vocab):
        super().__init__(img, patch, in_chans, DIM, DEPTH, HEADS, MLP_RATIO, 1, "learned", 1)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.lm_head = nn.Linear(DIM, vocab)

    def forward_features(self, x, bool_masked_pos):
        x = self.patch_embed(x)
        batch_size, seq_len, _ = x.size()
        cls_tokens = self.cls_token.expand(batch_size, -1, -1)
        mask_token = self.mask_token.expand(batch_size, seq_len, -1)
        w = bool_masked_pos.unsqueeze(-1).type_as(mask_token)
        x = x * (1 - w) + mask_token * w
        x = torch.cat((cls_tokens, x), dim=1)
        x = x + self.pos_embed
        x = self.blocks(x)
        return self.norm(x)

    def forward(self, x, bool_masked_pos):
        x = self.forward_features(x, bool_masked_pos=bool_masked_pos)
        x = x[:, 1:]
        return self.lm_head(x[bool_masked_pos])


def run(model, fn):
    model.zero_grad(set_to_none=True)
    loss, extra = fn(model)
    loss.backward()
    return loss.detach().reshape(1), extra, {n: p.grad.detach().clone()
                                             for n, p in model.named_parameters()}


def check_share(what, l64, l32, g64, g32):
    share = tol_share(l64, l32, TOL["loss_rtol"] * float(l64.abs().sum()), 0.0)
    for n in g64:
        atol = 1e-6 + TOL["grad_atol_of_max"] * float(g64[n].abs().max())
        share = max(share, tol_share(g64[n], g32[n], atol, TOL["grad_rtol"]))
    if share > 1 / 3:
        sys.exit("%s: PyTorch float32 uses %.3f of the C tolerances (> 1/3); pick another seed"
                 % (what, share))
    return share


def beit_case(out_dir, name, in_chans, img, patch, vocab, num_masking, min_block, seed):
    g = torch.Generator().manual_seed(seed)
    random.seed(seed)
    model = VisionTransformerForMaskedImageModeling(img, patch, in_chans, vocab)
    randomize(model, g)
    grid = img // patch
    gen = MaskingGenerator(grid, num_masking, min_num_patches=min_block)
    masks = np.stack([gen() for _ in range(BATCH)]).reshape(BATCH, grid * grid)
    bool_masked_pos = torch.from_numpy(masks).to(torch.bool)
    assert bool_masked_pos.any(1).all(), "every image needs a masked patch"
    x = torch.randn(BATCH, in_chans, img, img, generator=g)
    input_ids = torch.randint(0, vocab, (BATCH, grid * grid), generator=g)
    labels = input_ids[bool_masked_pos]

    def fn(m):
        outputs = m(x.to(m.lm_head.weight.dtype), bool_masked_pos=bool_masked_pos)
        return nn.CrossEntropyLoss()(input=outputs, target=labels), None

    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    l64, _, g64 = run(model.double(), fn)
    l32, _, g32 = run(model.float(), fn)
    share = check_share("beit " + name, l64, l32, g64, g32)
    t = dict(params)
    t["res.input"] = x
    t["res.mask"] = bool_masked_pos.to(torch.uint8)
    t["res.tokens"] = input_ids.to(torch.int32)
    t["res.loss"] = l64
    for n, gr in g64.items():
        t["res.grad." + n] = gr
    meta = {"img_size": img, "patch": patch, "in_chans": in_chans, "embed_dim": DIM,
            "depth": DEPTH, "heads": HEADS, "mlp_ratio": MLP_RATIO, "qkv_bias": 1,
            "pos": "learned", "class_token": 1, "vocab": vocab, "num_masking": num_masking,
            "seed": seed, "torch_float32_tolerance_share": "%.4f" % share}
    save(os.path.join(out_dir, "beit_%s.safetensors" % name), t, meta)
    print("beit_%s: loss %.6f over %d masked patches, PyTorch float32 uses %.3f of the tolerances"
          % (name, float(l64), int(bool_masked_pos.sum()), share))


class VQ(nn.Module):
    def __init__(self, P, hidden, code_dim, codes):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(P, hidden), nn.ReLU(), nn.Linear(hidden, code_dim))
        self.codebook = nn.Embedding(codes, code_dim)
        self.decoder = nn.Sequential(nn.Linear(code_dim, hidden), nn.ReLU(), nn.Linear(hidden, P))

    def forward(self, x, patch, beta):
        N, C, H, W = x.shape
        h, w = H // patch, W // patch
        patches = x.reshape(N, C, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5) \
                   .reshape(N * h * w, C * patch * patch)
        z = self.encoder(patches)
        E = self.codebook.weight
        d = (z ** 2).sum(1, keepdim=True) + (E ** 2).sum(1) - 2 * z @ E.t()
        codes = d.argmin(1)
        e = self.codebook(codes)
        st = z + (e - z).detach()
        rec = self.decoder(st)
        parts = (F.mse_loss(rec, patches), F.mse_loss(e, z.detach()), F.mse_loss(z, e.detach()))
        return parts[0] + parts[1] + beta * parts[2], (codes, d, parts)


def vq_case(out_dir, name, in_chans, img, patch, hidden, code_dim, codes, beta, seed):
    g = torch.Generator().manual_seed(seed)
    P = in_chans * patch * patch
    model = VQ(P, hidden, code_dim, codes)
    x = torch.randn(BATCH, in_chans, img, img, generator=g)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g) if p.dim() == 1 else
                    torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
        # codes near the data, so that several are chosen
        z = model.encoder(x.reshape(BATCH, in_chans, img // patch, patch, img // patch, patch)
                          .permute(0, 2, 4, 1, 3, 5).reshape(-1, P))
        pick = torch.randperm(z.shape[0], generator=g)[:codes]
        model.codebook.weight.copy_(z[pick] + 0.3 * torch.randn(codes, code_dim, generator=g))

    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    fn = lambda m: m(x.to(m.codebook.weight.dtype), patch, beta)  # noqa: E731
    l64, (c64, d64, parts64), g64 = run(model.double(), fn)
    l32, (c32, _, _), g32 = run(model.float(), fn)
    if not torch.equal(c64, c32):
        sys.exit("vq %s: float32 and float64 choose different codes; pick another seed" % name)
    # no near-ties: the C test must choose the same codes
    ds = d64.detach().sort(1).values
    gap = float((ds[:, 1] - ds[:, 0]).min())
    if gap < 1e-3:
        sys.exit("vq %s: a near-tie between codes (gap %g); pick another seed" % (name, gap))
    share = check_share("vq " + name, l64, l32, g64, g32)
    t = dict(params)
    t["res.input"] = x
    t["res.codes"] = c64.to(torch.int32)
    t["res.loss"] = l64
    t["res.parts"] = torch.stack([p.detach() for p in parts64])
    for n, gr in g64.items():
        t["res.grad." + n] = gr
    meta = {"patch": patch, "in_chans": in_chans, "hidden": hidden, "code_dim": code_dim,
            "codes": codes, "beta": beta, "seed": seed, "codes_used": len(set(c64.tolist())),
            "torch_float32_tolerance_share": "%.4f" % share}
    save(os.path.join(out_dir, "vq_%s.safetensors" % name), t, meta)
    print("vq_%s: loss %.6f, %d of %d codes used, PyTorch float32 uses %.3f of the tolerances"
          % (name, float(l64), len(set(c64.tolist())), codes, share))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for i, case in enumerate(CASES):
        beit_case(out, *case, seed=3000 + i)
    for i, case in enumerate(VQ_CASES):
        vq_case(out, *case, seed=4000 + i)


if __name__ == "__main__":
    main()
