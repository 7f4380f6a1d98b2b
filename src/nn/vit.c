/* Vision Transformer backbone as timm's VisionTransformer: patch embedding,
 * class token, position embeddings, pre-norm blocks, final LayerNorm. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/vit.h"

#include "graph_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f /* timm's partial(nn.LayerNorm, eps=1e-6) */

/* timm's trunc_normal_(t, std) with its default bounds a=-2, b=2, which are
 * absolute, not in units of std: at std 0.02 a redraw never happens in
 * practice, but the bound is kept for the rare draw. */
static void trunc_normal(float *w, long n, float std, ssl_rng *rng)
{
    for (long i = 0; i < n; i++) {
        float v;
        do v = std * ssl_rng_normal(rng);
        while (v < -2.0f || v > 2.0f);
        w[i] = v;
    }
}

int ssl_vit_preset(ssl_vit_config *cfg, const char *name, int img_size, int patch,
                   int in_chans, char *err)
{
    static const struct {
        const char *name;
        int dim, depth, heads;
    } presets[] = {{"tiny", 192, 12, 3}, {"small", 384, 12, 6}, {"base", 768, 12, 12}};
    const char *s = strncmp(name, "vit_", 4) ? name : name + 4;
    for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
        if (!strcmp(s, presets[i].name)) {
            memset(cfg, 0, sizeof *cfg);
            cfg->img_size = img_size;
            cfg->patch = patch;
            cfg->in_chans = in_chans;
            cfg->embed_dim = presets[i].dim;
            cfg->depth = presets[i].depth;
            cfg->heads = presets[i].heads;
            cfg->mlp_ratio = 4.0f;
            cfg->qkv_bias = 1;
            cfg->pos = SSL_VIT_POS_LEARNED;
            cfg->class_token = 1;
            return SSL_OK;
        }
    return ssl_fail(err, SSL_EINVAL, "vit: unknown preset '%s' (vit_tiny, vit_small, vit_base)",
                    name);
}

int ssl_vit_pos_from_name(const char *name, ssl_vit_pos *pos)
{
    if (!strcmp(name, "learned")) *pos = SSL_VIT_POS_LEARNED;
    else if (!strcmp(name, "sincos")) *pos = SSL_VIT_POS_SINCOS;
    else return SSL_EINVAL;
    return SSL_OK;
}

/* nn.Linear(in, out[, bias]) at prefix with timm's init. */
static int linear(ssl_registry *r, const char *prefix, int in, int out, int bias, ssl_tensor *w,
                  ssl_tensor *b, ssl_rng *rng)
{
    char name[300]; /* prefix (< 256) + ".weight" */
    int ws[2] = {out, in};
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (ssl_registry_param(r, name, 2, ws, 0, w)) return SSL_ENOMEM;
    trunc_normal(w->data, (long)out * in, 0.02f, rng);
    memset(b, 0, sizeof *b);
    if (!bias) return SSL_OK;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return ssl_registry_param(r, name, 1, &out, 1, b); /* zeros */
}

static int layernorm(ssl_registry *r, const char *prefix, int dim, ssl_tensor *w, ssl_tensor *b)
{
    char name[300];
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (ssl_registry_param(r, name, 1, &dim, 1, w)) return SSL_ENOMEM;
    for (int i = 0; i < dim; i++) w->data[i] = 1.0f;
    snprintf(name, sizeof name, "%s.bias", prefix);
    return ssl_registry_param(r, name, 1, &dim, 1, b);
}

int ssl_vit_block_init(ssl_vit_block *b, ssl_registry *r, const char *prefix, int dim,
                       int heads, int hidden, int qkv_bias, ssl_rng *rng)
{
    char name[256];
    memset(b, 0, sizeof *b);
    if (dim < 1 || heads < 1 || dim % heads || hidden < 1) return SSL_EINVAL;
    b->dim = dim;
    b->heads = heads;
    b->hidden = hidden;
    int st = 0;
#define SUB(s) (snprintf(name, sizeof name, "%s." s, prefix), name)
    st |= layernorm(r, SUB("norm1"), dim, &b->norm1_w, &b->norm1_b);
    st |= linear(r, SUB("attn.qkv"), dim, 3 * dim, qkv_bias, &b->qkv_w, &b->qkv_b, rng);
    st |= linear(r, SUB("attn.proj"), dim, dim, 1, &b->proj_w, &b->proj_b, rng);
    st |= layernorm(r, SUB("norm2"), dim, &b->norm2_w, &b->norm2_b);
    st |= linear(r, SUB("mlp.fc1"), dim, hidden, 1, &b->fc1_w, &b->fc1_b, rng);
    st |= linear(r, SUB("mlp.fc2"), hidden, dim, 1, &b->fc2_w, &b->fc2_b, rng);
#undef SUB
    return st ? SSL_ENOMEM : SSL_OK;
}

