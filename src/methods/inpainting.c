/* Context encoder (Pathak, Kraehenbuehl, Donahue, Darrell & Efros 2016,
 * "Context Encoders: Feature Learning by Inpainting"): a region of the view
 * is masked, the encoder sees the rest (masked pixels set to 0, the
 * dataset mean after normalization, as the paper fills the hole with the
 * mean colour), a decoder of transposed convolutions reconstructs the
 * image, and the loss is the L2 error on the masked region alone: the
 * paper's L_rec = ||M (x - F((1 - M) x))||^2, as a mean over the masked
 * values (ssl_op_masked_mse). Gray or RGB data.
 *
 * Masks (the paper's center and random-block regions): --mask-blocks 0
 * (default) one central square of side --mask-size x the view's (0.5:
 * 14 of 28 px, a quarter of the area, as the paper's 64 of 128);
 * --mask-blocks N: N squares of side mask-size / sqrt(N) at uniform random
 * positions, possibly overlapping (at most the same area: the paper's
 * "up to 1/4 of the image"). Positions come from (seed, step, image), or
 * (seed, image index) in a held-out evaluation. The paper's 4-px overlap
 * band with a 10x loss weight is not done.
 *
 * Decoder ("decoder.", nn.Sequential indices): one ConvTranspose2d(4, 2)
 * per stride-2 stage of the encoder (DCGAN's / the paper's up-convolution;
 * 28 px: 4 -> 7 -> 14 -> 28), widths F/2, F/4, ... with BN + ReLU, the
 * last to the image's channels with a bias and no activation (the paper's
 * tanh suits [-1, 1] pixels; ours are normalized). The paper's channel-wise
 * fully connected bottleneck is left out: our encoder's last features see
 * the whole view already. Init N(0, 0.02) as the paper's (DCGAN's) code.
 *
 * Adversarial term (--adv-weight w > 0; the paper's lambda_adv = 0.001,
 * lambda_rec = 1 - w = 0.999): a discriminator ("discriminator.", DCGAN's:
 * Conv(4, 2)-LReLU(0.2), Conv-BN-LReLU, Conv-BN-LReLU, global average
 * pool, Linear -> 1 logit; width = the encoder's) sees real views and
 * views with the hole filled by the reconstruction. Our loop has one
 * optimizer over encoder and heads, so one step does both players at once
 * (simultaneous, not alternating, gradient steps):
 *   loss = (1 - w) L_rec + w BCE(D(fake), 1) + BCE(D(x), 1) + BCE(D(sg(fake)), 0)
 * where D's parameters get gradients from the last two terms only (the
 * reconstruction is detached there) and the generator's term runs D with
 * its parameters held constant, so its gradient reaches the encoder and
 * decoder alone. D's BN updates its running statistics in each of the
 * three passes (real, detached fake, fake), as in the official training
 * loop. The logged loss includes D's; the held-out metric is L_rec alone.
 *
 * Recipe: the paper's Adam at lr 2e-4 (batch 64, no decay): AdamW lr 2e-4
 * (no batch scaling), no weight decay, no warm-up (our AdamW's beta1 is
 * 0.9, the paper's 0.5). */
#include "eval/pictures.h"
#include "lab.h"
#include "nn/graph_internal.h"
#include "pretext.h"
#include "selfsup/graph_dense.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_UP 6
#define LRELU_SLOPE 0.2f

typedef struct disc_net {
    ssl_tensor w[3];     /* (d, C, 4, 4), (2d, d, 4, 4), (4d, 2d, 4, 4) */
    ssl_bn_layer bn[2];  /* after the second and third convolution */
    ssl_tensor fc_w, fc_b; /* (1, 4d), (1) */
} disc_net;

typedef struct inpainting_state {
    int n_up;
    ssl_tensor up_w[MAX_UP];    /* (Ci, Co, 4, 4) */
    ssl_bn_layer up_bn[MAX_UP]; /* after every stage but the last */
    ssl_tensor out_b;           /* (C), the last stage's bias */
    int adv;
    disc_net d;
    disc_net d_const;           /* d's tensors without gradients; the graph holds
                                   pointers to it until the backward */
    int64_t seed;               /* "pretext_seed": masks repeat on a resume */
    int64_t masked;             /* values the last loss averaged over */
} inpainting_state;

