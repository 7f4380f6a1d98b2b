/* The SSL objective ops of src/nn/graph_loss.c (detach, scale, GELU, cosine,
 * soft cross-entropy, InfoNCE with a queue, Barlow Twins, VICReg):
 *   1. stop-gradient: a detached input gets no gradient and adds no node;
 *   2. every backward against central differences of the float forward
 *      (4-point stencil, step ~1/128), alone and chained, with one input detached
 *      and with an input fed twice; inputs kept away from the VICReg hinge;
 *   3. PyTorch parity with tests/torch/gen_losses.py (float64 autograd of the
 *      methods' reference code on the same float32 inputs): loss rtol 1e-5
 *      (atol 1e-7 for the K = 0 loss, which is 0), VICReg parts rtol 1e-5,
 *      every gradient max |diff| <= 1e-5 * max |torch grad|, GELU outputs too;
 *   4. record = 0 gives the same loss with no node; the arena stops growing;
 *   5. bad shapes and arguments fail with a message. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "graph_test.h" /* zero_grad, max_abs, the test-only loss wsum */
#include "selfsup/graph.h"
#include "selfsup/io.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Differences step 2^-7 (times |x|'s power of two when |x| > 1). */
#define FD_STEP (1.0 / 128)
/* max |numeric - analytic| relative to the largest of either; the float
 * loss's rounding, ~6e-8 |loss| / h, is the floor */
#define FD_TOL 1e-3
#define GOLD_LOSS_RTOL 1e-5
#define GOLD_GRAD_REL 1e-5

/* ------------------------------------------------------------------ helpers */

/* A persistent (N, D) tensor of N(0, scale^2) draws; with a zeroed gradient
 * buffer (so requires_grad) when `grad`. */
static ssl_tensor mk(ssl_rng *r, int N, int D, float scale, int grad)
{
    int shape[2] = {N, D};
    float *x = malloc(sizeof(float) * (size_t)N * D);
    for (long i = 0; i < (long)N * D; i++) x[i] = scale * ssl_rng_normal(r);
    return ssl_tensor_wrap(x, grad ? calloc((size_t)N * D, sizeof(float)) : NULL, 2, shape,
                           SSL_LAYOUT_NCHW);
}

static void unmk(ssl_tensor *t)
{
    free(t->data);
    free(t->grad);
}

static void unmk_all(ssl_tensor *t, ...)
{
    va_list ap;
    va_start(ap, t);
    for (; t; t = va_arg(ap, ssl_tensor *)) unmk(t);
    va_end(ap);
}

/* ------------------------------------------------------------- the cases */

typedef enum loss_op {
    OP_COS, OP_SOFTCE, OP_MOCO, OP_BARLOW, OP_VICREG, OP_GELU, OP_SCALE, OP_CHAIN, OP_SUM
} loss_op;

/* One loss under test. b may alias a. extra: soft_ce targets, the MoCo queue,
 * or the weights R of a weighted sum. */
typedef struct lcase {
    const char *name;
    loss_op op;
    ssl_tensor *a, *b;
    const float *extra;
    int K;
    float hp[4];
    int detach_b;        /* b goes through ssl_op_detach */
    ssl_tensor *vars[3]; /* gradients checked by differences, NULL-terminated */
    ssl_tensor *none[2]; /* inputs with a grad buffer that must stay zero */
} lcase;

static ssl_tensor *build(ssl_graph *g, const lcase *c, float parts[3])
{
    ssl_tensor *b = c->detach_b ? ssl_op_detach(g, c->b) : c->b;
    const float *h = c->hp;
    switch (c->op) {
    case OP_COS: return ssl_op_cosine_loss(g, c->a, b, h[0], h[1]);
    case OP_SOFTCE: return ssl_op_soft_ce(g, c->a, c->extra, h[0]);
    case OP_MOCO: return ssl_op_infonce_queue(g, c->a, b, c->extra, c->K, h[0]);
    case OP_BARLOW: return ssl_op_barlow(g, c->a, b, h[0]);
    case OP_VICREG: return ssl_op_vicreg(g, c->a, b, h[0], h[1], h[2], h[3], parts);
    case OP_GELU: return wsum(g, ssl_op_gelu(g, c->a), c->extra);
    case OP_SCALE: return wsum(g, ssl_op_scale(g, c->a, h[0]), c->extra);
    case OP_CHAIN: /* a projector-like chain, then a scaled loss */
        return ssl_op_scale(
            g, ssl_op_cosine_loss(g, ssl_op_scale(g, ssl_op_gelu(g, c->a), h[0]), b, 2, -2), h[1]);
    case OP_SUM: /* two losses on the same inputs, added */
        return ssl_op_add(g, ssl_op_scale(g, ssl_op_barlow(g, c->a, b, 0.01f), h[0]),
                          ssl_op_vicreg(g, c->a, b, 25, 25, 1, 1e-4f, NULL));
    }
    return NULL;
}

