/* Jigsaw puzzles (Noroozi & Favaro 2016, the context-free network): a view
 * cut into a 3x3 grid of cells, one tile at a random position inside each
 * cell (the gaps and jitter keep edges and lines from matching), each tile
 * normalized on its own (mean 0, std 1 per channel: no shortcut through
 * low-level statistics), the tiles shuffled by one of a fixed set of
 * permutations; the shared encoder sees all 9N tiles in one pass, the 9
 * features of a puzzle are concatenated in shuffled order (fc7's input in
 * the paper), and an MLP classifies which permutation it was.
 *
 * Geometry (ssl_pretext_grid_jigsaw): the paper's 64-px tiles in 75-px cells,
 * scaled: a 28-px view has 9-px cells and 7-px tiles at offsets 0..2 (our
 * encoder's small stem takes 7 px: 7 -> 4 -> 2 -> 1). --view-size 56 doubles
 * everything (15-px tiles) at ~3x the cost.
 *
 * Permutation set: the paper's Algorithm 1 greedily adds the permutation of
 * maximal *summed* Hamming distance to the chosen ones; measured here that
 * leaves pairs at distance 2 (one swap) for 100 or 1000 permutations. We
 * add the one of maximal *minimum* distance instead, ties broken by the
 * larger sum (the paper's criterion), then the lower lexicographic index:
 * for 100 permutations the minimum is 6 and the mean 8.08 (paper's
 * criterion: 2 and 8.08). The start is drawn from a fixed seed, so the set
 * depends on its size alone, like the paper's fixed file; it is saved as
 * "permutations" (n, 9) in the checkpoint. Default size 100 (the paper
 * compares 100 to 1000; 1000 is best on ImageNet, 100 suits our small data
 * and short runs).
 *
 * Head: Linear(9F, 1024)-BN-ReLU-Linear(1024, n): the paper's fc7 (4096
 * wide on 9 x 512 fc6 features) scaled by our 128-d tile features. Recipe:
 * the paper's SGD lr 0.01 (batch 256), momentum 0.9, weight decay 5e-4
 * (Caffe's defaults it trained with), no warm-up; its steps -> our cosine.
 * On RGB views 30% are turned gray (the paper's countermeasure against
 * chromatic aberration; its per-channel jitter is not done). */
#include "eval/pictures.h"
#include "pretext.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jigsaw_state {
    ssl_pretext p;
    float *perm_buf; /* (n, 9) in m->extra: the checkpoint's copy */
    uint8_t *perms;  /* (n, 9) as loss() uses them, from perm_buf */
    int n_perms;
} jigsaw_state;

/* 9 cells, 4 bits each: the Hamming distance is the number of nonzero
 * nibbles of the XOR. */
static uint64_t pack(const uint8_t *p)
{
    uint64_t v = 0;
    for (int t = 0; t < SSL_JIGSAW_TILES; t++) v |= (uint64_t)p[t] << (4 * t);
    return v;
}

static int hamming(uint64_t a, uint64_t b)
{
    uint64_t x = a ^ b;
    x |= x >> 1;
    x |= x >> 2;
    return __builtin_popcountll(x & 0x111111111ull);
}

/* All 9! permutations in lexicographic order (itertools.permutations's). */
static void all_permutations(uint64_t *out)
{
    uint8_t a[SSL_JIGSAW_TILES];
    for (int t = 0; t < SSL_JIGSAW_TILES; t++) a[t] = (uint8_t)t;
    for (int n = 0; n < SSL_JIGSAW_N_ALL; n++) {
        out[n] = pack(a);
        int i = SSL_JIGSAW_TILES - 2; /* next permutation */
        while (i >= 0 && a[i] > a[i + 1]) i--;
        if (i < 0) break;
        int j = SSL_JIGSAW_TILES - 1;
        while (a[j] < a[i]) j--;
        uint8_t t = a[i]; a[i] = a[j]; a[j] = t;
        for (int l = i + 1, r = SSL_JIGSAW_TILES - 1; l < r; l++, r--) {
            t = a[l]; a[l] = a[r]; a[r] = t;
        }
    }
}

