/* The dense-task ops of src/nn/graph_dense.c (transposed convolution,
 * upsampling, per-channel bias, sigmoid / tanh / leaky ReLU, masked MSE,
 * per-pixel and binary cross-entropy, grid sampling, dense InfoNCE):
 *   1. PyTorch parity with tests/torch/gen_dense_ops.py (float64 autograd of
 *      the torch.nn call on the same float32 inputs, N=3, C=5, 7x9) in both
 *      layouts: outputs and gradients max |diff| <= 1e-5 * max |torch|,
 *      losses rtol 1e-5;
 *   2. every backward against central differences of the float forward
 *      (4-point stencil) on small odd shapes, both layouts: max |numeric -
 *      analytic| <= 1e-3 * the largest gradient; tensor outputs are reduced
 *      as sum(R * out) in double, so the float rounding of one loss value
 *      does not swamp the differences (losses use a step that suits them);
 *   3. the transposed convolution against a direct double loop with several
 *      images per chunk and 2 threads, and dense InfoNCE against
 *      matmul + scale + softmax_ce over several row blocks;
 *   4. the threaded paths against 1 thread; record = 0 gives the same
 *      values; the arena stops growing; bad arguments fail with a message.
 * `test_dense_ops --bench` times the decoder's transposed convolution
 * (256, 128, 7, 7) -> (256, 64, 14, 14), k4 s2 p1, at 2 threads. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "graph_test.h" /* zero_grad, max_abs, the test-only loss wsum */
#include "selfsup/graph_dense.h"
#include "selfsup/io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_TOL 1e-3
#define GOLD_REL 1e-5
#define GOLD_LOSS_RTOL 1e-5

static const char *layout_name(ssl_layout l)
{
    return l == SSL_LAYOUT_CNHW ? "CNHW" : "NCHW";
}

/* ------------------------------------------------------------------ helpers */

/* dst (layout dl) <- src (layout sl), both (N, C, HW). */
static void relayout(float *dst, ssl_layout dl, const float *src, ssl_layout sl, int N, int C,
                     long HW)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            memcpy(dst + ssl_act_index(dl, N, C, (int)HW, n, c, 0),
                   src + ssl_act_index(sl, N, C, (int)HW, n, c, 0), sizeof(float) * HW);
}

/* A persistent tensor of N(0, scale^2) draws (any ndim), with a zeroed
 * gradient buffer when `grad`. */
static ssl_tensor mk(ssl_rng *r, int ndim, const int *shape, ssl_layout l, float scale, int grad)
{
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *x = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) x[i] = scale * ssl_rng_normal(r);
    return ssl_tensor_wrap(x, grad ? calloc((size_t)n, sizeof(float)) : NULL, ndim, shape, l);
}

/* A row-major tensor (weights, biases, rows of embeddings). */
static ssl_tensor mkr(ssl_rng *r, int ndim, const int *shape, float scale, int grad)
{
    return mk(r, ndim, shape, SSL_LAYOUT_NCHW, scale, grad);
}

static ssl_tensor mk4(ssl_rng *r, int N, int C, int H, int W, ssl_layout l, float scale, int grad)
{
    int s[4] = {N, C, H, W};
    return mk(r, 4, s, l, scale, grad);
}

static void unmk(ssl_tensor *t)
{
    if (!t) return;
    free(t->data);
    free(t->grad);
    t->data = t->grad = NULL;
}

static float *randv(ssl_rng *r, long n, float scale)
{
    float *v = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) v[i] = scale * ssl_rng_normal(r);
    return v;
}

/* ------------------------------------------------------------- the cases */

typedef enum dop {
    OP_CONVT, OP_UP, OP_BIAS, OP_SIGMOID, OP_TANH, OP_LEAKY, OP_MSE, OP_PCE, OP_BCE, OP_GRID,
    OP_DNCE
} dop;

/* One op under test. Arrays are in the memory order of the tensor they go
 * with (R: the op's output). */
typedef struct dcase {
    const char *name;
    dop op;
    ssl_tensor *x, *w, *b; /* inputs; w, b may be NULL */
    float hp[3];           /* convT (stride, pad, output_pad), upsample (factor, mode),
                              leaky slope, InfoNCE temperature */
    const float *t, *m;    /* masked_mse target and mask; bce targets */
    int mask_c;
    const int32_t *labels;
    const float *cw;
    const float *coords;
    int P;
    int detach_w;   /* InfoNCE's keys go through ssl_op_detach */
    const float *R; /* tensor outputs: weights of sum(R * out); NULL for losses */
    double h;       /* differences step (times |x|'s power of two when |x| > 1) */
} dcase;

static ssl_tensor *op_out(ssl_graph *g, const dcase *c)
{
    const float *h = c->hp;
    switch (c->op) {
    case OP_CONVT:
        return ssl_op_conv_transpose2d(g, c->x, c->w, c->b, (int)h[0], (int)h[1], (int)h[2]);
    case OP_UP: return ssl_op_upsample(g, c->x, (int)h[0], (ssl_upsample_mode)(int)h[1]);
    case OP_BIAS: return ssl_op_add_bias_channel(g, c->x, c->b);
    case OP_SIGMOID: return ssl_op_sigmoid(g, c->x);
    case OP_TANH: return ssl_op_tanh(g, c->x);
    case OP_LEAKY: return ssl_op_leaky_relu(g, c->x, h[0]);
    case OP_MSE: return ssl_op_masked_mse(g, c->x, c->t, c->m, c->mask_c);
    case OP_PCE: return ssl_op_pixel_softmax_ce(g, c->x, c->labels, c->cw);
    case OP_BCE: return ssl_op_bce_logits(g, c->x, c->t);
    case OP_GRID: return ssl_op_grid_sample(g, c->x, c->coords, c->P);
    case OP_DNCE:
        return ssl_op_dense_infonce(g, c->x, c->detach_w ? ssl_op_detach(g, c->w) : c->w, h[0]);
    }
    return NULL;
}

/* The scalar being differentiated: the loss, or sum(R * out) in double. */
static double objective(const ssl_tensor *y, const float *R)
{
    if (!R) return y->data[0];
    double s = 0;
    for (long i = 0; i < ssl_tensor_numel(y); i++) s += (double)R[i] * y->data[i];
    return s;
}

/* The objective with record = 0 (no node, nothing prepared for backward). */
static double eval_objective(ssl_graph *g, const dcase *c)
{
    ssl_graph_reset(g);
    g->record = 0;
    ssl_tensor *y = op_out(g, c);
    g->record = 1;
    return y ? objective(y, c->R) : NAN;
}