/* The loss with record = 0 (no node, no gradient buffers prepared). */
static double eval_loss(ssl_graph *g, const lcase *c)
{
    ssl_graph_reset(g);
    g->record = 0;
    ssl_tensor *y = build(g, c, NULL);
    g->record = 1;
    return y ? y->data[0] : NAN;
}

/* Analytic gradients against central differences for every element. */
static void fd_check(ssl_ctx *ctx, const lcase *c)
{
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    for (int v = 0; v < 3 && c->vars[v]; v++) zero_grad(c->vars[v]);
    for (int v = 0; v < 2 && c->none[v]; v++) zero_grad(c->none[v]);
    ctx->err[0] = 0;
    ssl_tensor *y = build(&g, c, NULL);
    CHECK(y != NULL, "fd %s: forward failed: %s", c->name, ctx->err);
    if (!y) {
        ssl_graph_free(&g);
        return;
    }
    float L = y->data[0];
    CHECK(ssl_graph_backward(&g, y) == SSL_OK, "fd %s: backward failed: %s", c->name, ctx->err);
    /* the same value without recording */
    CHECK(eval_loss(&g, c) == L, "fd %s: record = 0 gives %.9g, not %.9g", c->name,
          eval_loss(&g, c), L);
    double worst = 0;
    for (int v = 0; v < 3 && c->vars[v]; v++) {
        ssl_tensor *t = c->vars[v];
        long n = ssl_tensor_numel(t);
        double err = 0, scale = 0;
        for (long i = 0; i < n; i++) {
            /* 4-point stencil, error O(h^4); h a power of two at or below
             * |x| / 128, so every x0 + k h is a float */
            float x0 = t->data[i];
            double h = ldexp(FD_STEP, ilogb(fmax(1.0, fabs(x0)))), f[4];
            static const double mul[4] = {-2, -1, 1, 2};
            for (int k = 0; k < 4; k++) {
                t->data[i] = (float)(x0 + mul[k] * h);
                f[k] = eval_loss(&g, c);
            }
            t->data[i] = x0;
            double num = (8 * (f[2] - f[1]) - (f[3] - f[0])) / (12 * h),
                   ana = t->grad[i];
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
    for (int v = 0; v < 2 && c->none[v]; v++)
        CHECK(max_abs(c->none[v]->grad, ssl_tensor_numel(c->none[v])) == 0,
              "fd %s: an input that takes no gradient got one", c->name);
    printf("  %-34s loss %12.6f  max rel err %.2e\n", c->name, (double)L, worst);
    ssl_graph_free(&g);
}

/* Column std (unbiased) of z (N, D) kept at least `gap` from 1, so a step of
 * the differences never crosses VICReg's hinge. */
static int away_from_hinge(const ssl_tensor *z, double gap)
{
    int N = z->shape[0], D = z->shape[1], ok = 1;
    for (int d = 0; d < D; d++) {
        double m = 0, s = 0;
        for (int i = 0; i < N; i++) m += z->data[(long)i * D + d];
        m /= N;
        for (int i = 0; i < N; i++) {
            double v = z->data[(long)i * D + d] - m;
            s += v * v;
        }
        ok &= fabs(sqrt(s / (N - 1)) - 1.0) >= gap;
    }
    return ok;
}

/* Columns d % 3 == 0 spread (std well above 1), the others collapsed. */
static void vicreg_columns(ssl_tensor *z)
{
    int N = z->shape[0], D = z->shape[1];
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) z->data[(long)i * D + d] *= d % 3 == 0 ? 3.0f : 0.3f;
}

static void softmax_rows(float *t, const float *x, int N, int K, float T)
{
    for (int i = 0; i < N; i++) {
        double mx = -INFINITY, s = 0;
        for (int k = 0; k < K; k++) mx = fmax(mx, x[i * K + k] / T);
        for (int k = 0; k < K; k++) s += exp(x[i * K + k] / T - mx);
        for (int k = 0; k < K; k++) t[i * K + k] = (float)(exp(x[i * K + k] / T - mx) / s);
    }
}

static void test_finite_differences(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 41);
    printf("finite differences (step %g * max(1, |x|)):\n", FD_STEP);
    ssl_tensor p = mk(&r, 5, 7, 1.0f, 1), z = mk(&r, 5, 7, 1.0f, 1);
    ssl_tensor big = mk(&r, 3, 4, 2.0f, 1); /* elementwise ops over a wide range */
    float R[35], tw[35];
    for (int i = 0; i < 35; i++) R[i] = ssl_rng_normal(&r);

    lcase cases[] = {
        {.name = "scale -1.7", .op = OP_SCALE, .a = &big, .extra = R, .hp = {-1.7f},
         .vars = {&big}},
        {.name = "gelu", .op = OP_GELU, .a = &big, .extra = R, .vars = {&big}},
        {.name = "cosine BYOL (2, -2)", .op = OP_COS, .a = &p, .b = &z, .hp = {2, -2},
         .vars = {&p, &z}},
        {.name = "cosine SimSiam, z detached", .op = OP_COS, .a = &p, .b = &z, .hp = {0, -1},
         .detach_b = 1, .vars = {&p}, .none = {&z}},
        {.name = "chain (p, p): both paths into p", .op = OP_CHAIN, .a = &p, .b = &p,
         .hp = {1.1f, 1.0f}, .vars = {&p}},
        {.name = "chain gelu-scale-cosine-scale", .op = OP_CHAIN, .a = &p, .b = &z,
         .hp = {1.3f, -0.7f}, .vars = {&p, &z}},
        {.name = "chain, z detached", .op = OP_CHAIN, .a = &p, .b = &z, .hp = {0.8f, 2.0f},
         .detach_b = 1, .vars = {&p}, .none = {&z}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) fd_check(ctx, &cases[i]);

    /* soft cross-entropy: sharp targets at T = 0.1, and targets that do not
     * sum to 1 (the op does not assume they do) */
    ssl_tensor lg = mk(&r, 5, 7, 1.0f, 1);
    float *tmp = malloc(sizeof(float) * 35);
    for (int i = 0; i < 35; i++) tmp[i] = ssl_rng_normal(&r);
    softmax_rows(tw, tmp, 5, 7, 0.3f);
    fd_check(ctx, &(lcase){.name = "soft_ce T=0.1", .op = OP_SOFTCE, .a = &lg, .extra = tw,
                           .hp = {0.1f}, .vars = {&lg}});
    for (int i = 0; i < 35; i++) tmp[i] = 0.3f * ssl_rng_uniform(&r);
    fd_check(ctx, &(lcase){.name = "soft_ce T=1, unnormalized targets", .op = OP_SOFTCE,
                           .a = &lg, .extra = tmp, .hp = {1.0f}, .vars = {&lg}});

    /* MoCo: k with a grad buffer must still get none (keys take no gradient) */
    ssl_tensor q = mk(&r, 5, 7, 0.4f, 1), k = mk(&r, 5, 7, 0.4f, 1);
    float *queue = malloc(sizeof(float) * 13 * 7);
    for (int i = 0; i < 13 * 7; i++) queue[i] = 0.4f * ssl_rng_normal(&r);
    fd_check(ctx, &(lcase){.name = "infonce K=13 T=0.2", .op = OP_MOCO, .a = &q, .b = &k,
                           .extra = queue, .K = 13, .hp = {0.2f}, .vars = {&q}, .none = {&k}});
    fd_check(ctx, &(lcase){.name = "infonce K=1 T=0.07", .op = OP_MOCO, .a = &q, .b = &k,
                           .extra = queue, .K = 1, .hp = {0.07f}, .vars = {&q}, .none = {&k}});

    /* Barlow Twins and VICReg, both inputs, one detached, and (z, z) */
    ssl_tensor z1 = mk(&r, 6, 5, 1.0f, 1), z2 = mk(&r, 6, 5, 1.0f, 1);
    for (int i = 0; i < 30; i++) z2.data[i] = 0.8f * z1.data[i] + 0.6f * z2.data[i] + 0.5f;
    fd_check(ctx, &(lcase){.name = "barlow lambda 0.0051", .op = OP_BARLOW, .a = &z1, .b = &z2,
                           .hp = {0.0051f}, .vars = {&z1, &z2}});
    fd_check(ctx, &(lcase){.name = "barlow lambda 1, z2 detached", .op = OP_BARLOW, .a = &z1,
                           .b = &z2, .hp = {1.0f}, .detach_b = 1, .vars = {&z1}, .none = {&z2}});
    fd_check(ctx, &(lcase){.name = "barlow (z, z) lambda 0.5", .op = OP_BARLOW, .a = &z1,
                           .b = &z1, .hp = {0.5f}, .vars = {&z1}});
    ssl_tensor v1 = mk(&r, 6, 7, 1.0f, 1), v2 = mk(&r, 6, 7, 1.0f, 1);
    for (int i = 0; i < 42; i++) v2.data[i] = v1.data[i] + 0.5f * v2.data[i];
    vicreg_columns(&v1);
    vicreg_columns(&v2);
    CHECK(away_from_hinge(&v1, 0.1) && away_from_hinge(&v2, 0.1),
          "vicreg inputs: a column std within 0.1 of 1");
    fd_check(ctx, &(lcase){.name = "vicreg 25/25/1", .op = OP_VICREG, .a = &v1, .b = &v2,
                           .hp = {25, 25, 1, 1e-4f}, .vars = {&v1, &v2}});
    fd_check(ctx, &(lcase){.name = "vicreg 1/3/7, v2 detached", .op = OP_VICREG, .a = &v1,
                           .b = &v2, .hp = {1, 3, 7, 1e-2f}, .detach_b = 1, .vars = {&v1},
                           .none = {&v2}});
    fd_check(ctx, &(lcase){.name = "0.5 barlow + vicreg, added", .op = OP_SUM, .a = &v1,
                           .b = &v2, .hp = {0.5f}, .vars = {&v1, &v2}});
    free(tmp);
    free(queue);
    unmk_all(&p, &z, &big, &lg, &q, &k, &z1, &z2, &v1, &v2, NULL);
}

/* ------------------------------------------------------ stop-gradient */

static void test_detach(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 5);
    ssl_tensor x = mk(&r, 3, 4, 1.0f, 1);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    ssl_tensor *s = ssl_op_scale(&g, &x, 2.0f);
    int nodes = g.n_nodes;
    ssl_tensor *d = ssl_op_detach(&g, s);
    CHECK(d && d != s && d->data == s->data && d->grad == NULL && !d->requires_grad &&
              d->ndim == 2 && d->shape[0] == 3 && d->shape[1] == 4 && g.n_nodes == nodes,
          "detach: not a gradient-free view of the same data without a node");
    CHECK(s && s->requires_grad, "detach changed its input");
    /* nothing downstream of a detached tensor is recorded */
    ssl_tensor *y = ssl_op_gelu(&g, d);
    CHECK(y && !y->requires_grad && g.n_nodes == nodes, "an op of a detached tensor recorded");
    CHECK(ssl_op_detach(&g, NULL) == NULL, "detach(NULL) must be NULL");
    ssl_graph_free(&g);
    unmk(&x);
}

