/* Winograd against the current backends on the 3x3 stride-1 convolutions of
 * a ResNet-18 (small stem): for each such layer, ms per call of forward and
 * backward (dx + dw) for Winograd F(2x2,3x3), F(4x4,3x3), the dense GEMM of
 * planes no larger than the kernel (smallconv.c, where it applies), oneDNN's
 * direct kernels and the cpu backend's im2col + BLAS, activations in
 * CNHW. The machine may be shared, so the contestants run interleaved
 * (A B C D, A B C D, ...) and each cell gives the best and the mean over
 * rounds. GFLOP/s are effective: direct-convolution FLOP (2 N K C 9 H W)
 * per second, whatever the algorithm really computes.
 * Usage: winograd_layers [width 64] [batch 512] [size 28] [threads 2] [rounds 3] */
#define _POSIX_C_SOURCE 200809L
#include "ops/smallconv.h"
#include "ops/winograd.h"
#include "selfsup/ops_dnnl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WG2, WG4, DENSE, DNNL, CPU, NCONT };
static const char *cont_name[NCONT] = {"wino F(2,3)", "wino F(4,3)", "dense GEMM", "dnnl", "cpu"};

static void fill(float *p, long n, uint64_t seed)
{
    for (long i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (float)((seed >> 40) & 0xffff) / 65536.0f - 0.5f;
    }
}

static void run(int c, ssl_ctx *ctx, int bwd, float *y, float *dx, float *dw, const float *x,
                const float *w, const float *dy, const ssl_conv_desc *d)
{
    const ssl_backend *be = c == DNNL ? ssl_backend_dnnl() : ssl_backend_cpu();
    if (c == WG2 || c == WG4) {
        ssl_winograd_opts o = {.tile = c == WG2 ? 2 : 4};
        if (bwd) ssl_winograd_conv_bwd_opts(ctx, &o, dx, dw, dy, x, w, d);
        else ssl_winograd_conv_fwd_opts(ctx, &o, y, x, w, d);
    } else if (c == DENSE) {
        if (bwd) ssl_smallconv_bwd(ctx, dx, dw, dy, x, w, d);
        else ssl_smallconv_fwd(ctx, y, x, w, d);
    } else if (bwd) {
        ctx->direct_conv = 1; /* the backends' own kernels, not Winograd again */
        be->conv2d_bwd(ctx, dx, dw, dy, x, w, d);
        ctx->direct_conv = 0;
    } else {
        ctx->direct_conv = 1;
        be->conv2d_fwd(ctx, y, x, w, d);
        ctx->direct_conv = 0;
    }
}

int main(int argc, char **argv)
{
    int width = argc > 1 ? atoi(argv[1]) : 64, N = argc > 2 ? atoi(argv[2]) : 512;
    int size = argc > 3 ? atoi(argv[3]) : 28, threads = argc > 4 ? atoi(argv[4]) : 2;
    int rounds = argc > 5 ? atoi(argv[5]) : 3;
    ssl_ctx ctx;
    if (ssl_ctx_init(&ctx, 1, threads)) return 1;
    int have_dnnl = ssl_backend_dnnl() != NULL;
    int s2 = ssl_conv_out_size(size, 3, 2, 1), s3 = ssl_conv_out_size(s2, 3, 2, 1),
        s4 = ssl_conv_out_size(s3, 3, 2, 1);
    struct { int ch, hw, count; } L[] = {
        {width, size, 4}, {2 * width, s2, 3}, {4 * width, s3, 3}, {8 * width, s4, 3}};
    printf("# ResNet-18 w%d 3x3 stride-1 convs, N=%d, %dx%d input, %d threads, CNHW, %d "
           "interleaved rounds; ms best / mean, effective GFLOP/s from the best\n",
           width, N, size, size, threads, rounds);
    printf("| layer | x | pass |");
    for (int c = 0; c < NCONT; c++) printf(" %s ms | GF/s |", cont_name[c]);
    printf("\n|---|---:|---|");
    for (int c = 0; c < NCONT; c++) printf("---:|---:|");
    printf("\n");
    double net[NCONT][2] = {{0}};
    for (int li = 0; li < 4; li++) {
        int ch = L[li].ch, hw = L[li].hw;
        ssl_conv_desc d = {N, ch, hw, hw, ch, 3, 3, 1, 1, hw, hw, SSL_LAYOUT_CNHW};
        long nx = (long)N * ch * hw * hw, nw = (long)ch * ch * 9;
        float *x = ssl_malloc(4 * nx), *y = ssl_malloc(4 * nx), *w = ssl_malloc(4 * nw),
              *dx = ssl_malloc(4 * nx), *dy = ssl_malloc(4 * nx), *dw = ssl_malloc(4 * nw);
        fill(x, nx, 1); fill(w, nw, 2); fill(dy, nx, 3);
        memset(dx, 0, 4 * nx); memset(dw, 0, 4 * nw);
        double best[NCONT][2], sum[NCONT][2];
        for (int c = 0; c < NCONT; c++)
            for (int p = 0; p < 2; p++) {
                best[c][p] = 1e30;
                sum[c][p] = 0;
                if ((c == DNNL && !have_dnnl) || (c == DENSE && !ssl_smallconv_suits(&d))) continue;
                run(c, &ctx, p, y, dx, dw, x, w, dy, &d); /* warm-up: plans, scratch */
            }
        for (int r = 0; r < rounds; r++)
            for (int c = 0; c < NCONT; c++)
                for (int p = 0; p < 2; p++) {
                    if ((c == DNNL && !have_dnnl) || (c == DENSE && !ssl_smallconv_suits(&d)))
                        continue;
                    double t0 = ssl_time();
                    run(c, &ctx, p, y, dx, dw, x, w, dy, &d);
                    double ms = 1e3 * (ssl_time() - t0);
                    if (ms < best[c][p]) best[c][p] = ms;
                    sum[c][p] += ms;
                }
        double f = 2.0 * N * ch * ch * 9.0 * hw * hw;
        for (int p = 0; p < 2; p++) {
            printf("| %d->%d %dx%d | %d | %s |", ch, ch, hw, hw, L[li].count, p ? "bwd" : "fwd");
            for (int c = 0; c < NCONT; c++) {
                if (best[c][p] > 1e29) { printf(" - | - |"); continue; }
                printf(" %.1f / %.1f | %.0f |", best[c][p], sum[c][p] / rounds,
                       f * (p ? 2 : 1) / best[c][p] / 1e6);
                net[c][p] += L[li].count * best[c][p];
            }
            printf("\n");
        }
        fflush(stdout);
        ssl_free(x); ssl_free(y); ssl_free(w); ssl_free(dx); ssl_free(dy); ssl_free(dw);
    }
    printf("\nall 3x3 s1 convs of the network (fwd + bwd, best times x count):");
    for (int c = 0; c < NCONT; c++)
        if (net[c][0] > 0 && c != DENSE) printf("  %s %.0f ms", cont_name[c], net[c][0] + net[c][1]);
    printf("\n");
    if (ctx.failed) fprintf(stderr, "error: %s\n", ctx.err);
    ssl_ctx_free(&ctx);
    return ctx.failed ? 1 : 0;
}
