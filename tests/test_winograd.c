/* Winograd 3x3 convolutions (src/ops/winograd.c) against the reference
 * backend: forward, backward data and backward weights, F(2x2,3x3) and
 * F(4x4,3x3), both activation layouts, odd sizes (partial edge tiles, 1x1,
 * batches not a multiple of 8), default and smallest blocks (runs of tiles
 * that start and end inside tile rows), accumulation into pre-filled
 * gradients, dx NULL, repeatability across thread counts, and the rules of
 * ssl_winograd_suits / ssl_winograd_tile. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "ops/winograd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Error measure: max |a - b| / max |b| (check_rel_err), the gradients'
 * errors taken on the added gradient alone. The reference sums in double, so
 * what is measured is float32 rounding. Measured on these shapes (unit
 * normal data), next to the cpu backend (im2col + float BLAS) on the same
 * data, which the test prints:
 *   F(2,3): fwd <= 4e-7, dx <= 8e-7, dw <= 4e-6: the same as the cpu
 *           backend (its transforms only add and subtract, and G's halves
 *           are exact);
 *   F(4,3): fwd and dx <= 7e-6, dw <= 9e-6: about 10x the cpu backend's, as
 *           expected: B^T, A^T and G carry 4, 5, 8 and 1/6, 1/24, so values
 *           are scaled up by ~10-100 before the channel sums cancel them.
 * The dw errors grow with the tiles summed (float sums of N*H*W/m^2 terms;
 * the 28x28 shape has the most). The bounds are ~7-12x the worst measured
 * value; a real fault is far above them (tried: an input-transform
 * coefficient off by 0.2% gives 8e-3, a dropped edge column or an
 * overwrite instead of += gives 1e-1 and more). */
#define TOL_F23 5e-6
#define TOL_F43 5e-5
#define TOL_F23_DW 3e-5
#define TOL_F43_DW 1e-4

static double worst[2][3]; /* [m == 4][fwd, dx, dw] */

static float *rnd(ssl_rng *r, long n)
{
    float *p = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (long i = 0; i < n; i++) p[i] = ssl_rng_normal(r);
    return p;
}

/* src (N, C, HW) NCHW -> dst in layout l */
static void to_layout(float *dst, ssl_layout l, const float *src, int N, int C, int HW)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++)
                dst[ssl_act_index(l, N, C, HW, n, c, i)] = src[((long)n * C + c) * HW + i];
}

static float *in_layout(const float *src, ssl_layout l, int N, int C, int HW)
{
    float *p = malloc(sizeof(float) * (size_t)N * C * HW);
    to_layout(p, l, src, N, C, HW);
    return p;
}