/* Forward (recorded) and backward; the op's output, or NULL. */
static ssl_tensor *run_case(ssl_graph *g, ssl_ctx *ctx, const dcase *c)
{
    zero_grad(c->x);
    zero_grad(c->w);
    zero_grad(c->b);
    ctx->err[0] = 0;
    ssl_tensor *y = op_out(g, c);
    CHECK(y != NULL, "%s: forward failed: %s", c->name, ctx->err);
    if (!y) return NULL;
    ssl_tensor *loss = c->R ? wsum(g, y, c->R) : y;
    int rc = ssl_graph_backward(g, loss);
    CHECK(rc == SSL_OK, "%s: backward failed: %s", c->name, ctx->err);
    return rc == SSL_OK ? y : NULL;
}

/* Analytic gradients against central differences for every element. */
static void fd_check(ssl_ctx *ctx, const dcase *c)
{
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    ssl_tensor *y = run_case(&g, ctx, c);
    if (!y) {
        ssl_graph_free(&g);
        return;
    }
    double f0 = objective(y, c->R);
    double again = eval_objective(&g, c);
    CHECK(again == f0, "fd %s: record = 0 gives %.9g, not %.9g", c->name, again, f0);
    ssl_tensor *vars[3] = {c->x, c->detach_w ? NULL : c->w, c->b};
    double worst = 0;
    for (int v = 0; v < 3; v++) {
        ssl_tensor *t = vars[v];
        if (!t || !t->requires_grad) continue;
        long n = ssl_tensor_numel(t);
        double err = 0, scale = 0;
        for (long i = 0; i < n; i++) {
            float x0 = t->data[i];
            double h = ldexp(c->h, ilogb(fmax(1.0, fabs(x0)))), f[4];
            static const double mul[4] = {-2, -1, 1, 2};
            for (int k = 0; k < 4; k++) {
                t->data[i] = (float)(x0 + mul[k] * h);
                f[k] = eval_objective(&g, c);
            }
            t->data[i] = x0;
            double num = (8 * (f[2] - f[1]) - (f[3] - f[0])) / (12 * h), ana = t->grad[i];
            err = fmax(err, fabs(num - ana));
            scale = fmax(scale, fmax(fabs(num), fabs(ana)));
            if (!isfinite(num) || !isfinite(ana)) err = INFINITY;
        }
        double rel = err / fmax(scale, 1e-6);
        CHECK(rel <= FD_TOL && scale > 1e-6,
              "fd %s input %d: max |numeric - analytic| %.3g, relative %.3g (scale %.3g)",
              c->name, v, err, rel, scale);
        worst = fmax(worst, rel);
    }
    if (c->detach_w && c->w && c->w->grad)
        CHECK(max_abs(c->w->grad, ssl_tensor_numel(c->w)) == 0,
              "fd %s: detached keys got a gradient", c->name);
    printf("  %-40s max rel err %.2e\n", c->name, worst);
    ssl_graph_free(&g);
}

/* Values pushed at least `gap` away from 0 (the leaky ReLU's kink). */
static void away_from_zero(ssl_tensor *t, float gap)
{
    for (long i = 0; i < ssl_tensor_numel(t); i++)
        t->data[i] = t->data[i] >= 0 ? t->data[i] + gap : t->data[i] - gap;
}

/* Rows of x (M, D) scaled to unit length. */
static void unit_rows(ssl_tensor *x)
{
    int M = x->shape[0], D = x->shape[1];
    for (int i = 0; i < M; i++) {
        double s = 0;
        for (int j = 0; j < D; j++) s += (double)x->data[i * D + j] * x->data[i * D + j];
        for (int j = 0; j < D; j++) x->data[i * D + j] = (float)(x->data[i * D + j] / sqrt(s));
    }
}