/* The greedy selection over all (9!) permutations; min_d, sum_d (9!):
 * each candidate's minimum and summed distance to the chosen ones. */
static void greedy(int n, uint64_t seed, uint64_t *all, uint8_t *min_d, uint16_t *sum_d,
                   uint8_t *out)
{
    const int N = SSL_JIGSAW_N_ALL;
    all_permutations(all);
    memset(min_d, SSL_JIGSAW_TILES + 1, N);
    memset(sum_d, 0, sizeof(uint16_t) * N); /* <= 9 x SSL_JIGSAW_MAX_PERMS */
    ssl_rng r;
    ssl_rng_seed(&r, seed);
    int idx = (int)ssl_rng_below(&r, (uint32_t)N);
    for (int i = 0; i < n; i++) {
        for (int t = 0; t < SSL_JIGSAW_TILES; t++) out[i * SSL_JIGSAW_TILES + t] = (all[idx] >> (4 * t)) & 15;
        if (i == n - 1) break;
        const uint64_t chosen = all[idx];
        min_d[idx] = 0; /* chosen ones have distance 0 to the set: never picked again */
        int best = -1;
        for (int j = 0; j < N; j++) {
            if (!min_d[j]) continue;
            int d = hamming(all[j], chosen);
            if (d < min_d[j]) min_d[j] = (uint8_t)d;
            sum_d[j] = (uint16_t)(sum_d[j] + d);
            if (best < 0 || min_d[j] > min_d[best] || (min_d[j] == min_d[best] && sum_d[j] > sum_d[best]))
                best = j;
        }
        idx = best;
    }
}

int ssl_jigsaw_permutations(int n, uint64_t seed, uint8_t *out)
{
    uint64_t *all = malloc(sizeof(uint64_t) * SSL_JIGSAW_N_ALL);
    uint8_t *min_d = malloc(SSL_JIGSAW_N_ALL);
    uint16_t *sum_d = malloc(sizeof(uint16_t) * SSL_JIGSAW_N_ALL);
    int rc = all && min_d && sum_d ? SSL_OK : SSL_ENOMEM;
    if (!rc) greedy(n, seed, all, min_d, sum_d, out);
    free(all);
    free(min_d);
    free(sum_d);
    return rc;
}

void ssl_jigsaw_hamming_stats(const uint8_t *perms, int n, int *min_dist, double *mean_dist)
{
    int mn = SSL_JIGSAW_TILES;
    double sum = 0;
    long pairs = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            int d = 0;
            for (int t = 0; t < SSL_JIGSAW_TILES; t++)
                d += perms[i * SSL_JIGSAW_TILES + t] != perms[j * SSL_JIGSAW_TILES + t];
            mn = d < mn ? d : mn;
            sum += d;
            pairs++;
        }
    *min_dist = n > 1 ? mn : 0;
    *mean_dist = pairs ? sum / pairs : 0;
}

/* Each channel of a (c, p, p) tile to mean 0, std 1 (unbiased, as torch's
 * std() in the reference PyTorch code); a flat channel only loses its mean. */
static void normalize_tile(float *t, int c, int p)
{
    int n = p * p;
    for (int ch = 0; ch < c; ch++) {
        float *x = t + (long)ch * n;
        double mean = 0, var = 0;
        for (int i = 0; i < n; i++) mean += x[i];
        mean /= n;
        for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
        var = n > 1 ? var / (n - 1) : 0;
        double sd = var > 1e-12 ? sqrt(var) : 1.0;
        for (int i = 0; i < n; i++) x[i] = (float)((x[i] - mean) / sd);
    }
}