/* One shape, one tile size, both layouts. */
static void test_shape(ssl_ctx *ctx, ssl_rng *rng, int m, int N, int C, int K, int H, int W)
{
    const ssl_backend *ref = ssl_backend_ref();
    const long nx = (long)N * C * H * W, ny = (long)N * K * H * W, nw = (long)K * C * 9;
    const double tol = m == 2 ? TOL_F23 : TOL_F43, tol_dw = m == 2 ? TOL_F23_DW : TOL_F43_DW;
    float *x = rnd(rng, nx), *w = rnd(rng, nw), *dy = rnd(rng, ny);
    float *dx0 = rnd(rng, nx), *dw0 = rnd(rng, nw); /* what the gradients hold before */
    /* reference in NCHW: y, and the gradients alone (from zero) */
    ssl_conv_desc dn = {N, C, H, W, K, 3, 3, 1, 1, H, W, SSL_LAYOUT_NCHW};
    float *yr = malloc(sizeof(float) * ny), *dxr = calloc((size_t)nx, sizeof(float)),
          *dwr = calloc((size_t)nw, sizeof(float));
    ref->conv2d_fwd(ctx, yr, x, w, &dn);
    ref->conv2d_bwd(ctx, dxr, dwr, dy, x, w, &dn);
    double e[3] = {0, 0, 0};
    for (int run = 0; run < 6; run++) {
        /* both layouts; default blocks, then the smallest (runs of tiles that
         * start and end inside tile rows), then those with the weight
         * gradient's threads splitting the output channels */
        const int l = run & 1;
        ssl_winograd_opts o = {.tile = m, .block_bytes = run < 2 ? 0 : 1, .split_k = run < 4 ? -1 : 1};
        ssl_conv_desc d = dn;
        d.layout = (ssl_layout)l;
        float *xl = in_layout(x, d.layout, N, C, H * W), *dyl = in_layout(dy, d.layout, N, K, H * W);
        float *yrl = in_layout(yr, d.layout, N, K, H * W), *y = malloc(sizeof(float) * ny);
        for (long i = 0; i < ny; i++) y[i] = NAN; /* an output not written shows */
        ssl_winograd_conv_fwd_opts(ctx, &o, y, xl, w, &d);
        double ef = check_rel_err(y, yrl, ny);
        CHECK(ef <= tol, "F(%d,3) fwd N=%d C=%d K=%d %dx%d %s blocks %ld: rel err %.2e > %.1e", m,
              N, C, K, H, W, l ? "CNHW" : "NCHW", o.block_bytes, ef, tol);
        /* backward into pre-filled gradients: the result must be start + gradient */
        float *dx = in_layout(dx0, d.layout, N, C, H * W), *dw = malloc(sizeof(float) * nw);
        memcpy(dw, dw0, sizeof(float) * nw);
        ssl_winograd_conv_bwd_opts(ctx, &o, dx, dw, dyl, xl, w, &d);
        float *dxe = malloc(sizeof(float) * nx), *dwe = malloc(sizeof(float) * nw);
        for (long i = 0; i < nx; i++) dxe[i] = dx0[i] + dxr[i];
        for (long i = 0; i < nw; i++) dwe[i] = dw0[i] + dwr[i];
        float *dxel = in_layout(dxe, d.layout, N, C, H * W);
        /* errors relative to the gradient alone, not to the pre-filled values */
        for (long i = 0; i < nx; i++) { dx[i] -= dxel[i]; dxel[i] = 0; }
        for (long i = 0; i < nw; i++) { dw[i] -= dwe[i]; dwe[i] = 0; }
        float *dxrl = in_layout(dxr, d.layout, N, C, H * W);
        double edx = 0, edw = 0, mx = 0, mw = 0;
        for (long i = 0; i < nx; i++) {
            double v = fabs(dx[i]);
            if (!(v <= edx)) edx = v;
            if (fabs(dxrl[i]) > mx) mx = fabs(dxrl[i]);
        }
        for (long i = 0; i < nw; i++) {
            double v = fabs(dw[i]);
            if (!(v <= edw)) edw = v;
            if (fabs(dwr[i]) > mw) mw = fabs(dwr[i]);
        }
        edx /= mx > 0 ? mx : 1;
        edw /= mw > 0 ? mw : 1;
        CHECK(edx <= tol, "F(%d,3) dx N=%d C=%d K=%d %dx%d %s blocks %ld: rel err %.2e > %.1e", m,
              N, C, K, H, W, l ? "CNHW" : "NCHW", o.block_bytes, edx, tol);
        CHECK(edw <= tol_dw, "F(%d,3) dw N=%d C=%d K=%d %dx%d %s blocks %ld: rel err %.2e > %.1e", m,
              N, C, K, H, W, l ? "CNHW" : "NCHW", o.block_bytes, edw, tol_dw);
        /* dx NULL: dw alone, the same sums */
        float *dw2 = malloc(sizeof(float) * nw);
        memcpy(dw2, dw0, sizeof(float) * nw);
        ssl_winograd_conv_bwd_opts(ctx, &o, NULL, dw2, dyl, xl, w, &d);
        for (long i = 0; i < nw; i++) dw2[i] -= dw0[i] + dwr[i];
        double ed2 = 0;
        for (long i = 0; i < nw; i++)
            if (!(fabs(dw2[i]) <= ed2)) ed2 = fabs(dw2[i]);
        ed2 /= mw > 0 ? mw : 1;
        CHECK(ed2 <= tol_dw && !ctx->failed, "F(%d,3) dw with dx NULL: rel err %.2e", m, ed2);
        e[0] = ef > e[0] ? ef : e[0];
        e[1] = edx > e[1] ? edx : e[1];
        e[2] = edw > e[2] ? edw : e[2];
        free(xl); free(dyl); free(yrl); free(y); free(dx); free(dw); free(dxe); free(dwe);
        free(dxel); free(dxrl); free(dw2);
    }
    /* for scale: the cpu backend (im2col + float BLAS) on the same data */
    float *yc = malloc(sizeof(float) * ny), *dxc = calloc((size_t)nx, sizeof(float)),
          *dwc = calloc((size_t)nw, sizeof(float));
    ssl_backend_cpu()->conv2d_fwd(ctx, yc, x, w, &dn);
    ssl_backend_cpu()->conv2d_bwd(ctx, dxc, dwc, dy, x, w, &dn);
    printf("  F(%d,3) N=%-3d C=%-3d K=%-3d %2dx%-2d  max rel err fwd %.2e  dx %.2e  dw %.2e"
           "   (cpu backend: %.2e %.2e %.2e)\n", m, N, C, K, H, W, e[0], e[1], e[2],
           check_rel_err(yc, yr, ny), check_rel_err(dxc, dxr, nx), check_rel_err(dwc, dwr, nw));
    free(yc); free(dxc); free(dwc);
    for (int i = 0; i < 3; i++)
        if (e[i] > worst[m == 4][i]) worst[m == 4][i] = e[i];
    free(x); free(w); free(dy); free(dx0); free(dw0); free(yr); free(dxr); free(dwr);
}