static void test_finite_differences(ssl_ctx *ctx, ssl_layout L)
{
    ssl_rng r;
    ssl_rng_seed(&r, 11 + L);
    printf("finite differences, %s:\n", layout_name(L));
    const double H0 = 1.0 / 128;
    int wshape[4] = {3, 2, 4, 4}, wshape2[4] = {3, 4, 3, 2}, bsh = 2, bsh3 = 3;
    ssl_tensor x = mk4(&r, 2, 3, 4, 5, L, 1.0f, 1);
    ssl_tensor w = mkr(&r, 4, wshape, 0.5f, 1);
    ssl_tensor w2 = mkr(&r, 4, wshape2, 0.5f, 1);
    ssl_tensor b = mkr(&r, 1, &bsh, 1.0f, 1), b3 = mkr(&r, 1, &bsh3, 1.0f, 1);
    float *R = randv(&r, 4096, 1.0f);

    /* transposed convolution: k4 s2 p1 with bias, a 3x2 kernel at s3 p2 op2 */
    fd_check(ctx, &(dcase){.name = "conv_transpose2d k4 s2 p1 + bias", .op = OP_CONVT, .x = &x,
                           .w = &w, .b = &b, .hp = {2, 1, 0}, .R = R, .h = H0});
    fd_check(ctx, &(dcase){.name = "conv_transpose2d k3x2 s3 p2 op2", .op = OP_CONVT, .x = &x,
                           .w = &w2, .hp = {3, 2, 2}, .R = R, .h = H0});
    fd_check(ctx, &(dcase){.name = "upsample nearest x3", .op = OP_UP, .x = &x, .hp = {3, 0},
                           .R = R, .h = H0});
    fd_check(ctx, &(dcase){.name = "upsample bilinear x2", .op = OP_UP, .x = &x, .hp = {2, 1},
                           .R = R, .h = H0});
    fd_check(ctx, &(dcase){.name = "upsample bilinear x3", .op = OP_UP, .x = &x, .hp = {3, 1},
                           .R = R, .h = H0});
    fd_check(ctx, &(dcase){.name = "add_bias_channel 4-D", .op = OP_BIAS, .x = &x, .b = &b3,
                           .R = R, .h = H0});
    int s2[2] = {4, 3};
    ssl_tensor x2 = mkr(&r, 2, s2, 1.0f, 1);
    fd_check(ctx, &(dcase){.name = "add_bias_channel 2-D", .op = OP_BIAS, .x = &x2, .b = &b3,
                           .R = R, .h = H0});

    ssl_tensor a = mk4(&r, 2, 3, 4, 5, L, 2.0f, 1);
    away_from_zero(&a, 0.1f);
    fd_check(ctx, &(dcase){.name = "sigmoid", .op = OP_SIGMOID, .x = &a, .R = R, .h = H0});
    fd_check(ctx, &(dcase){.name = "tanh", .op = OP_TANH, .x = &a, .R = R, .h = H0});
    fd_check(ctx, &(dcase){.name = "leaky_relu 0.2", .op = OP_LEAKY, .x = &a, .hp = {0.2f},
                           .R = R, .h = H0});

    /* losses: a quadratic is exact at any step, so a large one keeps the
     * loss's float rounding small against the differences */
    long n = ssl_tensor_numel(&x);
    float *tg = randv(&r, n, 1.0f), *em = malloc(sizeof(float) * n), pm[2 * 20];
    for (long i = 0; i < n; i++) em[i] = ssl_rng_uniform(&r) < 0.3f ? 0.0f : ssl_rng_uniform(&r);
    for (int i = 0; i < 40; i++) pm[i] = (i % 20) >= 5 && (i % 20) < 15 ? 1.0f : 0.25f * (i % 2);
    fd_check(ctx, &(dcase){.name = "masked_mse per pixel", .op = OP_MSE, .x = &x, .t = tg,
                           .m = pm, .mask_c = 1, .h = 1.0 / 8});
    fd_check(ctx, &(dcase){.name = "masked_mse per element", .op = OP_MSE, .x = &x, .t = tg,
                           .m = em, .mask_c = 3, .h = 1.0 / 8});
    fd_check(ctx, &(dcase){.name = "masked_mse no mask", .op = OP_MSE, .x = &x, .t = tg,
                           .h = 1.0 / 8});

    ssl_tensor lg = mk4(&r, 2, 4, 3, 3, L, 1.5f, 1);
    int32_t lab[18];
    float cw[4] = {0.5f, 2.0f, 0.0f, 1.3f};
    for (int i = 0; i < 18; i++) lab[i] = i % 7 == 3 ? -1 : (int32_t)ssl_rng_below(&r, 4);
    fd_check(ctx, &(dcase){.name = "pixel_softmax_ce weighted, ignore", .op = OP_PCE, .x = &lg,
                           .labels = lab, .cw = cw, .h = 1.0 / 32});
    fd_check(ctx, &(dcase){.name = "pixel_softmax_ce plain", .op = OP_PCE, .x = &lg,
                           .labels = lab, .h = 1.0 / 32});

    ssl_tensor bl = mk4(&r, 2, 1, 4, 5, L, 2.0f, 1);
    float bt[40];
    for (int i = 0; i < 40; i++) bt[i] = i % 5 == 0 ? 0.8f : (float)(i % 2);
    fd_check(ctx, &(dcase){.name = "bce_logits", .op = OP_BCE, .x = &bl, .t = bt, .h = 1.0 / 32});

    float co[2 * 2 * 7];
    for (int i = 0; i < 14; i++) {
        co[2 * i] = 7.0f * ssl_rng_uniform(&r) - 1.0f;     /* u in [-1, 6) */
        co[2 * i + 1] = 6.0f * ssl_rng_uniform(&r) - 1.0f; /* v in [-1, 5) */
    }
    fd_check(ctx, &(dcase){.name = "grid_sample", .op = OP_GRID, .x = &x, .coords = co, .P = 7,
                           .R = R, .h = H0});

    int qs[2] = {8, 6};
    ssl_tensor q = mkr(&r, 2, qs, 1.0f, 1), k = mkr(&r, 2, qs, 1.0f, 1);
    unit_rows(&q);
    unit_rows(&k);
    fd_check(ctx, &(dcase){.name = "dense_infonce T=0.2", .op = OP_DNCE, .x = &q, .w = &k,
                           .hp = {0.2f}, .h = H0});
    fd_check(ctx, &(dcase){.name = "dense_infonce T=0.5, k detached", .op = OP_DNCE, .x = &q,
                           .w = &k, .hp = {0.5f}, .detach_w = 1, .h = H0});
    fd_check(ctx, &(dcase){.name = "dense_infonce (q, q)", .op = OP_DNCE, .x = &q, .w = &q,
                           .hp = {0.3f}, .h = H0});

    free(R);
    free(tg);
    free(em);
    ssl_tensor *all[] = {&x, &w, &w2, &b, &b3, &x2, &a, &lg, &bl, &q, &k};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) unmk(all[i]);
}

/* --------------------------------------------------- PyTorch parity */

static long entry_numel(const ssl_st_entry *e)
{
    long n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (long)e->shape[d];
    return n;
}

/* Entry <c>.<key> of dtype dt; NULL (and a failed CHECK when required). */
static const ssl_st_entry *gent(const ssl_st_file *f, const char *c, const char *key,
                                ssl_dtype dt, int required)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", c, key);
    const ssl_st_entry *e = ssl_st_find(f, name);
    int ok = e && e->dtype == dt && e->ndim >= 1 && e->ndim <= 4;
    if (required) CHECK(ok, "golden '%s' missing or of the wrong type", name);
    return ok ? e : NULL;
}

/* A persistent copy of an F32 entry in layout L (4-D) with a gradient buffer
 * when `grad`; a zero tensor (data NULL) when the entry is absent. */
static ssl_tensor gten(const ssl_st_file *f, const char *c, const char *key, ssl_layout L,
                       int grad, int required)
{
    ssl_tensor t;
    memset(&t, 0, sizeof t);
    const ssl_st_entry *e = gent(f, c, key, SSL_DT_F32, required);
    if (!e) return t;
    int shape[4];
    for (int d = 0; d < e->ndim; d++) shape[d] = (int)e->shape[d];
    long n = entry_numel(e);
    float *x = malloc(sizeof(float) * (size_t)n);
    if (e->ndim == 4)
        relayout(x, L, e->data, SSL_LAYOUT_NCHW, shape[0], shape[1], (long)shape[2] * shape[3]);
    else
        memcpy(x, e->data, sizeof(float) * (size_t)n);
    return ssl_tensor_wrap(x, grad ? calloc((size_t)n, sizeof(float)) : NULL, e->ndim, shape,
                           e->ndim == 4 ? L : SSL_LAYOUT_NCHW);
}

