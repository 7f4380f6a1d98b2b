/* MAE (He, Chen, Xie, Li, Dollar & Girshick 2021, "Masked Autoencoders Are
 * Scalable Vision Learners"), as the official facebookresearch/mae
 * models_mae.py computes it: each image loses a random mask_ratio of its
 * patches (len_keep = int(L * (1 - mask_ratio)) stay visible); the ViT
 * encoder sees the visible patches alone (position embeddings added before
 * the masking, then the class token); a narrower transformer decoder gets
 * the encoder's tokens through decoder_embed, a learned mask_token in every
 * removed position (unshuffled to image order), a fixed 2-D sin-cos
 * position table, its blocks, decoder_norm and decoder_pred (one patch's
 * pixels per token); the loss is the mean squared error per patch, averaged
 * over the removed patches only, against the image's pixels, each patch
 * normalised to mean 0 and unit (unbiased) variance when norm_pix_loss
 * (forward_loss, eps 1e-6).
 *
 * Masks are a function of (seed, step, batch position) - or of (seed, the
 * image's index) in a held-out evaluation - with the seed drawn from the
 * run's RNG and saved as "mask_seed", so a resume repeats them. As a
 * regression pretext task (pretext_metrics) its held-out evaluation reports
 * this loss on the test split, with each image's own fixed mask.
 *
 * Without a class token (an encoder with average pooling; not in the
 * official code) nothing is prepended, the encoder's tokens are not normed
 * (timm's norm is the identity there) and the decoder has no class row.
 *
 * Init: models_mae's initialize_weights, encoder included (xavier-uniform
 * linear weights and patch projection, cls_token and mask_token N(0, 0.02)).
 *
 * Views: one, MAE's pre-training transform: RandomResizedCrop(scale (0.2,
 * 1), ratio (3/4, 4/3)) and a horizontal flip, no colour augmentation (the
 * official crop interpolates bicubically; ours is bilinear).
 *
 * Recipe (main_pretrain.py and the paper's Table 8): AdamW, base lr 1.5e-4
 * x batch / 256, weight decay 0.05 (not on biases and LayerNorms), betas
 * (0.9, 0.95), cosine schedule after a warm-up of 40 of 800 epochs (here
 * 0.5 epochs of our short runs). The paper's decoder is 512 wide, 8 deep,
 * 16 heads for ViT-B/L/H (1024 wide); for vit_tiny (192 wide) on 28-px
 * images (7 x 7 patches of 4) we default to 128 wide, 2 deep, 4 heads:
 * narrower than the encoder, as the paper's, and its Table 1 finds depth
 * and width matter little for fine-tuning. mask_ratio 0.75 and
 * norm_pix_loss 1 are the paper's best. */
#include "mae.h"
#include "eval/pictures.h"
#include "nn/graph_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f       /* models_mae: partial(nn.LayerNorm, eps=1e-6) */
#define NORM_PIX_EPS 1e-6  /* forward_loss: (var + 1e-6) ** .5 */
#define DEC_MLP_RATIO 4    /* models_mae's mlp_ratio, decoder blocks included */

/* ------------------------------------------------------------ networks */

/* nn.init.xavier_uniform_ of an (out, in) weight. */
static void xavier(ssl_tensor *w, int out, int in, ssl_rng *rng)
{
    ssl_init_uniform(w->data, (long)out * in, sqrtf(6.0f / (float)(in + out)), rng);
}

static void xavier_block(ssl_vit_block *b, ssl_rng *rng)
{
    xavier(&b->qkv_w, 3 * b->dim, b->dim, rng);
    xavier(&b->proj_w, b->dim, b->dim, rng);
    xavier(&b->fc1_w, b->hidden, b->dim, rng);
    xavier(&b->fc2_w, b->dim, b->hidden, rng);
}

void ssl_mae_init_encoder(ssl_vit *enc, ssl_rng *rng)
{
    const int D = enc->feat_dim, cpp = enc->cfg.in_chans * enc->cfg.patch * enc->cfg.patch;
    xavier(&enc->patch_w, D, cpp, rng); /* models_mae: xavier on the (D, C*p*p) view */
    if (enc->cfg.class_token)
        for (int i = 0; i < D; i++) enc->cls_token.data[i] = 0.02f * ssl_rng_normal(rng);
    for (int i = 0; i < enc->cfg.depth; i++) xavier_block(&enc->blocks[i], rng);
}