/* scale and GELU above the size where their loops run on several threads:
 * outputs and gradients against a direct evaluation. */
static void test_elementwise_threads(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 7);
    ssl_tensor x = mk(&r, 130, 131, 2.0f, 1);
    long n = ssl_tensor_numel(&x);
    float *R = malloc(sizeof(float) * (size_t)n), *want = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) R[i] = ssl_rng_normal(&r);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    ssl_tensor *h = ssl_op_gelu(&g, &x), *y = ssl_op_scale(&g, h, -0.5f);
    CHECK(y && ssl_graph_backward(&g, wsum(&g, y, R)) == SSL_OK, "threaded ops: %s", ctx->err);
    if (y) {
        for (long i = 0; i < n; i++) {
            double v = x.data[i];
            want[i] = (float)(-0.25 * v * (1 + erf(v / sqrt(2.0))));
        }
        CHECK_CLOSE(y->data, want, n, 1e-7, 1e-6, "gelu then scale, threaded");
        for (long i = 0; i < n; i++) {
            double v = x.data[i];
            double d = 0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * v * v) / sqrt(2 * acos(-1.0));
            want[i] = (float)(-0.5 * R[i] * d);
        }
        CHECK_CLOSE(x.grad, want, n, 1e-7, 1e-5, "gelu then scale gradient, threaded");
    }
    ssl_graph_free(&g);
    free(R);
    free(want);
    unmk(&x);
}

