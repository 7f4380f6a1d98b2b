/* The oneDNN backend against the reference: every convolution shape of
 * test_ops.c plus a one-channel stem and blocked-channel shapes, forward and
 * backward, both layouts, through both tables ("dnnl" hands 1x1 and
 * few-channel convolutions to the cpu backend, "dnnl-every" does not);
 * backward accumulates into nonzero gradients; dx may be NULL; cached plans
 * give the same results on a second call; the backend's registry name.
 * bf16 mode (ctx->bf16), where the CPU has AVX512-BF16 or AMX: the same
 * shapes against the reference run on inputs rounded to bfloat16 by plain C
 * (bf16_round, itself checked on known values everywhere); without such a
 * CPU it prints that the bf16 convolutions were skipped.
 * Built without oneDNN it reports the backend absent and passes 0 checks. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "selfsup/ops.h"
#include "selfsup/ops_dnnl.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* oneDNN sums in float in its own order, the reference in double. */
#define TOL 1e-4

static float *rnd(ssl_rng *r, long n, float scale)
{
    float *p = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) p[i] = scale * ssl_rng_normal(r);
    return p;
}

static float *dup(const float *p, long n)
{
    float *q = malloc(sizeof(float) * (size_t)n);
    memcpy(q, p, sizeof(float) * (size_t)n);
    return q;
}

/* Filled with NaN so that an output the backend forgets to write shows up. */
static float *nans(long n)
{
    float *p = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) p[i] = NAN;
    return p;
}

/* A copy of src (N, C, HW) NCHW in layout l. */
static float *in_layout(const float *src, ssl_layout l, int N, int C, int HW)
{
    float *p = malloc(sizeof(float) * (size_t)N * C * HW);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < HW; i++) {
                long cn = ((long)c * N + n) * HW + i, nc = ((long)n * C + c) * HW + i;
                p[l == SSL_LAYOUT_CNHW ? cn : nc] = src[nc];
            }
    return p;
}


/* x rounded to the nearest bfloat16 (ties to even), as a float: the upper
 * 16 bits of its IEEE single after adding half an ulp of bf16. NaN stays
 * NaN (quiet). */
static float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        u |= 0x00400000u;
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
    }
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

static void test_bf16_round(void)
{
    /* 8 significant bits: 1 + 2^-7 is representable, 1 + 2^-8 is a tie */
    const float in[] = {1.0f, 1.0f + 0x1p-7f, 1.0f + 0x1p-8f, 1.0f + 0x1p-7f + 0x1p-8f,
                        1.0f + 0x1p-8f + 0x1p-20f, -3.0f + 0x1p-9f, 65504.0f, 0.0f, -0.0f,
                        INFINITY, 0x1.fep127f /* the largest bf16 */,
                        0x1.fffffep127f /* FLT_MAX: rounds up to inf */};
    const float want[] = {1.0f, 1.0f + 0x1p-7f, 1.0f /* tie to even */,
                          1.0f + 0x1p-6f /* tie to even, up */, 1.0f + 0x1p-7f,
                          -3.0f, 65536.0f, 0.0f, -0.0f, INFINITY, 0x1.fep127f, INFINITY};
    for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
        float r = bf16_round(in[i]);
        CHECK(r == want[i] && signbit(r) == signbit(want[i]), "bf16_round(%.9g) = %.9g, want %.9g",
              (double)in[i], (double)r, (double)want[i]);
    }
    CHECK(isnan(bf16_round(NAN)), "bf16_round(NaN) is not NaN");
}

static float *bf16_copy(const float *p, long n)
{
    float *q = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) q[i] = bf16_round(p[i]);
    return q;
}

static double worst;

static void cmp(const float *a, const float *b, long n, const char *what, const ssl_conv_desc *d)
{
    double e = check_rel_err(a, b, n);
    if (!(e <= worst)) worst = e;
    CHECK(e <= TOL, "%s N%d C%d %dx%d K%d %dx%d/%d p%d %s: relative error %.3g", what, d->N,
          d->C, d->H, d->W, d->K, d->R, d->S, d->stride, d->pad,
          d->layout == SSL_LAYOUT_CNHW ? "CNHW" : "NCHW", e);
}

/* With ctx->bf16 the reference gets x, w and dy rounded to bf16, as the
 * backend's reorders round them; the products and sums are then exact or
 * fp32-rounded on both sides, so the fp32 tolerance holds. */
