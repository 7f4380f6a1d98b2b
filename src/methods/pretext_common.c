/* Shared pieces of the pretext-task methods: the classifier head, the
 * per-sample random streams, the views, and the 3x3 patch grid. */
#include "pretext.h"
#include "nn/graph_internal.h"

#include <math.h>
#include <string.h>

int ssl_pretext_init(ssl_method *m, ssl_pretext *p, int in_dim, int n_classes, ssl_rng *rng,
                     char *err)
{
    const char *name = m->ops->name;
    int hidden = m->cfg.head_hidden;
    /* 0: one linear layer; else Linear-BN-ReLU-Linear. The papers' fc
     * layers use dropout, which we do not have; BN is what our other heads use. */
    ssl_mlp_spec s = {.n_layers = hidden ? 2 : 1, .dims = {in_dim, hidden ? hidden : n_classes, n_classes},
                      .hidden_bn = 1};
    if (ssl_mlp_init_spec(&p->head, &m->heads, "head", &s, rng))
        return ssl_fail(err, SSL_ENOMEM, "%s: out of memory for the head", name);
    p->n_classes = n_classes;
    /* The seed of the task's choices, saved so that a resume repeats them
     * exactly; from the run's RNG so that runs of different seeds differ. */
    p->seed = (int64_t)ssl_rng_u64(rng);
    if (ssl_registry_counter(&m->extra, "pretext_seed", &p->seed))
        return ssl_fail(err, SSL_ENOMEM, "%s: out of memory", name);
    return SSL_OK;
}

void ssl_pretext_rng(const ssl_method *m, const ssl_pretext *p, int b, ssl_rng *r)
{
    /* Training steps are < 2^63, so UINT64_MAX never meets one. */
    if (m->pretext_eval)
        ssl_rng_derive(r, (uint64_t)p->seed, UINT64_MAX, (uint64_t)(m->pretext_eval_first + b));
    else
        ssl_rng_derive(r, (uint64_t)p->seed, (uint64_t)m->step, (uint64_t)b);
}

/* ---- x.view(N, k*F) ---- */
static void group_rows_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    long m = ssl_tensor_numel(x);
    const float *dy = n->out->grad;
    float *dx = x->grad;
    for (long i = 0; i < m; i++) dx[i] += dy[i];
}

ssl_tensor *ssl_pretext_group_rows(ssl_graph *g, ssl_tensor *x, int k)
{
    if (!x) return NULL;
    if (x->ndim != 2 || k < 1 || x->shape[0] % k)
        return ssl_graph_shape_error(g, "group_rows", "needs (N*k, F)");
    int shape[2] = {x->shape[0] / k, x->shape[1] * k};
    ssl_tensor *y = ssl_tensor_new(g, 2, shape, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    memcpy(y->data, x->data, sizeof(float) * (size_t)ssl_tensor_numel(x));
    int fail;
    ssl_graph_record(g, group_rows_bwd, y, x, NULL, NULL, &fail);
    return fail ? NULL : y;
}

int32_t *ssl_pretext_labels(ssl_graph *g, int n)
{
    return ssl_graph_saved(g, sizeof(int32_t) * (size_t)n);
}

ssl_tensor *ssl_pretext_error(ssl_graph *g, const char *method, const char *what)
{
    ssl_ctx_fail(g->ctx, SSL_EINVAL, "%s: %s", method, what);
    return NULL;
}

int64_t ssl_pretext_count_correct(const float *logits, const int32_t *labels, int n, int c)
{
    int64_t ok = 0;
    for (int i = 0; i < n; i++) {
        const float *row = logits + (long)i * c;
        int best = 0;
        for (int j = 1; j < c; j++)
            if (row[j] > row[best]) best = j;
        ok += best == labels[i];
    }
    return ok;
}

ssl_tensor *ssl_pretext_classify(ssl_method *m, ssl_graph *g, ssl_pretext *p, ssl_tensor *x,
                                 int k, const int32_t *labels)
{
    ssl_tensor *h = ssl_encoder_forward(g, &m->encoder, x);
    ssl_tensor *logits = ssl_mlp_forward(g, &p->head, k > 1 ? ssl_pretext_group_rows(g, h, k) : h);
    if (!logits) return NULL;
    int n = logits->shape[0];
    p->correct = ssl_pretext_count_correct(logits->data, labels, n, p->n_classes);
    p->total = n;
    return ssl_op_softmax_ce(g, logits, labels);
}

int ssl_pretext_metrics(const ssl_method *m, int64_t *correct, int64_t *total)
{
    const ssl_pretext *p = m->state_ptr;
    *correct = p->correct;
    *total = p->total;
    return p->n_classes;
}

int ssl_pretext_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    /* Gidaris et al. train RotNet on random crops and horizontal flips; a
     * crop keeping 60-100% of the area is our mild equivalent for 28-px
     * images (a pad-4 crop of a 32-px image keeps >= 77% of it). No colour
     * jitter: the tasks need no invariance to it. */
    int s = cfg->view_size > 0 ? cfg->view_size : (h < w ? h : w);
    ssl_aug_eval(&augs[0], c, s, s); /* normalization by channels */
    augs[0].crop_scale_min = 0.6f;
    augs[0].crop_scale_max = 1.0f;
    augs[0].crop_ratio_min = 3.0f / 4.0f;
    augs[0].crop_ratio_max = 4.0f / 3.0f;
    augs[0].flip_p = 0.5f;
    return 1;
}

