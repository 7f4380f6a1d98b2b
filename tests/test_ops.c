/* The op layer and autograd: every entry of the "cpu" backend against the
 * "ref" backend in both layouts and on odd shapes; every graph op's backward
 * against finite differences on both backends; the arena stops growing after
 * the first step of a small ResNet + MLP + NT-Xent; shape errors. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "nn/graph_internal.h" /* ssl_graph_record for a test-only op */
#include "selfsup/graph.h"
#include "selfsup/nn.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* cpu vs ref: BLAS sums in float, the reference in double. */
#define BE_TOL 1e-4
/* Finite differences in float with eps 1e-3. */
#define FD_EPS 1e-3f
#define FD_TOL 1e-2

/* ------------------------------------------------------------------ helpers */

/* free(a); free(b); ... up to a NULL. */
static void free_all(void *p, ...)
{
    va_list ap;
    va_start(ap, p);
    for (; p; p = va_arg(ap, void *)) free(p);
    va_end(ap);
}

static float *rnd(ssl_rng *r, long n, float scale)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (long i = 0; i < n; i++) p[i] = scale * ssl_rng_normal(r);
    return p;
}

static float *dup(const float *p, long n)
{
    float *q = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    memcpy(q, p, sizeof(float) * (size_t)n);
    return q;
}

/* Filled with NaN so that an output an op forgets to write shows up. */
static float *nans(long n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (long i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* src (N, C, HW) in layout `from` -> dst in layout `to` */
static void relayout(float *dst, ssl_layout to, const float *src, ssl_layout from, int N, int C,
                     int HW)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                long cn = ((long)c * N + n) * HW + i, nc = ((long)n * C + c) * HW + i;
                dst[to == SSL_LAYOUT_CNHW ? cn : nc] = src[from == SSL_LAYOUT_CNHW ? cn : nc];
            }
}

/* A copy of src (N, C, HW) NCHW in layout l. */
static float *in_layout(const float *src, ssl_layout l, int N, int C, int HW)
{
    float *p = malloc(sizeof(float) * (size_t)N * C * HW);
    relayout(p, l, src, SSL_LAYOUT_NCHW, N, C, HW);
    return p;
}


static double maxd(double a, double b) { return a > b || isnan(a) ? a : b; }

/* Checks a against b within BE_TOL; *worst keeps the largest error. */
__attribute__((format(printf, 5, 6))) static void cmp(double *worst, const float *a,
                                                      const float *b, long n, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    double e = check_rel_err(a, b, n);
    CHECK(e <= BE_TOL, "%s: relative error %.3g > %.3g", what, e, BE_TOL);
    *worst = maxd(*worst, e);
}

static const char *lname(ssl_layout l) { return l == SSL_LAYOUT_CNHW ? "CNHW" : "NCHW"; }

/* ------------------------------------------------ part 1: cpu vs reference */

static void test_conv(ssl_ctx *ctx, ssl_rng *rng, int N, int C, int H, int W, int K, int R,
                      int stride, int pad)
{
    const ssl_backend *be[2] = {ssl_backend_ref(), ssl_backend_cpu()};
    ssl_conv_desc d = {N, C, H, W, K, R, R, stride, pad,
                       ssl_conv_out_size(H, R, stride, pad), ssl_conv_out_size(W, R, stride, pad),
                       SSL_LAYOUT_NCHW};
    const int HW = H * W, OHW = d.OH * d.OW;
    const long nx = (long)N * C * HW, nw = (long)K * C * R * R, ny = (long)N * K * OHW;
    float *x = rnd(rng, nx, 1.0f), *w = rnd(rng, nw, 0.3f), *dy = rnd(rng, ny, 1.0f);
    float *dx0 = rnd(rng, nx, 1.0f), *dw0 = rnd(rng, nw, 1.0f); /* backward accumulates */
    float *y[2][2], *dx[2][2], *dw[2][2];
    double e = 0;
    for (int l = 0; l < 2; l++) {
        float *xl = in_layout(x, l, N, C, HW), *dyl = in_layout(dy, l, N, K, OHW);
        float *dx0l = in_layout(dx0, l, N, C, HW);
        d.layout = (ssl_layout)l;
        for (int b = 0; b < 2; b++) {
            y[b][l] = nans(ny);
            be[b]->conv2d_fwd(ctx, y[b][l], xl, w, &d);
            dx[b][l] = dup(dx0l, nx);
            dw[b][l] = dup(dw0, nw);
            be[b]->conv2d_bwd(ctx, dx[b][l], dw[b][l], dyl, xl, w, &d);
        }
        const char *f = "conv N%d C%d %dx%d K%d %dx%d/%d p%d %s %s";
        cmp(&e, y[1][l], y[0][l], ny, f, N, C, H, W, K, R, R, stride, pad, lname(l), "fwd");
        cmp(&e, dx[1][l], dx[0][l], nx, f, N, C, H, W, K, R, R, stride, pad, lname(l), "dx");
        cmp(&e, dw[1][l], dw[0][l], nw, f, N, C, H, W, K, R, R, stride, pad, lname(l), "dw");
        float *dwn = dup(dw0, nw); /* dx may be NULL: only dw accumulates */
        be[1]->conv2d_bwd(ctx, NULL, dwn, dyl, xl, w, &d);
        cmp(&e, dwn, dw[0][l], nw, f, N, C, H, W, K, R, R, stride, pad, lname(l), "dw, dx NULL");
        free_all(dwn, xl, dyl, dx0l, NULL);
    }
    /* CNHW results relaid to NCHW equal the NCHW results */
    float *t = malloc(sizeof(float) * (size_t)(nx > ny ? nx : ny));
    for (int b = 0; b < 2; b++) {
        relayout(t, SSL_LAYOUT_NCHW, y[b][1], SSL_LAYOUT_CNHW, N, K, OHW);
        cmp(&e, t, y[b][0], ny, "conv %s %dx%d/%d CNHW vs NCHW fwd", be[b]->name, R, R, stride);
        relayout(t, SSL_LAYOUT_NCHW, dx[b][1], SSL_LAYOUT_CNHW, N, C, HW);
        cmp(&e, t, dx[b][0], nx, "conv %s %dx%d/%d CNHW vs NCHW dx", be[b]->name, R, R, stride);
        cmp(&e, dw[b][1], dw[b][0], nw, "conv %s %dx%d/%d CNHW vs NCHW dw", be[b]->name, R, R,
            stride);
    }
    printf("  conv N=%-2d C=%d %2dx%-2d K=%d %dx%d/%d pad %d: max rel err %.2e\n", N, C, H, W, K,
           R, R, stride, pad, e);
    free(t);
    for (int b = 0; b < 2; b++)
        for (int l = 0; l < 2; l++) free_all(y[b][l], dx[b][l], dw[b][l], NULL);
    free_all(x, w, dy, dx0, dw0, NULL);
}

/* Batch norm: cpu vs ref, both layouts, train and eval, and the reference
 * against the PyTorch rule written out in double. */