int ssl_mae_decoder_init(ssl_mae_decoder *d, ssl_registry *r, const ssl_vit *enc, int dim,
                         int depth, int heads, ssl_rng *rng, char *err)
{
    memset(d, 0, sizeof *d);
    if (dim < 4 || dim % 4)
        return ssl_fail(err, SSL_EINVAL,
                        "--decoder-dim must be a multiple of 4 (its sin-cos position table), got %d", dim);
    if (heads < 1 || dim % heads)
        return ssl_fail(err, SSL_EINVAL, "--decoder-heads (%d) must divide --decoder-dim (%d)", heads, dim);
    if (depth < 1 || depth > 256)
        return ssl_fail(err, SSL_EINVAL, "--decoder-depth must be in 1..256 (got %d)", depth);
    const int cls = enc->cfg.class_token != 0, L = enc->n_patches;
    d->enc_dim = enc->feat_dim;
    d->dim = dim;
    d->depth = depth;
    d->heads = heads;
    d->patch = enc->cfg.patch;
    d->in_chans = enc->cfg.in_chans;
    d->grid = enc->grid;
    d->n_patches = L;
    d->class_token = cls;
    d->patch_dim = d->patch * d->patch * d->in_chans;
    d->blocks = calloc((size_t)depth, sizeof *d->blocks);
    if (!d->blocks) return ssl_fail(err, SSL_ENOMEM, "mae: out of memory for the decoder");

    /* models_mae's registration order */
    int st = 0, es[2] = {dim, d->enc_dim}, ms[3] = {1, 1, dim}, ps[3] = {1, cls + L, dim},
        pw[2] = {d->patch_dim, dim};
    st |= ssl_registry_param(r, "decoder_embed.weight", 2, es, 0, &d->embed_w);
    st |= ssl_registry_param(r, "decoder_embed.bias", 1, &dim, 1, &d->embed_b);
    st |= ssl_registry_param(r, "mask_token", 3, ms, 0, &d->mask_token);
    float *pe = ssl_registry_buffer(r, "decoder_pos_embed", 3, ps, 0.0f);
    if (pe) {
        ssl_pos_embed_sincos_2d(pe + (long)cls * dim, dim, d->grid, d->grid);
        d->pos_embed = ssl_tensor_wrap(pe, NULL, 3, ps, SSL_LAYOUT_NCHW);
    }
    st |= !pe;
    char name[64];
    for (int i = 0; !st && i < depth; i++) {
        snprintf(name, sizeof name, "decoder_blocks.%d", i);
        st |= ssl_vit_block_init(&d->blocks[i], r, name, dim, heads, DEC_MLP_RATIO * dim, 1, rng);
    }
    st |= ssl_registry_param(r, "decoder_norm.weight", 1, &dim, 1, &d->norm_w);
    st |= ssl_registry_param(r, "decoder_norm.bias", 1, &dim, 1, &d->norm_b);
    st |= ssl_registry_param(r, "decoder_pred.weight", 2, pw, 0, &d->pred_w);
    st |= ssl_registry_param(r, "decoder_pred.bias", 1, &d->patch_dim, 1, &d->pred_b);
    if (st || r->failed) {
        ssl_mae_decoder_free(d);
        return ssl_fail(err, SSL_ENOMEM, "mae: out of memory for the decoder");
    }
    /* initialize_weights; biases are zero already */
    xavier(&d->embed_w, dim, d->enc_dim, rng);
    for (int i = 0; i < dim; i++) d->mask_token.data[i] = 0.02f * ssl_rng_normal(rng);
    for (int i = 0; i < depth; i++) xavier_block(&d->blocks[i], rng);
    for (int i = 0; i < dim; i++) d->norm_w.data[i] = 1.0f;
    xavier(&d->pred_w, d->patch_dim, dim, rng);
    return SSL_OK;
}