/* Repeatability: the forward and dx do not depend on the thread count (each
 * output is computed whole by one thread); dw sums per-thread partial sums
 * in thread order, so it is bit-identical for a given thread count and
 * within float rounding of the one-thread result for another. */
static void test_threads(ssl_rng *rng, int m)
{
    const int N = 11, C = 16, K = 24, H = 9, W = 10, threads[3] = {1, 3, 3};
    const long nx = (long)N * C * H * W, ny = (long)N * K * H * W, nw = (long)K * C * 9;
    float *x = rnd(rng, nx), *w = rnd(rng, nw), *dy = rnd(rng, ny);
    float *out[3][3];
    ssl_conv_desc d = {N, C, H, W, K, 3, 3, 1, 1, H, W, SSL_LAYOUT_CNHW};
    for (int t = 0; t < 3; t++) {
        ssl_ctx ctx;
        CHECK(ssl_ctx_init(&ctx, 1, threads[t]) == 0, "ctx");
        out[t][0] = malloc(sizeof(float) * ny);
        out[t][1] = calloc((size_t)nx, sizeof(float));
        out[t][2] = calloc((size_t)nw, sizeof(float));
        ssl_winograd_opts o = {.tile = m, .block_bytes = 1}; /* the smallest blocks */
        ssl_winograd_conv_fwd_opts(&ctx, &o, out[t][0], x, w, &d);
        ssl_winograd_conv_bwd_opts(&ctx, &o, out[t][1], out[t][2], dy, x, w, &d);
        ssl_ctx_free(&ctx);
    }
    for (int t = 1; t < 3; t++) {
        CHECK(!memcmp(out[0][0], out[t][0], sizeof(float) * ny), "F(%d,3) fwd differs on %d threads", m, threads[t]);
        CHECK(!memcmp(out[0][1], out[t][1], sizeof(float) * nx), "F(%d,3) dx differs on %d threads", m, threads[t]);
    }
    CHECK(!memcmp(out[1][2], out[2][2], sizeof(float) * nw), "F(%d,3) dw not repeatable", m);
    double e = check_rel_err(out[1][2], out[0][2], nw);
    CHECK(e <= (m == 2 ? TOL_F23_DW : TOL_F43_DW), "F(%d,3) dw 3 vs 1 threads: %.2e", m, e);
    /* threads splitting the output channels: dw the same on 1, 2 and 3 threads */
    float *ks[3];
    for (int t = 0; t < 3; t++) {
        ssl_ctx ctx;
        CHECK(ssl_ctx_init(&ctx, 1, t + 1) == 0, "ctx");
        ks[t] = calloc((size_t)nw, sizeof(float));
        ssl_winograd_opts o = {.tile = m, .block_bytes = 1, .split_k = 1};
        ssl_winograd_conv_bwd_opts(&ctx, &o, NULL, ks[t], dy, x, w, &d);
        ssl_ctx_free(&ctx);
    }
    for (int t = 1; t < 3; t++)
        CHECK(!memcmp(ks[0], ks[t], sizeof(float) * nw), "F(%d,3) split-K dw differs on %d threads",
              m, t + 1);
    e = check_rel_err(ks[0], out[0][2], nw);
    CHECK(e <= (m == 2 ? TOL_F23_DW : TOL_F43_DW), "F(%d,3) split-K dw vs tiles: %.2e", m, e);
    for (int t = 0; t < 3; t++) free(ks[t]);
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < 3; i++) free(out[t][i]);
    free(x); free(w); free(dy);
}

