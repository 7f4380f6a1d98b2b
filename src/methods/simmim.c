/* SimMIM (Xie et al. 2022, "SimMIM: a Simple Framework for Masked Image
 * Modeling", microsoft/SimMIM): random patches of the view are masked, a
 * learned mask token replaces their patch embeddings inside the encoder
 * (before the position embedding, as VisionTransformerForSimMIM), the
 * encoder sees every token, a one-layer head predicts every patch's
 * pixels, and the loss is the L1 error on the masked pixels alone, the
 * official formula (see ssl_simmim_l1).
 *
 * Masking: SimMIM masks in units of 32 px (ViT-B/16 at 224 px: 7 x 7 units
 * of 2 x 2 tokens), ratio 0.6. A 28-px Fashion-MNIST view with patch 4 has
 * 7 x 7 tokens and 28 is no multiple of a larger unit, so here the mask
 * unit is the ViT patch itself: ceil(49 * 0.6) = 30 tokens per image.
 *
 * Head: "decoder.0.weight" / "decoder.0.bias" as the official 1x1 Conv2d
 * before PixelShuffle (a per-patch linear map D -> p*p*C); its output
 * channels are C * p * p (the official hard-codes 3 channels). The mask
 * token is "mask_token" in m->heads (the official "encoder.mask_token").
 *
 * Our ViT is timm's (absolute position embeddings, no relative position
 * bias, no layer scale, no drop-path), where SimMIM's ViT-B used a shared
 * relative position bias and layer scale 0.1.
 *
 * Recipe: AdamW, base lr 1e-4 per 512 images (batch 2048: 4e-4), i.e.
 * 5e-5 x batch / 256, weight decay 0.05 (biases and 1-D parameters
 * exempt, the mask token not), betas (0.9, 0.999), 10 warm-up epochs of
 * 800 -> 0.5 here; view: RandomResizedCrop scale (0.67, 1), ratio (3/4,
 * 4/3), horizontal flip, nothing else. */
#include "mim.h"
#include "nn/graph_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ssl_mim_trunc_normal(float *w, long n, float std, ssl_rng *rng)
{
    for (long i = 0; i < n; i++) {
        float v;
        do v = std * ssl_rng_normal(rng);
        while (v < -std || v > std);
        w[i] = v;
    }
}

double ssl_mim_as_typed(float f)
{
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
        if (strtof(buf, NULL) == f) return strtod(buf, NULL);
    }
    return (double)f;
}

int ssl_mim_mask_token_init(ssl_tensor *tok, ssl_registry *r, int D, ssl_rng *rng)
{
    int shape[3] = {1, 1, D};
    if (ssl_registry_param(r, "mask_token", 3, shape, 0, tok)) return SSL_ENOMEM;
    ssl_mim_trunc_normal(tok->data, D, 0.02f, rng);
    return SSL_OK;
}

ssl_tensor *ssl_mim_encode(ssl_graph *g, ssl_vit *vit, ssl_tensor *mask_token, ssl_tensor *x,
                           const uint8_t *mask)
{
    if (!x) return NULL;
    const ssl_vit_config *c = &vit->cfg;
    if (x->ndim != 4 || x->shape[1] != c->in_chans || x->shape[2] != c->img_size ||
        x->shape[3] != c->img_size) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "masked image modeling: expected (N, %d, %d, %d) views",
                     c->in_chans, c->img_size, c->img_size);
        return NULL;
    }
    const int N = x->shape[0];
    ssl_tensor *t = ssl_op_patch_embed(g, x, &vit->patch_w, &vit->patch_b);
    if (t) t->transient = 1;
    t = ssl_op_mask_tokens(g, t, N, mask, mask_token);
    if (t) t->transient = 1;
    t = ssl_op_add_pos(g, t, N, &vit->pos_patch);
    if (t) t->transient = 1;
    return ssl_vit_encode(g, vit, t, N, NULL, 0);
}

int ssl_simmim_mask(int grid, int scale, float ratio, ssl_rng *rng, uint8_t *mask)
{
    if (grid < 1 || scale < 1 || grid % scale || (long)grid * grid > SSL_MIM_MAX_PATCHES ||
        !(ratio >= 0 && ratio <= 1))
        return SSL_EINVAL;
    const int side = grid / scale, units = side * side;
    int count = (int)ceil(units * ssl_mim_as_typed(ratio));
    count = count > units ? units : count;
    uint8_t unit_mask[SSL_MIM_MAX_PATCHES];
    int perm[SSL_MIM_MAX_PATCHES];
    for (int i = 0; i < units; i++) perm[i] = i, unit_mask[i] = 0;
    /* np.random.permutation(units)[:count]: a Fisher-Yates prefix */
    for (int i = 0; i < count; i++) {
        int j = i + (int)ssl_rng_below(rng, (uint32_t)(units - i));
        int tmp = perm[i];
        perm[i] = perm[j];
        perm[j] = tmp;
        unit_mask[perm[i]] = 1;
    }
    for (int i = 0; i < grid; i++)
        for (int j = 0; j < grid; j++) mask[i * grid + j] = unit_mask[(i / scale) * side + j / scale];
    return SSL_OK;
}