/* Marks an activation only the network reads: the backward releases it
 * once the op that made it has run (see ssl_tensor.transient), and a pass
 * that records nothing releases it after its last use (ssl_graph_used_up). */
static ssl_tensor *internal(ssl_tensor *t)
{
    if (t) t->transient = 1;
    return t;
}

/* The residual add x + h, through drop path's per-sample scales when given. */
static ssl_tensor *residual(ssl_graph *g, ssl_tensor *x, ssl_tensor *h, int N, const float *scale)
{
    return scale ? ssl_op_add_sample_scaled(g, x, h, N, scale) : ssl_op_add(g, x, h);
}

ssl_tensor *ssl_vit_block_forward(ssl_graph *g, ssl_vit_block *b, ssl_tensor *x, int N)
{
    return ssl_vit_block_forward_dp(g, b, x, N, NULL);
}

ssl_tensor *ssl_vit_block_forward_dp(ssl_graph *g, ssl_vit_block *b, ssl_tensor *x, int N,
                                     const float *scale)
{
    if (!x) return NULL;
    if (x->ndim != 2 || x->shape[1] != b->dim || N < 1 || x->shape[0] % N) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "vit block: expected (N*T, %d) tokens", b->dim);
        return NULL;
    }
    const int T = x->shape[0] / N;
    /* each activation is used up by the op after it (x1 by the last add) */
    ssl_tensor *a = internal(ssl_op_layernorm(g, x, &b->norm1_w, &b->norm1_b, LN_EPS));
    ssl_tensor *h = internal(ssl_op_linear(g, a, &b->qkv_w, b->qkv_b.data ? &b->qkv_b : NULL));
    ssl_graph_used_up(g, a);
    a = internal(ssl_op_attention(g, h, N, T, b->heads));
    ssl_graph_used_up(g, h);
    h = internal(ssl_op_linear(g, a, &b->proj_w, &b->proj_b));
    ssl_graph_used_up(g, a);
    ssl_tensor *x1 = internal(residual(g, x, h, N, scale));
    ssl_graph_used_up(g, h);
    a = internal(ssl_op_layernorm(g, x1, &b->norm2_w, &b->norm2_b, LN_EPS));
    h = internal(ssl_op_linear(g, a, &b->fc1_w, &b->fc1_b));
    ssl_graph_used_up(g, a);
    a = internal(ssl_op_gelu(g, h));
    ssl_graph_used_up(g, h);
    h = internal(ssl_op_linear(g, a, &b->fc2_w, &b->fc2_b));
    ssl_graph_used_up(g, a);
    ssl_tensor *y = residual(g, x1, h, N, scale ? scale + N : NULL);
    ssl_graph_used_up(g, x1);
    ssl_graph_used_up(g, h);
    return y;
}

void ssl_vit_drop_path_key(ssl_vit *m, uint64_t seed, int64_t step)
{
    m->dp_seed = seed;
    m->dp_step = step;
    m->dp_pass = 0;
}

void ssl_vit_drop_path_scales(uint64_t seed, int64_t step, uint32_t pass, int block, float rate,
                              int N, float *out)
{
    ssl_rng r;
    ssl_rng_derive(&r, seed ^ SSL_VIT_DROP_PATH_TAG, (uint64_t)step,
                   (uint64_t)pass << 32 | (uint32_t)block);
    const float keep = 1.0f - rate, inv = 1.0f / keep;
    for (int i = 0; i < 2 * N; i++) out[i] = ssl_rng_uniform(&r) < keep ? inv : 0.0f;
}

float ssl_vit_drop_rate(const ssl_vit_config *cfg, int block)
{
    if (cfg->depth < 2 || !(cfg->drop_path > 0)) return 0.0f;
    return (float)((double)cfg->drop_path * block / (cfg->depth - 1));
}

/* A (rows, D) view of rows [row0, row0 + rows) of a parameter or buffer:
 * same data, and same gradient memory when it has one. */