static void test_suits(void)
{
    ssl_conv_desc d = {512, 64, 28, 28, 64, 3, 3, 1, 1, 28, 28, SSL_LAYOUT_CNHW};
    CHECK(ssl_winograd_suits(&d), "64->64 3x3 s1 should suit");
    ssl_conv_desc s2 = d;
    s2.stride = 2;
    s2.OH = s2.OW = 14;
    CHECK(!ssl_winograd_suits(&s2), "stride 2 must not suit");
    ssl_conv_desc k1 = d;
    k1.R = k1.S = 1;
    k1.pad = 0;
    CHECK(!ssl_winograd_suits(&k1), "1x1 must not suit");
    ssl_conv_desc stem = d;
    stem.C = 1;
    CHECK(!ssl_winograd_suits(&stem), "one input channel must not suit");
    ssl_conv_desc few = d;
    few.N = 4;
    CHECK(!ssl_winograd_suits(&few), "4 images must not suit");
    /* the tile with fewer multiplications: 4 but on planes of 2x2 and less */
    const int sizes[5] = {28, 7, 4, 2, 1}, tiles[5] = {4, 4, 4, 2, 2};
    for (int i = 0; i < 5; i++) {
        ssl_conv_desc t = d;
        t.H = t.W = t.OH = t.OW = sizes[i];
        CHECK(ssl_winograd_tile(&t) == tiles[i], "tile for %dx%d: %d", sizes[i], sizes[i],
              ssl_winograd_tile(&t));
    }
}

/* A convolution that is not 3x3 stride 1 pad 1 is refused, not computed. */
static void test_refuses(ssl_ctx *ctx)
{
    ssl_conv_desc d = {2, 16, 8, 8, 16, 3, 3, 2, 1, 4, 4, SSL_LAYOUT_CNHW};
    float y[2 * 16 * 4 * 4], x[2 * 16 * 8 * 8] = {0}, w[16 * 16 * 9] = {0};
    y[0] = 42.0f;
    ssl_winograd_conv_fwd(ctx, y, x, w, &d);
    CHECK(ctx->failed == SSL_ESHAPE && y[0] == 42.0f, "stride 2 accepted (failed %d)", ctx->failed);
    ctx->failed = 0;
}

int main(void)
{
    ssl_ctx ctx;
    if (ssl_ctx_init(&ctx, 1, 2)) return 1;
    ssl_rng rng;
    ssl_rng_seed(&rng, 42);
    for (int m = 2; m <= 4; m += 2) {
        test_shape(&ctx, &rng, m, 3, 5, 7, 7, 9);    /* odd everything, partial tiles */
        test_shape(&ctx, &rng, m, 2, 3, 4, 1, 1);    /* 1x1 planes: only the centre tap */
        test_shape(&ctx, &rng, m, 9, 6, 5, 4, 4);    /* 4x4: one F(4,3) tile; 9 images */
        test_shape(&ctx, &rng, m, 5, 8, 16, 5, 3);   /* narrower than a tile */
        test_shape(&ctx, &rng, m, 4, 64, 64, 14, 14);
        test_shape(&ctx, &rng, m, 16, 32, 16, 28, 28); /* several blocks per thread */
        test_threads(&rng, m);
    }
    printf("worst max rel err: F(2,3) fwd %.2e dx %.2e dw %.2e; F(4,3) fwd %.2e dx %.2e dw %.2e\n",
           worst[0][0], worst[0][1], worst[0][2], worst[1][0], worst[1][1], worst[1][2]);
    test_suits();
    test_refuses(&ctx);
    CHECK(!ctx.failed, "ctx failed: %s", ctx.err);
    ssl_ctx_free(&ctx);
    return check_report("test_winograd");
}