int ssl_simmim_head_init(ssl_simmim_head *h, ssl_registry *r, int dim, int patch, int in_chans,
                         ssl_rng *rng)
{
    memset(h, 0, sizeof *h);
    h->patch = patch;
    h->in_chans = in_chans;
    h->dim = dim;
    const int P = patch * patch * in_chans;
    int ws[4] = {P, dim, 1, 1};
    if (ssl_registry_param(r, "decoder.0.weight", 4, ws, 0, &h->weight) ||
        ssl_registry_param(r, "decoder.0.bias", 1, &P, 1, &h->bias))
        return SSL_ENOMEM;
    /* nn.Conv2d's default: U(+-1/sqrt(fan_in)), fan_in = D * 1 * 1 */
    float bound = 1.0f / sqrtf((float)dim);
    ssl_init_uniform(h->weight.data, (long)P * dim, bound, rng);
    ssl_init_uniform(h->bias.data, P, bound, rng);
    int s2[2] = {P, dim};
    h->w2d = ssl_tensor_wrap(h->weight.data, h->weight.grad, 2, s2, SSL_LAYOUT_NCHW);
    h->w2d.requires_grad = h->weight.requires_grad;
    return SSL_OK;
}

ssl_tensor *ssl_simmim_l1(ssl_graph *g, ssl_tensor *pred, const float *target,
                          const uint8_t *mask, int in_chans)
{
    if (!pred) return NULL;
    if (pred->ndim != 2 || in_chans < 1 || pred->shape[1] % in_chans)
        return ssl_graph_shape_error(g, "simmim_l1", "pred must be (N*T, C*p*p)");
    if (!target || !mask) return ssl_graph_arg_error(g, "simmim_l1", "target or mask missing");
    const long rows = pred->shape[0];
    const int K = pred->shape[1];
    long masked = 0;
    for (long r = 0; r < rows; r++) masked += mask[r] != 0;
    /* mask.sum() of the official pixel mask (N, 1, H, W): p*p pixels per patch */
    const double denom = ((double)masked * (K / in_chans) + 1e-5) * in_chans;
    int one = 1;
    ssl_tensor *y = ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    float *gr = NULL;
    if (g->record && ssl_graph_needs_grad(pred, NULL, NULL) &&
        !(gr = ssl_graph_saved(g, sizeof(float) * (size_t)rows * K)))
        return NULL;
    double sum = 0;
    for (long r = 0; r < rows; r++) {
        const float *p = pred->data + r * K, *t = target + r * K;
        float *gd = gr ? gr + r * K : NULL;
        if (!mask[r]) {
            if (gd) memset(gd, 0, sizeof(float) * K);
            continue;
        }
        double s = 0;
        for (int k = 0; k < K; k++) {
            double d = (double)p[k] - t[k];
            s += fabs(d);
            if (gd) gd[k] = (float)((d > 0) - (d < 0)) / (float)denom;
        }
        sum += s;
    }
    y->data[0] = (float)(sum / denom);
    int fail;
    ssl_node *n = ssl_graph_record(g, ssl_graph_saved_grad_bwd, y, pred, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = gr;
    return y;
}

ssl_tensor *ssl_simmim_loss(ssl_graph *g, ssl_vit *vit, ssl_tensor *mask_token,
                            ssl_simmim_head *h, ssl_tensor *x, const uint8_t *mask)
{
    if (!x) return NULL;
    if (h->patch != vit->cfg.patch || h->in_chans != vit->cfg.in_chans || h->dim != vit->feat_dim) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "simmim: the head does not match the ViT");
        return NULL;
    }
    const int N = x->shape[0], T = vit->n_patches, cls = vit->cfg.class_token;
    ssl_tensor *z = ssl_mim_encode(g, vit, mask_token, x, mask);
    if (z && cls) {
        z->transient = 1;
        z = ssl_op_token_slice(g, z, N, cls, T);
    }
    if (z) z->transient = 1;
    ssl_tensor *pred = ssl_op_linear(g, z, &h->w2d, &h->bias);
    /* the target: the view's pixels per patch, in the head's order */
    int r = ssl_graph_no_grad(g);
    ssl_tensor *target = ssl_op_patchify(g, x, h->patch, SSL_PATCH_CHW);
    g->record = r;
    if (!target) return NULL;
    return ssl_simmim_l1(g, pred, target->data, mask, h->in_chans);
}

/* ================================================== the method (glue) */

typedef struct simmim_state {
    ssl_tensor mask_token;
    ssl_simmim_head head;
    int64_t seed;   /* "mask_seed": masks repeat on a resume */
    int64_t values; /* masked values the last loss averaged over */
} simmim_state;

