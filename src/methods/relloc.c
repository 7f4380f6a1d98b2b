/* Relative patch location (Doersch, Gupta & Efros 2015): from a 3x3 grid
 * of patches with gaps and jitter, the centre patch and one of its 8
 * neighbours go through the shared encoder (one pass over the 2N patches),
 * their features side by side (centre first: the paper's late fusion after
 * fc6) feed an MLP that tells where the neighbour lies: label 0..7 in
 * row-major order around the centre (0 1 2 / 3 . 4 / 5 6 7, the paper's
 * figure 2), softmax cross-entropy. One pair per image and step.
 *
 * Geometry (ssl_pretext_grid_relloc): the paper's 96-px patches, 48-px gaps
 * and jitter of up to 7 px, scaled: a 28-px view has 9-px cells, 6-px
 * patches centred in them with offsets 0..1, so two patches are 2-4 px
 * apart (the paper: 34-62 of 96) and edges never touch.
 *
 * Chromatic aberration (RGB only): colour dropping, the countermeasure the
 * paper found best: each patch keeps one random channel, the other two are
 * replaced by Gaussian noise of 1/100 the channel's std (--color-drop 0
 * turns it off). Grayscale images need none.
 *
 * Head: Linear(2F, 128)-BN-ReLU-Linear(128, 8): the paper's fc7 is as wide
 * as its fc6 (4096), ours as wide as our 128-d features. Recipe: SGD
 * momentum 0.9 as the paper (Caffe); it gives no learning rate, so the
 * Caffe defaults jigsaw uses: lr 0.01 x batch/256, wd 5e-4, no warm-up. */
#include "pretext.h"

#include <string.h>

const int ssl_relloc_offsets[8][2] = {{-1, -1}, {-1, 0}, {-1, 1}, {0, -1},
                                      {0, 1},   {1, -1}, {1, 0},  {1, 1}};

typedef struct relloc_state {
    ssl_pretext p;
} relloc_state;

int32_t ssl_relloc_sample(const ssl_pretext_grid *g, ssl_rng *r, const float *img, int c,
                          int color_drop, float *pair, int *pos)
{
    int32_t label = (int32_t)ssl_rng_below(r, 8);
    int cells[2][2] = {{1, 1}, {1 + ssl_relloc_offsets[label][0], 1 + ssl_relloc_offsets[label][1]}};
    long patch = (long)g->patch * g->patch;
    for (int q = 0; q < 2; q++) {
        int oy = (int)ssl_rng_below(r, (uint32_t)g->jitter + 1);
        int ox = (int)ssl_rng_below(r, (uint32_t)g->jitter + 1);
        int y = g->origin + cells[q][0] * g->cell + g->base + oy;
        int x = g->origin + cells[q][1] * g->cell + g->base + ox;
        ssl_pretext_crop(img, c, g->side, g->side, y, x, g->patch, g->patch, pair + q * c * patch);
        if (pos) {
            pos[2 * q] = y;
            pos[2 * q + 1] = x;
        }
    }
    if (color_drop && c == 3)
        for (int q = 0; q < 2; q++) {
            int keep = (int)ssl_rng_below(r, 3);
            for (int ch = 0; ch < 3; ch++) {
                if (ch == keep) continue;
                float *d = pair + (q * 3L + ch) * patch;
                for (long i = 0; i < patch; i++) d[i] = 0.01f * ssl_rng_normal(r);
            }
        }
    return label;
}

static int relloc_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->color_drop == SSL_UNSET) cfg->color_drop = 1;
    if (cfg->color_drop > 1)
        return ssl_fail(err, SSL_EINVAL, "--color-drop must be 0 or 1 (got %d)", cfg->color_drop);
    return ssl_pretext_validate(cfg, 128, err);
}

static int relloc_check(const ssl_method *m, int batch, char *err)
{
    ssl_pretext_grid g;
    ssl_pretext_grid_relloc(m->augs[0].out_h, &g);
    return ssl_pretext_grid_check(&g, "relloc", err);
}

static int relloc_init(ssl_method *m, ssl_rng *rng, char *err)
{
    relloc_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "relloc: out of memory");
    m->state_ptr = s;
    return ssl_pretext_init(m, &s->p, 2 * m->encoder.feat_dim, 8, rng, err);
}

static ssl_tensor *relloc_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    relloc_state *s = m->state_ptr;
    ssl_tensor *x = views[0];
    if (x->ndim != 4 || x->layout != SSL_LAYOUT_NCHW || x->shape[2] != x->shape[3])
        return ssl_pretext_error(g, "relloc", "needs square NCHW views");
    int B = x->shape[0], C = x->shape[1], S = x->shape[2];
    ssl_pretext_grid grid;
    ssl_pretext_grid_relloc(S, &grid);
    if (ssl_pretext_grid_check(&grid, "relloc", g->ctx->err)) return NULL;
    int shape[4] = {2 * B, C, grid.patch, grid.patch};
    ssl_tensor *pairs = ssl_tensor_new(g, 4, shape, SSL_LAYOUT_NCHW);
    int32_t *labels = ssl_pretext_labels(g, B);
    if (!pairs || !labels) return NULL;
    long img = (long)C * S * S, pair = 2L * C * grid.patch * grid.patch;
    for (int b = 0; b < B; b++) {
        ssl_rng r;
        ssl_pretext_rng(m, &s->p, b, &r);
        labels[b] = ssl_relloc_sample(&grid, &r, x->data + b * img, C, m->cfg.color_drop,
                                      pairs->data + b * pair, NULL);
    }
    return ssl_pretext_classify(m, g, &s->p, pairs, 2, labels);
}

static void relloc_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_relloc = {
    .name = "relloc",
    .summary = "Relative patch location: centre + 1 of 8 neighbours (3x3 grid, gaps, jitter), 8-way classifier",
    .defaults = "6-px patches in 9-px cells at 28 px, color dropping on RGB, head 128 (paper 4096); "
                "SGD lr 0.01 x batch/256, wd 5e-4, no warm-up",
    .optim = {"sgd", 0.01f, "linear", 5e-4f, 0.9f, 0.0f},
    .validate = relloc_validate,
    .views = ssl_pretext_views,
    .check_batch = relloc_check,
    .init = relloc_init,
    .loss = relloc_loss,
    .free = relloc_free,
    .pretext_metrics = ssl_pretext_metrics,
};