void ssl_inpainting_mask(const ssl_method_config *cfg, int h, int w, ssl_rng *r, float *mask)
{
    memset(mask, 0, sizeof(float) * h * w);
    int n = cfg->mask_blocks > 0 ? cfg->mask_blocks : 1;
    double f = cfg->mask_size / sqrt((double)n);
    int bh = (int)lround(f * h), bw = (int)lround(f * w);
    bh = bh < 1 ? 1 : bh > h ? h : bh;
    bw = bw < 1 ? 1 : bw > w ? w : bw;
    for (int k = 0; k < n; k++) {
        int y0 = (h - bh) / 2, x0 = (w - bw) / 2;
        if (cfg->mask_blocks > 0) {
            y0 = (int)ssl_rng_below(r, (uint32_t)(h - bh + 1));
            x0 = (int)ssl_rng_below(r, (uint32_t)(w - bw + 1));
        }
        for (int y = y0; y < y0 + bh; y++)
            for (int x = x0; x < x0 + bw; x++) mask[y * w + x] = 1.0f;
    }
}

static int inpainting_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->mask_size == SSL_UNSET) cfg->mask_size = 0.5f;
    if (cfg->mask_blocks == SSL_UNSET) cfg->mask_blocks = 0;
    if (cfg->adv_weight == SSL_UNSET) cfg->adv_weight = 0.0f;
    if (cfg->view_size == SSL_UNSET) cfg->view_size = 0;
    if (!(cfg->mask_size > 0 && cfg->mask_size < 1))
        return ssl_fail(err, SSL_EINVAL, "--mask-size must be in (0, 1), a fraction of the view's side (got %g)",
                        cfg->mask_size);
    if (cfg->mask_blocks > 1024)
        return ssl_fail(err, SSL_EINVAL, "--mask-blocks must be <= 1024 (got %d)", cfg->mask_blocks);
    if (!(cfg->adv_weight >= 0 && cfg->adv_weight < 1))
        return ssl_fail(err, SSL_EINVAL, "--adv-weight must be in [0, 1): lambda_rec is 1 minus it (got %g)",
                        cfg->adv_weight);
    if (cfg->view_size > 4096)
        return ssl_fail(err, SSL_EINVAL, "--view-size must be <= 4096 (got %d)", cfg->view_size);
    return SSL_OK;
}

static int inpainting_check(const ssl_method *m, int batch, char *err)
{
    /* the side ssl_inpainting_mask gives a square, before its clamping */
    int S = m->augs[0].out_h, n = m->cfg.mask_blocks > 0 ? m->cfg.mask_blocks : 1;
    long side = lround(m->cfg.mask_size / sqrt((double)n) * S);
    if (m->cfg.mask_blocks == 0 && side < 1)
        return ssl_fail(err, SSL_EINVAL, "inpainting: --mask-size %g masks no pixel of a %d-px view",
                        m->cfg.mask_size, S);
    if (side >= S)
        return ssl_fail(err, SSL_EINVAL, "inpainting: --mask-size %g masks the whole %d-px view",
                        m->cfg.mask_size, S);
    return SSL_OK;
}

static int conv_param(ssl_registry *r, const char *name, int o, int i, ssl_tensor *t, ssl_rng *rng)
{
    int shape[4] = {o, i, 4, 4};
    if (ssl_registry_param(r, name, 4, shape, 0, t)) return SSL_ENOMEM;
    ssl_init_normal(t->data, (long)o * i * 16, 0.02f, rng);
    return SSL_OK;
}

