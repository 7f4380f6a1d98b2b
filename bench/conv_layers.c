/* Where a ResNet step's convolution time goes, layer by layer: for each
 * distinct convolution of a ResNet-18 (small stem) at the given width, batch
 * and image size, times
 *   - the selected backend's conv2d_fwd and conv2d_bwd (as the graph calls
 *     them: activations in the backend's layout, reorders included), and
 *   - oneDNN alone with activations kept in its blocked layout (no reorders
 *     of activations: the bound a layout-keeping engine could reach),
 * and prints ms per call, GFLOP/s and the layer's count in the network.
 * Usage: conv_layers [width 64] [batch 512] [size 28] [threads 2] [reps 3] */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/ops.h"
#include "selfsup/ops_dnnl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef SSL_HAVE_DNNL
#include <dnnl.h>
#endif

typedef struct layer {
    int C, K, H, R, stride, count;
} layer;

static double flop(const ssl_conv_desc *d)
{
    return 2.0 * d->N * d->K * d->OH * d->OW * (double)d->C * d->R * d->S;
}

static void fill(float *p, long n, uint64_t seed)
{
    for (long i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (float)((seed >> 40) & 0xffff) / 65536.0f - 0.5f;
    }
}

#ifdef SSL_HAVE_DNNL
/* ms per call of oneDNN fwd, bwd-data, bwd-weights with src/dst in the
 * layouts oneDNN picks ("any"), data already there. */
static void time_blocked(const ssl_conv_desc *d, int reps, double ms[3])
{
    dnnl_engine_t eng;
    dnnl_stream_t st;
    dnnl_engine_create(&eng, dnnl_cpu, 0);
    dnnl_stream_create(&st, eng, dnnl_stream_default_flags);
    dnnl_dims_t xd = {d->N, d->C, d->H, d->W}, yd = {d->N, d->K, d->OH, d->OW},
                wd = {d->K, d->C, d->R, d->S}, s = {d->stride, d->stride},
                pl = {d->pad, d->pad},
                pr = {(d->OH - 1) * d->stride + d->R - d->H - d->pad,
                      (d->OW - 1) * d->stride + d->S - d->W - d->pad};
    dnnl_memory_desc_t ax, ay, aw;
    dnnl_memory_desc_init_by_tag(&ax, 4, xd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&ay, 4, yd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&aw, 4, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_convolution_desc_t fd, bd, bw;
    dnnl_primitive_desc_t fpd, bpd, wpd;
    dnnl_convolution_forward_desc_init(&fd, dnnl_forward_training, dnnl_convolution_direct, &ax,
                                       &aw, NULL, &ay, s, pl, pr);
    dnnl_primitive_desc_create(&fpd, &fd, NULL, eng, NULL);
    dnnl_convolution_backward_data_desc_init(&bd, dnnl_convolution_direct, &ax, &aw, &ay, s, pl,
                                             pr);
    dnnl_primitive_desc_create(&bpd, &bd, NULL, eng, fpd);
    dnnl_convolution_backward_weights_desc_init(&bw, dnnl_convolution_direct, &ax, &aw, NULL,
                                                &ay, s, pl, pr);
    dnnl_primitive_desc_create(&wpd, &bw, NULL, eng, fpd);
    const_dnnl_primitive_desc_t pds[3] = {fpd, bpd, wpd};
    dnnl_query_t q[3][3] = {{dnnl_query_src_md, dnnl_query_weights_md, dnnl_query_dst_md},
                            {dnnl_query_diff_src_md, dnnl_query_weights_md, dnnl_query_diff_dst_md},
                            {dnnl_query_src_md, dnnl_query_diff_weights_md, dnnl_query_diff_dst_md}};
    int args[3][3] = {{DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},
                      {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST},
                      {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST}};
    for (int k = 0; k < 3; k++) {
        dnnl_primitive_t p;
        dnnl_primitive_create(&p, pds[k]);
        dnnl_memory_t m[3];
        dnnl_exec_arg_t a[3];
        for (int j = 0; j < 3; j++) {
            dnnl_memory_create(&m[j], dnnl_primitive_desc_query_md(pds[k], q[k][j], 0), eng,
                               DNNL_MEMORY_ALLOCATE);
            void *h;
            dnnl_memory_get_data_handle(m[j], &h);
            fill(h, (long)(dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pds[k], q[k][j], 0)) / 4), 7 + j);
            a[j].arg = args[k][j];
            a[j].memory = m[j];
        }
        dnnl_primitive_execute(p, st, 3, a); /* warm-up */
        dnnl_stream_wait(st);
        double t0 = ssl_time();
        for (int r = 0; r < reps; r++) dnnl_primitive_execute(p, st, 3, a);
        dnnl_stream_wait(st);
        ms[k] = 1e3 * (ssl_time() - t0) / reps;
        if (k == 0) {
            const char *tag = "";
            const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(fpd, dnnl_query_src_md, 0);
            if (md->format_kind == dnnl_blocked && md->format_desc.blocking.inner_nblks == 1)
                tag = md->format_desc.blocking.inner_blks[0] == 16 ? "nChw16c" : "nChw8c";
            fprintf(stderr, "   oneDNN src layout: %s\n", *tag ? tag : "plain");
        }
        for (int j = 0; j < 3; j++) dnnl_memory_destroy(m[j]);
        dnnl_primitive_destroy(p);
    }
    dnnl_primitive_desc_destroy(fpd);
    dnnl_primitive_desc_destroy(bpd);
    dnnl_primitive_desc_destroy(wpd);
    dnnl_stream_destroy(st);
    dnnl_engine_destroy(eng);
}
#endif

