"""Golden values for tests/test_mae.c: MAE (He et al. 2021) as the official
facebookresearch/mae models_mae.py computes it, on small ViTs.

Usage: /usr/bin/python3 tests/torch/gen_mae.py OUTDIR
Writes OUTDIR/mae_<name>.safetensors for the models of MODELS and
OUTDIR/mae_len_keep.safetensors.

The model is models_mae.MaskedAutoencoderViT with its encoder swapped for
gen_vit.py's timm-named VisionTransformer (learned or sin-cos position
embeddings, with or without a class token) and its methods copied from
models_mae.py: random_masking (given the noise, so that the C test can replay
the mask), forward_encoder, forward_decoder, forward_loss, patchify and
unpatchify, generalised from 3 channels to in_chans. Without a class token
(not in the official code) nothing is prepended, the encoder's tokens are
not normed (timm: norm is the identity then) and the decoder has no class
row. decoder_pos_embed is a buffer (the official code's frozen parameter).

Parameters are randomized as gen_vit.py does (away from the init), inputs
and the masking noise are float32 draws; every result is computed in float64
from them and stored as float32, and PyTorch's own float32 run must stay
within a third of the C test's tolerances (TOL).

mae_<name>.safetensors:
  <state_dict name>       every parameter and buffer, models_mae's names
  res.input (N, C, H, W)
  res.ids_keep (N, K) I32 ids_shuffle[:, :len_keep], the visible patches in
                          the encoder's order
  res.mask (N, L)         1 = removed (models_mae's mask)
  for s in np0, np1 (norm_pix_loss 0 and 1):
  res.<s>.loss (1)        forward_loss
  res.<s>.pred (N*L, p*p*C)  forward_decoder's output
  res.<s>.recon (N, C, H, W) unpatchify(pred), de-normalised when
                          norm_pix_loss: pred * sqrt(var + 1e-6) + mean of the
                          input's patch (var unbiased, as the loss's target)
  res.<s>.grad.<param>    d loss / d param (zeros where the loss does not reach)
  res.mask_img (N, H, W)  the mask as pixels (MAE's visualisation)
Metadata: the config and the share of the tolerances PyTorch float32 uses.

mae_len_keep.safetensors: cases (M, 2) F32 (L, mask_ratio as float32) and
len_keep (M) I32 = int(L * (1 - mask_ratio)) with mask_ratio the Python float
of the ratio as typed (the shortest decimal that gives the float32).
"""
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_vit import Block, VisionTransformer, get_2d_sincos_pos_embed, randomize, tol_share  # noqa: E402
from golden import save  # noqa: E402

# tests/test_mae.c's tolerances (those of tests/test_vit.c's models); the
# loss is a mean of squares (no cancellation): relative 1e-5.
TOL = {"out_atol": 1e-4, "out_rtol": 1e-3, "loss_rtol": 1e-5,
       "grad_atol_of_max": 1e-4, "grad_rtol": 1e-3}

IMG, DIM, DEPTH, HEADS, MLP_RATIO, BATCH = 8, 16, 2, 2, 4.0, 4
MODELS = [
    # name, in_chans, patch, pos, class_token, qkv_bias, mask_ratio, dec_dim, dec_depth, dec_heads
    ("c1_p2", 1, 2, "learned", 1, 1, 0.75, 8, 1, 2),
    ("c3_p4", 3, 4, "sincos", 1, 1, 0.5, 8, 1, 2),
    ("c3_avg", 3, 2, "learned", 0, 0, 0.75, 8, 2, 2),
]