/* Compares a (numel n, in layout L when `like` is 4-D) with golden <c>.<key>. */
static void gcompare(const ssl_st_file *f, const char *c, const char *key, const float *a,
                     const ssl_tensor *like, ssl_layout L, double tol)
{
    const ssl_st_entry *e = gent(f, c, key, SSL_DT_F32, 1);
    if (!e) return;
    long n = entry_numel(e);
    CHECK(n == ssl_tensor_numel(like), "%s.%s: %ld values, the op has %ld", c, key, n,
          ssl_tensor_numel(like));
    if (n != ssl_tensor_numel(like)) return;
    float *tmp = malloc(sizeof(float) * (size_t)n);
    if (like->ndim == 4)
        relayout(tmp, SSL_LAYOUT_NCHW, a, like->layout, like->shape[0], like->shape[1],
                 (long)like->shape[2] * like->shape[3]);
    else
        memcpy(tmp, a, sizeof(float) * (size_t)n);
    double err = n == 1 ? fabs((double)tmp[0] - ((const float *)e->data)[0]) /
                              fabs((double)((const float *)e->data)[0])
                        : check_rel_err(tmp, e->data, n);
    CHECK(err <= tol, "%s %s.%s: relative error %.3g > %.1g", layout_name(L), c, key, err, tol);
    printf("  %-18s %-4s %-4s rel err %.2e\n", c, layout_name(L), key, err);
    free(tmp);
}

static void parity_case(ssl_ctx *ctx, const ssl_st_file *f, const char *c, dop op, ssl_layout L)
{
    dcase dc = {.name = c, .op = op};
    ssl_tensor x = gten(f, c, "x", L, 1, 1);
    int kdet = op == OP_DNCE && !gent(f, c, "gk", SSL_DT_F32, 0);
    /* weights keep torch's order whatever the activations' layout */
    ssl_tensor w = gten(f, c, "w", SSL_LAYOUT_NCHW, 1, op == OP_CONVT || op == OP_DNCE);
    ssl_tensor b = gten(f, c, "b", L, 1, op == OP_BIAS);
    ssl_tensor R = gten(f, c, "r", L, 0, 0);
    ssl_tensor t = gten(f, c, "t", L, 0, op == OP_MSE || op == OP_BCE);
    ssl_tensor m = {0};
    const ssl_st_entry *hp = gent(f, c, "hp", SSL_DT_F32, 0), *lab = NULL, *cw = NULL, *co = NULL;
    for (long i = 0; hp && i < entry_numel(hp) && i < 3; i++)
        dc.hp[i] = ((const float *)hp->data)[i];
    dc.x = &x;
    dc.w = w.data ? &w : NULL;
    dc.b = b.data ? &b : NULL;
    dc.R = R.data;
    dc.t = t.data;
    dc.detach_w = kdet;
    if (op == OP_MSE) {
        dc.mask_c = (int)dc.hp[0];
        /* a per-pixel mask (N, 1, H, W) reads the same in both layouts */
        m = gten(f, c, "m", L, 0, 0);
        dc.m = m.data;
    }
    if (op == OP_PCE) {
        lab = gent(f, c, "labels", SSL_DT_I32, 1);
        cw = gent(f, c, "cw", SSL_DT_F32, 0);
        dc.labels = lab ? lab->data : NULL;
        dc.cw = cw ? cw->data : NULL;
    }
    if (op == OP_GRID && (co = gent(f, c, "coords", SSL_DT_F32, 1))) {
        dc.coords = co->data;
        dc.P = (int)co->shape[1];
    }
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    int ready = x.data && (op != OP_PCE || lab) && (op != OP_GRID || co);
    ssl_tensor *y = ready ? run_case(&g, ctx, &dc) : NULL;
    if (y) {
        gcompare(f, c, "out", y->data, y, L, y->ndim == 1 ? GOLD_LOSS_RTOL : GOLD_REL);
        gcompare(f, c, "gx", x.grad, &x, L, GOLD_REL);
        if (op == OP_CONVT) gcompare(f, c, "gw", w.grad, &w, L, GOLD_REL);
        if (dc.b) gcompare(f, c, "gb", b.grad, &b, L, GOLD_REL);
        if (op == OP_DNCE && !kdet) gcompare(f, c, "gk", w.grad, &w, L, GOLD_REL);
        if (kdet)
            CHECK(max_abs(w.grad, ssl_tensor_numel(&w)) == 0, "%s: detached k got a gradient", c);
    }
    ssl_graph_free(&g);
    ssl_tensor *all[] = {&x, &w, &b, &R, &t, &m};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) unmk(all[i]);
}

static void test_parity(ssl_ctx *ctx)
{
    ssl_st_file f;
    if (!golden_load(&f, "dense_ops.safetensors", "gen_dense_ops.py")) return;
    static const struct {
        const char *name;
        dop op;
    } cases[] = {
        {"convt_k4s2p1", OP_CONVT}, {"convt_k3s2p1o1", OP_CONVT}, {"convt_k3x2s3p2o2", OP_CONVT},
        {"convt_k3s1p0", OP_CONVT}, {"up_nearest2", OP_UP},       {"up_nearest3", OP_UP},
        {"up_bilinear2", OP_UP},    {"up_bilinear3", OP_UP},      {"bias4d", OP_BIAS},
        {"bias2d", OP_BIAS},        {"sigmoid", OP_SIGMOID},      {"tanh", OP_TANH},
        {"leaky", OP_LEAKY},        {"leaky_neg", OP_LEAKY},      {"mse_pixel", OP_MSE},
        {"mse_elem", OP_MSE},       {"mse_nomask", OP_MSE},       {"pce_w", OP_PCE},
        {"pce", OP_PCE},            {"pce_q13", OP_PCE},          {"bce4d", OP_BCE},
        {"bce2d", OP_BCE},          {"grid", OP_GRID},            {"dnce", OP_DNCE},
        {"dnce_det", OP_DNCE},
    };
    printf("PyTorch parity (max |diff| <= %g of the largest; losses rtol %g):\n", GOLD_REL,
           GOLD_LOSS_RTOL);
    for (int L = 0; L < 2; L++)
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            parity_case(ctx, &f, cases[i].name, cases[i].op, (ssl_layout)L);
    ssl_st_free(&f);
}

/* ------------------------------------- transposed convolution, direct loop */

/* y (N, Co, OH, OW) NCHW, double = conv_transpose(x, w) + b; and with dy the
 * gradients dx, dw, db, all by the definition. */
typedef struct convt_ref {
    int N, Ci, Co, H, W, R, S, st, pad, OH, OW;
} convt_ref;

