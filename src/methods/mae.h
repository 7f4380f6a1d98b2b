/* Masked autoencoder (He et al. 2021; facebookresearch/mae models_mae.py)
 * at function level, for the method (src/methods/mae.c, ssl_method_mae),
 * its tests and `selfsup show`: the decoder, the random masking, the loss
 * and the reconstruction of a batch as images. A token sequence is
 * (N*T, D) as in vit.h; patches are in MAE's patchify order (row n*L + i*g
 * + j for the patch at grid row i, column j; value (ky*p + kx)*C + c). */
#ifndef SELFSUP_METHODS_MAE_H
#define SELFSUP_METHODS_MAE_H

#include "selfsup/method.h"
#include "selfsup/vit.h"

#ifdef __cplusplus
extern "C" {
#endif

/* models_mae's decoder, for one encoder: names as models_mae's state_dict. */
typedef struct ssl_mae_decoder {
    int enc_dim, dim, depth, heads;
    int patch, in_chans, grid, n_patches, class_token; /* the encoder's */
    int patch_dim;             /* patch * patch * in_chans: one patch's pixels */
    ssl_tensor embed_w, embed_b; /* decoder_embed: (dim, enc_dim), (dim) */
    ssl_tensor mask_token;     /* (1, 1, dim) */
    ssl_tensor pos_embed;      /* decoder_pos_embed, fixed buffer (1, class_token + n_patches, dim) */
    ssl_vit_block *blocks;     /* decoder_blocks.{i}, mlp ratio 4, qkv bias */
    ssl_tensor norm_w, norm_b; /* decoder_norm (dim) */
    ssl_tensor pred_w, pred_b; /* decoder_pred: (patch_dim, dim), (patch_dim) */
} ssl_mae_decoder;

/* Registers the decoder in r (decoder_embed.*, mask_token, the buffer
 * decoder_pos_embed, decoder_blocks.{i}.*, decoder_norm.*, decoder_pred.*)
 * with models_mae's initialize_weights: xavier-uniform linear weights, zero
 * biases, LayerNorm 1 / 0, mask_token N(0, 0.02^2), the 2-D sin-cos table
 * with a zero class-token row. dim a multiple of 4 and of heads. Weight
 * decay as MAE's optimizer groups: on every tensor of 2 or more dimensions
 * (mask_token included), not on biases and LayerNorm. */
int ssl_mae_decoder_init(ssl_mae_decoder *d, ssl_registry *r, const ssl_vit *enc, int dim,
                         int depth, int heads, ssl_rng *rng, char *err);
void ssl_mae_decoder_free(ssl_mae_decoder *d);

/* models_mae's initialize_weights on the encoder: xavier-uniform linear
 * weights and patch projection (as a (D, C*p*p) matrix), cls_token
 * N(0, 0.02^2); biases, LayerNorms, the patch bias and a learned pos_embed
 * stay as ssl_vit_init made them (zero / one / Conv2d default / timm's). */
void ssl_mae_init_encoder(ssl_vit *enc, ssl_rng *rng);

/* Visible patches per image: models_mae's len_keep = int(L * (1 - ratio)),
 * with ratio the decimal number the float was typed as (0.6f as 0.6, as
 * Python would hold it), so that the count is the official code's. */
int ssl_mae_len_keep(int n_patches, float mask_ratio);

/* Random masking of N images: image n keeps a uniformly random subset of K
 * of its L patches, drawn from ssl_rng_derive(seed, a, b0 + n) alone (any
 * batch split or thread count gives the same masks): ids_keep (N*K), each
 * image's indices increasing. The official code keeps them in shuffled
 * order; the encoder and decoder are equivariant to it, so only rounding
 * could differ. */
void ssl_mae_masks(uint64_t seed, uint64_t a, uint64_t b0, int N, int L, int K,
                   int32_t *ids_keep);

/* What ssl_mae_forward computed besides the loss; arena memory, valid until
 * the graph is reset. */
typedef struct ssl_mae_out {
    ssl_tensor *pred;     /* (N*L, patch_dim) the decoder's prediction */
    const float *patches; /* (N*L, patch_dim) the input's patches */
    const float *target;  /* (N*L, patch_dim) the loss's target: patches, normalised
                             per patch (mean 0, unbiased var 1, eps 1e-6) when norm_pix */
    const float *mask;    /* (N*L) 1 = removed, 0 = visible */
} ssl_mae_out;

/* models_mae forward with a given mask: x (N, C, H, W) images of the
 * encoder's size, ids_keep (N*K) distinct visible patches per image ->
 * forward_loss, the mean over removed patches of the per-patch mean squared
 * error -> (1). out may be NULL. NULL on failure (g->ctx->err). */
ssl_tensor *ssl_mae_forward(ssl_graph *g, ssl_vit *enc, ssl_mae_decoder *d, ssl_tensor *x,
                            const int32_t *ids_keep, int K, int norm_pix_loss, ssl_mae_out *out);

/* The same without recording, as pictures: mask (N, H, W) 1 on removed
 * pixels; recon (N, C, H, W) the decoder's pixels (every patch, visible ones
 * too: paste x * (1 - mask) + recon * mask for MAE's figure), in x's units,
 * de-normalised with each patch's mean and unbiased variance of x when
 * norm_pix_loss. loss (may be NULL) receives the batch's loss. */
int ssl_mae_reconstruct(ssl_graph *g, ssl_vit *enc, ssl_mae_decoder *d, ssl_tensor *x,
                        const int32_t *ids_keep, int K, int norm_pix_loss, float *mask,
                        float *recon, float *loss);

/* The method (also declared in selfsup/method.h). */
extern const ssl_method_ops ssl_method_mae;

/* For a trained `--method mae` (what `selfsup show` draws): images x
 * (N, C, H, W) NCHW, normalised as the method's views are, with the masks
 * the held-out evaluation uses for split indices first .. first + N - 1
 * -> mask (N, H, W), recon (N, C, H, W) and loss (may be NULL) as
 * ssl_mae_reconstruct. */
int ssl_mae_method_reconstruct(ssl_method *m, ssl_ctx *ctx, const float *x, int N, int64_t first,
                               float *mask, float *recon, float *loss, char *err);

#ifdef __cplusplus
}
#endif
#endif