static void test_bn(ssl_ctx *ctx, ssl_rng *rng, int N, int C, int HW)
{
    const ssl_backend *be[2] = {ssl_backend_ref(), ssl_backend_cpu()};
    const long nx = (long)N * C * HW, m = (long)N * HW;
    const float mom = 0.1f, eps = 1e-5f;
    float *x = rnd(rng, nx, 2.0f), *dy = rnd(rng, nx, 1.0f), *dx0 = rnd(rng, nx, 1.0f);
    float *gamma = rnd(rng, C, 1.0f), *beta = rnd(rng, C, 1.0f), *rm0 = rnd(rng, C, 1.0f);
    float *dg0 = rnd(rng, C, 1.0f), *db0 = rnd(rng, C, 1.0f);
    float *rv0 = malloc(sizeof(float) * C);
    for (int c = 0; c < C; c++) rv0[c] = 0.5f + ssl_rng_uniform(rng);
    for (long i = 0; i < nx; i++) x[i] += 3.0f; /* a mean far from 0 */
    double e = 0;
    for (int training = 1; training >= 0; training--) {
        float *out[2][2][8]; /* backend, layout: y mean invstd rm rv dx dg db */
        for (int l = 0; l < 2; l++) {
            float *xl = in_layout(x, l, N, C, HW), *dyl = in_layout(dy, l, N, C, HW);
            float *dx0l = in_layout(dx0, l, N, C, HW);
            for (int b = 0; b < 2; b++) {
                float **o = out[b][l];
                o[0] = nans(nx);
                o[1] = nans(C);
                o[2] = nans(C);
                o[3] = dup(rm0, C);
                o[4] = dup(rv0, C);
                be[b]->bn_fwd(ctx, o[0], o[1], o[2], xl, NULL, gamma, beta, o[3], o[4],
                              training, mom, eps, 0, N, C, HW, l);
                o[5] = dup(dx0l, nx);
                o[6] = dup(dg0, C);
                o[7] = dup(db0, C);
                be[b]->bn_bwd(ctx, o[5], NULL, o[6], o[7], dyl, NULL, xl, o[1], o[2], gamma,
                              training, 0, N, C, HW, l);
            }
            static const char *names[8] = {"y", "mean", "invstd", "running_mean",
                                           "running_var", "dx", "dgamma", "dbeta"};
            for (int k = 0; k < 8; k++) {
                long n = (k == 0 || k == 5) ? nx : C;
                cmp(&e, out[1][l][k], out[0][l][k], n, "bn %s %s N%d C%d HW%d %s",
                    training ? "train" : "eval", names[k], N, C, HW, lname(l));
            }
            free_all(xl, dyl, dx0l, NULL);
        }
        /* layouts agree */
        float *t = malloc(sizeof(float) * nx);
        for (int b = 0; b < 2; b++) {
            for (int k = 0; k < 8; k++) {
                long n = (k == 0 || k == 5) ? nx : C;
                const float *a = out[b][1][k];
                if (n == nx) {
                    relayout(t, SSL_LAYOUT_NCHW, a, SSL_LAYOUT_CNHW, N, C, HW);
                    a = t;
                }
                cmp(&e, a, out[b][0][k], n, "bn %s %s CNHW vs NCHW output %d", be[b]->name,
                    training ? "train" : "eval", k);
            }
        }
        /* the reference against PyTorch's rule, in double (FD checks the backward) */
        float *ey = malloc(sizeof(float) * nx), *erm = dup(rm0, C), *erv = dup(rv0, C);
        for (int c = 0; c < C; c++) {
            double mu = 0, var = 0;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) mu += x[((long)n * C + c) * HW + i] / (double)m;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) var += pow(x[((long)n * C + c) * HW + i] - mu, 2);
            if (training) { /* running variance unbiased, normalization biased */
                erm[c] = (float)((1 - mom) * rm0[c] + mom * mu);
                erv[c] = (float)((1 - mom) * rv0[c] + mom * var / (m - 1));
                var /= m;
            } else {
                mu = rm0[c];
                var = rv0[c];
            }
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) {
                    long j = ((long)n * C + c) * HW + i;
                    ey[j] = (float)((x[j] - mu) / sqrt(var + eps) * gamma[c] + beta[c]);
                }
        }
        const char *mode = training ? "train" : "eval";
        cmp(&e, out[0][0][0], ey, nx, "bn ref %s y vs formula", mode);
        cmp(&e, out[0][0][3], erm, C, "bn ref %s running_mean vs PyTorch rule", mode);
        cmp(&e, out[0][0][4], erv, C, "bn ref %s running_var vs PyTorch rule", mode);
        free_all(ey, erm, erv, t, NULL);
        for (int b = 0; b < 2; b++)
            for (int l = 0; l < 2; l++)
                for (int k = 0; k < 8; k++) free(out[b][l][k]);
    }
    printf("  batchnorm N=%d C=%d HW=%d train+eval: max rel err %.2e\n", N, C, HW, e);
    free_all(x, dy, dx0, gamma, beta, dg0, db0, rm0, rv0, NULL);
}

/* Batch norm fused with a residual sum and a ReLU, on each backend and
 * layout, against the composition of the reference's plain pieces:
 * y = relu(bn(x) + skip); dz = dy * (y > 0); dskip = dz; dx = bn_bwd(dz). */
static void test_bn_fused(ssl_ctx *ctx, ssl_rng *rng, int N, int C, int HW)
{
    const ssl_backend *be[2] = {ssl_backend_ref(), ssl_backend_cpu()};
    const ssl_backend *ref = be[0];
    const long nx = (long)N * C * HW;
    float *x = rnd(rng, nx, 2.0f), *dy = rnd(rng, nx, 1.0f), *skip = rnd(rng, nx, 1.0f);
    float *gamma = rnd(rng, C, 1.0f), *beta = rnd(rng, C, 1.0f);
    double e = 0;
    for (int training = 1; training >= 0; training--)
        for (int v = 0; v < 4; v++) {
            int has_skip = v & 1, relu = v >> 1;
            for (int l = 0; l < 2; l++) {
                float *xl = in_layout(x, l, N, C, HW), *dyl = in_layout(dy, l, N, C, HW);
                float *sl = in_layout(skip, l, N, C, HW);
                /* the composition, from the reference's unfused pieces */
                float *ey = nans(nx), *em = nans(C), *ei = nans(C), *rm = rnd(rng, C, 1.0f);
                float *rv = malloc(sizeof(float) * C);
                for (int c = 0; c < C; c++) rv[c] = 0.5f + ssl_rng_uniform(rng);
                float *rm1 = dup(rm, C), *rv1 = dup(rv, C);
                ref->bn_fwd(ctx, ey, em, ei, xl, NULL, gamma, beta, rm1, rv1, training, 0.1f,
                            1e-5f, 0, N, C, HW, l);
                float *dz = dup(dyl, nx), *edskip = calloc(nx, sizeof(float));
                for (long i = 0; i < nx; i++) {
                    if (has_skip) ey[i] += sl[i];
                    if (relu && !(ey[i] > 0.0f)) { ey[i] = 0.0f; dz[i] = 0.0f; }
                    edskip[i] = dz[i];
                }
                float *edx = calloc(nx, sizeof(float)), *edg = calloc(C, sizeof(float)),
                      *edb = calloc(C, sizeof(float));
                ref->bn_bwd(ctx, edx, NULL, edg, edb, dz, NULL, xl, em, ei, gamma, training, 0, N,
                            C, HW, l);
                for (int b = 0; b < 2; b++) {
                    float *y = nans(nx), *mean = nans(C), *inv = nans(C), *rm2 = dup(rm, C),
                          *rv2 = dup(rv, C);
                    float *dx = calloc(nx, sizeof(float)), *ds = calloc(nx, sizeof(float));
                    float *dg = calloc(C, sizeof(float)), *db = calloc(C, sizeof(float));
                    be[b]->bn_fwd(ctx, y, mean, inv, xl, has_skip ? sl : NULL, gamma, beta, rm2,
                                  rv2, training, 0.1f, 1e-5f, relu, N, C, HW, l);
                    be[b]->bn_bwd(ctx, dx, has_skip ? ds : NULL, dg, db, dyl, y, xl, mean, inv,
                                  gamma, training, relu, N, C, HW, l);
                    const char *tag = be[b]->name;
                    cmp(&e, y, ey, nx, "bn_act %s skip %d relu %d train %d y %s", tag, has_skip,
                        relu, training, lname(l));
                    cmp(&e, rm2, rm1, C, "bn_act %s running mean", tag);
                    cmp(&e, rv2, rv1, C, "bn_act %s running var", tag);
                    cmp(&e, dx, edx, nx, "bn_act %s skip %d relu %d train %d dx %s", tag, has_skip,
                        relu, training, lname(l));
                    if (has_skip)
                        cmp(&e, ds, edskip, nx, "bn_act %s relu %d dskip %s", tag, relu, lname(l));
                    cmp(&e, dg, edg, C, "bn_act %s dgamma", tag);
                    cmp(&e, db, edb, C, "bn_act %s dbeta", tag);
                    /* dx alone (no dskip, no dgamma) gives the same dx */
                    float *dx2 = calloc(nx, sizeof(float));
                    be[b]->bn_bwd(ctx, dx2, NULL, NULL, NULL, dyl, y, xl, mean, inv, gamma,
                                  training, relu, N, C, HW, l);
                    cmp(&e, dx2, edx, nx, "bn_act %s dx without dskip/dgamma", tag);
                    free_all(y, mean, inv, rm2, rv2, dx, ds, dg, db, dx2, NULL);
                }
                free_all(xl, dyl, sl, ey, em, ei, rm, rv, rm1, rv1, dz, edskip, edx, edg, edb, NULL);
            }
        }
    printf("  batchnorm+add+relu N=%d C=%d HW=%d: max rel err %.2e\n", N, C, HW, e);
    free_all(x, dy, skip, gamma, beta, NULL);
}