static void ref_convt(const convt_ref *d, double *y, double *dx, double *dw, double *db,
                      const float *x, const float *w, const float *b, const float *dy)
{
    long ny = (long)d->N * d->Co * d->OH * d->OW;
    for (long i = 0; i < ny; i++) y[i] = b ? b[(i / ((long)d->OH * d->OW)) % d->Co] : 0;
    memset(dx, 0, sizeof(double) * (size_t)d->N * d->Ci * d->H * d->W);
    memset(dw, 0, sizeof(double) * (size_t)d->Ci * d->Co * d->R * d->S);
    memset(db, 0, sizeof(double) * (size_t)d->Co);
    for (long i = 0; i < ny; i++) db[(i / ((long)d->OH * d->OW)) % d->Co] += dy[i];
    for (int n = 0; n < d->N; n++)
        for (int ci = 0; ci < d->Ci; ci++)
            for (int ih = 0; ih < d->H; ih++)
                for (int iw = 0; iw < d->W; iw++) {
                    long xi = (((long)n * d->Ci + ci) * d->H + ih) * d->W + iw;
                    for (int co = 0; co < d->Co; co++)
                        for (int r = 0; r < d->R; r++)
                            for (int s = 0; s < d->S; s++) {
                                int oh = ih * d->st - d->pad + r, ow = iw * d->st - d->pad + s;
                                if (oh < 0 || oh >= d->OH || ow < 0 || ow >= d->OW) continue;
                                long yi = (((long)n * d->Co + co) * d->OH + oh) * d->OW + ow;
                                long wi = (((long)ci * d->Co + co) * d->R + r) * d->S + s;
                                y[yi] += (double)x[xi] * w[wi];
                                dx[xi] += (double)w[wi] * dy[yi];
                                dw[wi] += (double)x[xi] * dy[yi];
                            }
                }
}

static double rel_err_d(const float *a, const double *b, long n)
{
    double e = 0, m = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= e)) e = d;
        m = fmax(m, fabs(b[i]));
    }
    return e / (m > 1e-30 ? m : 1.0);
}

static void test_convt_direct(ssl_layout L)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    ssl_rng r;
    ssl_rng_seed(&r, 21);
    /* 16 images: chunks of several images in CNHW with 2 threads */
    convt_ref d = {16, 6, 5, 5, 6, 4, 3, 2, 1, 0, 0};
    d.OH = (d.H - 1) * d.st - 2 * d.pad + d.R + 1; /* output_pad 1 */
    d.OW = (d.W - 1) * d.st - 2 * d.pad + d.S + 1;
    int ws[4] = {d.Ci, d.Co, d.R, d.S}, bs = d.Co;
    ssl_tensor x = mk4(&r, d.N, d.Ci, d.H, d.W, L, 1.0f, 1);
    ssl_tensor w = mkr(&r, 4, ws, 0.3f, 1), b = mkr(&r, 1, &bs, 1.0f, 1);
    long nx = ssl_tensor_numel(&x), ny = (long)d.N * d.Co * d.OH * d.OW;
    float *R = randv(&r, ny, 1.0f), *Rl = malloc(sizeof(float) * ny);
    float *xn = malloc(sizeof(float) * nx);
    float *tmp = malloc(sizeof(float) * (ny > nx ? ny : nx));
    relayout(xn, SSL_LAYOUT_NCHW, x.data, L, d.N, d.Ci, (long)d.H * d.W);
    relayout(Rl, L, R, SSL_LAYOUT_NCHW, d.N, d.Co, (long)d.OH * d.OW);
    double *y = malloc(sizeof(double) * ny), *dx = malloc(sizeof(double) * nx);
    double *dw = malloc(sizeof(double) * ssl_tensor_numel(&w)), *db = malloc(sizeof(double) * d.Co);
    ref_convt(&d, y, dx, dw, db, xn, w.data, b.data, R);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    ssl_tensor *out = ssl_op_conv_transpose2d(&g, &x, &w, &b, d.st, d.pad, 1);
    CHECK(out && out->shape[2] == d.OH && out->shape[3] == d.OW && out->layout == L,
          "convT direct: forward failed or wrong shape: %s", ctx.err);
    if (out && ssl_graph_backward(&g, wsum(&g, out, Rl)) == SSL_OK) {
        relayout(tmp, SSL_LAYOUT_NCHW, out->data, L, d.N, d.Co, (long)d.OH * d.OW);
        double e[4] = {rel_err_d(tmp, y, ny), 0, rel_err_d(w.grad, dw, ssl_tensor_numel(&w)),
                       rel_err_d(b.grad, db, d.Co)};
        relayout(tmp, SSL_LAYOUT_NCHW, x.grad, L, d.N, d.Ci, (long)d.H * d.W);
        e[1] = rel_err_d(tmp, dx, nx);
        CHECK(e[0] <= 1e-5 && e[1] <= 1e-5 && e[2] <= 1e-5 && e[3] <= 1e-5,
              "convT direct %s: rel errors y %.3g dx %.3g dw %.3g db %.3g", layout_name(L), e[0],
              e[1], e[2], e[3]);
        printf("  %s 16 x (6,5,6) k4x3 s2 p1 op1, 2 threads: y %.1e dx %.1e dw %.1e db %.1e\n",
               layout_name(L), e[0], e[1], e[2], e[3]);
    } else {
        CHECK(0, "convT direct: backward failed: %s", ctx.err);
    }
    ssl_graph_free(&g);
    free(R);
    free(xn);
    free(Rl);
    free(tmp);
    free(y);
    free(dx);
    free(dw);
    free(db);
    unmk(&x);
    unmk(&w);
    unmk(&b);
    ssl_ctx_free(&ctx);
}

/* ------------------------- dense InfoNCE against matmul + scale + softmax_ce */

static void test_dnce_composition(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    ssl_rng r;
    ssl_rng_seed(&r, 31);
    int s[2] = {1500, 12}; /* several row blocks per thread */
    ssl_tensor q = mkr(&r, 2, s, 1.0f, 1), k = mkr(&r, 2, s, 1.0f, 1);
    unit_rows(&q);
    unit_rows(&k);
    long n = ssl_tensor_numel(&q);
    float *gq = malloc(sizeof(float) * n), *gk = malloc(sizeof(float) * n);
    int32_t *lab = malloc(sizeof(int32_t) * s[0]);
    for (int i = 0; i < s[0]; i++) lab[i] = i;
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    const float T = 0.1f;
    ssl_tensor *lg = ssl_op_scale(&g, ssl_op_matmul(&g, &q, &k, 1), 1 / T);
    ssl_tensor *ref = ssl_op_softmax_ce(&g, lg, lab);
    CHECK(ref && ssl_graph_backward(&g, ref) == SSL_OK, "composition: %s", ctx.err);
    float want = ref ? ref->data[0] : NAN;
    memcpy(gq, q.grad, sizeof(float) * n);
    memcpy(gk, k.grad, sizeof(float) * n);
    zero_grad(&q);
    zero_grad(&k);
    ssl_graph_reset(&g);
    ssl_tensor *y = ssl_op_dense_infonce(&g, &q, &k, T);
    CHECK(y && ssl_graph_backward(&g, y) == SSL_OK, "dense_infonce: %s", ctx.err);
    if (y) {
        double el = fabs(y->data[0] - want) / want, eq = check_rel_err(q.grad, gq, n),
               ek = check_rel_err(k.grad, gk, n);
        CHECK(el <= 1e-5 && eq <= 1e-5 && ek <= 1e-5,
              "dense_infonce vs composition: loss %.3g, dq %.3g, dk %.3g", el, eq, ek);
        printf("  M=1500 D=12 T=0.1, 2 threads: loss %.6f (rel %.1e), dq %.1e, dk %.1e\n",
               (double)y->data[0], el, eq, ek);
    }
    ssl_graph_free(&g);
    free(gq);
    free(gk);
    free(lab);
    unmk(&q);
    unmk(&k);
    ssl_ctx_free(&ctx);
}