static int inpainting_init(ssl_method *m, ssl_rng *rng, char *err)
{
    inpainting_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "inpainting: out of memory");
    m->state_ptr = s;
    s->seed = (int64_t)ssl_rng_u64(rng);
    int rc = ssl_registry_counter(&m->extra, "pretext_seed", &s->seed);
    const int C = m->encoder.in_channels, F = m->encoder.feat_dim;
    int sizes[8];
    s->n_up = ssl_encoder_halvings(&m->encoder, 64, sizes);
    char name[64];
    for (int t = 0, ci = F; t < s->n_up && !rc; t++) {
        int last = t == s->n_up - 1, co = last ? C : (F >> (t + 1) > 0 ? F >> (t + 1) : 1);
        snprintf(name, sizeof name, "decoder.%d.weight", 3 * t);
        rc = conv_param(&m->heads, name, ci, co, &s->up_w[t], rng);
        snprintf(name, sizeof name, last ? "decoder.%d.bias" : "decoder.%d", last ? 3 * t : 3 * t + 1);
        if (!rc) rc = last ? ssl_registry_param(&m->heads, name, 1, &co, 1, &s->out_b)
                           : ssl_registry_bn(&m->heads, name, co, &s->up_bn[t]);
        ci = co;
    }
    s->adv = m->cfg.adv_weight > 0;
    const int d = m->encoder.cfg.resnet.width;
    if (s->adv && !rc) {
        rc = conv_param(&m->heads, "discriminator.0.weight", d, C, &s->d.w[0], rng);
        if (!rc) rc = conv_param(&m->heads, "discriminator.2.weight", 2 * d, d, &s->d.w[1], rng);
        if (!rc) rc = ssl_registry_bn(&m->heads, "discriminator.3", 2 * d, &s->d.bn[0]);
        if (!rc) rc = conv_param(&m->heads, "discriminator.5.weight", 4 * d, 2 * d, &s->d.w[2], rng);
        if (!rc) rc = ssl_registry_bn(&m->heads, "discriminator.6", 4 * d, &s->d.bn[1]);
        int fshape[2] = {1, 4 * d}, one = 1;
        if (!rc) rc = ssl_registry_param(&m->heads, "discriminator.10.weight", 2, fshape, 0, &s->d.fc_w);
        if (!rc) rc = ssl_registry_param(&m->heads, "discriminator.10.bias", 1, &one, 1, &s->d.fc_b);
        if (!rc) { /* nn.Linear's default init */
            ssl_init_uniform(s->d.fc_w.data, 4 * d, 1.0f / sqrtf(4.0f * d), rng);
            ssl_init_uniform(s->d.fc_b.data, 1, 1.0f / sqrtf(4.0f * d), rng);
        }
    }
    return rc ? ssl_fail(err, SSL_ENOMEM, "inpainting: out of memory for the decoder") : SSL_OK;
}

/* ---- y = m * p + (1 - m) * x: the view with its hole filled by p ---- */
static void fill_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *p = n->in[0];
    if (!p->requires_grad) return;
    const float *mask = n->saved, *dy = n->out->grad;
    const long hw = (long)p->shape[2] * p->shape[3], planes = (long)p->shape[0] * p->shape[1];
    for (long q = 0; q < planes; q++)
        for (long i = 0; i < hw; i++) p->grad[q * hw + i] += mask[q / p->shape[1] * hw + i] * dy[q * hw + i];
}