void ssl_mae_decoder_free(ssl_mae_decoder *d)
{
    free(d->blocks); /* the tensors belong to the registry */
    d->blocks = NULL;
}

/* -------------------------------------------------------------- masking */

/* The double a Python user holds for a ratio typed as a decimal: the
 * shortest decimal that reads back as f (0.6f -> 0.6, not 0.60000002). */
static double as_typed(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

int ssl_mae_len_keep(int n_patches, float mask_ratio)
{
    double k = (double)n_patches * (1.0 - as_typed(mask_ratio));
    return k > 0 ? (int)k : 0;
}

void ssl_mae_masks(uint64_t seed, uint64_t a, uint64_t b0, int N, int L, int K,
                   int32_t *ids_keep)
{
    /* Selection sampling (Knuth's Algorithm S): patch t joins with
     * probability (still needed) / (still left), which gives every K-subset
     * the same chance, the distribution of argsort(noise)[:K]. */
    for (int n = 0; n < N; n++) {
        ssl_rng r;
        ssl_rng_derive(&r, seed, a, b0 + (uint64_t)n);
        int32_t *keep = ids_keep + (long)n * K;
        int m = 0;
        for (int t = 0; t < L && m < K; t++)
            if ((int)ssl_rng_below(&r, (uint32_t)(L - t)) < K - m) keep[m++] = t;
    }
}

/* ------------------------------------------------------------- forward */

/* Marks an activation only this network reads (see ssl_tensor.transient). */
static ssl_tensor *internal(ssl_tensor *t)
{
    if (t) t->transient = 1;
    return t;
}

/* forward_loss after the target: pred (M, E), target (M*E), mask (M) ->
 * sum_r mask_r mean_e (pred - target)^2 / sum_r mask_r (1). */
static ssl_tensor *patch_mse(ssl_graph *g, ssl_tensor *pred, const float *target,
                             const float *mask)
{
    const long M = pred->shape[0];
    const int E = pred->shape[1];
    int one = 1;
    ssl_tensor *y = ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
    float *gr = NULL;
    if (!y) return NULL;
    if (g->record && ssl_graph_needs_grad(pred, NULL, NULL) &&
        !(gr = ssl_graph_saved(g, sizeof(float) * (size_t)M * E)))
        return NULL;
    double sum = 0, w = 0;
    for (long r = 0; r < M; r++) {
        const float *p = pred->data + r * E, *t = target + r * E;
        double se = 0;
        for (int e = 0; e < E; e++) se += ((double)p[e] - t[e]) * ((double)p[e] - t[e]);
        sum += mask[r] * se / E;
        w += mask[r];
    }
    if (!(w > 0)) return ssl_graph_arg_error(g, "mae", "no removed patch to average the loss over");
    y->data[0] = (float)(sum / w);
    if (gr) {
        const double s = 2.0 / (E * w);
        for (long r = 0; r < M; r++)
            for (int e = 0; e < E; e++)
                gr[r * E + e] = (float)(s * mask[r] * ((double)pred->data[r * E + e] - target[r * E + e]));
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, ssl_graph_saved_grad_bwd, y, pred, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = gr;
    return y;
}

/* Per patch (row of E values): mean and unbiased variance, as torch's
 * mean(dim=-1) and var(dim=-1). */
static void patch_stats(const float *v, int E, double *mean, double *var)
{
    double s = 0, ss = 0;
    for (int e = 0; e < E; e++) s += v[e];
    *mean = s / E;
    for (int e = 0; e < E; e++) ss += (v[e] - *mean) * (v[e] - *mean);
    *var = ss / (E - 1);
}

ssl_tensor *ssl_mae_forward(ssl_graph *g, ssl_vit *enc, ssl_mae_decoder *d, ssl_tensor *x,
                            const int32_t *ids_keep, int K, int norm_pix_loss, ssl_mae_out *out)
{
    if (!x) return NULL;
    const ssl_vit_config *c = &enc->cfg;
    if (x->ndim != 4 || x->shape[1] != c->in_chans || x->shape[2] != c->img_size ||
        x->shape[3] != c->img_size) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "mae: expected (N, %d, %d, %d) images (the encoder's size)",
                     c->in_chans, c->img_size, c->img_size);
        return NULL;
    }
    const int cls = d->class_token, L = d->n_patches, E = d->patch_dim, N = x->shape[0];
    if (d->n_patches != enc->n_patches || d->enc_dim != enc->feat_dim || cls != c->class_token ||
        d->patch != c->patch || d->in_chans != c->in_chans)
        return ssl_graph_shape_error(g, "mae", "the decoder was built for another encoder");
    if (K < 1 || K >= L || !ids_keep) {
        ssl_ctx_fail(g->ctx, SSL_EINVAL,
                     "mae: %d visible patches of %d; at least one must be visible and one removed", K, L);
        return NULL;
    }
    if (norm_pix_loss && E < 2)
        return ssl_graph_arg_error(g, "mae", "norm_pix_loss needs at least 2 values per patch");
    const long rows = (long)N * L;
    float *mask = ssl_graph_saved(g, sizeof(float) * (size_t)rows);
    int32_t *dst = ssl_graph_saved(g, sizeof(int32_t) * (size_t)N * (cls + K));
    if (!mask || !dst) return NULL;
    /* where each encoder token goes in the decoder's sequence: the class
     * token first, the visible patches at 1 + their index; the rest get
     * the mask token (models_mae: cat with mask tokens, gather by
     * ids_restore, cat the class token back) */
    for (long i = 0; i < rows; i++) mask[i] = 1.0f;
    for (int n = 0; n < N; n++) {
        int32_t *dn = dst + (long)n * (cls + K);
        if (cls) dn[0] = 0;
        for (int k = 0; k < K; k++) {
            int32_t t = ids_keep[(long)n * K + k];
            if (t < 0 || t >= L) return ssl_graph_arg_error(g, "mae", "a visible patch index is out of range");
            mask[(long)n * L + t] = 0.0f;
            dn[cls + k] = cls + t;
        }
    }

    ssl_tensor *h = internal(ssl_vit_embed(g, enc, x));
    h = internal(ssl_vit_encode(g, enc, h, N, ids_keep, K));
    h = internal(ssl_op_linear(g, h, &d->embed_w, &d->embed_b));
    h = internal(ssl_op_scatter_tokens(g, h, N, dst, cls + L, &d->mask_token));
    h = ssl_op_add_pos(g, h, N, &d->pos_embed);
    for (int i = 0; i < d->depth; i++) h = ssl_vit_block_forward(g, &d->blocks[i], internal(h), N);
    h = internal(ssl_op_layernorm(g, internal(h), &d->norm_w, &d->norm_b, LN_EPS));
    /* decoder_pred then dropping the class token = dropping it first */
    if (cls) h = internal(ssl_op_token_slice(g, h, N, 1, L));
    ssl_tensor *pred = ssl_op_linear(g, h, &d->pred_w, &d->pred_b);
    if (!pred) return NULL;

    int rec = g->record; /* the target is data, not a path for gradients */
    g->record = 0;
    ssl_tensor *pt = ssl_op_patchify(g, x, d->patch, SSL_PATCH_HWC);
    g->record = rec;
    if (!pt) return NULL;
    const float *target = pt->data;
    if (norm_pix_loss) {
        float *t = ssl_graph_saved(g, sizeof(float) * (size_t)rows * E);
        if (!t) return NULL;
        for (long r = 0; r < rows; r++) {
            double mean, var;
            patch_stats(pt->data + r * E, E, &mean, &var);
            const double inv = 1.0 / sqrt(var + NORM_PIX_EPS);
            for (int e = 0; e < E; e++) t[r * E + e] = (float)((pt->data[r * E + e] - mean) * inv);
        }
        target = t;
    }
    ssl_tensor *loss = patch_mse(g, pred, target, mask);
    if (loss && out) *out = (ssl_mae_out){pred, pt->data, target, mask};
    return loss;
}