static void test_relu(ssl_ctx *ctx, ssl_rng *rng, long n)
{
    const ssl_backend *be[2] = {ssl_backend_ref(), ssl_backend_cpu()};
    float *x = rnd(rng, n, 1.0f), *dy = rnd(rng, n, 1.0f), *dx0 = rnd(rng, n, 1.0f);
    for (long i = 0; i < n; i += 7) x[i] = 0.0f; /* ReLU'(0) = 0, as PyTorch */
    float *y[2], *dx[2];
    for (int b = 0; b < 2; b++) {
        y[b] = nans(n);
        be[b]->relu_fwd(ctx, y[b], x, n);
        dx[b] = dup(dx0, n);
        be[b]->relu_bwd(ctx, dx[b], dy, y[b], n);
    }
    int bad = 0;
    for (long i = 0; i < n; i++) {
        float ey = x[i] > 0 ? x[i] : 0.0f, edx = dx0[i] + (x[i] > 0 ? dy[i] : 0.0f);
        for (int b = 0; b < 2; b++) bad += y[b][i] != ey || dx[b][i] != edx;
    }
    CHECK(bad == 0, "relu: %d values differ from max(x, 0) or its gradient", bad);
    printf("  relu n=%ld: %d mismatches\n", n, bad);
    for (int b = 0; b < 2; b++) {
        free_all(y[b], dx[b], NULL);
    }
    free_all(x, dy, dx0, NULL);
}

static void test_pool(ssl_ctx *ctx, ssl_rng *rng, int N, int C, int H, int W, int k, int stride,
                      int pad)
{
    const ssl_backend *be[2] = {ssl_backend_ref(), ssl_backend_cpu()};
    ssl_pool_desc d = {N, C, H, W, k, stride, pad, ssl_conv_out_size(H, k, stride, pad),
                       ssl_conv_out_size(W, k, stride, pad), SSL_LAYOUT_NCHW};
    const int HW = H * W, OHW = d.OH * d.OW;
    const long nx = (long)N * C * HW, ny = (long)N * C * OHW;
    float *x = rnd(rng, nx, 1.0f), *dy = rnd(rng, ny, 1.0f), *dx0 = rnd(rng, nx, 1.0f);
    float *r[2][2][4]; /* backend, layout: max y, max dx, avg y, avg dx */
    int32_t *arg[2][2];
    double e = 0;
    for (int l = 0; l < 2; l++) {
        float *xl = in_layout(x, l, N, C, HW), *dyl = in_layout(dy, l, N, C, OHW);
        float *dx0l = in_layout(dx0, l, N, C, HW);
        d.layout = (ssl_layout)l;
        for (int b = 0; b < 2; b++) {
            float **o = r[b][l];
            o[0] = nans(ny);
            arg[b][l] = malloc(sizeof(int32_t) * ny);
            be[b]->maxpool_fwd(ctx, o[0], arg[b][l], xl, &d);
            o[1] = dup(dx0l, nx);
            be[b]->maxpool_bwd(ctx, o[1], dyl, arg[b][l], &d);
            o[2] = nans(ny);
            be[b]->avgpool_fwd(ctx, o[2], xl, &d);
            o[3] = dup(dx0l, nx);
            be[b]->avgpool_bwd(ctx, o[3], dyl, &d);
        }
        static const char *names[4] = {"maxpool y", "maxpool dx", "avgpool y", "avgpool dx"};
        for (int q = 0; q < 4; q++) {
            cmp(&e, r[1][l][q], r[0][l][q], q & 1 ? nx : ny, "%s k%d/%d p%d %s", names[q], k,
                stride, pad, lname(l));
        }
        CHECK(!memcmp(arg[1][l], arg[0][l], sizeof(int32_t) * ny), "maxpool argmax cpu != ref");
        free_all(xl, dyl, dx0l, NULL);
    }
    float *t = malloc(sizeof(float) * nx);
    for (int b = 0; b < 2; b++)
        for (int q = 0; q < 4; q++) {
            relayout(t, SSL_LAYOUT_NCHW, r[b][1][q], SSL_LAYOUT_CNHW, N, C, q & 1 ? HW : OHW);
            cmp(&e, t, r[b][0][q], q & 1 ? nx : ny, "pool %s output %d k%d/%d CNHW vs NCHW",
                be[b]->name, q, k, stride);
        }
    /* the NCHW reference against the definition */
    long bad = 0;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int oh = 0; oh < d.OH; oh++)
                for (int ow = 0; ow < d.OW; ow++) {
                    double mx = -INFINITY, s = 0;
                    for (int i = 0; i < k; i++)
                        for (int j = 0; j < k; j++) {
                            int ih = oh * stride - pad + i, iw = ow * stride - pad + j;
                            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                            double v = x[((long)n * C + c) * HW + ih * W + iw];
                            s += v;
                            if (v > mx) mx = v;
                        }
                    long o = ((long)n * C + c) * OHW + oh * d.OW + ow;
                    bad += r[0][0][0][o] != (float)mx;
                    bad += fabs(r[0][0][2][o] - s / (k * k)) > 1e-5;
                }
    CHECK(bad == 0, "pool k%d/%d p%d: %ld outputs differ from the definition", k, stride, pad, bad);
    printf("  max/avgpool N=%d C=%d %dx%d k%d/%d pad %d: max rel err %.2e\n", N, C, H, W, k,
           stride, pad, e);
    free(t);
    for (int b = 0; b < 2; b++)
        for (int l = 0; l < 2; l++) {
            for (int q = 0; q < 4; q++) free(r[b][l][q]);
            free(arg[b][l]);
        }
    free_all(x, dy, dx0, NULL);
}