int ssl_pretext_validate(ssl_method_config *cfg, int default_hidden, char *err)
{
    if (cfg->view_size == SSL_UNSET) cfg->view_size = 0;
    if (cfg->head_hidden == SSL_UNSET) cfg->head_hidden = default_hidden;
    if (cfg->view_size > 4096)
        return ssl_fail(err, SSL_EINVAL, "--view-size must be <= 4096 (got %d)", cfg->view_size);
    if (cfg->head_hidden > 65536)
        return ssl_fail(err, SSL_EINVAL, "--head-hidden must be <= 65536 (got %d)", cfg->head_hidden);
    return SSL_OK;
}

void ssl_rotate90(const float *src, int c, int s, int k, float *dst)
{
    k &= 3;
    for (int ch = 0; ch < c; ch++) {
        const float *a = src + (long)ch * s * s;
        float *o = dst + (long)ch * s * s;
        for (int i = 0; i < s; i++)
            for (int j = 0; j < s; j++) {
                /* np.rot90(a, k)[i, j] */
                float v = k == 0 ? a[i * s + j]
                        : k == 1 ? a[j * s + (s - 1 - i)]
                        : k == 2 ? a[(s - 1 - i) * s + (s - 1 - j)]
                                 : a[(s - 1 - j) * s + i];
                o[i * s + j] = v;
            }
    }
}

static void grid_common(int side, ssl_pretext_grid *g)
{
    memset(g, 0, sizeof *g);
    g->side = side;
    g->cell = side / 3;
    g->origin = (side - 3 * g->cell) / 2;
}

void ssl_pretext_grid_jigsaw(int side, ssl_pretext_grid *g)
{
    grid_common(side, g);
    g->patch = g->cell * 64 / 75;
    g->jitter = g->cell - g->patch;
}

void ssl_pretext_grid_relloc(int side, ssl_pretext_grid *g)
{
    grid_common(side, g);
    g->patch = 2 * g->cell / 3;
    int free_px = g->cell - g->patch;
    int min_gap = (free_px * 34 + 24) / 48; /* round(free * 34 / 48): 34 of Doersch's 48 */
    g->jitter = free_px - min_gap;
    g->base = min_gap / 2;
}

int ssl_pretext_grid_check(const ssl_pretext_grid *g, const char *method, char *err)
{
    if (g->patch < 2)
        return ssl_fail(err, SSL_EINVAL,
                        "%s: a %d-px view gives %d-px patches; the 3x3 grid needs views of >= 9 px (--view-size)",
                        method, g->side, g->patch);
    return SSL_OK;
}

void ssl_pretext_crop(const float *src, int c, int h, int w, int y, int x, int ph, int pw,
                      float *dst)
{
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < ph; i++)
            memcpy(dst + ((long)ch * ph + i) * pw, src + ((long)ch * h + y + i) * w + x,
                   sizeof(float) * pw);
}