int main(int argc, char **argv)
{
    int width = argc > 1 ? atoi(argv[1]) : 64, N = argc > 2 ? atoi(argv[2]) : 512;
    int size = argc > 3 ? atoi(argv[3]) : 28, threads = argc > 4 ? atoi(argv[4]) : 2;
    int reps = argc > 5 ? atoi(argv[5]) : 3;
    ssl_ctx ctx;
    if (ssl_ctx_init(&ctx, 1, threads)) return 1;
    const ssl_backend *be = ssl_backend_default();
    int s2 = ssl_conv_out_size(size, 3, 2, 1), s3 = ssl_conv_out_size(s2, 3, 2, 1),
        s4 = ssl_conv_out_size(s3, 3, 2, 1);
    int w = width;
    layer L[] = {
        {1, w, size, 3, 1, 1},        {w, w, size, 3, 1, 4},
        {w, 2 * w, size, 3, 2, 1},    {2 * w, 2 * w, s2, 3, 1, 3},   {w, 2 * w, size, 1, 2, 1},
        {2 * w, 4 * w, s2, 3, 2, 1},  {4 * w, 4 * w, s3, 3, 1, 3},   {2 * w, 4 * w, s2, 1, 2, 1},
        {4 * w, 8 * w, s3, 3, 2, 1},  {8 * w, 8 * w, s4, 3, 1, 3},   {4 * w, 8 * w, s3, 1, 2, 1},
    };
    int nl = (int)(sizeof L / sizeof L[0]);
    printf("# ResNet-18 w%d, N=%d, %dx%d, %d threads, backend %s (layout %s)\n", width, N, size,
           size, threads, be->name, be->act_layout == SSL_LAYOUT_CNHW ? "CNHW" : "NCHW");
    printf("| conv | x | backend fwd ms | GF/s | backend bwd ms | GF/s | oneDNN blocked fwd | bwd-data "
           "| bwd-weights ms | blocked fwd+bwd GF/s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    double tot_be = 0, tot_bl = 0, tot_flop = 0;
    for (int i = 0; i < nl; i++) {
        ssl_conv_desc d = {.N = N, .C = L[i].C, .H = L[i].H, .W = L[i].H, .K = L[i].K,
                           .R = L[i].R, .S = L[i].R, .stride = L[i].stride,
                           .pad = L[i].R / 2, .layout = be->act_layout};
        d.OH = d.OW = ssl_conv_out_size(d.H, d.R, d.stride, d.pad);
        long nx = (long)N * d.C * d.H * d.W, ny = (long)N * d.K * d.OH * d.OW,
             nw = (long)d.K * d.C * d.R * d.S;
        float *x = ssl_malloc(4 * nx), *y = ssl_malloc(4 * ny), *wt = ssl_malloc(4 * nw),
              *dx = ssl_malloc(4 * nx), *dy = ssl_malloc(4 * ny), *dw = ssl_malloc(4 * nw);
        fill(x, nx, 1); fill(wt, nw, 2); fill(dy, ny, 3);
        memset(dx, 0, 4 * nx); memset(dw, 0, 4 * nw);
        be->conv2d_fwd(&ctx, y, x, wt, &d);
        be->conv2d_bwd(&ctx, i ? dx : NULL, dw, dy, x, wt, &d);
        double t0 = ssl_time();
        for (int r = 0; r < reps; r++) be->conv2d_fwd(&ctx, y, x, wt, &d);
        double tf = 1e3 * (ssl_time() - t0) / reps;
        t0 = ssl_time();
        for (int r = 0; r < reps; r++) be->conv2d_bwd(&ctx, i ? dx : NULL, dw, dy, x, wt, &d);
        double tb = 1e3 * (ssl_time() - t0) / reps;
        double f = flop(&d), bl[3] = {0, 0, 0};
#ifdef SSL_HAVE_DNNL
        time_blocked(&d, reps, bl);
#endif
        double blt = bl[0] + (i ? bl[1] : 0) + bl[2];
        double fb = f * (i ? 3 : 2);
        printf("| %dx%d %d->%d s%d | %d | %.1f | %.0f | %.1f | %.0f | %.1f | %.1f | %.1f | %.0f |\n",
               d.R, d.S, d.C, d.K, d.stride, L[i].count, tf, f / tf / 1e6, tb,
               f * (i ? 2 : 1) / tb / 1e6, bl[0], bl[1], bl[2], fb / blt / 1e6);
        fflush(stdout);
        tot_be += L[i].count * (tf + tb);
        tot_bl += L[i].count * blt;
        tot_flop += L[i].count * fb;
        ssl_free(x); ssl_free(y); ssl_free(wt); ssl_free(dx); ssl_free(dy); ssl_free(dw);
    }
    printf("\nnetwork convs fwd+bwd: backend %.0f ms (%.0f GFLOP/s), oneDNN blocked %.0f ms "
           "(%.0f GFLOP/s), %.0f GFLOP\n",
           tot_be, tot_flop / tot_be / 1e6, tot_bl, tot_flop / tot_bl / 1e6, tot_flop / 1e9);
    ssl_ctx_free(&ctx);
    return 0;
}