static void test_gap(ssl_ctx *ctx, ssl_rng *rng, int N, int C, int HW)
{
    const ssl_backend *be[2] = {ssl_backend_ref(), ssl_backend_cpu()};
    const long nx = (long)N * C * HW, ny = (long)N * C;
    float *x = rnd(rng, nx, 1.0f), *dy = rnd(rng, ny, 1.0f), *dx0 = rnd(rng, nx, 1.0f);
    float *ey = malloc(sizeof(float) * ny), *edx = malloc(sizeof(float) * nx);
    for (long i = 0; i < ny; i++) { /* the definition, NCHW */
        double s = 0;
        for (int j = 0; j < HW; j++) s += x[i * HW + j];
        ey[i] = (float)(s / HW);
        for (int j = 0; j < HW; j++) edx[i * HW + j] = dx0[i * HW + j] + dy[i] / HW;
    }
    double e = 0;
    for (int l = 0; l < 2; l++) {
        float *xl = in_layout(x, l, N, C, HW), *dxl = in_layout(dx0, l, N, C, HW);
        float *y = nans(ny), *t = malloc(sizeof(float) * nx);
        for (int b = 0; b < 2; b++) {
            be[b]->gap_fwd(ctx, y, xl, N, C, HW, l);
            be[b]->gap_bwd(ctx, dxl, dy, N, C, HW, l);
            relayout(t, SSL_LAYOUT_NCHW, dxl, l, N, C, HW);
            cmp(&e, y, ey, ny, "gap %s %s y", be[b]->name, lname(l));
            cmp(&e, t, edx, nx, "gap %s %s dx", be[b]->name, lname(l));
            relayout(dxl, l, dx0, SSL_LAYOUT_NCHW, N, C, HW); /* fresh for the next backend */
        }
        free_all(xl, dxl, y, t, NULL);
    }
    printf("  global avgpool N=%d C=%d HW=%d: max rel err %.2e\n", N, C, HW, e);
    free_all(x, dy, dx0, ey, edx, NULL);
}

static void test_linear(ssl_ctx *ctx, ssl_rng *rng, int N, int I, int O)
{
    const ssl_backend *be[2] = {ssl_backend_ref(), ssl_backend_cpu()};
    float *x = rnd(rng, (long)N * I, 1.0f), *w = rnd(rng, (long)O * I, 0.5f);
    float *bias = rnd(rng, O, 1.0f);
    float *dy = rnd(rng, (long)N * O, 1.0f), *dx0 = rnd(rng, (long)N * I, 1.0f);
    float *dw0 = rnd(rng, (long)O * I, 1.0f), *db0 = rnd(rng, O, 1.0f);
    double e = 0;
    for (int with_b = 0; with_b < 2; with_b++) {
        float *r[2][4];
        for (int b = 0; b < 2; b++) {
            r[b][0] = nans((long)N * O);
            be[b]->linear_fwd(ctx, r[b][0], x, w, with_b ? bias : NULL, N, I, O);
            r[b][1] = dup(dx0, (long)N * I);
            r[b][2] = dup(dw0, (long)O * I);
            r[b][3] = dup(db0, O);
            /* without bias: dx and db NULL too, the frozen-input path */
            be[b]->linear_bwd(ctx, with_b ? r[b][1] : NULL, r[b][2], with_b ? r[b][3] : NULL, dy,
                              x, w, N, I, O);
        }
        long n[4] = {(long)N * O, (long)N * I, (long)O * I, O};
        for (int q = 0; q < 4; q++) {
            cmp(&e, r[1][q], r[0][q], n[q], "linear N%d I%d O%d bias %d output %d", N, I, O,
                with_b, q);
        }
        if (!with_b) {
            CHECK(!memcmp(r[1][1], dx0, sizeof(float) * N * I), "linear: dx changed though NULL");
            CHECK(!memcmp(r[1][3], db0, sizeof(float) * O), "linear: db changed though NULL");
        }
        for (int b = 0; b < 2; b++)
            for (int q = 0; q < 4; q++) free(r[b][q]);
    }
    printf("  linear N=%d I=%d O=%d: max rel err %.2e\n", N, I, O, e);
    free_all(x, w, bias, dy, dx0, dw0, db0, NULL);
}

static void test_backends(ssl_ctx *ctx)
{
    ssl_rng rng;
    ssl_rng_seed(&rng, 11);
    printf("cpu vs ref backend:\n");
    test_conv(ctx, &rng, 3, 5, 7, 9, 6, 3, 2, 1);  /* odd everything */
    test_conv(ctx, &rng, 3, 5, 7, 9, 6, 3, 1, 1);
    test_conv(ctx, &rng, 3, 5, 7, 9, 6, 1, 1, 0);  /* pointwise path */
    test_conv(ctx, &rng, 3, 5, 7, 9, 6, 1, 2, 0);  /* 1x1 stride 2: im2col */
    test_conv(ctx, &rng, 3, 2, 11, 13, 4, 7, 2, 3); /* ImageNet stem */
    test_conv(ctx, &rng, 11, 3, 5, 6, 4, 3, 1, 1); /* CNHW chunks of 2, last of 1 */
    test_conv(ctx, &rng, 11, 3, 5, 6, 4, 1, 1, 0);
    test_conv(ctx, &rng, 1, 3, 4, 4, 2, 3, 1, 1);  /* fewer images than threads */
    /* tiny planes, 8+ images: one GEMM (smallconv.c) where in x out pixels
     * <= 16, else Winograd or im2col */
    test_conv(ctx, &rng, 9, 5, 2, 2, 6, 3, 1, 1);
    test_conv(ctx, &rng, 8, 3, 2, 1, 5, 3, 1, 1);
    test_conv(ctx, &rng, 11, 6, 1, 1, 3, 3, 1, 1);  /* only the centre tap */
    test_conv(ctx, &rng, 9, 4, 2, 2, 3, 3, 2, 1);   /* stride 2: 2x2 -> 1x1 */
    test_conv(ctx, &rng, 8, 2, 3, 3, 3, 3, 1, 0);   /* no padding: 3x3 -> 1x1 */
    test_conv(ctx, &rng, 10, 4, 3, 3, 7, 3, 1, 1);  /* 81 > 16: not the GEMM */
    test_conv(ctx, &rng, 9, 5, 3, 3, 4, 3, 2, 1);
    test_conv(ctx, &rng, 7, 5, 2, 2, 6, 3, 1, 1);   /* 7 images: not the GEMM */
    test_bn(ctx, &rng, 3, 5, 63);
    test_bn(ctx, &rng, 7, 3, 1); /* the (N, C) case of MLP heads */
    test_bn_fused(ctx, &rng, 3, 5, 63);
    test_bn_fused(ctx, &rng, 5, 2, 1);
    test_bn_fused(ctx, &rng, 6, 3, 400); /* a channel of 2400 values */
    test_bn_fused(ctx, &rng, 19, 3, 5);  /* backward: 2 groups of 8 images + 3 */
    test_bn(ctx, &rng, 9, 150, 1);       /* heads: column blocks of 64, 64, 22 */
    test_bn_fused(ctx, &rng, 9, 150, 1);
    test_relu(ctx, &rng, 1001);
    test_pool(ctx, &rng, 3, 5, 7, 9, 3, 2, 1);
    test_pool(ctx, &rng, 3, 5, 7, 9, 2, 2, 0);
    test_pool(ctx, &rng, 2, 3, 5, 5, 3, 1, 1);
    test_gap(ctx, &rng, 3, 5, 63);
    test_linear(ctx, &rng, 7, 13, 5);
    test_linear(ctx, &rng, 1, 4, 3);
    test_linear(ctx, &rng, 33, 9, 530); /* bias gradient: more than one block of 256 columns per thread */
}

/* ------------------------------------------ part 2: finite differences */

/* loss = sum(x * R) as a node on the public tape, so ssl_graph_backward runs
 * unchanged; *value gets the sum in double for the differences. */
static void wsum_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    const float *R = n->attr;
    float s = n->out->grad[0];
    long m = ssl_tensor_numel(x);
    for (long i = 0; i < m; i++) x->grad[i] += s * R[i];
}