static ssl_tensor row_view(const ssl_tensor *t, int row0, int rows, int D)
{
    int shape[2] = {rows, D};
    long off = (long)row0 * D;
    return ssl_tensor_wrap(t->data + off, t->grad ? t->grad + off : NULL, 2, shape,
                           SSL_LAYOUT_NCHW);
}

int ssl_vit_init(ssl_vit *m, const ssl_vit_config *cfg, ssl_rng *rng, char *err)
{
    memset(m, 0, sizeof *m);
    const int D = cfg->embed_dim;
    if (cfg->patch < 1 || cfg->img_size < cfg->patch || cfg->img_size % cfg->patch)
        return ssl_fail(err, SSL_EINVAL, "vit: image size %d is not a multiple of patch %d",
                        cfg->img_size, cfg->patch);
    if (cfg->in_chans < 1 || cfg->in_chans > 64)
        return ssl_fail(err, SSL_EINVAL, "vit: %d input channels out of range 1..64",
                        cfg->in_chans);
    if (D < 1 || cfg->heads < 1 || D % cfg->heads)
        return ssl_fail(err, SSL_EINVAL, "vit: embed_dim %d is not a multiple of %d heads", D,
                        cfg->heads);
    if (cfg->depth < 1 || cfg->depth > 256)
        return ssl_fail(err, SSL_EINVAL, "vit: depth %d out of range 1..256", cfg->depth);
    if (!(cfg->mlp_ratio > 0) || (int)(D * cfg->mlp_ratio) < 1)
        return ssl_fail(err, SSL_EINVAL, "vit: mlp_ratio %g gives no hidden units", cfg->mlp_ratio);
    if (cfg->pos != SSL_VIT_POS_LEARNED && cfg->pos != SSL_VIT_POS_SINCOS)
        return ssl_fail(err, SSL_EINVAL, "vit: unknown position embedding");
    if (!(cfg->drop_path >= 0 && cfg->drop_path < 1))
        return ssl_fail(err, SSL_EINVAL, "vit: drop path rate %g out of range [0, 1)",
                        (double)cfg->drop_path);
    if (cfg->pos == SSL_VIT_POS_SINCOS && D % 4)
        return ssl_fail(err, SSL_EINVAL,
                        "vit: sin-cos position embeddings need embed_dim %% 4 == 0, not %d", D);
    m->cfg = *cfg;
    m->cfg.class_token = cfg->class_token != 0;
    m->grid = cfg->img_size / cfg->patch;
    m->n_patches = m->grid * m->grid;
    m->hidden = (int)(D * cfg->mlp_ratio);
    m->feat_dim = D;
    m->blocks = calloc((size_t)cfg->depth, sizeof *m->blocks);
    ssl_registry_init(&m->reg);
    ssl_registry *r = &m->reg;
    const int cls = m->cfg.class_token, L = cls + m->n_patches;
    int st = m->blocks ? 0 : SSL_ENOMEM;
    if (!st && cls) {
        int s[3] = {1, 1, D};
        st |= ssl_registry_param(r, "cls_token", 3, s, 1, &m->cls_token);
        if (!st) trunc_normal(m->cls_token.data, D, 0.02f, rng);
    }
    int ps[3] = {1, L, D};
    if (!st && cfg->pos == SSL_VIT_POS_LEARNED) {
        st |= ssl_registry_param(r, "pos_embed", 3, ps, 1, &m->pos_embed);
        if (!st) trunc_normal(m->pos_embed.data, (long)L * D, 0.02f, rng);
    } else if (!st) {
        float *pe = ssl_registry_buffer(r, "pos_embed", 3, ps, 0.0f);
        if (!pe) st |= SSL_ENOMEM;
        else {
            ssl_pos_embed_sincos_2d(pe + (long)cls * D, D, m->grid, m->grid);
            m->pos_embed = ssl_tensor_wrap(pe, NULL, 3, ps, SSL_LAYOUT_NCHW);
        }
    }
    if (!st) {
        if (cls) m->pos_cls = row_view(&m->pos_embed, 0, 1, D);
        m->pos_patch = row_view(&m->pos_embed, cls, m->n_patches, D);
        int p = cfg->patch, ws[4] = {D, cfg->in_chans, p, p};
        st |= ssl_registry_param(r, "patch_embed.proj.weight", 4, ws, 0, &m->patch_w);
        st |= ssl_registry_param(r, "patch_embed.proj.bias", 1, &D, 1, &m->patch_b);
        if (!st) {
            float bound = 1.0f / sqrtf((float)(cfg->in_chans * p * p));
            ssl_init_uniform(m->patch_w.data, ssl_tensor_numel(&m->patch_w), bound, rng);
            ssl_init_uniform(m->patch_b.data, D, bound, rng);
        }
    }
    char name[64];
    for (int i = 0; !st && i < cfg->depth; i++) {
        snprintf(name, sizeof name, "blocks.%d", i);
        st |= ssl_vit_block_init(&m->blocks[i], r, name, D, cfg->heads, m->hidden, cfg->qkv_bias,
                                 rng);
    }
    if (!st) st |= layernorm(r, cls ? "norm" : "fc_norm", D, &m->norm_w, &m->norm_b);
    if (st || r->failed) {
        ssl_vit_free(m);
        return ssl_fail(err, SSL_ENOMEM, "vit: out of memory for parameters");
    }
    return SSL_OK;
}