static void test_conv_on(ssl_ctx *ctx, const ssl_backend *be, ssl_rng *rng, int N, int C,
                         int H, int W, int K, int R, int stride, int pad)
{
    const ssl_backend *ref = ssl_backend_ref();
    worst = 0;
    for (int l = 0; l < 2; l++) {
        ssl_conv_desc d = {N, C, H, W, K, R, R, stride, pad,
                           ssl_conv_out_size(H, R, stride, pad),
                           ssl_conv_out_size(W, R, stride, pad), (ssl_layout)l};
        const long nx = (long)N * C * H * W, nw = (long)K * C * R * R,
                   ny = (long)N * K * d.OH * d.OW;
        /* the layout only changes where values sit: the reference runs NCHW */
        float *x = rnd(rng, nx, 1.0f), *w = rnd(rng, nw, 0.3f), *dy = rnd(rng, ny, 1.0f);
        float *dx0 = rnd(rng, nx, 1.0f), *dw0 = rnd(rng, nw, 1.0f);
        float *xl = in_layout(x, d.layout, N, C, H * W);
        float *dyl = in_layout(dy, d.layout, N, K, d.OH * d.OW);
        float *dx0l = in_layout(dx0, d.layout, N, C, H * W);
        ssl_conv_desc dn = d;
        dn.layout = SSL_LAYOUT_NCHW;

        float *yr = nans(ny), *dxr = dup(dx0, nx), *dwr = dup(dw0, nw);
        float *xr = ctx->bf16 ? bf16_copy(x, nx) : dup(x, nx);
        float *wr = ctx->bf16 ? bf16_copy(w, nw) : dup(w, nw);
        float *dyr = ctx->bf16 ? bf16_copy(dy, ny) : dup(dy, ny);
        ref->conv2d_fwd(ctx, yr, xr, wr, &dn);
        ref->conv2d_bwd(ctx, dxr, dwr, dyr, xr, wr, &dn);
        free(xr), free(wr), free(dyr);
        float *yrl = in_layout(yr, d.layout, N, K, d.OH * d.OW);
        float *dxrl = in_layout(dxr, d.layout, N, C, H * W);

        for (int rep = 0; rep < 2; rep++) { /* the second call runs the cached plans */
            float *y = nans(ny), *dx = dup(dx0l, nx), *dw = dup(dw0, nw);
            be->conv2d_fwd(ctx, y, xl, w, &d);
            be->conv2d_bwd(ctx, dx, dw, dyl, xl, w, &d);
            cmp(y, yrl, ny, "fwd", &d);
            cmp(dx, dxrl, nx, "dx (accumulated)", &d);
            cmp(dw, dwr, nw, "dw (accumulated)", &d);
            free(y);
            free(dx);
            free(dw);
        }
        float *dw = dup(dw0, nw); /* dx NULL: dw alone, still accumulated */
        be->conv2d_bwd(ctx, NULL, dw, dyl, xl, w, &d);
        cmp(dw, dwr, nw, "dw with dx NULL", &d);
        free(dw);
        free(x), free(w), free(dy), free(dx0), free(dw0), free(xl), free(dyl), free(dx0l);
        free(yr), free(dxr), free(dwr), free(yrl), free(dxrl);
    }
    printf("  %-10s%s conv N=%-2d C=%-2d %2dx%-2d K=%-2d %dx%d/%d pad %d: max rel err %.2e\n",
           be->name, ctx->bf16 ? " bf16" : "", N, C, H, W, K, R, R, stride, pad, worst);
}

static void test_conv(ssl_ctx *ctx, ssl_rng *rng, int N, int C, int H, int W, int K, int R,
                      int stride, int pad)
{
    test_conv_on(ctx, ssl_backend_dnnl(), rng, N, C, H, W, K, R, stride, pad);
    test_conv_on(ctx, ssl_backend_dnnl_every(), rng, N, C, H, W, K, R, stride, pad);
}

/* Twice the gradient after two backward calls: the sum really accumulates. */
static void test_twice(ssl_ctx *ctx, const ssl_backend *be, ssl_rng *rng)
{
    ssl_conv_desc d = {2, 16, 6, 6, 16, 3, 3, 1, 1, 6, 6, be->act_layout};
    const long nx = 2L * 16 * 36, nw = 16L * 16 * 9;
    float *x = rnd(rng, nx, 1.0f), *w = rnd(rng, nw, 0.3f), *dy = rnd(rng, nx, 1.0f);
    float *dx1 = calloc((size_t)nx, sizeof(float)), *dw1 = calloc((size_t)nw, sizeof(float));
    float *dx2 = calloc((size_t)nx, sizeof(float)), *dw2 = calloc((size_t)nw, sizeof(float));
    be->conv2d_bwd(ctx, dx1, dw1, dy, x, w, &d);
    be->conv2d_bwd(ctx, dx2, dw2, dy, x, w, &d);
    be->conv2d_bwd(ctx, dx2, dw2, dy, x, w, &d);
    for (long i = 0; i < nx; i++) dx1[i] *= 2.0f;
    for (long i = 0; i < nw; i++) dw1[i] *= 2.0f;
    CHECK(check_rel_err(dx2, dx1, nx) <= 1e-6, "two backward calls: dx is not twice one call");
    CHECK(check_rel_err(dw2, dw1, nw) <= 1e-6, "two backward calls: dw is not twice one call");
    free(x), free(w), free(dy), free(dx1), free(dw1), free(dx2), free(dw2);
}

static void test_shapes(ssl_ctx *ctx, ssl_rng *rng);