/* --------------------------------------------- threads against one thread */

/* Each op above the size where its loops use threads, at 1 and at 2
 * threads: outputs and gradients must agree (they differ at most in the
 * order of float sums). */
static void test_threads(ssl_layout L)
{
    ssl_ctx c1, c2;
    ssl_ctx_init(&c1, 1, 1);
    ssl_ctx_init(&c2, 1, 2);
    ssl_rng r;
    ssl_rng_seed(&r, 41 + L);
    const int N = 6, C = 7, H = 23, W = 25, P = 400;
    ssl_tensor x = mk4(&r, N, C, H, W, L, 1.5f, 1), bx = mk4(&r, N, 1, H, W, L, 2.0f, 1);
    int ws[4] = {C, 4, 4, 4}, cs = C, qs[2] = {N * P / 2, 16};
    ssl_tensor w = mkr(&r, 4, ws, 0.3f, 1), b = mkr(&r, 1, &cs, 1.0f, 1);
    ssl_tensor q = mkr(&r, 2, qs, 1.0f, 1), k = mkr(&r, 2, qs, 1.0f, 1);
    long n = ssl_tensor_numel(&x);
    float *R = randv(&r, 64 * n, 1.0f), *tg = randv(&r, n, 1.0f), *cw = randv(&r, C, 0.5f);
    float *co = malloc(sizeof(float) * 2 * N * P), *pm = malloc(sizeof(float) * N * H * W);
    int32_t *lab = malloc(sizeof(int32_t) * N * H * W);
    for (int i = 0; i < C; i++) cw[i] = fabsf(cw[i]) + 0.1f;
    for (int i = 0; i < N * H * W; i++) {
        lab[i] = i % 11 == 0 ? -1 : (int32_t)ssl_rng_below(&r, C);
        pm[i] = (float)(i % 3 != 0);
    }
    for (int i = 0; i < N * P; i++) {
        co[2 * i] = (W + 1) * ssl_rng_uniform(&r) - 1;
        co[2 * i + 1] = (H + 1) * ssl_rng_uniform(&r) - 1;
    }
    dcase cases[] = {
        {.name = "conv_transpose2d", .op = OP_CONVT, .x = &x, .w = &w, .hp = {2, 1, 1}, .R = R},
        {.name = "upsample nearest", .op = OP_UP, .x = &x, .hp = {2, 0}, .R = R},
        {.name = "upsample bilinear", .op = OP_UP, .x = &x, .hp = {3, 1}, .R = R},
        {.name = "add_bias_channel", .op = OP_BIAS, .x = &x, .b = &b, .R = R},
        {.name = "sigmoid", .op = OP_SIGMOID, .x = &x, .R = R},
        {.name = "tanh", .op = OP_TANH, .x = &x, .R = R},
        {.name = "leaky_relu", .op = OP_LEAKY, .x = &x, .hp = {0.1f}, .R = R},
        {.name = "masked_mse", .op = OP_MSE, .x = &x, .t = tg, .m = pm, .mask_c = 1},
        {.name = "pixel_softmax_ce", .op = OP_PCE, .x = &x, .labels = lab, .cw = cw},
        {.name = "bce_logits", .op = OP_BCE, .x = &bx, .t = pm},
        {.name = "grid_sample", .op = OP_GRID, .x = &x, .coords = co, .P = P, .R = R},
        {.name = "dense_infonce", .op = OP_DNCE, .x = &q, .w = &k, .hp = {0.2f}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const dcase *c = &cases[i];
        ssl_tensor *in[3] = {c->x, c->w, c->b};
        float *keep[3] = {0}, *out1 = NULL;
        long outn = 0;
        double err = 0;
        for (int pass = 0; pass < 2; pass++) {
            ssl_graph g;
            ssl_graph_init(&g, pass ? &c2 : &c1);
            ssl_tensor *y = run_case(&g, pass ? &c2 : &c1, c);
            if (y && !pass) {
                outn = ssl_tensor_numel(y);
                out1 = malloc(sizeof(float) * outn);
                memcpy(out1, y->data, sizeof(float) * outn);
                for (int v = 0; v < 3; v++)
                    if (in[v]) {
                        long m = ssl_tensor_numel(in[v]);
                        keep[v] = malloc(sizeof(float) * m);
                        memcpy(keep[v], in[v]->grad, sizeof(float) * m);
                    }
            } else if (y && out1) {
                err = fmax(err, check_rel_err(y->data, out1, outn));
                for (int v = 0; v < 3; v++)
                    if (keep[v])
                        err = fmax(err, check_rel_err(in[v]->grad, keep[v],
                                                      ssl_tensor_numel(in[v])));
            }
            ssl_graph_free(&g);
        }
        CHECK(out1 && err <= 1e-5, "threads %s %s: 2 threads differ from 1 by %.3g", layout_name(L),
              c->name, err);
        printf("  %-4s %-18s 1 vs 2 threads: rel err %.1e\n", layout_name(L), c->name, err);
        free(out1);
        for (int v = 0; v < 3; v++) free(keep[v]);
    }
    free(R);
    free(tg);
    free(cw);
    free(co);
    free(pm);
    free(lab);
    ssl_tensor *all[] = {&x, &bx, &w, &b, &q, &k};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) unmk(all[i]);
    ssl_ctx_free(&c1);
    ssl_ctx_free(&c2);
}

/* ------------------------------------------------ arena steady state */

/* A small inpainting / colorization / dense-contrast step, three times: the
 * arena must not grow after the first, and the losses must repeat. */