int ssl_mae_reconstruct(ssl_graph *g, ssl_vit *enc, ssl_mae_decoder *d, ssl_tensor *x,
                        const int32_t *ids_keep, int K, int norm_pix_loss, float *mask,
                        float *recon, float *loss)
{
    int rec = g->record;
    g->record = 0;
    ssl_mae_out o;
    ssl_tensor *l = ssl_mae_forward(g, enc, d, x, ids_keep, K, norm_pix_loss, &o);
    g->record = rec;
    if (!l) return g->ctx->failed ? g->ctx->failed : SSL_EINVAL;
    if (loss) *loss = l->data[0];
    const int N = x->shape[0], C = d->in_chans, p = d->patch, G = d->grid, E = d->patch_dim;
    const int S = G * p;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < G; i++)
            for (int j = 0; j < G; j++) {
                const long r = ((long)n * G + i) * G + j;
                const float *pr = o.pred->data + r * E;
                double mean = 0, sd = 1;
                if (norm_pix_loss) {
                    double var;
                    patch_stats(o.patches + r * E, E, &mean, &var);
                    sd = sqrt(var + NORM_PIX_EPS);
                }
                /* unpatchify: value (ky*p + kx)*C + ch -> pixel (i*p + ky, j*p + kx) */
                for (int ky = 0; ky < p; ky++)
                    for (int kx = 0; kx < p; kx++) {
                        const long px = (long)(i * p + ky) * S + j * p + kx;
                        mask[(long)n * S * S + px] = o.mask[r];
                        for (int ch = 0; ch < C; ch++)
                            recon[((long)n * C + ch) * S * S + px] =
                                (float)(pr[(ky * p + kx) * C + ch] * sd + mean);
                    }
            }
    return SSL_OK;
}