int32_t ssl_jigsaw_sample(const ssl_pretext_grid *g, const uint8_t *perms, int n_perms,
                          ssl_rng *r, const float *img, int c, int normalize, float *tiles,
                          int *cells)
{
    int32_t label = (int32_t)ssl_rng_below(r, (uint32_t)n_perms);
    int oy[SSL_JIGSAW_TILES], ox[SSL_JIGSAW_TILES];
    for (int k = 0; k < SSL_JIGSAW_TILES; k++) { /* cell order: each cell's own jitter */
        oy[k] = (int)ssl_rng_below(r, (uint32_t)g->jitter + 1);
        ox[k] = (int)ssl_rng_below(r, (uint32_t)g->jitter + 1);
    }
    long tile = (long)c * g->patch * g->patch;
    for (int t = 0; t < SSL_JIGSAW_TILES; t++) {
        int k = perms[label * SSL_JIGSAW_TILES + t];
        int y = g->origin + (k / 3) * g->cell + g->base + oy[k];
        int x = g->origin + (k % 3) * g->cell + g->base + ox[k];
        ssl_pretext_crop(img, c, g->side, g->side, y, x, g->patch, g->patch, tiles + t * tile);
        if (normalize) normalize_tile(tiles + t * tile, c, g->patch);
        if (cells) {
            cells[2 * t] = y;
            cells[2 * t + 1] = x;
        }
    }
    return label;
}

static int jigsaw_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->permutations == SSL_UNSET) cfg->permutations = 100;
    if (cfg->permutations < 2 || cfg->permutations > SSL_JIGSAW_MAX_PERMS)
        return ssl_fail(err, SSL_EINVAL, "--permutations must be in 2..%d (got %d)", SSL_JIGSAW_MAX_PERMS,
                        cfg->permutations);
    return ssl_pretext_validate(cfg, 1024, err);
}

static int jigsaw_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    int n = ssl_pretext_views(cfg, c, h, w, augs);
    if (c == 3) augs[0].gray_p = 0.3f;
    return n;
}

static int jigsaw_check(const ssl_method *m, int batch, char *err)
{
    ssl_pretext_grid g;
    ssl_pretext_grid_jigsaw(m->augs[0].out_h, &g);
    return ssl_pretext_grid_check(&g, "jigsaw", err);
}

static int jigsaw_init(ssl_method *m, ssl_rng *rng, char *err)
{
    jigsaw_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "jigsaw: out of memory");
    m->state_ptr = s;
    int n = s->n_perms = m->cfg.permutations;
    int shape[2] = {n, SSL_JIGSAW_TILES};
    s->perms = ssl_malloc((size_t)n * SSL_JIGSAW_TILES);
    s->perm_buf = ssl_registry_buffer(&m->extra, "permutations", 2, shape, 0.0f);
    if (!s->perms || !s->perm_buf || ssl_jigsaw_permutations(n, SSL_JIGSAW_PERM_SEED, s->perms))
        return ssl_fail(err, SSL_ENOMEM, "jigsaw: out of memory for %d permutations", n);
    for (int i = 0; i < n * SSL_JIGSAW_TILES; i++) s->perm_buf[i] = s->perms[i];
    return ssl_pretext_init(m, &s->p, SSL_JIGSAW_TILES * m->encoder.feat_dim, n, rng, err);
}

/* The set as loaded (a checkpoint's): each row must be a permutation of 0..8. */
static int load_perms(jigsaw_state *s)
{
    for (int i = 0; i < s->n_perms; i++) {
        int seen = 0;
        for (int t = 0; t < SSL_JIGSAW_TILES; t++) {
            float v = s->perm_buf[i * SSL_JIGSAW_TILES + t];
            if (!(v >= 0 && v < SSL_JIGSAW_TILES) || v != (int)v || seen & (1 << (int)v)) return 0;
            seen |= 1 << (int)v;
            s->perms[i * SSL_JIGSAW_TILES + t] = (uint8_t)v;
        }
    }
    return 1;
}