static void test_arena(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 9);
    ssl_tensor x = mk4(&r, 4, 6, 3, 3, SSL_LAYOUT_CNHW, 1.0f, 0);
    int ws[4] = {6, 3, 4, 4}, bs = 3;
    ssl_tensor w = mkr(&r, 4, ws, 0.3f, 1), b = mkr(&r, 1, &bs, 0.1f, 1);
    float *tg = randv(&r, 4 * 3 * 12 * 12, 1.0f), mask[4 * 12 * 12], co[4 * 5 * 2];
    int32_t lab[4 * 12 * 12];
    for (int i = 0; i < 4 * 144; i++) {
        mask[i] = (float)(i % 12 > 3 && i % 12 < 8);
        lab[i] = i % 3;
    }
    for (int i = 0; i < 40; i++) co[i] = 2.5f * ssl_rng_uniform(&r);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    float loss[3];
    int grows[3];
    for (int s = 0; s < 3; s++) {
        ssl_graph_reset(&g);
        int before = g.arena.n_grows;
        ssl_tensor *h = ssl_op_conv_transpose2d(&g, &x, &w, &b, 2, 1, 0);
        h = ssl_op_leaky_relu(&g, h, 0.2f);
        ssl_tensor *up = ssl_op_upsample(&g, h, 2, SSL_UPSAMPLE_BILINEAR);
        ssl_tensor *l = ssl_op_masked_mse(&g, ssl_op_tanh(&g, up), tg, mask, 1);
        l = ssl_op_add(&g, l, ssl_op_pixel_softmax_ce(&g, up, lab, NULL));
        ssl_tensor *z = ssl_op_l2normalize(&g, ssl_op_grid_sample(&g, h, co, 5));
        l = ssl_op_add(&g, l, ssl_op_dense_infonce(&g, z, z, 0.2f));
        ssl_tensor *d = ssl_op_global_avgpool(&g, ssl_op_sigmoid(&g, up));
        l = ssl_op_add(&g, l, ssl_op_bce_logits(&g, d, tg));
        CHECK(l && ssl_graph_backward(&g, l) == SSL_OK, "arena step %d: %s", s, ctx->err);
        loss[s] = l ? l->data[0] : NAN;
        grows[s] = g.arena.n_grows - before;
    }
    CHECK(grows[0] > 0 && grows[1] == 0 && grows[2] == 0 && g.arena.n_extra == 0,
          "arena grew after the first step (%d, %d, %d grows)", grows[0], grows[1], grows[2]);
    CHECK(loss[0] == loss[1] && loss[1] == loss[2] && isfinite(loss[0]),
          "arena: losses %.8g %.8g %.8g differ", loss[0], loss[1], loss[2]);
    printf("  decoder + losses: %.6f x3, arena %zu bytes\n", loss[0], g.arena.cap);
    ssl_graph_free(&g);
    free(tg);
    unmk(&x);
    unmk(&w);
    unmk(&b);
}

/* ------------------------------------------------------------ errors */

#define EXPECT_ERR(expr, what)                                                            \
    do {                                                                                  \
        ctx->err[0] = 0;                                                                  \
        ssl_tensor *r_ = (expr);                                                          \
        CHECK(r_ == NULL && ctx->err[0] != 0, "%s: expected NULL and a message", what); \
        if (!r_) printf("  %-34s -> %s\n", what, ctx->err);                             \
    } while (0)

static void test_errors(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 3);
    int ws[4] = {5, 4, 3, 3}, wbad[4] = {4, 4, 3, 3}, bs = 3, s2[2] = {6, 4}, s2b[2] = {6, 5};
    ssl_tensor x = mk4(&r, 2, 5, 4, 4, SSL_LAYOUT_CNHW, 1.0f, 1);
    ssl_tensor w = mkr(&r, 4, ws, 1.0f, 1), wb = mkr(&r, 4, wbad, 1.0f, 1);
    ssl_tensor b3 = mkr(&r, 1, &bs, 1.0f, 1);
    ssl_tensor m2 = mkr(&r, 2, s2, 1.0f, 1), m2b = mkr(&r, 2, s2b, 1.0f, 1);
    float buf[2 * 5 * 16] = {0}, co[4] = {0, 0, NAN, 1};
    int32_t lab[32] = {0};
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    printf("error paths:\n");
    EXPECT_ERR(ssl_op_conv_transpose2d(&g, &x, &wb, NULL, 2, 1, 0), "convT channels mismatch");
    EXPECT_ERR(ssl_op_conv_transpose2d(&g, &x, &w, &b3, 2, 1, 0), "convT bias size");
    EXPECT_ERR(ssl_op_conv_transpose2d(&g, &x, &w, NULL, 2, 1, 2), "convT output_pad >= stride");
    EXPECT_ERR(ssl_op_conv_transpose2d(&g, &x, &w, NULL, 0, 1, 0), "convT stride 0");
    EXPECT_ERR(ssl_op_conv_transpose2d(&g, &x, &w, NULL, 1, 5, 0), "convT empty output");
    EXPECT_ERR(ssl_op_conv_transpose2d(&g, &m2, &w, NULL, 1, 0, 0), "convT 2-D input");
    EXPECT_ERR(ssl_op_upsample(&g, &x, 0, SSL_UPSAMPLE_NEAREST), "upsample factor 0");
    EXPECT_ERR(ssl_op_upsample(&g, &x, 2, (ssl_upsample_mode)7), "upsample bad mode");
    EXPECT_ERR(ssl_op_upsample(&g, &m2, 2, SSL_UPSAMPLE_NEAREST), "upsample 2-D input");
    EXPECT_ERR(ssl_op_add_bias_channel(&g, &x, &b3), "bias size");
    EXPECT_ERR(ssl_op_leaky_relu(&g, &x, NAN), "leaky slope NaN");
    EXPECT_ERR(ssl_op_masked_mse(&g, &x, NULL, NULL, 1), "mse without target");
    EXPECT_ERR(ssl_op_masked_mse(&g, &x, buf, buf, 3), "mse mask_channels 3");
    EXPECT_ERR(ssl_op_masked_mse(&g, &m2, buf, NULL, 1), "mse 2-D pred");
    EXPECT_ERR(ssl_op_pixel_softmax_ce(&g, &x, NULL, NULL), "pce without labels");
    lab[7] = 5;
    EXPECT_ERR(ssl_op_pixel_softmax_ce(&g, &x, lab, NULL), "pce label = Q");
    lab[7] = -2;
    EXPECT_ERR(ssl_op_pixel_softmax_ce(&g, &x, lab, NULL), "pce label -2");
    lab[7] = 0;
    buf[2] = -1;
    EXPECT_ERR(ssl_op_pixel_softmax_ce(&g, &x, lab, buf), "pce negative class weight");
    buf[2] = 0;
    EXPECT_ERR(ssl_op_bce_logits(&g, &x, NULL), "bce without targets");
    EXPECT_ERR(ssl_op_grid_sample(&g, &x, co, 0), "grid P = 0");
    EXPECT_ERR(ssl_op_grid_sample(&g, &x, co, 1), "grid NaN coordinate");
    EXPECT_ERR(ssl_op_grid_sample(&g, &m2, buf, 1), "grid 2-D input");
    EXPECT_ERR(ssl_op_dense_infonce(&g, &m2, &m2b, 0.2f), "infonce q/k mismatch");
    EXPECT_ERR(ssl_op_dense_infonce(&g, &m2, &m2, 0.0f), "infonce T = 0");
    EXPECT_ERR(ssl_op_dense_infonce(&g, &x, &x, 0.2f), "infonce 4-D input");
    /* NULL inputs propagate without a new message */
    ctx->err[0] = 0;
    CHECK(!ssl_op_conv_transpose2d(&g, NULL, &w, NULL, 2, 1, 0) &&
              !ssl_op_conv_transpose2d(&g, &x, NULL, NULL, 2, 1, 0) &&
              !ssl_op_upsample(&g, NULL, 2, SSL_UPSAMPLE_NEAREST) &&
              !ssl_op_add_bias_channel(&g, NULL, &b3) && !ssl_op_add_bias_channel(&g, &x, NULL) &&
              !ssl_op_sigmoid(&g, NULL) && !ssl_op_tanh(&g, NULL) &&
              !ssl_op_leaky_relu(&g, NULL, 0.2f) && !ssl_op_masked_mse(&g, NULL, buf, NULL, 1) &&
              !ssl_op_pixel_softmax_ce(&g, NULL, lab, NULL) && !ssl_op_bce_logits(&g, NULL, buf) &&
              !ssl_op_grid_sample(&g, NULL, buf, 1) && !ssl_op_dense_infonce(&g, NULL, &m2, 1) &&
              !ssl_op_dense_infonce(&g, &m2, NULL, 1) && ctx->err[0] == 0,
          "NULL inputs must give NULL without a message");
    /* all pixels ignored, or a zero mask: loss 0 and no gradient, not NaN */
    for (int i = 0; i < 32; i++) lab[i] = -1;
    ssl_tensor *y = ssl_op_pixel_softmax_ce(&g, &x, lab, NULL);
    CHECK(y && y->data[0] == 0 && ssl_graph_backward(&g, y) == SSL_OK &&
              max_abs(x.grad, ssl_tensor_numel(&x)) == 0,
          "pce with every pixel ignored: not a zero loss without gradient");
    ssl_graph_reset(&g);
    memset(buf, 0, sizeof buf);
    float tgt[160];
    for (int i = 0; i < 160; i++) tgt[i] = 1;
    y = ssl_op_masked_mse(&g, &x, tgt, buf, 1);
    CHECK(y && y->data[0] == 0 && ssl_graph_backward(&g, y) == SSL_OK &&
              max_abs(x.grad, ssl_tensor_numel(&x)) == 0,
          "mse with an all-zero mask: not a zero loss without gradient");
    ssl_graph_free(&g);
    ssl_tensor *all[] = {&x, &w, &wb, &b3, &m2, &m2b};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) unmk(all[i]);
}