void ssl_vit_free(ssl_vit *m)
{
    ssl_registry_free(&m->reg);
    free(m->blocks);
    m->blocks = NULL;
}

/* PyTorch's upsample_bicubic2d weights along one axis (align_corners
 * False, no antialias, cubic convolution A = -0.75, borders clamped):
 * w (out, in) row i holds the weights output i gives each input. */
void ssl_vit_bicubic_weights(int in, int out, float *w)
{
    const double A = -0.75, scale = (double)in / out;
    memset(w, 0, sizeof(float) * (size_t)in * out);
    for (int i = 0; i < out; i++) {
        double src = (i + 0.5) * scale - 0.5;
        int f = (int)floor(src);
        double t = src - f, c[4];
        double x1 = t + 1, x2 = 1 - t, x3 = 2 - t;
        c[0] = ((A * x1 - 5 * A) * x1 + 8 * A) * x1 - 4 * A;
        c[1] = ((A + 2) * t - (A + 3)) * t * t + 1;
        c[2] = ((A + 2) * x2 - (A + 3)) * x2 * x2 + 1;
        c[3] = ((A * x3 - 5 * A) * x3 + 8 * A) * x3 - 4 * A;
        for (int k = 0; k < 4; k++) {
            int j = f - 1 + k;
            j = j < 0 ? 0 : j >= in ? in - 1 : j;
            w[(long)i * in + j] += (float)c[k];
        }
    }
}

/* The patches' position embeddings for a gh x gw grid: the table itself at
 * the model's grid, else resampled bicubically as DINO's
 * interpolate_pos_encoding (F.interpolate(mode='bicubic'), here to the exact
 * target size) through a constant (gh*gw, n_patches) matrix, so a learned
 * table gets its gradient through the product. */
static ssl_tensor *patch_pos(ssl_graph *g, ssl_vit *m, int gh, int gw)
{
    if (gh == m->grid && gw == m->grid) return &m->pos_patch;
    const int G = m->grid;
    float *wy = malloc(sizeof(float) * (size_t)gh * G), *wx = malloc(sizeof(float) * (size_t)gw * G);
    int shape[2] = {gh * gw, G * G};
    ssl_tensor *M = wy && wx ? ssl_tensor_new(g, 2, shape, SSL_LAYOUT_NCHW) : NULL;
    if (M) {
        ssl_vit_bicubic_weights(G, gh, wy);
        ssl_vit_bicubic_weights(G, gw, wx);
        for (int i = 0; i < gh; i++)
            for (int j = 0; j < gw; j++)
                for (int a = 0; a < G; a++)
                    for (int b = 0; b < G; b++)
                        M->data[((long)i * gw + j) * G * G + a * G + b] = wy[i * G + a] * wx[j * G + b];
    } else {
        ssl_ctx_fail(g->ctx, SSL_ENOMEM, "vit: out of memory resampling position embeddings");
    }
    free(wy);
    free(wx);
    return M ? internal(ssl_op_matmul(g, M, &m->pos_patch, 0)) : NULL;
}