static ssl_tensor *op_wsum(ssl_graph *g, ssl_tensor *x, const float *R, double *value)
{
    if (!x) return NULL;
    int one = 1;
    ssl_tensor *y = ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    double s = 0;
    for (long i = 0; i < ssl_tensor_numel(x); i++) s += (double)x->data[i] * R[i];
    *value = s;
    y->data[0] = (float)s;
    int fail;
    ssl_node *n = ssl_graph_record(g, wsum_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->attr = (void *)R;
    return y;
}

typedef enum fd_op {
    FD_CONV, FD_BN, FD_BN_ACT, FD_RELU, FD_MAXPOOL, FD_AVGPOOL, FD_GAP, FD_LINEAR, FD_ADD, FD_CONCAT,
    FD_SLICE, FD_L2N, FD_MATMUL, FD_CE, FD_NTXENT, FD_TO_LAYOUT, FD_CHAIN
} fd_op;

/* One op under test: its inputs (persistent, with grads) and attributes. */
typedef struct fd_case {
    const char *name;
    fd_op op;
    ssl_tensor *a, *b, *c; /* inputs; b may alias a */
    ssl_bn_layer *bn;
    int k, stride, pad, flag; /* flag: trans_b, target layout, slice start */
    float temp;
    const int32_t *labels;
    ssl_tensor *vars[5]; /* what the gradient is checked for, NULL-terminated */
} fd_case;

static ssl_tensor *fd_build(ssl_graph *g, const fd_case *c)
{
    switch (c->op) {
    case FD_CONV: return ssl_op_conv2d(g, c->a, c->b, c->stride, c->pad);
    case FD_BN: return ssl_op_batchnorm(g, c->a, c->bn);
    case FD_BN_ACT: return ssl_op_bn_act(g, c->a, c->bn, c->b, c->flag);
    case FD_RELU: return ssl_op_relu(g, c->a);
    case FD_MAXPOOL: return ssl_op_maxpool(g, c->a, c->k, c->stride, c->pad);
    case FD_AVGPOOL: return ssl_op_avgpool(g, c->a, c->k, c->stride, c->pad);
    case FD_GAP: return ssl_op_global_avgpool(g, c->a);
    case FD_LINEAR: return ssl_op_linear(g, c->a, c->b, c->c);
    case FD_ADD: return ssl_op_add(g, c->a, c->b);
    case FD_CONCAT: return ssl_op_concat_batch(g, c->a, c->b);
    case FD_SLICE: return ssl_op_slice_batch(g, c->a, c->flag, c->k);
    case FD_L2N: return ssl_op_l2normalize(g, c->a);
    case FD_MATMUL: return ssl_op_matmul(g, c->a, c->b, c->flag);
    case FD_CE: return ssl_op_softmax_ce(g, c->a, c->labels);
    case FD_NTXENT:
        return ssl_op_ntxent(g, c->flag ? ssl_op_l2normalize(g, c->a) : c->a, c->temp);
    case FD_TO_LAYOUT: return ssl_op_to_layout(g, c->a, (ssl_layout)c->flag);
    case FD_CHAIN: { /* NCHW input -> CNHW conv, BN, avg-pool, global pool, linear */
        ssl_tensor *h = ssl_op_to_layout(g, c->a, SSL_LAYOUT_CNHW);
        h = ssl_op_batchnorm(g, ssl_op_conv2d(g, h, c->b, 1, 1), c->bn);
        h = ssl_op_global_avgpool(g, ssl_op_avgpool(g, h, 2, 2, 0));
        return ssl_op_linear(g, h, c->c, NULL);
    }
    }
    return NULL;
}

static double fd_loss(ssl_graph *g, const fd_case *c, const float *R, long nR)
{
    double v = NAN;
    ssl_graph_reset(g);
    ssl_tensor *out = fd_build(g, c);
    if (!out || ssl_tensor_numel(out) != nR || !op_wsum(g, out, R, &v)) return NAN;
    return v;
}

/* Analytic gradients of sum(out * R) against central differences, for every
 * element of small tensors and 40 spread elements of larger ones. */
static void fd_check(ssl_ctx *ctx, const ssl_backend *be, const fd_case *c, int training,
                     ssl_rng *rng)
{
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.be = be;
    g.training = training;
    int n_vars = 0;
    while (n_vars < 5 && c->vars[n_vars]) n_vars++;
    for (int v = 0; v < n_vars; v++)
        memset(c->vars[v]->grad, 0, sizeof(float) * ssl_tensor_numel(c->vars[v]));
    ctx->err[0] = 0;
    ssl_tensor *out = fd_build(&g, c);
    CHECK(out != NULL, "fd %s: forward failed: %s", c->name, ctx->err);
    if (!out) {
        ssl_graph_free(&g);
        return;
    }
    long nR = ssl_tensor_numel(out);
    float *R = rnd(rng, nR, 1.0f);
    double L;
    ssl_tensor *loss = op_wsum(&g, out, R, &L);
    int rc = ssl_graph_backward(&g, loss);
    CHECK(rc == SSL_OK, "fd %s: backward failed: %s", c->name, ctx->err);
    double worst = 0;
    for (int v = 0; v < n_vars; v++) {
        ssl_tensor *t = c->vars[v];
        long n = ssl_tensor_numel(t);
        float *ana = dup(t->grad, n);
        double scale = 0, err = 0;
        long step = n <= 60 ? 1 : n / 40;
        for (long i = 0; i < n; i += step) {
            float x0 = t->data[i];
            t->data[i] = x0 + FD_EPS;
            double hp = (double)t->data[i] - x0, lp = fd_loss(&g, c, R, nR);
            t->data[i] = x0 - FD_EPS;
            double hm = x0 - (double)t->data[i], lm = fd_loss(&g, c, R, nR);
            t->data[i] = x0;
            double num = (lp - lm) / (hp + hm);
            double d = fabs(num - ana[i]);
            if (!(d <= err)) err = d;
            scale = fmax(scale, fmax(fabs(num), fabs(ana[i])));
        }
        double rel = err / fmax(scale, 1e-3);
        CHECK(rel <= FD_TOL, "fd %s (%s) input %d: max |numeric - analytic| %.3g, relative %.3g",
              c->name, be->name, v, err, rel);
        worst = maxd(worst, rel);
        free(ana);
    }
    printf("  %-26s %s %-4s %s: max rel err %.2e\n", c->name,
           c->a->ndim == 4 ? lname(c->a->layout) : "    ", be->name, training ? "train" : "eval ",
           worst);
    free(R);
    ssl_graph_free(&g);
}

/* A persistent tensor with its own gradient buffer. */
static ssl_tensor mk(ssl_rng *r, int ndim, int s0, int s1, int s2, int s3, ssl_layout l,
                     float scale)
{
    int shape[4] = {s0, s1, s2, s3};
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *grad = calloc((size_t)n, sizeof(float));
    return ssl_tensor_wrap(rnd(r, n, scale), grad, ndim, shape, l);
}

static void unmk(ssl_tensor *t)
{
    free_all(t->data, t->grad, NULL);
}

static void unmk_all(ssl_tensor *t, ...)
{
    va_list ap;
    va_start(ap, t);
    for (; t; t = va_arg(ap, ssl_tensor *)) unmk(t);
    va_end(ap);
}

/* Values at least 0.02 apart, so no max-pool window ties within +-eps. */
static void distinct(ssl_rng *r, ssl_tensor *t)
{
    long n = ssl_tensor_numel(t);
    for (long i = 0; i < n; i++) t->data[i] = 0.02f * (float)(i - n / 2);
    for (long i = n - 1; i > 0; i--) {
        long j = (long)ssl_rng_below(r, (uint32_t)(i + 1));
        float s = t->data[i];
        t->data[i] = t->data[j];
        t->data[j] = s;
    }
}

static void bn_make(ssl_rng *r, ssl_bn_layer *bn, int C)
{
    memset(bn, 0, sizeof *bn);
    bn->weight = mk(r, 1, C, 0, 0, 0, SSL_LAYOUT_NCHW, 1.0f);
    bn->bias = mk(r, 1, C, 0, 0, 0, SSL_LAYOUT_NCHW, 1.0f);
    bn->running_mean = rnd(r, C, 0.5f);
    bn->running_var = malloc(sizeof(float) * C);
    for (int c = 0; c < C; c++) bn->running_var[c] = 0.5f + ssl_rng_uniform(r);
    bn->C = C;
    bn->momentum = 0.1f;
    bn->eps = 1e-5f;
}

static void bn_unmake(ssl_bn_layer *bn)
{
    unmk(&bn->weight);
    unmk(&bn->bias);
    free_all(bn->running_mean, bn->running_var, NULL);
}

/* Sets skip so that bn(x) + skip sits at least 0.3 away from ReLU's kink
 * (batch statistics when training, running statistics otherwise): finite
 * differences across the kink measure the kink, not the gradient. */
static void kink_free_skip(ssl_ctx *ctx, ssl_rng *rng, const ssl_tensor *x,
                           const ssl_bn_layer *bn, int training, ssl_tensor *skip)
{
    int N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    long n = ssl_tensor_numel(x);
    float *y = malloc(sizeof(float) * n), *mean = malloc(sizeof(float) * C),
          *inv = malloc(sizeof(float) * C);
    float *rm = dup(bn->running_mean, C), *rv = dup(bn->running_var, C);
    ssl_backend_ref()->bn_fwd(ctx, y, mean, inv, x->data, NULL, bn->weight.data, bn->bias.data,
                              rm, rv, training, bn->momentum, bn->eps, 0, N, C, HW, x->layout);
    for (long i = 0; i < n; i++) {
        float off = 0.3f + 0.5f * (float)ssl_rng_uniform(rng);
        skip->data[i] = (ssl_rng_uniform(rng) < 0.5 ? -off : off) - y[i];
    }
    free_all(y, mean, inv, rm, rv, NULL);
}

static void run_case(ssl_ctx *ctx, ssl_rng *rng, const fd_case *c, int training)
{
    fd_check(ctx, ssl_backend_ref(), c, training, rng);
    fd_check(ctx, ssl_backend_cpu(), c, training, rng);
}
/* FD(training, designated initializers of an fd_case) on both backends */
#define FD(train, ...) run_case(ctx, &rng, &(const fd_case){__VA_ARGS__}, (train))

static void test_finite_differences(ssl_ctx *ctx)
{
    ssl_rng rng;
    ssl_rng_seed(&rng, 23);
    const ssl_layout NC = SSL_LAYOUT_NCHW;
    printf("finite differences (eps %g):\n", (double)FD_EPS);
    for (int l = 0; l < 2; l++) {
        ssl_tensor x = mk(&rng, 4, 2, 3, 5, 6, (ssl_layout)l, 1.0f);
        ssl_tensor w = mk(&rng, 4, 4, 3, 3, 3, NC, 0.3f), w1 = mk(&rng, 4, 4, 3, 1, 1, NC, 0.3f);
        FD(1, .name = "conv2d 3x3/2 pad 1", .op = FD_CONV, .a = &x, .b = &w, .stride = 2,
           .pad = 1, .vars = {&x, &w});
        FD(1, .name = "conv2d 1x1/1", .op = FD_CONV, .a = &x, .b = &w1, .stride = 1,
           .vars = {&x, &w1});
        ssl_bn_layer bn;
        bn_make(&rng, &bn, 3);
        for (long i = 0; i < ssl_tensor_numel(&x); i++) x.data[i] = 2.0f * x.data[i] + 1.0f;
        for (int train = 1; train >= 0; train--)
            FD(train, .name = "batchnorm 4-D", .op = FD_BN, .a = &x, .bn = &bn,
               .vars = {&x, &bn.weight, &bn.bias});
        ssl_rng srng; /* its own stream: the cases below keep their inputs */
        ssl_rng_seed(&srng, 29 + l);
        ssl_tensor s = mk(&srng, 4, 2, 3, 5, 6, (ssl_layout)l, 1.0f);
        for (int train = 1; train >= 0; train--) {
            FD(train, .name = "batchnorm + skip", .op = FD_BN_ACT, .a = &x, .b = &s, .bn = &bn,
               .vars = {&x, &s, &bn.weight, &bn.bias});
            kink_free_skip(ctx, &srng, &x, &bn, train, &s);
            FD(train, .name = "relu(batchnorm + skip)", .op = FD_BN_ACT, .a = &x, .b = &s,
               .bn = &bn, .flag = 1, .vars = {&x, &s, &bn.weight, &bn.bias});
        }
        unmk(&s);
        for (long i = 0; i < ssl_tensor_numel(&x); i++) /* away from ReLU's kink */
            if (fabsf(x.data[i]) < 0.1f) x.data[i] += x.data[i] < 0 ? -0.1f : 0.1f;
        FD(1, .name = "relu", .op = FD_RELU, .a = &x, .vars = {&x});
        FD(1, .name = "global_avgpool", .op = FD_GAP, .a = &x, .vars = {&x});
        FD(1, .name = "avgpool 3/2 pad 1", .op = FD_AVGPOOL, .a = &x, .k = 3, .stride = 2,
           .pad = 1, .vars = {&x});
        FD(1, .name = "avgpool 2/2", .op = FD_AVGPOOL, .a = &x, .k = 2, .stride = 2, .vars = {&x});
        distinct(&rng, &x);
        FD(1, .name = "maxpool 3/2 pad 1", .op = FD_MAXPOOL, .a = &x, .k = 3, .stride = 2,
           .pad = 1, .vars = {&x});
        FD(1, .name = "maxpool 2/1", .op = FD_MAXPOOL, .a = &x, .k = 2, .stride = 1, .vars = {&x});
        FD(1, .name = "to_layout (to the other)", .op = FD_TO_LAYOUT, .a = &x, .flag = !l,
           .vars = {&x});
        ssl_tensor a = mk(&rng, 4, 2, 3, 2, 2, (ssl_layout)l, 1.0f);
        ssl_tensor b = mk(&rng, 4, 3, 3, 2, 2, (ssl_layout)l, 1.0f);
        ssl_tensor a2 = mk(&rng, 4, 2, 3, 2, 2, (ssl_layout)l, 1.0f);
        FD(1, .name = "add", .op = FD_ADD, .a = &a, .b = &a2, .vars = {&a, &a2});
        FD(1, .name = "add (x, x)", .op = FD_ADD, .a = &a, .b = &a, .vars = {&a});
        FD(1, .name = "concat_batch", .op = FD_CONCAT, .a = &a, .b = &b, .vars = {&a, &b});
        FD(1, .name = "slice_batch 1..2", .op = FD_SLICE, .a = &b, .flag = 1, .k = 2,
           .vars = {&b});
        bn_unmake(&bn);
        unmk_all(&x, &w, &w1, &a, &b, &a2, NULL);
    }
    /* 2-D ops */
    ssl_tensor x = mk(&rng, 2, 5, 4, 0, 0, NC, 1.0f), y = mk(&rng, 2, 3, 4, 0, 0, NC, 1.0f);
    ssl_tensor w = mk(&rng, 2, 3, 4, 0, 0, NC, 0.5f), bias = mk(&rng, 1, 3, 0, 0, 0, NC, 1.0f);
    ssl_tensor bt = mk(&rng, 2, 4, 3, 0, 0, NC, 1.0f), z = mk(&rng, 2, 6, 4, 0, 0, NC, 0.7f);
    ssl_bn_layer bn;
    bn_make(&rng, &bn, 4);
    for (int train = 1; train >= 0; train--)
        FD(train, .name = "batchnorm 2-D", .op = FD_BN, .a = &x, .bn = &bn,
           .vars = {&x, &bn.weight, &bn.bias});
    FD(1, .name = "linear with bias", .op = FD_LINEAR, .a = &x, .b = &w, .c = &bias,
       .vars = {&x, &w, &bias});
    FD(1, .name = "linear without bias", .op = FD_LINEAR, .a = &x, .b = &w, .vars = {&x, &w});
    FD(1, .name = "concat_batch 2-D", .op = FD_CONCAT, .a = &x, .b = &y, .vars = {&x, &y});
    FD(1, .name = "slice_batch 2..4 2-D", .op = FD_SLICE, .a = &x, .flag = 2, .k = 3,
       .vars = {&x});
    FD(1, .name = "l2normalize", .op = FD_L2N, .a = &x, .vars = {&x});
    FD(1, .name = "matmul", .op = FD_MATMUL, .a = &x, .b = &bt, .vars = {&x, &bt});
    FD(1, .name = "matmul trans_b", .op = FD_MATMUL, .a = &x, .b = &y, .flag = 1,
       .vars = {&x, &y});
    FD(1, .name = "matmul (x, x^T)", .op = FD_MATMUL, .a = &x, .b = &x, .flag = 1, .vars = {&x});
    const int32_t labels[5] = {0, 3, 1, 3, 2};
    FD(1, .name = "softmax_ce", .op = FD_CE, .a = &x, .labels = labels, .vars = {&x});
    FD(1, .name = "ntxent T=0.5", .op = FD_NTXENT, .a = &z, .temp = 0.5f, .vars = {&z});
    FD(1, .name = "l2normalize + ntxent T=0.2", .op = FD_NTXENT, .a = &z, .temp = 0.2f, .flag = 1,
       .vars = {&z});
    /* a chain through the CNHW path and parameters of several ops */
    ssl_tensor xi = mk(&rng, 4, 3, 2, 4, 4, NC, 1.0f), wc = mk(&rng, 4, 3, 2, 3, 3, NC, 0.4f);
    ssl_tensor wl = mk(&rng, 2, 2, 3, 0, 0, NC, 0.5f);
    ssl_bn_layer bn3;
    bn_make(&rng, &bn3, 3);
    for (int train = 1; train >= 0; train--)
        FD(train, .name = "chain conv-bn-pool-gap-fc", .op = FD_CHAIN, .a = &xi, .b = &wc,
           .c = &wl, .bn = &bn3, .vars = {&xi, &wc, &wl, &bn3.weight, &bn3.bias});
    bn_unmake(&bn);
    bn_unmake(&bn3);
    unmk_all(&x, &y, &w, &bias, &bt, &z, &xi, &wc, &wl, NULL);
}

/* ------------------------------------------------------ part 3: the arena */

typedef struct net {
    ssl_resnet m;
    ssl_mlp head;
} net;

static int net_init(net *n, ssl_stem stem, ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 5);
    ssl_resnet_config cfg = {18, 4, 1, stem};
    if (ssl_resnet_init(&n->m, &cfg, &r, ctx->err)) return -1;
    return ssl_mlp_init(&n->head, &n->m.reg, "head", n->m.feat_dim, 16, 8, 1, &r);
}