/* p (N, C, H, W) NCHW, x the same shape, mask (N, H, W) in the arena. */
static ssl_tensor *fill_hole(ssl_graph *g, ssl_tensor *p, const float *x, float *mask)
{
    if (!p) return NULL;
    ssl_tensor *y = ssl_tensor_new(g, 4, p->shape, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    const long hw = (long)p->shape[2] * p->shape[3], planes = (long)p->shape[0] * p->shape[1];
    for (long q = 0; q < planes; q++)
        for (long i = 0; i < hw; i++) {
            float mk = mask[q / p->shape[1] * hw + i];
            y->data[q * hw + i] = mk * p->data[q * hw + i] + (1 - mk) * x[q * hw + i];
        }
    int fail;
    ssl_node *n = ssl_graph_record(g, fill_bwd, y, p, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = mask;
    return y;
}

/* D(x) -> (N, 1) logits; with constant parameters (d_const) when !grads. */
static ssl_tensor *discriminate(ssl_graph *g, inpainting_state *s, ssl_tensor *x, int grads)
{
    disc_net *d = &s->d;
    if (!grads) {
        d = &s->d_const;
        *d = s->d;
        for (int i = 0; i < 3; i++) d->w[i].grad = NULL, d->w[i].requires_grad = 0;
        for (int i = 0; i < 2; i++) {
            d->bn[i].weight.grad = d->bn[i].bias.grad = NULL;
            d->bn[i].weight.requires_grad = d->bn[i].bias.requires_grad = 0;
        }
        d->fc_w.grad = d->fc_b.grad = NULL;
        d->fc_w.requires_grad = d->fc_b.requires_grad = 0;
    }
    ssl_tensor *h = ssl_op_leaky_relu(g, ssl_op_conv2d(g, x, &d->w[0], 2, 1), LRELU_SLOPE);
    for (int i = 0; i < 2; i++)
        h = ssl_op_leaky_relu(g, ssl_op_batchnorm(g, ssl_op_conv2d(g, h, &d->w[i + 1], 2, 1), &d->bn[i]),
                              LRELU_SLOPE);
    h = ssl_op_linear(g, ssl_op_global_avgpool(g, h), &d->fc_w, &d->fc_b);
    if (!grads) /* the batch counters live in s->d's layers (the registry's) */
        for (int i = 0; i < 2; i++) s->d.bn[i].num_batches_tracked = d->bn[i].num_batches_tracked;
    return h;
}

/* The random stream of batch row b's hole: (seed, step, b) in training,
 * (seed, held-out marker, split index) in an evaluation. */
static void mask_rng(const ssl_method *m, const inpainting_state *s, int b, ssl_rng *r)
{
    if (m->pretext_eval)
        ssl_rng_derive(r, (uint64_t)s->seed, UINT64_MAX, (uint64_t)(m->pretext_eval_first + b));
    else
        ssl_rng_derive(r, (uint64_t)s->seed, (uint64_t)m->step, (uint64_t)b);
}

/* Encoder + decoder: masked views xin (B, C, S, S) -> (B, C, S, S) NCHW. */
static ssl_tensor *decode(ssl_method *m, ssl_graph *g, ssl_tensor *xin, int S)
{
    inpainting_state *s = m->state_ptr;
    int sizes[8];
    const int k = ssl_encoder_halvings(&m->encoder, S, sizes);
    ssl_tensor *y = ssl_op_to_layout(g, ssl_encoder_forward_dense(g, &m->encoder, xin), SSL_LAYOUT_NCHW);
    for (int t = 0; t < s->n_up; t++) {
        int last = t == s->n_up - 1;
        y = ssl_upconv(g, y, &s->up_w[t], last ? &s->out_b : NULL, sizes[k - 1 - t]);
        if (!last) y = ssl_op_bn_act(g, y, &s->up_bn[t], NULL, 1);
    }
    return y;
}

static ssl_tensor *inpainting_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    inpainting_state *s = m->state_ptr;
    ssl_tensor *x = views[0];
    const int C = m->encoder.in_channels;
    if (x->ndim != 4 || x->layout != SSL_LAYOUT_NCHW || x->shape[1] != C || x->shape[2] != x->shape[3])
        return ssl_pretext_error(g, "inpainting", "needs square NCHW views of the encoder's channels");
    const int B = x->shape[0], S = x->shape[2];
    const long px = (long)S * S;
    float *mask = ssl_graph_saved(g, sizeof(float) * px * B);
    ssl_tensor *xin = ssl_tensor_new(g, 4, x->shape, SSL_LAYOUT_NCHW);
    if (!mask || !xin) return NULL;
    s->masked = 0;
    for (int b = 0; b < B; b++) {
        ssl_rng r;
        mask_rng(m, s, b, &r);
        float *mb = mask + px * b;
        ssl_inpainting_mask(&m->cfg, S, S, &r, mb);
        for (int c = 0; c < C; c++)
            for (long i = 0; i < px; i++) {
                long o = ((long)b * C + c) * px + i;
                xin->data[o] = mb[i] > 0 ? 0.0f : x->data[o];
                s->masked += mb[i] > 0;
            }
    }
    ssl_tensor *y = decode(m, g, xin, S);
    if (!y) return NULL;
    if (y->layout != SSL_LAYOUT_NCHW || memcmp(y->shape, x->shape, sizeof(int) * 4))
        return ssl_pretext_error(g, "inpainting", "the decoder's output does not match the view");
    ssl_tensor *rec = ssl_op_masked_mse(g, y, x->data, mask, 1);
    if (!s->adv || m->pretext_eval) return rec;
    const float w = m->cfg.adv_weight;
    float *ones = ssl_graph_saved(g, sizeof(float) * B), *zeros = ssl_graph_saved(g, sizeof(float) * B);
    if (!ones || !zeros) return NULL;
    for (int b = 0; b < B; b++) ones[b] = 1.0f, zeros[b] = 0.0f;
    /* one statement per pass: D's running statistics move in this order */
    ssl_tensor *fake = fill_hole(g, y, x->data, mask);
    ssl_tensor *d_real = ssl_op_bce_logits(g, discriminate(g, s, x, 1), ones);
    ssl_tensor *d_fake = ssl_op_bce_logits(g, discriminate(g, s, ssl_op_detach(g, fake), 1), zeros);
    ssl_tensor *d_loss = ssl_op_add(g, d_real, d_fake);
    ssl_tensor *g_adv = ssl_op_bce_logits(g, discriminate(g, s, fake, 0), ones);
    return ssl_op_add(g, ssl_op_add(g, ssl_op_scale(g, rec, 1 - w), ssl_op_scale(g, g_adv, w)), d_loss);
}

static int inpainting_metrics(const ssl_method *m, int64_t *correct, int64_t *total)
{
    const inpainting_state *s = m->state_ptr;
    *correct = 0;
    *total = s->masked;
    return 0; /* a regression task: the held-out loss is the masked MSE */
}

static void inpainting_free(ssl_method *m) { ssl_free(m->state_ptr); }

int ssl_inpainting_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int S,
                           int64_t first, float *mask, float *input, float *out, char *err)
{
    if (m->ops != &ssl_method_inpainting || !m->state_ptr)
        return ssl_fail(err, SSL_EINVAL, "inpainting pictures need a model trained with --method inpainting");
    inpainting_state *s = m->state_ptr;
    const int C = m->encoder.in_channels;
    const long px = (long)S * S;
    /* the held-out evaluation's holes for these images */
    const int eval = m->pretext_eval;
    const int64_t eval_first = m->pretext_eval_first;
    m->pretext_eval = 1;
    m->pretext_eval_first = first;
    for (int b = 0; b < n; b++) {
        ssl_rng r;
        mask_rng(m, s, b, &r);
        float *mb = mask + px * b;
        ssl_inpainting_mask(&m->cfg, S, S, &r, mb);
        for (int c = 0; c < C; c++)
            for (long i = 0; i < px; i++) {
                long o = ((long)b * C + c) * px + i;
                input[o] = mb[i] > 0 ? 0.0f : x[o];
            }
    }
    m->pretext_eval = eval;
    m->pretext_eval_first = eval_first;
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    g.record = 0;
    int shape[4] = {n, C, S, S};
    ssl_tensor xin = ssl_tensor_wrap(input, NULL, 4, shape, SSL_LAYOUT_NCHW);
    ssl_tensor *y = decode(m, &g, &xin, S);
    int rc = SSL_OK;
    if (!y) rc = ssl_show_graph_error(ctx, err);
    else if (y->layout != SSL_LAYOUT_NCHW || memcmp(y->shape, shape, sizeof shape))
        rc = ssl_fail(err, SSL_ESHAPE, "inpainting: the decoder's output does not match the view");
    else memcpy(out, y->data, sizeof(float) * (size_t)n * C * px);
    ssl_graph_free(&g);
    return rc;
}

