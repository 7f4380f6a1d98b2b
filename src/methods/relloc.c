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
#include "eval/pictures.h"
#include "pretext.h"

#include <stdio.h>
#include <stdlib.h>
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

int ssl_relloc_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int c, int S,
                       int64_t first, int32_t *labels, float *pairs, int *pos, float *logits,
                       char *err)
{
    if (m->ops != &ssl_method_relloc || !m->state_ptr)
        return ssl_fail(err, SSL_EINVAL, "relloc pictures need a model trained with --method relloc");
    relloc_state *s = m->state_ptr;
    ssl_pretext_grid grid;
    ssl_pretext_grid_relloc(S, &grid);
    int rc = ssl_pretext_grid_check(&grid, "relloc", err);
    if (rc) return rc;
    const long img = (long)c * S * S, pair = 2L * c * grid.patch * grid.patch;
    /* the held-out evaluation's pairs for these images */
    const int eval = m->pretext_eval;
    const int64_t eval_first = m->pretext_eval_first;
    m->pretext_eval = 1;
    m->pretext_eval_first = first;
    for (int b = 0; b < n; b++) {
        ssl_rng r;
        ssl_pretext_rng(m, &s->p, b, &r);
        labels[b] = ssl_relloc_sample(&grid, &r, x + b * img, c, m->cfg.color_drop, pairs + b * pair, pos + 4 * b);
    }
    m->pretext_eval = eval;
    m->pretext_eval_first = eval_first;
    return ssl_show_classify(ctx, &m->encoder, &s->p.head, pairs, n, 2, c, grid.patch, grid.patch, logits, 8,
                             err);
}

/* Compass names of the 8 labels (row-major around the centre, up = north). */
static const char *const where_name[8] = {"NW", "N", "NE", "W", "E", "SW", "S", "SE"};

/* relloc.png, per image: the view with the centre patch (blue) and the
 * neighbour (white) outlined, the two patches as the encoder sees them,
 * and a 3x3 grid holding the centre patch in the middle and the neighbour
 * at its true place, the predicted place framed green (right) or red. */
static int relloc_show(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                       const char *out_dir, char *err)
{
    ssl_aug a;
    float *x = ssl_show_views(m, ds, first, n, &a, err);
    if (!x) return SSL_EINVAL;
    const int c = ds->c, S = a.out_h;
    ssl_pretext_grid grid;
    ssl_pretext_grid_relloc(S, &grid);
    const int p = grid.patch > 0 ? grid.patch : 1;
    const long patch = (long)c * p * p;
    int *pos = malloc(sizeof(int) * 4 * (size_t)n);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)n);
    float *pairs = malloc(sizeof(float) * 2 * (size_t)n * patch), *logits = malloc(sizeof(float) * 8 * (size_t)n);
    int rc = S == a.out_w ? SSL_OK : ssl_fail(err, SSL_EINVAL, "relloc: views are not square");
    if (!rc && (!pos || !labels || !pairs || !logits))
        rc = ssl_fail(err, SSL_ENOMEM, "relloc: out of memory for the pictures");
    if (!rc) rc = ssl_relloc_predict(m, ctx, x, n, c, S, first, labels, pairs, pos, logits, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    static const char *const titles[4] = {"view", "centre", "neighbour", "where (pred framed)"};
    ssl_canvas cv = {0};
    if (!rc) rc = ssl_show_canvas(&cv, &l, n, 4, titles, err);
    const int box = l.img / 3, pscale = l.img / p > 0 ? l.img / p : 1;
    const int gscale = (box - 2 * SSL_SHOW_FRAME) / p > 0 ? (box - 2 * SSL_SHOW_FRAME) / p : 1;
    const int inset = (box - p * gscale) / 2;
    for (int i = 0; i < n && !rc; i++) {
        const float *z = logits + 8L * i, *pr = pairs + 2L * i * patch;
        const int *ps = pos + 4 * i, lab = labels[i];
        int pred = 0, x0, y0;
        for (int j = 1; j < 8; j++)
            if (z[j] > z[pred]) pred = j;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        rc = ssl_show_paste(&cv, x0, y0, l.scale, x + (long)i * c * S * S, c, S, S, &a, err);
        ssl_canvas_frame(&cv, x0 + ps[1] * l.scale, y0 + ps[0] * l.scale, p * l.scale, p * l.scale, 2, SSL_COLOR_BLUE);
        ssl_canvas_frame(&cv, x0 + ps[3] * l.scale, y0 + ps[2] * l.scale, p * l.scale, p * l.scale, 2, SSL_COLOR_WHITE);
        for (int q = 0; q < 2 && !rc; q++) {
            ssl_show_cell(&l, i, 1 + q, &x0, &y0);
            rc = ssl_show_paste(&cv, x0, y0, pscale, pr + q * patch, c, p, p, &a, err);
        }
        /* the 3x3 grid: empty cells light gray, centre and true neighbour drawn */
        ssl_show_cell(&l, i, 3, &x0, &y0);
        for (int k = 0; k < 9; k++)
            ssl_canvas_fill(&cv, x0 + (k % 3) * box + 1, y0 + (k / 3) * box + 1, box - 2, box - 2, 0xE0E0E0u);
        const int tr = 1 + ssl_relloc_offsets[lab][0], tc = 1 + ssl_relloc_offsets[lab][1];
        const int pr_ = 1 + ssl_relloc_offsets[pred][0], pc = 1 + ssl_relloc_offsets[pred][1];
        if (!rc) rc = ssl_show_paste(&cv, x0 + box + inset, y0 + box + inset, gscale, pr, c, p, p, &a, err);
        if (!rc)
            rc = ssl_show_paste(&cv, x0 + tc * box + inset, y0 + tr * box + inset, gscale, pr + patch, c, p, p, &a,
                                err);
        ssl_canvas_frame(&cv, x0 + pc * box, y0 + pr_ * box, box, box, SSL_SHOW_FRAME,
                         pred == lab ? SSL_COLOR_GREEN : SSL_COLOR_RED);
        char cap[48];
        snprintf(cap, sizeof cap, "pred %s true %s", where_name[pred], where_name[lab]);
        ssl_show_caption_at(&l, i, 3, 0, &x0, &y0);
        ssl_canvas_text(&cv, x0, y0, 1, SSL_COLOR_BLACK, cap);
    }
    if (!rc) rc = ssl_show_write(&cv, out_dir, "relloc.png", err);
    ssl_canvas_free(&cv);
    free(pos);
    free(labels);
    free(pairs);
    free(logits);
    ssl_free(x);
    return rc;
}

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
    .show = relloc_show,
};