/* One SimCLR-like step: resnet, projector, normalize, NT-Xent, backward. */
static float net_step(ssl_graph *g, net *n, ssl_tensor *x)
{
    ssl_graph_reset(g);
    ssl_registry_zero_grad(&n->m.reg);
    ssl_tensor *h = ssl_mlp_forward(g, &n->head, ssl_resnet_forward(g, &n->m, x));
    ssl_tensor *loss = ssl_op_ntxent(g, ssl_op_l2normalize(g, h), 0.2f);
    CHECK(loss != NULL, "step: forward failed: %s", g->ctx->err);
    if (!loss) return NAN;
    int rc = ssl_graph_backward(g, loss);
    CHECK(rc == SSL_OK, "step: backward failed: %s", g->ctx->err);
    return loss->data[0];
}

static void test_arena(ssl_ctx *ctx, ssl_stem stem, int hw)
{
    const char *sname = stem == SSL_STEM_SMALL ? "small stem" : "imagenet stem";
    net a, b;
    CHECK(net_init(&a, stem, ctx) == SSL_OK && net_init(&b, stem, ctx) == SSL_OK,
          "resnet init: %s", ctx->err);
    ssl_rng rng;
    ssl_rng_seed(&rng, 99);
    int shape[4] = {8, 1, hw, hw}; /* two views of 4 images */
    float *xd = rnd(&rng, 8L * hw * hw, 1.0f);
    ssl_tensor x = ssl_tensor_wrap(xd, NULL, 4, shape, SSL_LAYOUT_NCHW);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.be = ssl_backend_cpu();
    float loss[3];
    int grows[3], cap_nodes[3];
    size_t cap[3];
    for (int s = 0; s < 3; s++) {
        if (s > 0) ssl_graph_reset(&g); /* folds the first step's extras into one block */
        int before = g.arena.n_grows;
        loss[s] = net_step(&g, &a, &x);
        grows[s] = g.arena.n_grows;
        cap_nodes[s] = g.cap_nodes;
        cap[s] = g.arena.cap;
        if (s > 0)
            CHECK(grows[s] == before && g.arena.n_extra == 0,
                  "arena (%s): step %d grew it (%d -> %d grows, %d extra blocks)", sname, s + 1,
                  before, grows[s], g.arena.n_extra);
    }
    CHECK(grows[0] > 0, "arena (%s): first step allocated nothing?", sname);
    CHECK(grows[2] == grows[1] && cap[2] == cap[1], "arena (%s): third step grew it", sname);
    CHECK(cap_nodes[1] == cap_nodes[0] && cap_nodes[2] == cap_nodes[0],
          "arena (%s): node array grew after step 1 (%d, %d, %d)", sname, cap_nodes[0],
          cap_nodes[1], cap_nodes[2]);
    for (int s = 0; s < 3; s++)
        CHECK(isfinite(loss[s]), "arena (%s): loss %d not finite", sname, s);
    /* weights do not change, so neither does the loss (BN trains on batch stats) */
    CHECK(fabsf(loss[1] - loss[0]) <= 1e-5f * fabsf(loss[0]) && loss[2] == loss[1],
          "arena (%s): losses %.8g %.8g %.8g differ", sname, loss[0], loss[1], loss[2]);
    printf("  %s %dx%d: loss %.6f x3, arena %zu bytes after %d grows, %d nodes (cap %d)\n",
           sname, hw, hw, loss[0], g.arena.cap, grows[2], g.n_nodes, cap_nodes[2]);

    /* the whole network agrees between backends */
    ssl_graph gr;
    ssl_graph_init(&gr, ctx);
    gr.be = ssl_backend_ref();
    float lr = net_step(&gr, &b, &x);
    CHECK(fabsf(lr - loss[0]) <= 1e-4f * fabsf(loss[0]), "resnet (%s): loss cpu %.7g ref %.7g",
          sname, loss[0], lr);
    double worst = 0, gscale = 1e-30;
    int nonzero = 0;
    for (int i = 0; i < b.m.reg.n_params; i++)
        for (long j = 0; j < b.m.reg.params[i].numel; j++)
            gscale = fmax(gscale, fabs((double)b.m.reg.params[i].grad[j]));
    for (int i = 0; i < a.m.reg.n_params; i++) {
        const ssl_param *pa = &a.m.reg.params[i], *pb = &b.m.reg.params[i];
        /* relative to the largest gradient of the network: a bias in front of a
         * BN has a true gradient of 0 and only rounding noise */
        double d = 0;
        for (long j = 0; j < pa->numel; j++) d = maxd(d, fabs((double)pa->grad[j] - pb->grad[j]));
        double e = d / gscale;
        for (long j = 0; j < pa->numel; j++) nonzero += pa->grad[j] != 0.0f;
        CHECK(e <= 2e-3, "resnet (%s): grad of %s differs cpu vs ref by %.3g", sname, pa->name, e);
        worst = maxd(worst, e);
    }
    CHECK(nonzero > 0, "resnet (%s): all gradients zero", sname);
    printf("  %s: cpu vs ref loss %.2e, worst parameter gradient rel err %.2e\n", sname,
           fabs((double)lr - loss[0]), worst);
    ssl_graph_free(&gr);
    ssl_graph_free(&g);
    ssl_resnet_free(&a.m);
    ssl_resnet_free(&b.m);
    free(xd);
}