/* --------------------------------------------------------------- method */

typedef struct mae_state {
    ssl_mae_decoder dec;
    int64_t seed;   /* "mask_seed" in the checkpoint: a resume repeats the masks */
    int64_t masked; /* removed patches the last loss averaged over */
} mae_state;

static int mae_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->mask_ratio == SSL_UNSET) cfg->mask_ratio = 0.75f;
    if (cfg->decoder_dim == SSL_UNSET) cfg->decoder_dim = 128;  /* paper 512 */
    if (cfg->decoder_depth == SSL_UNSET) cfg->decoder_depth = 2; /* paper 8 */
    if (cfg->decoder_heads == SSL_UNSET) cfg->decoder_heads = 4; /* paper 16 */
    if (cfg->norm_pix_loss == SSL_UNSET) cfg->norm_pix_loss = 1;
    if (!(cfg->mask_ratio > 0 && cfg->mask_ratio < 1))
        return ssl_fail(err, SSL_EINVAL, "--mask-ratio must be in (0, 1) (got %g)", cfg->mask_ratio);
    if (cfg->decoder_dim < 4 || cfg->decoder_dim % 4 || cfg->decoder_dim > 8192)
        return ssl_fail(err, SSL_EINVAL,
                        "--decoder-dim must be a multiple of 4 in 4..8192 (its sin-cos table; got %d)",
                        cfg->decoder_dim);
    if (cfg->decoder_depth < 1 || cfg->decoder_depth > 256)
        return ssl_fail(err, SSL_EINVAL, "--decoder-depth must be in 1..256 (got %d)", cfg->decoder_depth);
    if (cfg->decoder_heads < 1 || cfg->decoder_dim % cfg->decoder_heads)
        return ssl_fail(err, SSL_EINVAL, "--decoder-heads (%d) must divide --decoder-dim (%d)",
                        cfg->decoder_heads, cfg->decoder_dim);
    if (cfg->norm_pix_loss != 0 && cfg->norm_pix_loss != 1)
        return ssl_fail(err, SSL_EINVAL, "--norm-pix-loss must be 0 or 1 (got %d)", cfg->norm_pix_loss);
    return SSL_OK;
}

static int mae_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    /* main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0)), flip, normalize */
    ssl_aug_eval(&augs[0], c, h, w);
    augs[0].crop_scale_min = 0.2f;
    augs[0].crop_scale_max = 1.0f;
    augs[0].crop_ratio_min = 3.0f / 4.0f;
    augs[0].crop_ratio_max = 4.0f / 3.0f;
    augs[0].flip_p = 0.5f;
    return 1;
}