class MaskedAutoencoderViT(VisionTransformer):
    """models_mae.MaskedAutoencoderViT on gen_vit's encoder (same names)."""

    def __init__(self, patch, in_chans, pos, class_token, qkv_bias, dec_dim, dec_depth,
                 dec_heads):
        super().__init__(IMG, patch, in_chans, DIM, DEPTH, HEADS, MLP_RATIO, qkv_bias, pos,
                         class_token)
        self.patch, self.in_chans = patch, in_chans
        L = self.grid * self.grid
        # --------------------------------------------------------------------------
        # MAE decoder specifics
        self.decoder_embed = nn.Linear(DIM, dec_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_dim))
        table = get_2d_sincos_pos_embed(dec_dim, self.grid, cls_token=bool(class_token))
        self.register_buffer("decoder_pos_embed", torch.from_numpy(table).float().unsqueeze(0))
        assert self.decoder_pos_embed.shape[1] == L + class_token
        self.decoder_blocks = nn.ModuleList([Block(dec_dim, dec_heads, MLP_RATIO, 1)
                                             for _ in range(dec_depth)])
        self.decoder_norm = nn.LayerNorm(dec_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(dec_dim, patch ** 2 * in_chans, bias=True)

    def patchify(self, imgs):
        """imgs: (N, C, H, W) x: (N, L, patch_size**2 * C)"""
        p, c = self.patch, self.in_chans
        assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
        h = w = imgs.shape[2] // p
        x = imgs.reshape(shape=(imgs.shape[0], c, h, p, w, p))
        x = torch.einsum('nchpwq->nhwpqc', x)
        x = x.reshape(shape=(imgs.shape[0], h * w, p ** 2 * c))
        return x

    def unpatchify(self, x):
        """x: (N, L, patch_size**2 * C) imgs: (N, C, H, W)"""
        p, c = self.patch, self.in_chans
        h = w = int(x.shape[1] ** .5)
        assert h * w == x.shape[1]
        x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
        x = torch.einsum('nhwpqc->nchpwq', x)
        imgs = x.reshape(shape=(x.shape[0], c, h * p, h * p))
        return imgs

    def random_masking(self, x, mask_ratio, noise):
        """models_mae.random_masking with the noise given (torch.rand(N, L) there)."""
        N, L, D = x.shape  # batch, length, dim
        len_keep = int(L * (1 - mask_ratio))
        # sort noise for each sample
        ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        # keep the first subset
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        # generate the binary mask: 0 is keep, 1 is remove
        mask = torch.ones([N, L], dtype=x.dtype)
        mask[:, :len_keep] = 0
        # unshuffle to get the binary mask
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore, ids_keep

    def forward_encoder(self, x, mask_ratio, noise):
        # embed patches
        x = self.patch_embed(x)
        # add pos embed w/o cls token
        x = x + self.pos_embed[:, self.class_token:, :]
        # masking: length -> length * mask_ratio
        x, mask, ids_restore, ids_keep = self.random_masking(x, mask_ratio, noise)
        # append cls token
        if self.class_token:
            cls_token = self.cls_token + self.pos_embed[:, :1, :]
            cls_tokens = cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)
        # apply Transformer blocks
        x = self.blocks(x)
        if self.class_token:
            x = self.norm(x)
        return x, mask, ids_restore, ids_keep

    def forward_decoder(self, x, ids_restore):
        c = self.class_token
        # embed tokens
        x = self.decoder_embed(x)
        # append mask tokens to sequence
        mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + c - x.shape[1], 1)
        x_ = torch.cat([x[:, c:, :], mask_tokens], dim=1)  # no cls token
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
        x = torch.cat([x[:, :c, :], x_], dim=1)  # append cls token
        # add pos embed
        x = x + self.decoder_pos_embed
        # apply Transformer blocks
        for blk in self.decoder_blocks:
            x = blk(x)
        x = self.decoder_norm(x)
        # predictor projection
        x = self.decoder_pred(x)
        # remove cls token
        x = x[:, c:, :]
        return x

    def forward_loss(self, imgs, pred, mask, norm_pix_loss):
        """
        imgs: [N, C, H, W]
        pred: [N, L, p*p*C]
        mask: [N, L], 0 is keep, 1 is remove,
        """
        target = self.patchify(imgs)
        if norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)  # [N, L], mean loss per patch
        loss = (loss * mask).sum() / mask.sum()  # mean loss on removed patches
        return loss

    def forward(self, imgs, mask_ratio, noise, norm_pix_loss):
        latent, mask, ids_restore, ids_keep = self.forward_encoder(imgs, mask_ratio, noise)
        pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*C]
        loss = self.forward_loss(imgs, pred, mask, norm_pix_loss)
        return loss, pred, mask, ids_keep

    def reconstruction(self, imgs, pred, norm_pix_loss):
        """The decoder's pixels as images, de-normalised with the target's statistics."""
        if norm_pix_loss:
            target = self.patchify(imgs)
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            pred = pred * (var + 1.e-6) ** .5 + mean
        return self.unpatchify(pred)


def run(model, x, ratio, noise, norm_pix):
    model.zero_grad(set_to_none=True)
    loss, pred, mask, ids_keep = model(x, ratio, noise, norm_pix)
    loss.backward()
    grads = {n: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
             for n, p in model.named_parameters()}
    recon = model.reconstruction(x, pred.detach(), norm_pix)
    model.zero_grad(set_to_none=True)
    return loss.detach().reshape(1), pred.detach(), recon, grads, mask, ids_keep