/* A zero row: F.normalize divides by eps instead of 0, so the loss sees
 * cos = 0 for it and everything stays finite. */
static void test_cosine_zero_row(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 6);
    ssl_tensor p = mk(&r, 3, 4, 1.0f, 1), z = mk(&r, 3, 4, 1.0f, 1);
    memset(p.data + 4, 0, sizeof(float) * 4);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    ssl_tensor *y = ssl_op_cosine_loss(&g, &p, &z, 0, 1);
    double want = 0;
    for (int i = 0; i < 3; i++) {
        double pp = 0, zz = 0, pz = 0;
        for (int j = 0; j < 4; j++) {
            pp += p.data[i * 4 + j] * p.data[i * 4 + j];
            zz += z.data[i * 4 + j] * z.data[i * 4 + j];
            pz += p.data[i * 4 + j] * z.data[i * 4 + j];
        }
        want += i == 1 ? 0 : pz / sqrt(pp * zz) / 3;
    }
    CHECK(y && fabs(y->data[0] - want) <= 1e-6, "cosine with a zero row: %g, want %g",
          y ? y->data[0] : NAN, want);
    CHECK(y && ssl_graph_backward(&g, y) == SSL_OK, "cosine zero row backward: %s", ctx->err);
    int finite = 1;
    for (int i = 0; i < 12; i++) finite &= isfinite(p.grad[i]) && isfinite(z.grad[i]);
    CHECK(finite, "cosine with a zero row: gradients not finite");
    /* the zero row of z gets none: p_1 = 0 normalizes to 0 */
    CHECK(max_abs(z.grad + 4, 4) == 0, "cosine zero row: z's row 1 got a gradient");
    ssl_graph_free(&g);
    unmk_all(&p, &z, NULL);
}