ssl_tensor *ssl_vit_embed(ssl_graph *g, ssl_vit *m, ssl_tensor *x)
{
    if (!x) return NULL;
    const ssl_vit_config *c = &m->cfg;
    if (x->ndim != 4 || x->shape[1] != c->in_chans || x->shape[2] % c->patch ||
        x->shape[3] % c->patch || x->shape[2] < c->patch || x->shape[3] < c->patch) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE,
                     "vit: expected (N, %d, H, W) input with H and W multiples of the patch %d",
                     c->in_chans, c->patch);
        return NULL;
    }
    ssl_tensor *pos = patch_pos(g, m, x->shape[2] / c->patch, x->shape[3] / c->patch);
    if (!pos) return NULL;
    ssl_tensor *t = internal(ssl_op_patch_embed(g, x, &m->patch_w, &m->patch_b));
    ssl_tensor *y = ssl_op_add_pos(g, t, x->shape[0], pos);
    ssl_graph_used_up(g, t);
    ssl_graph_used_up(g, pos);
    return y;
}

ssl_tensor *ssl_vit_encode(ssl_graph *g, ssl_vit *m, ssl_tensor *tokens, int N,
                           const int32_t *keep, int K)
{
    if (!tokens) return NULL;
    const int D = m->feat_dim;
    if (tokens->ndim != 2 || tokens->shape[1] != D || N < 1 || tokens->shape[0] % N) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "vit: expected (N*T, %d) patch tokens", D);
        return NULL;
    }
    /* tokens are the caller's; every later input is this function's own */
    ssl_tensor *h = tokens, *o;
    if (keep) h = internal(ssl_op_gather_tokens(g, h, N, keep, K));
    if (m->cfg.class_token) {
        o = internal(ssl_op_prepend_token(g, h, N, &m->cls_token, &m->pos_cls));
        if (h != tokens) ssl_graph_used_up(g, h);
        h = o;
    }
    /* drop path only where the pass trains (not a teacher's or an evaluation's) */
    const int dp = g->training && g->record && m->cfg.drop_path > 0;
    const uint32_t pass = dp ? m->dp_pass++ : 0;
    for (int i = 0; i < m->cfg.depth; i++) {
        const float rate = dp ? ssl_vit_drop_rate(&m->cfg, i) : 0.0f;
        float *scale = NULL;
        if (rate > 0) {
            scale = ssl_graph_saved(g, sizeof(float) * 2 * (size_t)N);
            if (!scale) return NULL;
            ssl_vit_drop_path_scales(m->dp_seed, m->dp_step, pass, i, rate, N, scale);
        }
        o = ssl_vit_block_forward_dp(g, &m->blocks[i], h, N, scale);
        if (h != tokens) ssl_graph_used_up(g, internal(h));
        h = o;
    }
    if (!m->cfg.class_token) return h; /* timm: norm is the identity, fc_norm follows pooling */
    o = ssl_op_layernorm(g, h, &m->norm_w, &m->norm_b, LN_EPS);
    if (h != tokens) ssl_graph_used_up(g, internal(h));
    return o;
}

ssl_tensor *ssl_vit_pool(ssl_graph *g, ssl_vit *m, ssl_tensor *tokens, int N)
{
    if (m->cfg.class_token) return ssl_op_token_slice(g, tokens, N, 0, 1);
    ssl_tensor *h = internal(ssl_op_token_mean(g, tokens, N, 0));
    ssl_tensor *y = ssl_op_layernorm(g, h, &m->norm_w, &m->norm_b, LN_EPS);
    ssl_graph_used_up(g, h);
    return y;
}

ssl_tensor *ssl_vit_forward_tokens(ssl_graph *g, ssl_vit *m, ssl_tensor *x)
{
    ssl_tensor *t = internal(ssl_vit_embed(g, m, x));
    ssl_tensor *y = t ? ssl_vit_encode(g, m, t, x->shape[0], NULL, 0) : NULL;
    ssl_graph_used_up(g, t);
    return y;
}

ssl_tensor *ssl_vit_forward(ssl_graph *g, ssl_vit *m, ssl_tensor *x)
{
    ssl_tensor *t = internal(ssl_vit_forward_tokens(g, m, x));
    ssl_tensor *y = t ? ssl_vit_pool(g, m, t, x->shape[0]) : NULL;
    ssl_graph_used_up(g, t);
    return y;
}

double ssl_vit_macs(const ssl_vit *m, int tokens)
{
    const double D = m->feat_dim, L = tokens + m->cfg.class_token, p = m->cfg.patch;
    double embed = (double)m->n_patches * m->cfg.in_chans * p * p * D;
    /* qkv + proj + fc1 + fc2, then q k^T and P v */
    double block = L * (4 * D * D + 2 * D * m->hidden) + 2 * L * L * D;
    return embed + m->cfg.depth * block;
}