int main(void)
{
    if (!ssl_dnnl_available()) {
        printf("dnnl: backend absent in this build (no oneDNN), nothing to check\n");
        CHECK(ssl_backend_dnnl() == NULL && ssl_backend_dnnl_every() == NULL,
              "ssl_backend_dnnl() without oneDNN is not NULL");
        return check_report("dnnl");
    }
    ssl_ctx ctx;
    char err[SSL_ERR_LEN];
    const ssl_backend *be = ssl_backend_dnnl(), *byname = NULL;
    ssl_ctx_init(&ctx, 1, 2);
    ctx.backend = be;
    CHECK(ssl_backend_by_name("dnnl", &byname, err) == SSL_OK && byname == be,
          "ssl_backend_by_name(\"dnnl\") does not give the dnnl backend");
    CHECK(!strcmp(be->name, "dnnl") && be->bn_fwd && be->linear_bwd && be->gap_fwd,
          "dnnl backend table incomplete");

    ssl_rng rng;
    ssl_rng_seed(&rng, 7);
    test_bf16_round();
    for (ctx.bf16 = 0; ctx.bf16 < 2; ctx.bf16++) {
        if (ctx.bf16 && !ssl_dnnl_bf16_available()) {
            printf("dnnl bf16: SKIPPED, oneDNN's ISA on this CPU is %s (no AVX512-BF16 or AMX)\n",
                   ssl_dnnl_isa());
            break;
        }
        printf("dnnl%s vs ref backend:\n", ctx.bf16 ? " bf16" : "");
        test_shapes(&ctx, &rng);
    }
    ctx.bf16 = 0;
    ssl_ctx_free(&ctx); /* releases the cached plans (ASan checks for leaks) */
    return check_report("dnnl");
}

static void test_shapes(ssl_ctx *ctx, ssl_rng *rng)
{
    const ssl_backend *be = ssl_backend_dnnl();
    test_conv(ctx, rng, 3, 5, 7, 9, 6, 3, 2, 1);   /* odd everything */
    test_conv(ctx, rng, 3, 5, 7, 9, 6, 3, 1, 1);
    test_conv(ctx, rng, 3, 5, 7, 9, 6, 1, 1, 0);   /* pointwise */
    test_conv(ctx, rng, 3, 5, 7, 9, 6, 1, 2, 0);   /* 1x1 stride 2 */
    test_conv(ctx, rng, 3, 2, 11, 13, 4, 7, 2, 3); /* ImageNet stem */
    test_conv(ctx, rng, 11, 3, 5, 6, 4, 3, 1, 1);
    test_conv(ctx, rng, 11, 3, 5, 6, 4, 1, 1, 0);
    test_conv(ctx, rng, 1, 3, 4, 4, 2, 3, 1, 1);   /* fewer images than threads */
    test_conv(ctx, rng, 4, 1, 8, 8, 16, 3, 1, 1);  /* small stem, one channel */
    test_conv(ctx, rng, 3, 16, 6, 6, 32, 1, 2, 0); /* downsample, right pad -1 */
    test_conv(ctx, rng, 3, 16, 7, 7, 32, 3, 2, 1); /* blocked channels, stride 2 */
    test_conv(ctx, rng, 2, 9, 5, 7, 10, 3, 1, 1);   /* channels past one block */
    test_conv(ctx, rng, 2, 64, 17, 16, 64, 3, 1, 1); /* big layer: dw from the cpu backend */
    test_conv(ctx, rng, 9, 16, 2, 2, 32, 3, 1, 1);   /* 2x2: one GEMM */
    test_conv(ctx, rng, 10, 17, 3, 3, 9, 3, 1, 1);   /* 3x3, <= 64 channels: direct */
    test_conv(ctx, rng, 9, 65, 3, 3, 66, 3, 1, 1);   /* 3x3, 65+ channels: Winograd */
    test_conv(ctx, rng, 9, 16, 3, 3, 32, 3, 2, 1);   /* stride 2: 3x3 -> 2x2 */
    test_twice(ctx, be, rng);
    test_twice(ctx, ssl_backend_dnnl_every(), rng);
    /* batches run in chunks of images when the reordered copies exceed
     * ctx->conv_buffer_cap: one image per chunk (cap 1 byte), then chunks of
     * 3 + 2 or so (16 KB against about 26 KB for 5 images of 16x7x7) */
    static const size_t caps[2] = {1, 16384};
    for (int i = 0; i < 2; i++) {
        ctx->conv_buffer_cap = caps[i];
        printf("  chunks under a cap of %zu bytes:\n", caps[i]);
        test_conv(ctx, rng, 5, 16, 7, 7, 32, 3, 2, 1);   /* stride 2, dw from oneDNN */
        test_conv(ctx, rng, 5, 9, 5, 7, 10, 3, 1, 1);
        test_conv(ctx, rng, 3, 64, 17, 16, 64, 3, 1, 1); /* dw from the cpu backend, dx chunked */
        test_twice(ctx, ssl_backend_dnnl_every(), rng);
    }
    ctx->conv_buffer_cap = 0;
}