/* ------------------------------------------------------------- bench */

/* The decoder's 128 -> 64 channel, 7x7 -> 14x14 layer at batch 256. */
static int bench(int threads)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, threads);
    ssl_rng r;
    ssl_rng_seed(&r, 1);
    int ws[4] = {128, 64, 4, 4}, bs = 64;
    ssl_tensor w = mkr(&r, 4, ws, 0.05f, 1), b = mkr(&r, 1, &bs, 0.1f, 1);
    float *R = randv(&r, 256L * 64 * 14 * 14, 1.0f);
    const double flops = 3 * 2.0 * 256 * 128 * 64 * 16 * 49; /* y, dx and dw */
    for (int L = 0; L < 2; L++) {
        ssl_tensor x = mk4(&r, 256, 128, 7, 7, (ssl_layout)L, 1.0f, 1);
        ssl_graph g;
        ssl_graph_init(&g, &ctx);
        double best_f = 1e9, best_b = 1e9;
        for (int it = 0; it < 6; it++) {
            ssl_graph_reset(&g);
            double t0 = ssl_time();
            ssl_tensor *y = ssl_op_conv_transpose2d(&g, &x, &w, &b, 2, 1, 0);
            double t1 = ssl_time();
            /* seed dy = R directly: the backward alone, without a test node */
            float *dy = y ? ssl_tensor_grad(&g, y) : NULL;
            if (!dy) {
                fprintf(stderr, "bench: %s\n", ctx.err);
                return 1;
            }
            memcpy(dy, R, sizeof(float) * 256L * 64 * 14 * 14);
            double t2 = ssl_time();
            g.nodes[g.n_nodes - 1].backward(&g, &g.nodes[g.n_nodes - 1]);
            double t3 = ssl_time();
            if (it > 0) {
                best_f = fmin(best_f, t1 - t0);
                best_b = fmin(best_b, t3 - t2);
            }
        }
        printf("conv_transpose2d (256,128,7,7) -> (256,64,14,14) k4 s2 p1, %s, %d threads: "
               "forward %.1f ms, backward (dx, dw, db) %.1f ms, total %.1f ms "
               "(%.1f GFLOP/s)\n",
               layout_name((ssl_layout)L), threads, 1e3 * best_f, 1e3 * best_b,
               1e3 * (best_f + best_b), flops / (best_f + best_b) / 1e9);
        ssl_graph_free(&g);
        unmk(&x);
    }
    free(R);
    unmk(&w);
    unmk(&b);
    ssl_ctx_free(&ctx);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--bench")) return bench(argc > 2 ? atoi(argv[2]) : 2);
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    test_parity(&ctx);
    test_finite_differences(&ctx, SSL_LAYOUT_NCHW);
    test_finite_differences(&ctx, SSL_LAYOUT_CNHW);
    printf("transposed convolution against a direct loop:\n");
    test_convt_direct(SSL_LAYOUT_NCHW);
    test_convt_direct(SSL_LAYOUT_CNHW);
    printf("dense InfoNCE against matmul + scale + softmax_ce:\n");
    test_dnce_composition();
    printf("threads:\n");
    test_threads(SSL_LAYOUT_NCHW);
    test_threads(SSL_LAYOUT_CNHW);
    printf("arena:\n");
    test_arena(&ctx);
    test_errors(&ctx);
    ssl_ctx_free(&ctx);
    return check_report("test_dense_ops");
}