/* --------------------------------------------------- PyTorch parity */

/* The F32 entry <c>.<key>, or NULL; *ndim/shape when asked. */
static const float *gold(const ssl_st_file *f, const char *c, const char *key, long *numel,
                         int *shape)
{
    char name[128];
    snprintf(name, sizeof name, "%s.%s", c, key);
    const ssl_st_entry *e = ssl_st_find(f, name);
    CHECK(e && e->dtype == SSL_DT_F32 && e->ndim <= 2, "golden '%s' missing or not F32", name);
    if (!e || e->dtype != SSL_DT_F32 || e->ndim > 2) return NULL;
    long n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (long)e->shape[d];
    if (numel) *numel = n;
    if (shape)
        for (int d = 0; d < 2; d++) shape[d] = d < e->ndim ? (int)e->shape[d] : 1;
    return e->data;
}

/* A persistent copy of golden input <c>.in<i>, with a gradient buffer. */
static int gold_input(const ssl_st_file *f, const char *c, int i, ssl_tensor *t)
{
    char key[16];
    snprintf(key, sizeof key, "in%d", i);
    int shape[2];
    long n;
    const float *src = gold(f, c, key, &n, shape);
    if (!src) return 0;
    float *x = malloc(sizeof(float) * (size_t)n);
    memcpy(x, src, sizeof(float) * (size_t)n);
    *t = ssl_tensor_wrap(x, calloc((size_t)n, sizeof(float)), 2, shape, SSL_LAYOUT_NCHW);
    return 1;
}