static ssl_tensor *jigsaw_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    jigsaw_state *s = m->state_ptr;
    ssl_tensor *x = views[0];
    if (x->ndim != 4 || x->layout != SSL_LAYOUT_NCHW || x->shape[2] != x->shape[3])
        return ssl_pretext_error(g, "jigsaw", "needs square NCHW views");
    if (!load_perms(s)) return ssl_pretext_error(g, "jigsaw", "'permutations' holds a row that is not a permutation of 0..8");
    int B = x->shape[0], C = x->shape[1], S = x->shape[2];
    ssl_pretext_grid grid;
    ssl_pretext_grid_jigsaw(S, &grid);
    if (ssl_pretext_grid_check(&grid, "jigsaw", g->ctx->err)) return NULL;
    int shape[4] = {SSL_JIGSAW_TILES * B, C, grid.patch, grid.patch};
    ssl_tensor *tiles = ssl_tensor_new(g, 4, shape, SSL_LAYOUT_NCHW);
    int32_t *labels = ssl_pretext_labels(g, B);
    if (!tiles || !labels) return NULL;
    long img = (long)C * S * S, puzzle = (long)SSL_JIGSAW_TILES * C * grid.patch * grid.patch;
    for (int b = 0; b < B; b++) {
        ssl_rng r;
        ssl_pretext_rng(m, &s->p, b, &r);
        labels[b] = ssl_jigsaw_sample(&grid, s->perms, s->n_perms, &r, x->data + b * img, C, 1,
                                      tiles->data + b * puzzle, NULL);
    }
    return ssl_pretext_classify(m, g, &s->p, tiles, SSL_JIGSAW_TILES, labels);
}

int ssl_jigsaw_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int c, int S,
                       int64_t first, int32_t *labels, float *tiles, int *cells, float *logits,
                       char *err)
{
    if (m->ops != &ssl_method_jigsaw || !m->state_ptr)
        return ssl_fail(err, SSL_EINVAL, "jigsaw pictures need a model trained with --method jigsaw");
    jigsaw_state *s = m->state_ptr;
    if (!load_perms(s))
        return ssl_fail(err, SSL_EINVAL, "jigsaw: 'permutations' holds a row that is not a permutation of 0..8");
    ssl_pretext_grid grid;
    ssl_pretext_grid_jigsaw(S, &grid);
    int rc = ssl_pretext_grid_check(&grid, "jigsaw", err);
    if (rc) return rc;
    const long img = (long)c * S * S, puzzle = (long)SSL_JIGSAW_TILES * c * grid.patch * grid.patch;
    /* the held-out evaluation's puzzles for these images */
    const int eval = m->pretext_eval;
    const int64_t eval_first = m->pretext_eval_first;
    m->pretext_eval = 1;
    m->pretext_eval_first = first;
    for (int b = 0; b < n; b++) {
        ssl_rng r;
        ssl_pretext_rng(m, &s->p, b, &r);
        labels[b] = ssl_jigsaw_sample(&grid, s->perms, s->n_perms, &r, x + b * img, c, 1, tiles + b * puzzle,
                                      cells + 2 * SSL_JIGSAW_TILES * b);
    }
    m->pretext_eval = eval;
    m->pretext_eval_first = eval_first;
    return ssl_show_classify(ctx, &m->encoder, &s->p.head, tiles, n, SSL_JIGSAW_TILES, c, grid.patch,
                             grid.patch, logits, s->n_perms, err);
}

/* jigsaw.png, per image: the view with its 9 tiles outlined (gaps and
 * jitter), the shuffled tiles as the encoder sees them (each normalized,
 * shown over its own range) with the predicted permutation index and the
 * true one, and the raw tiles put back in the order the PREDICTED
 * permutation says (the view again when it is right; framed green / red). */