/* The BN op updates running stats and the batch counter in training mode
 * only (the eval-mode output is checked in test_bn and by differences). */
static void test_bn_state(ssl_ctx *ctx)
{
    ssl_rng rng;
    ssl_rng_seed(&rng, 8);
    ssl_bn_layer bn;
    bn_make(&rng, &bn, 3);
    ssl_tensor x = mk(&rng, 4, 4, 3, 2, 2, SSL_LAYOUT_CNHW, 1.0f);
    float rm[3], rv[3];
    memcpy(rm, bn.running_mean, sizeof rm);
    memcpy(rv, bn.running_var, sizeof rv);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    ssl_tensor *y = ssl_op_batchnorm(&g, &x, &bn);
    CHECK(y && !memcmp(rm, bn.running_mean, sizeof rm) && !memcmp(rv, bn.running_var, sizeof rv) &&
          bn.num_batches_tracked == 0, "bn eval: running stats or counter changed");
    g.training = 1;
    y = ssl_op_batchnorm(&g, &x, &bn);
    CHECK(y && bn.num_batches_tracked == 1 && memcmp(rm, bn.running_mean, sizeof rm),
          "bn train: running stats or counter not updated");
    ssl_graph_free(&g);
    unmk(&x);
    bn_unmake(&bn);
}