static void compare_grad(const ssl_st_file *f, const char *c, int i, const ssl_tensor *t)
{
    char key[16];
    snprintf(key, sizeof key, "grad%d", i);
    long n;
    const float *ref = gold(f, c, key, &n, NULL);
    if (!ref) return;
    CHECK(n == ssl_tensor_numel(t), "%s.%s: size", c, key);
    double e = check_rel_err(t->grad, ref, n);
    CHECK(e <= GOLD_GRAD_REL, "%s.%s: max |diff| / max |torch| = %.3g", c, key, e);
    printf("  %-12s %s rel err %.2e\n", c, key, e);
}

static void parity_case(ssl_ctx *ctx, const ssl_st_file *f, const char *c, loss_op op,
                        int n_in, int grad_b, int detach_b)
{
    ssl_tensor a = {0}, b = {0};
    if (!gold_input(f, c, 0, &a) || (n_in > 1 && !gold_input(f, c, 1, &b))) {
        unmk_all(&a, &b, NULL);
        return;
    }
    long nh = 0, ne = 0;
    const float *hp = gold(f, c, "hp", &nh, NULL);
    lcase lc = {.name = c, .op = op, .a = &a, .b = n_in > 1 ? &b : NULL, .detach_b = detach_b};
    if (op == OP_SOFTCE || (op == OP_MOCO && hp && nh > 1 && hp[1] > 0)) {
        lc.extra = gold(f, c, "extra", &ne, NULL);
        if (!lc.extra) {
            unmk_all(&a, &b, NULL);
            return;
        }
    }
    for (long i = 0; i < nh && i < 4; i++) lc.hp[i] = hp[i];
    if (op == OP_MOCO && nh > 1) lc.K = (int)hp[1];
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    float parts[3];
    ctx->err[0] = 0;
    ssl_tensor *y = build(&g, &lc, parts);
    CHECK(y != NULL, "%s: forward failed: %s", c, ctx->err);
    const float *ref = gold(f, c, "loss", NULL, NULL);
    if (y && ref) {
        char what[64];
        snprintf(what, sizeof what, "%s loss", c);
        CHECK_CLOSE(y->data, ref, 1, 1e-7, GOLD_LOSS_RTOL, what);
        printf("  %-12s loss %.7f vs torch %.7f\n", c, (double)y->data[0], (double)ref[0]);
    }
    if (y && op == OP_VICREG && (ref = gold(f, c, "parts", NULL, NULL))) {
        char what[64];
        snprintf(what, sizeof what, "%s parts", c);
        CHECK_CLOSE(parts, ref, 3, 1e-7, GOLD_LOSS_RTOL, what);
    }
    if (y) {
        CHECK(ssl_graph_backward(&g, y) == SSL_OK, "%s: backward: %s", c, ctx->err);
        compare_grad(f, c, 0, &a);
        if (grad_b)
            compare_grad(f, c, 1, &b);
        else if (n_in > 1)
            CHECK(max_abs(b.grad, ssl_tensor_numel(&b)) == 0, "%s: in1 got a gradient", c);
    }
    ssl_graph_free(&g);
    unmk_all(&a, &b, NULL);
}