def make_model(out_dir, name, in_chans, patch, pos, class_token, qkv_bias, ratio, dec_dim,
               dec_depth, dec_heads, seed):
    g = torch.Generator().manual_seed(seed)
    model = MaskedAutoencoderViT(patch, in_chans, pos, class_token, qkv_bias, dec_dim, dec_depth,
                                 dec_heads)
    randomize(model, g)
    L = model.grid ** 2
    x = torch.randn(BATCH, in_chans, IMG, IMG, generator=g)
    noise = torch.rand(BATCH, L, generator=g)
    t = {k: v.clone() for k, v in model.state_dict().items()}
    share, res64 = 0.0, {}
    for norm_pix in (0, 1):
        r64 = run(model.double(), x.double(), ratio, noise.double(), norm_pix)
        r32 = run(model.float(), x, ratio, noise, norm_pix)
        res64[norm_pix] = r64
        (l64, p64, c64, g64, m64, k64), (l32, p32, c32, g32, m32, k32) = r64, r32
        assert torch.equal(k64, k32) and torch.equal(m64.float(), m32)
        share = max(share, tol_share(p64, p32, TOL["out_atol"], TOL["out_rtol"]),
                    tol_share(c64, c32, TOL["out_atol"], TOL["out_rtol"]),
                    tol_share(l64, l32, 0.0, TOL["loss_rtol"]))
        for n in g64:
            atol = 1e-6 + TOL["grad_atol_of_max"] * float(g64[n].abs().max())
            share = max(share, tol_share(g64[n], g32[n], atol, TOL["grad_rtol"]))
    if share > 1 / 3:
        sys.exit("%s: PyTorch float32 uses %.3f of the C tolerances (> 1/3); pick another seed"
                 % (name, share))

    _, _, _, _, mask, ids_keep = res64[0]
    t["res.input"] = x
    t["res.ids_keep"] = ids_keep.to(torch.int32)
    t["res.mask"] = mask
    # MAE's visualisation: the mask repeated over a patch's pixels
    model.double()
    m_img = model.unpatchify(mask.unsqueeze(-1).repeat(1, 1, patch ** 2 * in_chans))
    t["res.mask_img"] = m_img[:, 0]
    for norm_pix, (loss, pred, recon, grads, _, _) in res64.items():
        s = "res.np%d." % norm_pix
        t[s + "loss"] = loss
        t[s + "pred"] = pred.reshape(-1, pred.shape[-1])
        t[s + "recon"] = recon
        for n, gr in grads.items():
            t[s + "grad." + n] = gr
    meta = {"img_size": IMG, "patch": patch, "in_chans": in_chans, "embed_dim": DIM,
            "depth": DEPTH, "heads": HEADS, "mlp_ratio": MLP_RATIO, "qkv_bias": qkv_bias,
            "pos": pos, "class_token": class_token, "mask_ratio": ratio,
            "len_keep": int(L * (1 - ratio)), "decoder_dim": dec_dim,
            "decoder_depth": dec_depth, "decoder_heads": dec_heads, "seed": seed,
            "torch_float32_tolerance_share": "%.4f" % share}
    save(os.path.join(out_dir, "mae_%s.safetensors" % name), t, meta)
    print("mae_%s: PyTorch float32 uses %.3f of the tolerances" % (name, share))


def len_keep_cases(out_dir):
    """int(L * (1 - mask_ratio)) for ratios typed as decimals; many of these
    differ when computed from the float32 ratio directly."""
    cases = []
    for L in (4, 16, 25, 49, 64, 100, 196):
        for r in (0.05, 0.1, 0.2, 0.25, 0.3, 0.33, 0.4, 0.46, 0.5, 0.55, 0.6, 0.66, 0.67, 0.72,
                  0.75, 0.8, 0.85, 0.9, 0.97, 0.99):
            cases.append((L, r, int(L * (1 - r))))
    save(os.path.join(out_dir, "mae_len_keep.safetensors"),
         {"cases": np.array([[L, r] for L, r, _ in cases], dtype=np.float32),
          "len_keep": np.array([k for _, _, k in cases], dtype=np.int32)})


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    len_keep_cases(out)
    for i, m in enumerate(MODELS):
        make_model(out, *m, seed=2000 + i)


if __name__ == "__main__":
    main()