static int simmim_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->mask_ratio == SSL_UNSET) cfg->mask_ratio = 0.6f;
    if (!(cfg->mask_ratio > 0 && cfg->mask_ratio < 1))
        return ssl_fail(err, SSL_EINVAL, "--mask-ratio must be in (0, 1) (got %g)", cfg->mask_ratio);
    return SSL_OK;
}

static int simmim_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    /* SimMIMTransform: RandomResizedCrop(scale (0.67, 1), ratio (3/4, 4/3)),
     * RandomHorizontalFlip, Normalize; no colour augmentation */
    ssl_aug_eval(&augs[0], c, h, w);
    augs[0].crop_scale_min = 0.67f;
    augs[0].crop_scale_max = 1.0f;
    augs[0].crop_ratio_min = 3.0f / 4.0f;
    augs[0].crop_ratio_max = 4.0f / 3.0f;
    augs[0].flip_p = 0.5f;
    return 1;
}

ssl_vit *ssl_mim_vit(ssl_method *m, const char *method, char *err)
{
    if (m->encoder.cfg.kind != SSL_ENC_VIT) {
        ssl_fail(err, SSL_EINVAL,
                 "--method %s needs a ViT encoder (--arch vit_tiny, vit_small or vit_base)", method);
        return NULL;
    }
    if (m->encoder.vit.n_patches > SSL_MIM_MAX_PATCHES) {
        ssl_fail(err, SSL_EINVAL, "--method %s: %d patches per image, at most %d", method,
                 m->encoder.vit.n_patches, SSL_MIM_MAX_PATCHES);
        return NULL;
    }
    return &m->encoder.vit;
}

void ssl_mim_rng(const ssl_method *m, int64_t seed, int b, ssl_rng *r)
{
    if (m->pretext_eval)
        ssl_rng_derive(r, (uint64_t)seed, UINT64_MAX, (uint64_t)(m->pretext_eval_first + b));
    else
        ssl_rng_derive(r, (uint64_t)seed, (uint64_t)m->step, (uint64_t)b);
}

static int simmim_init(ssl_method *m, ssl_rng *rng, char *err)
{
    ssl_vit *vit = ssl_mim_vit(m, "simmim", err);
    if (!vit) return SSL_EINVAL;
    simmim_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "simmim: out of memory");
    m->state_ptr = s;
    s->seed = (int64_t)ssl_rng_u64(rng);
    int rc = ssl_mim_mask_token_init(&s->mask_token, &m->heads, vit->feat_dim, rng);
    if (!rc)
        rc = ssl_simmim_head_init(&s->head, &m->heads, vit->feat_dim, vit->cfg.patch,
                                  vit->cfg.in_chans, rng);
    if (!rc) rc = ssl_registry_counter(&m->extra, "mask_seed", &s->seed);
    return rc ? ssl_fail(err, SSL_ENOMEM, "simmim: out of memory for the head") : SSL_OK;
}

static ssl_tensor *simmim_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    simmim_state *s = m->state_ptr;
    ssl_vit *vit = &m->encoder.vit;
    ssl_tensor *x = views[0];
    const int N = x->shape[0], T = vit->n_patches;
    uint8_t *mask = ssl_graph_saved(g, (size_t)N * T);
    if (!mask) return NULL;
    s->values = 0;
    for (int b = 0; b < N; b++) {
        ssl_rng r;
        ssl_mim_rng(m, s->seed, b, &r);
        if (ssl_simmim_mask(vit->grid, 1, m->cfg.mask_ratio, &r, mask + (long)b * T)) {
            ssl_ctx_fail(g->ctx, SSL_EINVAL, "simmim: cannot mask a %dx%d grid", vit->grid, vit->grid);
            return NULL;
        }
        for (int t = 0; t < T; t++) s->values += mask[(long)b * T + t];
    }
    s->values *= (int64_t)vit->cfg.patch * vit->cfg.patch * vit->cfg.in_chans;
    return ssl_simmim_loss(g, vit, &s->mask_token, &s->head, x, mask);
}

/* A regression task: the held-out metric is the loss itself, a mean over
 * the masked pixel values. */
static int simmim_metrics(const ssl_method *m, int64_t *correct, int64_t *total)
{
    const simmim_state *s = m->state_ptr;
    *correct = 0;
    *total = s->values;
    return 0;
}

static void simmim_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_simmim = {
    .name = "simmim",
    .summary = "SimMIM: random patch masking, mask token in the encoder, linear pixel head, L1 on masked pixels",
    .defaults = "mask ratio 0.6 (mask unit = the ViT patch); AdamW lr 5e-5 x batch/256, wd 0.05, "
                "0.5 warm-up epochs",
    .optim = {"adamw", 5e-5f, "linear", 0.05f, 0.9f, 0.5f},
    .validate = simmim_validate,
    .views = simmim_views,
    .init = simmim_init,
    .loss = simmim_loss,
    .free = simmim_free,
    .pretext_metrics = simmim_metrics,
};
