/* Graph ops for transformers (src/nn/graph_tf.c): layer norm, fused
 * multi-head self-attention, patch embedding and the token-sequence ops that
 * ViTs and masked image modeling need (class token, position embeddings,
 * gathering visible tokens, inserting mask tokens, slicing and pooling).
 *
 * A token sequence is a 2-D row-major tensor (N*T, D): sample n's token t is
 * row n*T + t. Ops that need N take it as an argument (T = rows / N).
 *
 * Conventions as in graph.h: NULL in -> NULL out; shape or argument errors
 * return NULL with ctx->err set; backward functions accumulate (+=) into the
 * inputs that require a gradient. Index and mask arrays are read during the
 * call only (copied into saved state when the backward needs them). Results
 * do not depend on the thread count or scheduling: every reduction shared by
 * threads is split the same way whatever the number of threads. */
#ifndef SELFSUP_GRAPH_TF_H
#define SELFSUP_GRAPH_TF_H

#include "selfsup/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* torch.nn.LayerNorm(D, eps) over the last dimension: x (M, D), gamma and
 * beta (D) or NULL (no affine) -> (M, D). Biased variance, as torch. */
ssl_tensor *ssl_op_layernorm(ssl_graph *g, ssl_tensor *x, ssl_tensor *gamma, ssl_tensor *beta,
                             float eps);

/* What the attention backward gets its probabilities from. Saving costs
 * B * heads * T * T floats per layer; recomputing costs one more q k^T
 * product per head in the backward and keeps B * heads * T floats (the
 * row log-sum-exp). */
typedef enum ssl_attn_mode {
    SSL_ATTN_AUTO = 0,     /* save when T <= SSL_ATTN_SAVE_MAX_T, else recompute */
    SSL_ATTN_SAVE = 1,
    SSL_ATTN_RECOMPUTE = 2
} ssl_attn_mode;
#define SSL_ATTN_SAVE_MAX_T 256

/* timm's Attention after the qkv projection: qkv (B*T, 3*D) with column
 * s*D + h*dh + e for s in (q, k, v), head h, dh = D / heads ->
 * (B*T, D) with column h*dh + e of softmax(q_h k_h^T / sqrt(dh)) v_h per
 * sample and head (no masking, no dropout). */
ssl_tensor *ssl_op_attention(ssl_graph *g, ssl_tensor *qkv, int B, int T, int heads);
ssl_tensor *ssl_op_attention_mode(ssl_graph *g, ssl_tensor *qkv, int B, int T, int heads,
                                  ssl_attn_mode mode);

/* How a patch's values are ordered in a row of ssl_op_patchify. */
typedef enum ssl_patch_order {
    SSL_PATCH_CHW = 0, /* (c, ky, kx): a Conv2d weight's order (patch embedding) */
    SSL_PATCH_HWC = 1  /* (ky, kx, c): MAE's patchify (its pixel targets) */
} ssl_patch_order;

/* x (N, C, H, W) in any layout, H and W multiples of p -> (N*T, C*p*p) with
 * T = (H/p) * (W/p) patches in row-major grid order. */
ssl_tensor *ssl_op_patchify(ssl_graph *g, ssl_tensor *x, int p, ssl_patch_order order);

/* Conv2d(C, D, kernel p, stride p) flattened as timm's PatchEmbed:
 * x (N, C, H, W), w (D, C, p, p) (a parameter: its gradient buffer is
 * written through a 2-D view), b (D) or NULL -> (N*T, D). */
ssl_tensor *ssl_op_patch_embed(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b);

/* x (N*T, D) -> (N*(T+1), D): tok (D values, e.g. cls_token (1, 1, D)),
 * plus pos (D values) when not NULL, before each sample's tokens. MAE adds
 * the class token's position embedding this way after masking. */
ssl_tensor *ssl_op_prepend_token(ssl_graph *g, ssl_tensor *x, int N, ssl_tensor *tok,
                                 ssl_tensor *pos);

/* x (N*T, D) + pos (T*D values: (T, D) or (1, T, D)) for every sample. */
ssl_tensor *ssl_op_add_pos(ssl_graph *g, ssl_tensor *x, int N, ssl_tensor *pos);

/* x (N*T, D), idx (N*K) with idx[n*K + k] in [0, T) -> (N*K, D) whose row
 * n*K + k is x's row n*T + idx[n*K + k] (torch.gather of MAE's ids_keep).
 * Indices may repeat; their gradients add. */
ssl_tensor *ssl_op_gather_tokens(ssl_graph *g, ssl_tensor *x, int N, const int32_t *idx, int K);

/* The inverse for decoders: x (N*K, D), idx (N*K) distinct within each
 * sample, in [0, T) -> (N*T, D) with row n*T + idx[n*K + k] = x's row
 * n*K + k and every other row = fill (D values, a mask token; NULL: zeros).
 * MAE's decoder: cat(x, mask_tokens) then gather by ids_restore. */
ssl_tensor *ssl_op_scatter_tokens(ssl_graph *g, ssl_tensor *x, int N, const int32_t *idx, int T,
                                  ssl_tensor *fill);

/* x (N*T, D), mask (N*T) 0/1 -> rows with mask set replaced by tok (D
 * values): SimMIM's and BEiT's masked patch embeddings. */
ssl_tensor *ssl_op_mask_tokens(ssl_graph *g, ssl_tensor *x, int N, const uint8_t *mask,
                               ssl_tensor *tok);

/* y = x + scale[n] * h for every row of sample n: x and h (N*T, D), scale
 * (N) read during the call. A residual branch with drop path (stochastic
 * depth, timm's DropPath): scale[n] is 0 for a sample whose branch is
 * dropped and 1 / keep_prob for one that keeps it. */
ssl_tensor *ssl_op_add_sample_scaled(ssl_graph *g, ssl_tensor *x, ssl_tensor *h, int N,
                                     const float *scale);

/* x (N*T, D) -> (N*count, D): tokens [start, start + count) of each sample.
 * start 0, count 1: the class token (N, D). */
ssl_tensor *ssl_op_token_slice(ssl_graph *g, ssl_tensor *x, int N, int start, int count);

/* x (N*T, D) -> (N, D): the mean of tokens [start, T) of each sample
 * (timm's global_pool = 'avg' skips the class token with start = 1). */
ssl_tensor *ssl_op_token_mean(ssl_graph *g, ssl_tensor *x, int N, int start);

/* MAE's get_2d_sincos_pos_embed for a gh x gw grid, without the class
 * token's zero row: out (gh*gw, D), token i*gw + j; the first D/2 columns
 * encode the column j, the last D/2 the row i, each as D/4 sines then D/4
 * cosines of pos / 10000^(k / (D/4)), computed in double as numpy does.
 * D must be a multiple of 4 (SSL_EINVAL otherwise). */
int ssl_pos_embed_sincos_2d(float *out, int D, int gh, int gw);

#ifdef __cplusplus
}
#endif
#endif
