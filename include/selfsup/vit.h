/* Vision Transformer backbone (src/nn/vit.c), parameter names and forward
 * as timm's VisionTransformer (pre-norm blocks, LayerNorm eps 1e-6, exact
 * GELU, no dropout, optional drop path), tiny / small / base presets,
 * learned or fixed 2-D sin-cos position embeddings (MAE's table).
 *
 * The forward is split so that masked image modeling can enter in the
 * middle: ssl_vit_embed turns images into patch tokens with their position
 * embedding; ssl_vit_encode runs the encoder on those tokens, optionally on
 * a per-sample subset (MAE's visible patches), after prepending the class
 * token; ssl_vit_block_* are the blocks alone, for decoders of their own
 * width. A token sequence is (N*T, D), sample n's token t at row n*T + t. */
#ifndef SELFSUP_VIT_H
#define SELFSUP_VIT_H

#include "selfsup/graph_tf.h"
#include "selfsup/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ssl_vit_pos {
    SSL_VIT_POS_LEARNED = 0, /* parameter "pos_embed", trunc-normal std 0.02 */
    SSL_VIT_POS_SINCOS = 1   /* fixed buffer "pos_embed" (class token's row zero) */
} ssl_vit_pos;

typedef struct ssl_vit_config {
    int img_size;    /* square input side, a multiple of patch */
    int patch;
    int in_chans;
    int embed_dim;
    int depth;
    int heads;       /* divides embed_dim */
    float mlp_ratio; /* MLP hidden width = (int)(embed_dim * mlp_ratio) */
    int qkv_bias;
    ssl_vit_pos pos;
    int class_token; /* 0: no [CLS]; the feature is then fc_norm(mean of the
                        tokens), timm's global_pool='avg' */
    float drop_path; /* stochastic depth: block i's branches are dropped per
                        sample with probability drop_path * i / (depth - 1)
                        (timm's linspace) in passes that train (graph
                        training and recording); 0: off */
} ssl_vit_config;

/* "vit_tiny" (192 wide, 12 blocks, 3 heads), "vit_small" (384, 12, 6) or
 * "vit_base" (768, 12, 12), also without the "vit_" prefix; mlp_ratio 4,
 * qkv_bias 1, learned position embeddings, a class token. */
int ssl_vit_preset(ssl_vit_config *cfg, const char *name, int img_size, int patch,
                   int in_chans, char *err);
/* "learned" or "sincos"; SSL_EINVAL otherwise. */
int ssl_vit_pos_from_name(const char *name, ssl_vit_pos *pos);

/* One pre-norm block: x + attn(norm1(x)), then + mlp(norm2(.)). */
typedef struct ssl_vit_block {
    int dim, heads, hidden;
    ssl_tensor norm1_w, norm1_b;
    ssl_tensor qkv_w, qkv_b; /* (3*dim, dim), (3*dim); qkv_b.data NULL without bias */
    ssl_tensor proj_w, proj_b;
    ssl_tensor norm2_w, norm2_b;
    ssl_tensor fc1_w, fc1_b; /* (hidden, dim) */
    ssl_tensor fc2_w, fc2_b; /* (dim, hidden) */
} ssl_vit_block;

/* Registers prefix.norm1.weight, prefix.attn.qkv.weight, ... in r with
 * timm's init (trunc-normal std 0.02 linear weights, zero biases, LayerNorm
 * ones and zeros). */
int ssl_vit_block_init(ssl_vit_block *b, ssl_registry *r, const char *prefix, int dim,
                       int heads, int hidden, int qkv_bias, ssl_rng *rng);
/* x (N*T, dim) -> (N*T, dim), any T */
ssl_tensor *ssl_vit_block_forward(ssl_graph *g, ssl_vit_block *b, ssl_tensor *x, int N);
/* The same with drop path: each branch's output is multiplied by scale[n]
 * for sample n (ssl_vit_drop_path_scales; NULL: no drop path). The two
 * branches get independent draws: scale (2*N), attention's then the MLP's. */
ssl_tensor *ssl_vit_block_forward_dp(ssl_graph *g, ssl_vit_block *b, ssl_tensor *x, int N,
                                     const float *scale);