static void test_parity(ssl_ctx *ctx)
{
    ssl_st_file f;
    if (!golden_load(&f, "losses.safetensors", "gen_losses.py")) return;
    printf("PyTorch parity (loss rtol %g, gradients %g of the largest):\n", GOLD_LOSS_RTOL,
           GOLD_GRAD_REL);
    parity_case(ctx, &f, "cos_byol", OP_COS, 2, 1, 0);
    parity_case(ctx, &f, "cos_simsiam", OP_COS, 2, 0, 1);
    parity_case(ctx, &f, "softce_dino", OP_SOFTCE, 1, 0, 0);
    parity_case(ctx, &f, "softce_swav", OP_SOFTCE, 1, 0, 0);
    parity_case(ctx, &f, "moco", OP_MOCO, 2, 0, 0);
    parity_case(ctx, &f, "moco_k0", OP_MOCO, 2, 0, 0);
    parity_case(ctx, &f, "barlow", OP_BARLOW, 2, 1, 0);
    parity_case(ctx, &f, "barlow_l1", OP_BARLOW, 2, 1, 0);
    parity_case(ctx, &f, "vicreg", OP_VICREG, 2, 1, 0);
    parity_case(ctx, &f, "vicreg_big", OP_VICREG, 2, 1, 0);

    /* GELU: outputs and the gradient of sum(r * gelu(x)) */
    ssl_tensor x;
    long n;
    const float *R = gold(&f, "gelu", "r", &n, NULL), *out = gold(&f, "gelu", "out", NULL, NULL);
    if (R && out && gold_input(&f, "gelu", 0, &x)) {
        ssl_graph g;
        ssl_graph_init(&g, ctx);
        ssl_tensor *y = ssl_op_gelu(&g, &x);
        CHECK(y != NULL, "gelu forward: %s", ctx->err);
        if (y) {
            CHECK_CLOSE(y->data, out, n, 1e-7, 1e-6, "gelu output");
            CHECK(ssl_graph_backward(&g, wsum(&g, y, R)) == SSL_OK, "gelu backward: %s",
                  ctx->err);
            compare_grad(&f, "gelu", 0, &x);
        }
        ssl_graph_free(&g);
        unmk(&x);
    }
    ssl_st_free(&f);
}

/* ------------------------------------------------ arena steady state */

/* Every loss of a step summed; the arena must not grow after the first step. */
static void test_arena(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 9);
    ssl_tensor a = mk(&r, 8, 6, 1.0f, 1), b = mk(&r, 8, 6, 1.0f, 1);
    float queue[10 * 6], tw[8 * 6];
    for (int i = 0; i < 60; i++) queue[i] = ssl_rng_normal(&r);
    softmax_rows(tw, b.data, 8, 6, 0.5f);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    float loss[3] = {0};
    int grows[3] = {0};
    for (int s = 0; s < 3; s++) {
        ssl_graph_reset(&g);
        int before = g.arena.n_grows;
        ssl_tensor *l = ssl_op_add(&g, ssl_op_barlow(&g, &a, &b, 0.005f),
                                   ssl_op_vicreg(&g, &a, &b, 25, 25, 1, 1e-4f, NULL));
        l = ssl_op_add(&g, l, ssl_op_infonce_queue(&g, &a, ssl_op_detach(&g, &b), queue, 10, 0.2f));
        l = ssl_op_add(&g, l, ssl_op_soft_ce(&g, &a, tw, 0.1f));
        l = ssl_op_add(&g, l, ssl_op_cosine_loss(&g, ssl_op_gelu(&g, &a), &b, 2, -2));
        CHECK(l && ssl_graph_backward(&g, l) == SSL_OK, "arena step %d: %s", s, ctx->err);
        loss[s] = l ? l->data[0] : NAN;
        grows[s] = g.arena.n_grows - before;
    }
    CHECK(grows[0] > 0 && grows[1] == 0 && grows[2] == 0 && g.arena.n_extra == 0,
          "arena grew after the first step (%d, %d, %d grows)", grows[0], grows[1], grows[2]);
    CHECK(loss[0] == loss[1] && loss[1] == loss[2] && isfinite(loss[0]),
          "arena: losses %.8g %.8g %.8g differ", loss[0], loss[1], loss[2]);
    printf("  five losses: %.6f x3, arena %zu bytes\n", loss[0], g.arena.cap);
    ssl_graph_free(&g);
    unmk_all(&a, &b, NULL);
}

/* ------------------------------------------------------------ errors */

#define EXPECT_ERR(expr, what)                                                            \
    do {                                                                                  \
        ctx->err[0] = 0;                                                                  \
        ssl_tensor *r_ = (expr);                                                          \
        CHECK(r_ == NULL && ctx->err[0] != 0, "%s: expected NULL and a message", what); \
        if (!r_) printf("  %-32s -> %s\n", what, ctx->err);                             \
    } while (0)