/* ------------------------------------------------------ part 4: errors */

#define EXPECT_ERR(expr, what)                                                              \
    do {                                                                                    \
        ctx->err[0] = 0;                                                                    \
        ssl_tensor *r_ = (expr);                                                            \
        CHECK(r_ == NULL && ctx->err[0] != 0, "%s: expected NULL and a message", what);   \
        if (!r_) printf("  %-28s -> %s\n", what, ctx->err);                               \
    } while (0)

static void test_errors(ssl_ctx *ctx)
{
    ssl_rng rng;
    ssl_rng_seed(&rng, 3);
    const ssl_layout NC = SSL_LAYOUT_NCHW;
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    printf("error paths:\n");
    ssl_tensor x = mk(&rng, 4, 2, 3, 5, 5, NC, 1.0f), w = mk(&rng, 4, 4, 2, 3, 3, NC, 1.0f);
    ssl_tensor xc = mk(&rng, 4, 2, 3, 5, 5, SSL_LAYOUT_CNHW, 1.0f);
    ssl_tensor big = mk(&rng, 4, 4, 3, 9, 9, NC, 1.0f), w3 = mk(&rng, 4, 4, 3, 3, 3, NC, 1.0f);
    ssl_tensor w7 = mk(&rng, 4, 4, 3, 7, 7, NC, 1.0f);
    ssl_tensor m = mk(&rng, 2, 5, 4, 0, 0, NC, 1.0f), lw = mk(&rng, 2, 3, 5, 0, 0, NC, 1.0f);
    ssl_tensor lb = mk(&rng, 1, 4, 0, 0, 0, NC, 1.0f), lw2 = mk(&rng, 2, 3, 4, 0, 0, NC, 1.0f);
    ssl_tensor m6 = mk(&rng, 2, 6, 4, 0, 0, NC, 1.0f), m3 = mk(&rng, 2, 3, 4, 0, 0, NC, 1.0f);
    ssl_bn_layer bn;
    bn_make(&rng, &bn, 4);
    EXPECT_ERR(ssl_op_conv2d(&g, &x, &w, 1, 1), "conv channel mismatch");
    EXPECT_ERR(ssl_op_conv2d(&g, &x, &big, 1, 1), "conv kernel larger than input");
    EXPECT_ERR(ssl_op_conv2d(&g, &x, &w3, 0, 1), "conv stride 0");
    /* (5 - 7) / 3 truncates to 0 in C; floor gives -1, i.e. no output */
    EXPECT_ERR(ssl_op_conv2d(&g, &x, &w7, 3, 0), "conv 7x7/3 on 5x5");
    EXPECT_ERR(ssl_op_maxpool(&g, &x, 7, 3, 0), "maxpool 7/3 on 5x5");
    EXPECT_ERR(ssl_op_avgpool(&g, &x, 7, 3, 0), "avgpool 7/3 on 5x5");
    EXPECT_ERR(ssl_op_conv2d(&g, &m, &w3, 1, 1), "conv of a 2-D tensor");
    EXPECT_ERR(ssl_op_linear(&g, &m, &lw, NULL), "linear mismatch");
    EXPECT_ERR(ssl_op_linear(&g, &m, &lw2, &lb), "linear bias mismatch");
    EXPECT_ERR(ssl_op_add(&g, &x, &big), "add shape mismatch");
    EXPECT_ERR(ssl_op_add(&g, &x, &xc), "add layout mismatch");
    EXPECT_ERR(ssl_op_ntxent(&g, &m, 0.5f), "ntxent odd batch");
    EXPECT_ERR(ssl_op_ntxent(&g, &m6, 0.0f), "ntxent temperature 0");
    EXPECT_ERR(ssl_op_ntxent(&g, &m6, -1.0f), "ntxent temperature < 0");
    EXPECT_ERR(ssl_op_ntxent(&g, &m6, NAN), "ntxent temperature NaN");
    EXPECT_ERR(ssl_op_matmul(&g, &m, &m3, 0), "matmul inner mismatch");
    EXPECT_ERR(ssl_op_batchnorm(&g, &x, &bn), "batchnorm channel mismatch");
    EXPECT_ERR(ssl_op_concat_batch(&g, &m, &lw), "concat width mismatch");
    EXPECT_ERR(ssl_op_concat_batch(&g, &x, &xc), "concat layout mismatch");
    EXPECT_ERR(ssl_op_slice_batch(&g, &m, 3, 3), "slice past the batch");
    EXPECT_ERR(ssl_op_maxpool(&g, &x, 3, 2, 2), "maxpool pad > k/2");
    EXPECT_ERR(ssl_op_global_avgpool(&g, &m), "global_avgpool of 2-D");
    int32_t bad_labels[5] = {0, 1, 4, 0, 1};
    EXPECT_ERR(ssl_op_softmax_ce(&g, &m, bad_labels), "softmax_ce label out of range");
    /* a NULL input propagates without a new message */
    CHECK(ssl_op_relu(&g, NULL) == NULL && ssl_op_linear(&g, NULL, &lw, NULL) == NULL,
          "NULL input must give NULL");
    /* backward needs a one-element loss */
    ctx->err[0] = 0;
    ssl_tensor *y = ssl_op_relu(&g, &m);
    CHECK(y && ssl_graph_backward(&g, y) == SSL_ESHAPE && ctx->err[0],
          "backward of a non-scalar must fail with SSL_ESHAPE");
    /* inference records nothing */
    ssl_graph_reset(&g);
    g.record = 0;
    y = ssl_op_linear(&g, &m, &lw2, NULL);
    CHECK(y && g.n_nodes == 0 && !y->requires_grad, "record = 0 must not record nodes");
    bn_unmake(&bn);
    unmk_all(&x, &w, &xc, &big, &w3, &w7, &m, &lw, &lb, &lw2, &m6, &m3, NULL);
    ssl_graph_free(&g);
}

int main(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    test_backends(&ctx);
    test_finite_differences(&ctx);
    printf("arena and whole network:\n");
    test_arena(&ctx, SSL_STEM_SMALL, 8);
    test_arena(&ctx, SSL_STEM_IMAGENET, 16);
    test_bn_state(&ctx);
    test_errors(&ctx);
    ssl_ctx_free(&ctx);
    return check_report("ops");
}