/* inpainting.png, per image: the masked view the encoder sees (the hole at
 * the dataset mean), the view with the hole filled by the decoder's output
 * (its mean squared error over the hole, in normalized units, under it),
 * and the original view. */
static int inpainting_show(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                           const char *out_dir, char *err)
{
    ssl_aug a;
    float *x = ssl_show_views(m, ds, first, n, &a, err);
    if (!x) return SSL_EINVAL;
    const int C = ds->c, S = a.out_h;
    const long px = (long)S * S, img = C * px;
    float *mask = malloc(sizeof(float) * (size_t)n * px), *input = malloc(sizeof(float) * (size_t)n * img);
    float *out = malloc(sizeof(float) * (size_t)n * img), *fill = malloc(sizeof(float) * (size_t)img);
    int rc = S == a.out_w ? SSL_OK : ssl_fail(err, SSL_EINVAL, "inpainting: views are not square");
    if (!rc && C != m->encoder.in_channels)
        rc = ssl_fail(err, SSL_EINVAL, "inpainting: %d-channel images, the encoder takes %d", C, m->encoder.in_channels);
    if (!rc && (!mask || !input || !out || !fill))
        rc = ssl_fail(err, SSL_ENOMEM, "inpainting: out of memory for the pictures");
    if (!rc) rc = ssl_inpainting_predict(m, ctx, x, n, S, first, mask, input, out, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    static const char *const titles[3] = {"masked (input)", "inpainted", "original"};
    ssl_canvas cv = {0};
    if (!rc) rc = ssl_show_canvas(&cv, &l, n, 3, titles, err);
    for (int i = 0; i < n && !rc; i++) {
        const float *mb = mask + i * px, *xi = x + i * img, *oi = out + i * img;
        double se = 0;
        long holes = 0;
        for (int c = 0; c < C; c++)
            for (long k = 0; k < px; k++) {
                fill[c * px + k] = mb[k] > 0 ? oi[c * px + k] : xi[c * px + k];
                if (mb[k] > 0) {
                    double d = (double)oi[c * px + k] - xi[c * px + k];
                    se += d * d;
                    holes++;
                }
            }
        int x0, y0;
        const float *col[3] = {input + i * img, fill, xi};
        for (int k = 0; k < 3 && !rc; k++) {
            ssl_show_cell(&l, i, k, &x0, &y0);
            rc = ssl_show_paste(&cv, x0, y0, l.scale, col[k], C, S, S, &a, err);
        }
        char cap[48];
        snprintf(cap, sizeof cap, "hole mse %.3f", holes ? se / holes : 0.0);
        ssl_show_caption_at(&l, i, 1, 0, &x0, &y0);
        ssl_canvas_text(&cv, x0, y0, 1, SSL_COLOR_BLACK, cap);
    }
    if (!rc) rc = ssl_show_write(&cv, out_dir, "inpainting.png", err);
    ssl_canvas_free(&cv);
    free(mask);
    free(input);
    free(out);
    free(fill);
    ssl_free(x);
    return rc;
}

const ssl_method_ops ssl_method_inpainting = {
    .needs_feature_map = 1,
    .name = "inpainting",
    .summary = "Context encoder: mask a region, decoder reconstructs it, L2 on the hole (+ optional adversarial)",
    .defaults = "central square of half the side (--mask-size 0.5, --mask-blocks 0), --adv-weight 0 (paper 0.001), "
                "crop 60-100% + flip; AdamW lr 2e-4, no wd",
    .optim = {"adamw", 2e-4f, "none", 0.0f, 0.9f, 0.0f},
    .validate = inpainting_validate,
    .views = ssl_pretext_views,
    .check_batch = inpainting_check,
    .init = inpainting_init,
    .loss = inpainting_loss,
    .free = inpainting_free,
    .pretext_metrics = inpainting_metrics,
    .show = inpainting_show,
};