static void test_errors(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 3);
    ssl_tensor m = mk(&r, 5, 4, 1.0f, 1), m2 = mk(&r, 5, 3, 1.0f, 1), m3 = mk(&r, 4, 4, 1.0f, 1);
    ssl_tensor one = mk(&r, 1, 4, 1.0f, 1);
    int s3[3] = {5, 4, 1};
    ssl_tensor t3 = ssl_tensor_wrap(m.data, NULL, 3, s3, SSL_LAYOUT_NCHW);
    float tw[20] = {0}, queue[8] = {0};
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    printf("error paths:\n");
    EXPECT_ERR(ssl_op_cosine_loss(&g, &m, &m2, 2, -2), "cosine width mismatch");
    EXPECT_ERR(ssl_op_cosine_loss(&g, &m, &m3, 2, -2), "cosine batch mismatch");
    EXPECT_ERR(ssl_op_cosine_loss(&g, &t3, &t3, 2, -2), "cosine of a 3-D tensor");
    EXPECT_ERR(ssl_op_soft_ce(&g, &m, NULL, 0.1f), "soft_ce without targets");
    EXPECT_ERR(ssl_op_soft_ce(&g, &m, tw, 0.0f), "soft_ce T = 0");
    EXPECT_ERR(ssl_op_soft_ce(&g, &m, tw, NAN), "soft_ce T NaN");
    EXPECT_ERR(ssl_op_soft_ce(&g, &t3, tw, 1.0f), "soft_ce of a 3-D tensor");
    EXPECT_ERR(ssl_op_infonce_queue(&g, &m, &m2, queue, 2, 0.2f), "infonce q/k mismatch");
    EXPECT_ERR(ssl_op_infonce_queue(&g, &m, &m, NULL, 2, 0.2f), "infonce K > 0 without queue");
    EXPECT_ERR(ssl_op_infonce_queue(&g, &m, &m, queue, -1, 0.2f), "infonce K < 0");
    EXPECT_ERR(ssl_op_infonce_queue(&g, &m, &m, queue, 2, -0.2f), "infonce T < 0");
    EXPECT_ERR(ssl_op_barlow(&g, &m, &m2, 0.005f), "barlow width mismatch");
    EXPECT_ERR(ssl_op_barlow(&g, &one, &one, 0.005f), "barlow N = 1");
    EXPECT_ERR(ssl_op_vicreg(&g, &m, &m3, 25, 25, 1, 1e-4f, NULL), "vicreg batch mismatch");
    EXPECT_ERR(ssl_op_vicreg(&g, &one, &one, 25, 25, 1, 1e-4f, NULL), "vicreg N = 1");
    EXPECT_ERR(ssl_op_vicreg(&g, &m, &m, 25, 25, 1, -1.0f, NULL), "vicreg eps < 0");
    /* NULL inputs propagate without a new message */
    ctx->err[0] = 0;
    CHECK(!ssl_op_scale(&g, NULL, 1) && !ssl_op_gelu(&g, NULL) &&
              !ssl_op_cosine_loss(&g, NULL, &m, 2, -2) && !ssl_op_soft_ce(&g, NULL, tw, 1) &&
              !ssl_op_infonce_queue(&g, &m, NULL, queue, 1, 1) &&
              !ssl_op_barlow(&g, &m, NULL, 1) && !ssl_op_vicreg(&g, NULL, &m, 1, 1, 1, 0, NULL) &&
              ctx->err[0] == 0,
          "NULL inputs must give NULL without a message");
    /* K = 0 needs no queue */
    ssl_tensor *y = ssl_op_infonce_queue(&g, &m, &m, NULL, 0, 0.2f);
    CHECK(y && y->data[0] == 0.0f, "infonce K = 0 without a queue: loss %g",
          y ? y->data[0] : NAN);
    ssl_graph_free(&g);
    unmk_all(&m, &m2, &m3, &one, NULL);
}

int main(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    printf("stop-gradient:\n");
    test_detach(&ctx);
    test_cosine_zero_row(&ctx);
    test_elementwise_threads(&ctx);
    test_finite_differences(&ctx);
    test_parity(&ctx);
    printf("arena:\n");
    test_arena(&ctx);
    test_errors(&ctx);
    ssl_ctx_free(&ctx);
    return check_report("test_losses");
}