static int mae_init(ssl_method *m, ssl_rng *rng, char *err)
{
    if (m->encoder.cfg.kind != SSL_ENC_VIT)
        return ssl_fail(err, SSL_EINVAL, "--method mae needs a ViT encoder (--arch vit_tiny ...)");
    ssl_vit *enc = &m->encoder.vit;
    const int L = enc->n_patches, K = ssl_mae_len_keep(L, m->cfg.mask_ratio);
    if (K < 1 || K >= L)
        return ssl_fail(err, SSL_EINVAL,
                        "--mask-ratio %g keeps %d of the %d patches; at least one must stay visible "
                        "and one be removed", m->cfg.mask_ratio, K, L);
    if (m->cfg.norm_pix_loss && enc->cfg.patch * enc->cfg.patch * enc->cfg.in_chans < 2)
        return ssl_fail(err, SSL_EINVAL, "--norm-pix-loss 1 needs patches of 2 or more values");
    mae_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "mae: out of memory");
    m->state_ptr = s;
    ssl_mae_init_encoder(enc, rng);
    int rc = ssl_mae_decoder_init(&s->dec, &m->heads, enc, m->cfg.decoder_dim, m->cfg.decoder_depth,
                                  m->cfg.decoder_heads, rng, err);
    if (rc) return rc;
    /* from the run's RNG, so that runs of different seeds mask differently */
    s->seed = (int64_t)ssl_rng_u64(rng);
    if (ssl_registry_counter(&m->extra, "mask_seed", &s->seed))
        return ssl_fail(err, SSL_ENOMEM, "mae: out of memory");
    return SSL_OK;
}

static ssl_tensor *mae_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    mae_state *s = m->state_ptr;
    ssl_tensor *x = views[0];
    ssl_vit *enc = &m->encoder.vit;
    if (!x || x->ndim != 4) return ssl_graph_shape_error(g, "mae", "expected one (N, C, H, W) view");
    const int N = x->shape[0], L = enc->n_patches, K = ssl_mae_len_keep(L, m->cfg.mask_ratio);
    int32_t *keep = ssl_graph_saved(g, sizeof(int32_t) * (size_t)N * (K > 0 ? K : 1));
    if (!keep) return NULL;
    if (m->pretext_eval) /* held out: the image's masks, whatever the batch */
        ssl_mae_masks((uint64_t)s->seed, UINT64_MAX, (uint64_t)m->pretext_eval_first, N, L, K, keep);
    else
        ssl_mae_masks((uint64_t)s->seed, (uint64_t)m->step, 0, N, L, K, keep);
    s->masked = (int64_t)N * (L - K);
    return ssl_mae_forward(g, enc, &s->dec, x, keep, K, m->cfg.norm_pix_loss, NULL);
}

/* A regression task: the held-out evaluation reports the masked-patch loss. */
static int mae_metrics(const ssl_method *m, int64_t *correct, int64_t *total)
{
    const mae_state *s = m->state_ptr;
    *correct = 0;
    *total = s->masked;
    return 0;
}

static void mae_free(ssl_method *m)
{
    mae_state *s = m->state_ptr;
    if (s) ssl_mae_decoder_free(&s->dec);
    ssl_free(s);
}

int ssl_mae_method_reconstruct(ssl_method *m, ssl_ctx *ctx, const float *x, int N, int64_t first,
                               float *mask, float *recon, float *loss, char *err)
{
    if (m->ops != &ssl_method_mae || !m->state_ptr)
        return ssl_fail(err, SSL_EINVAL, "reconstruction needs a model trained with --method mae");
    mae_state *s = m->state_ptr;
    ssl_vit *enc = &m->encoder.vit;
    const int L = enc->n_patches, K = ssl_mae_len_keep(L, m->cfg.mask_ratio), S = enc->cfg.img_size;
    int shape[4] = {N, enc->cfg.in_chans, S, S};
    ssl_tensor xt = ssl_tensor_wrap((float *)x, NULL, 4, shape, SSL_LAYOUT_NCHW);
    int32_t *keep = malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1) * (K > 0 ? K : 1));
    if (!keep) return ssl_fail(err, SSL_ENOMEM, "mae: out of memory");
    ssl_mae_masks((uint64_t)s->seed, UINT64_MAX, (uint64_t)first, N, L, K, keep);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    int rc = ssl_mae_reconstruct(&g, enc, &s->dec, &xt, keep, K, m->cfg.norm_pix_loss, mask, recon, loss);
    if (rc) ssl_fail(err, rc, "%s", ctx->err);
    ssl_graph_free(&g);
    free(keep);
    return rc;
}