static int jigsaw_show(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                       const char *out_dir, char *err)
{
    jigsaw_state *s = m->state_ptr;
    ssl_aug a;
    float *x = ssl_show_views(m, ds, first, n, &a, err);
    if (!x) return SSL_EINVAL;
    const int c = ds->c, S = a.out_h, T = SSL_JIGSAW_TILES;
    ssl_pretext_grid grid;
    ssl_pretext_grid_jigsaw(S, &grid);
    const int p = grid.patch;
    const long tile = (long)c * p * p;
    int *cells = malloc(sizeof(int) * 2 * T * (size_t)n);
    int32_t *labels = malloc(sizeof(int32_t) * (size_t)n);
    float *tiles = malloc(sizeof(float) * T * (size_t)n * (size_t)(tile > 0 ? tile : 1));
    float *raw = malloc(sizeof(float) * (size_t)(tile > 0 ? tile : 1));
    float *logits = malloc(sizeof(float) * (size_t)n * s->n_perms);
    int rc = S == a.out_w ? SSL_OK : ssl_fail(err, SSL_EINVAL, "jigsaw: views are not square");
    if (!rc && (!cells || !labels || !tiles || !raw || !logits))
        rc = ssl_fail(err, SSL_ENOMEM, "jigsaw: out of memory for the pictures");
    if (!rc) rc = ssl_jigsaw_predict(m, ctx, x, n, c, S, first, labels, tiles, cells, logits, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    static const char *const titles[3] = {"view, 9 tiles", "shuffled (input)", "put back by pred"};
    ssl_canvas cv = {0};
    if (!rc) rc = ssl_show_canvas(&cv, &l, n, 3, titles, err);
    /* 3x3 arrangements of upscaled tiles in an image-sized box, gaps between */
    const int ts = p * l.scale, gap = (l.img - 3 * ts) / 2 > 0 ? (l.img - 3 * ts) / 2 : 0;
    for (int i = 0; i < n && !rc; i++) {
        const float *z = logits + (long)i * s->n_perms;
        int pred = 0, x0, y0;
        for (int j = 1; j < s->n_perms; j++)
            if (z[j] > z[pred]) pred = j;
        const int *ci = cells + 2 * T * i;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        rc = ssl_show_paste(&cv, x0, y0, l.scale, x + (long)i * c * S * S, c, S, S, &a, err);
        for (int t = 0; t < T; t++)
            ssl_canvas_frame(&cv, x0 + ci[2 * t + 1] * l.scale, y0 + ci[2 * t] * l.scale, ts, ts, 1, SSL_COLOR_BLUE);
        for (int t = 0; t < T && !rc; t++) {
            ssl_show_cell(&l, i, 1, &x0, &y0);
            rc = ssl_canvas_paste(&cv, x0 + (t % 3) * (ts + gap), y0 + (t / 3) * (ts + gap), l.scale,
                                  tiles + ((long)i * T + t) * tile, c, p, p, 0.0f, 0.0f, err);
            /* shuffled position t holds, by the prediction, grid cell perms[pred][t] */
            int k = s->perms[pred * T + t];
            ssl_pretext_crop(x + (long)i * c * S * S, c, S, S, ci[2 * t], ci[2 * t + 1], p, p, raw);
            ssl_show_cell(&l, i, 2, &x0, &y0);
            if (!rc)
                rc = ssl_show_paste(&cv, x0 + (k % 3) * (ts + gap), y0 + (k / 3) * (ts + gap), l.scale, raw, c, p,
                                    p, &a, err);
        }
        ssl_show_cell(&l, i, 2, &x0, &y0);
        ssl_show_mark(&cv, x0, y0, l.img, l.img, pred == labels[i]);
        char cap[48];
        snprintf(cap, sizeof cap, "pred %d true %d", pred, labels[i]);
        ssl_show_caption_at(&l, i, 1, 0, &x0, &y0);
        ssl_canvas_text(&cv, x0, y0, 1, SSL_COLOR_BLACK, cap);
    }
    if (!rc) rc = ssl_show_write(&cv, out_dir, "jigsaw.png", err);
    ssl_canvas_free(&cv);
    free(cells);
    free(labels);
    free(tiles);
    free(raw);
    free(logits);
    ssl_free(x);
    return rc;
}

static void jigsaw_free(ssl_method *m)
{
    jigsaw_state *s = m->state_ptr;
    if (s) ssl_free(s->perms);
    ssl_free(s);
}

const ssl_method_ops ssl_method_jigsaw = {
    .name = "jigsaw",
    .summary = "Jigsaw: 3x3 jittered tiles shuffled by one of N permutations, shared encoder, N-way classifier",
    .defaults = "100 permutations (max-min Hamming), 7-px tiles in 9-px cells at 28 px, head 1024 (paper 4096); "
                "SGD lr 0.01 x batch/256, wd 5e-4, no warm-up",
    .optim = {"sgd", 0.01f, "linear", 5e-4f, 0.9f, 0.0f},
    .validate = jigsaw_validate,
    .views = jigsaw_views,
    .check_batch = jigsaw_check,
    .init = jigsaw_init,
    .loss = jigsaw_loss,
    .free = jigsaw_free,
    .pretext_metrics = ssl_pretext_metrics,
    .show = jigsaw_show,
};