typedef struct ssl_vit {
    ssl_vit_config cfg;
    int grid;      /* patches per side */
    int n_patches; /* grid * grid */
    int hidden;    /* MLP width */
    int feat_dim;  /* embed_dim */
    ssl_tensor cls_token; /* (1, 1, D); data NULL without a class token */
    ssl_tensor pos_embed; /* (1, class_token + n_patches, D) */
    ssl_tensor pos_cls;   /* views of pos_embed: the class token's row (1, D) */
    ssl_tensor pos_patch; /* and the patches' rows (n_patches, D) */
    ssl_tensor patch_w, patch_b; /* patch_embed.proj: (D, C, p, p), (D) */
    ssl_vit_block *blocks;       /* depth */
    ssl_tensor norm_w, norm_b;   /* "norm", or "fc_norm" without a class token */
    ssl_registry reg;
    /* drop path's draws: (seed, step) from ssl_vit_drop_path_key, pass
     * counts the training passes since then */
    uint64_t dp_seed;
    int64_t dp_step;
    uint32_t dp_pass;
} ssl_vit;

/* Sets the key of the drop-path draws for the training passes of one
 * step (the training loop calls it before each step: a resumed run draws
 * the same masks). */
void ssl_vit_drop_path_key(ssl_vit *m, uint64_t seed, int64_t step);
/* Block `block`'s drop-path scales for the pass-th training pass after the
 * key (seed, step), N samples: out (2*N), the attention branch's then the
 * MLP branch's, each 0 with probability `rate` (dropped) else
 * 1 / (1 - rate); drawn from ssl_rng_derive(seed ^ SSL_VIT_DROP_PATH_TAG,
 * step, pass << 32 | block), uniform u < 1 - rate keeps. */
#define SSL_VIT_DROP_PATH_TAG 0x4450415448ull /* "DPATH" */
void ssl_vit_drop_path_scales(uint64_t seed, int64_t step, uint32_t pass, int block, float rate,
                              int N, float *out);
/* Block i's drop rate: drop_path * i / (depth - 1), 0 for one block. */
float ssl_vit_drop_rate(const ssl_vit_config *cfg, int block);

/* Parameters in timm's state_dict order: cls_token, pos_embed,
 * patch_embed.proj.weight/bias, blocks.{i}.*, norm.weight/bias. Init as
 * timm / DINO: trunc-normal std 0.02 for cls_token, learned pos_embed and
 * linear weights (truncated at +-2, timm's absolute bounds), zero biases,
 * LayerNorm ones / zeros, the patch projection as PyTorch's Conv2d default
 * (uniform +-1/sqrt(C p p), weight and bias). Draws come from rng. */
int ssl_vit_init(ssl_vit *m, const ssl_vit_config *cfg, ssl_rng *rng, char *err);
void ssl_vit_free(ssl_vit *m);

/* x (N, in_chans, img_size, img_size), any layout -> patch tokens plus
 * their position embedding (N*n_patches, D) (MAE's order: masking comes
 * after this). */
ssl_tensor *ssl_vit_embed(ssl_graph *g, ssl_vit *m, ssl_tensor *x);
/* tokens (N*n_patches, D) from ssl_vit_embed. keep: NULL for every token,
 * or (N*K) per-sample indices of the tokens to encode (gathered in that
 * order). Prepends cls_token + its position embedding, runs the blocks and
 * the final norm -> (N*(1 + K), D) (K = n_patches when keep is NULL). Without
 * a class token nothing is prepended and the output is not normed (timm's
 * norm is the identity then; fc_norm comes after pooling). */
ssl_tensor *ssl_vit_encode(ssl_graph *g, ssl_vit *m, ssl_tensor *tokens, int N,
                           const int32_t *keep, int K);
/* The image feature of encoded tokens (N*L, D): the class token (already
 * normed), or fc_norm(mean of the tokens) without one -> (N, D). */
ssl_tensor *ssl_vit_pool(ssl_graph *g, ssl_vit *m, ssl_tensor *tokens, int N);
/* x -> every token after the encoder (N*(1 + n_patches), D): dense use. */
ssl_tensor *ssl_vit_forward_tokens(ssl_graph *g, ssl_vit *m, ssl_tensor *x);
/* x -> the image feature (N, D). */
ssl_tensor *ssl_vit_forward(ssl_graph *g, ssl_vit *m, ssl_tensor *x);

/* Multiply-accumulates of one forward pass of one image encoding `tokens`
 * of its patches (n_patches for all), x2 = FLOPs. */
double ssl_vit_macs(const ssl_vit *m, int tokens);

#ifdef __cplusplus
}
#endif
#endif