/* mae.png as the paper's figures, per image: the view, the view with its
 * removed patches gray (what the encoder does not see), the decoder's
 * reconstruction of every patch, and the reconstruction with the visible
 * patches pasted from the view. Masks are the held-out evaluation's. */
static int mae_show(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                    const char *out_dir, char *err)
{
    ssl_aug a;
    float *x = ssl_show_views(m, ds, first, n, &a, err);
    if (!x) return SSL_EINVAL;
    const int C = ds->c, S = a.out_h;
    const long px = (long)S * S, img = C * px;
    float *mask = malloc(sizeof(float) * (size_t)n * px), *recon = malloc(sizeof(float) * (size_t)n * img);
    float *d = malloc(sizeof(float) * 4 * (size_t)img); /* the 4 columns in display units */
    float loss = 0;
    int rc = S == a.out_w ? SSL_OK : ssl_fail(err, SSL_EINVAL, "mae: views are not square");
    if (!rc && (!mask || !recon || !d)) rc = ssl_fail(err, SSL_ENOMEM, "mae: out of memory for the pictures");
    if (!rc) rc = ssl_mae_method_reconstruct(m, ctx, x, n, first, mask, recon, &loss, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 0);
    char title[48];
    snprintf(title, sizeof title, "recon, loss %.3f", loss);
    const char *titles[4] = {"original", "masked", title, "recon + visible"};
    ssl_canvas cv = {0};
    if (!rc) rc = ssl_show_canvas(&cv, &l, n, 4, titles, err);
    for (int i = 0; i < n && !rc; i++) {
        const float *mi = mask + i * px;
        ssl_show_denorm(x + i * img, C, px, &a, d);
        ssl_show_denorm(recon + i * img, C, px, &a, d + 2 * img);
        for (int c = 0; c < C; c++)
            for (long k = 0; k < px; k++) {
                const long o = c * px + k;
                d[img + o] = mi[k] > 0 ? 0.5f : d[o];
                d[3 * img + o] = mi[k] > 0 ? d[2 * img + o] : d[o];
            }
        for (int col = 0; col < 4 && !rc; col++) {
            int x0, y0;
            ssl_show_cell(&l, i, col, &x0, &y0);
            rc = ssl_canvas_paste(&cv, x0, y0, l.scale, d + col * img, C, S, S, 0.0f, 1.0f, err);
        }
    }
    if (!rc) rc = ssl_show_write(&cv, out_dir, "mae.png", err);
    ssl_canvas_free(&cv);
    free(mask);
    free(recon);
    free(d);
    ssl_free(x);
    return rc;
}

const ssl_method_ops ssl_method_mae = {
    .name = "mae",
    .summary = "MAE: encoder on 25% visible patches, transformer decoder predicts the removed ones' pixels",
    .defaults = "mask ratio 0.75, norm-pix loss, decoder 128 wide x 2 deep x 4 heads (paper 512 x 8 x 16, "
                "scaled to tiny ViTs); crop 20-100% + flip; AdamW lr 1.5e-4 x batch/256, wd 0.05, "
                "0.5 warm-up epochs",
    .optim = {"adamw", 1.5e-4f, "linear", 0.05f, 0.9f, 0.5f, 0.95f},
    .validate = mae_validate,
    .views = mae_views,
    .init = mae_init,
    .loss = mae_loss,
    .free = mae_free,
    .pretext_metrics = mae_metrics,
    .show = mae_show,
};
