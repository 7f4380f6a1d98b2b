/* The default CPU backend: convolution as im2col + BLAS over chunks of images,
 * one chunk per OpenMP task; batch norm, pooling and ReLU parallel over
 * channels. BLAS runs single-threaded inside each task, so exactly n_threads
 * threads work and none oversubscribe. 3x3 stride-1 convolutions of 16+
 * channels and 8+ images go to the Winograd kernels (winograd.c, checked
 * by tests/test_winograd.c); 2x2 and smaller planes (small crops in the last
 * stage) to one GEMM (smallconv.c). Checked against ref.c by
 * tests/test_ops.c. */
#include "selfsup/ops.h"

#include "smallconv.h"
#include "winograd.h"

#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static inline int thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Output columns ow whose input column ow*stride - pad + s lies inside
 * [0, W): the half-open range [*lo, *hi). */
static inline void valid_cols(int OW, int W, int stride, int pad, int s, int *lo, int *hi)
{
    int a = pad - s, l = a > 0 ? (a + stride - 1) / stride : 0;
    int h = (W - 1 + pad - s) / stride + 1; /* W-1+pad-s >= 0 unless the kernel overhangs */
    if (W - 1 + pad - s < 0) h = 0;
    if (h > OW) h = OW;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* col (C*R*S, nb*OH*OW) <- patches of images n0 .. n0+nb-1 of x */
static void im2col(float *col, const float *x, const ssl_conv_desc *d, int n0, int nb)
{
    long xsn, xsc;
    ssl_layout_strides(d->layout, d->N, d->C, d->H, d->W, &xsn, &xsc);
    const long ohw = (long)d->OH * d->OW, cols = nb * ohw;
    const int st = d->stride;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                float *row = col + ((long)(c * d->R + r) * d->S + s) * cols;
                int lo, hi;
                valid_cols(d->OW, d->W, st, d->pad, s, &lo, &hi);
                for (int j = 0; j < nb; j++) {
                    const float *xp = x + (n0 + j) * xsn + c * xsc;
                    float *o = row + j * ohw;
                    for (int oh = 0; oh < d->OH; oh++) {
                        int ih = oh * st - d->pad + r;
                        float *orow = o + (long)oh * d->OW;
                        if (ih < 0 || ih >= d->H) {
                            memset(orow, 0, sizeof(float) * d->OW);
                            continue;
                        }
                        /* input column of output ow is base + ow*st (valid in [lo, hi)) */
                        const long base = (long)ih * d->W - d->pad + s;
                        for (int ow = 0; ow < lo; ow++) orow[ow] = 0.0f;
                        if (st == 1) {
                            if (hi > lo) memcpy(orow + lo, xp + (base + lo), sizeof(float) * (hi - lo));
                        } else {
                            for (int ow = lo; ow < hi; ow++) orow[ow] = xp[base + (long)ow * st];
                        }
                        for (int ow = hi; ow < d->OW; ow++) orow[ow] = 0.0f;
                    }
                }
            }
}

/* dx of images n0 .. n0+nb-1 += col2im(dcol) */
static void col2im_add(float *dx, const float *dcol, const ssl_conv_desc *d, int n0, int nb)
{
    long xsn, xsc;
    ssl_layout_strides(d->layout, d->N, d->C, d->H, d->W, &xsn, &xsc);
    const long ohw = (long)d->OH * d->OW, cols = nb * ohw;
    const int st = d->stride;
    for (int c = 0; c < d->C; c++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                const float *row = dcol + ((long)(c * d->R + r) * d->S + s) * cols;
                int lo, hi;
                valid_cols(d->OW, d->W, st, d->pad, s, &lo, &hi);
                for (int j = 0; j < nb; j++) {
                    float *xp = dx + (n0 + j) * xsn + c * xsc;
                    const float *o = row + j * ohw;
                    for (int oh = 0; oh < d->OH; oh++) {
                        int ih = oh * st - d->pad + r;
                        if (ih < 0 || ih >= d->H) continue;
                        const long base = (long)ih * d->W - d->pad + s;
                        const float *orow = o + (long)oh * d->OW;
                        if (st == 1)
                            for (int ow = lo; ow < hi; ow++) xp[base + ow] += orow[ow];
                        else
                            for (int ow = lo; ow < hi; ow++) xp[base + (long)ow * st] += orow[ow];
                    }
                }
            }
}

static int is_pointwise(const ssl_conv_desc *d)
{
    return d->R == 1 && d->S == 1 && d->stride == 1 && d->pad == 0;
}

/* Images per chunk: whole images, about 1 MiB of columns, at least two chunks
 * per thread when the batch allows. NCHW output rows are per image, so 1. */
static int chunk_images(ssl_ctx *ctx, const ssl_conv_desc *d)
{
    if (d->layout != SSL_LAYOUT_CNHW) return 1;
    long per_img = (long)d->C * d->R * d->S * d->OH * d->OW;
    int nb = (int)((256L * 1024) / (per_img > 0 ? per_img : 1));
    int max_nb = d->N / (2 * ctx->n_threads);
    if (nb > max_nb) nb = max_nb;
    return nb < 1 ? 1 : nb;
}

/* Matrix view of images n0.. of an activation with `ch` channels and hw
 * positions: pointer and leading dimension. */
static void act_block(ssl_layout l, int N, int ch, long hw, int n0, const float *base,
                      const float **p, int *ld)
{
    if (l == SSL_LAYOUT_CNHW) { *p = base + n0 * hw; *ld = (int)(N * hw); }
    else { *p = base + (long)n0 * ch * hw; *ld = (int)hw; }
}

static void cpu_conv2d_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                           const ssl_conv_desc *d)
{
    if (!ctx->direct_conv && ssl_smallconv_suits(d)) {
        ssl_smallconv_fwd(ctx, y, x, w, d);
        return;
    }
    if (!ctx->direct_conv && ssl_winograd_fast() && ssl_winograd_suits(d)) {
        ssl_winograd_conv_fwd(ctx, y, x, w, d);
        return;
    }
    const int crs = d->C * d->R * d->S;
    const long ohw = (long)d->OH * d->OW;
    const int nb = chunk_images(ctx, d);
    const int n_chunks = (d->N + nb - 1) / nb;
    const int pw = is_pointwise(d);
    float *scratch = pw ? NULL : ssl_ctx_scratch(ctx, sizeof(float) * (size_t)crs * nb * ohw * ctx->n_threads);
    if (!pw && !scratch) return;
#pragma omp parallel for schedule(static, 1) num_threads(ctx->n_threads)
    for (int ci = 0; ci < n_chunks; ci++) {
        int n0 = ci * nb, cnt = d->N - n0 < nb ? d->N - n0 : nb;
        const float *yp;
        int ldy;
        act_block(d->layout, d->N, d->K, ohw, n0, y, &yp, &ldy);
        if (pw) {
            const float *xp;
            int ldx;
            act_block(d->layout, d->N, d->C, ohw, n0, x, &xp, &ldx);
            ssl_sgemm(0, 0, d->K, (int)(cnt * ohw), d->C, 1.0f, w, crs, xp, ldx, 0.0f,
                      (float *)yp, ldy);
        } else {
            float *col = scratch + (size_t)thread_id() * crs * nb * ohw;
            im2col(col, x, d, n0, cnt);
            ssl_sgemm(0, 0, d->K, (int)(cnt * ohw), crs, 1.0f, w, crs, col, (int)(cnt * ohw),
                      0.0f, (float *)yp, ldy);
        }
    }
}

static void cpu_conv2d_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy,
                           const float *x, const float *w, const ssl_conv_desc *d)
{
    if (!ctx->direct_conv && ssl_smallconv_suits(d)) {
        ssl_smallconv_bwd(ctx, dx, dw, dy, x, w, d);
        return;
    }
    if (!ctx->direct_conv && ssl_winograd_fast() && ssl_winograd_suits(d)) {
        ssl_winograd_conv_bwd(ctx, dx, dw, dy, x, w, d);
        return;
    }
    const int crs = d->C * d->R * d->S;
    const long ohw = (long)d->OH * d->OW;
    const int nb = chunk_images(ctx, d);
    const int n_chunks = (d->N + nb - 1) / nb;
    const int pw = is_pointwise(d);
    const int T = ctx->n_threads;
    const size_t col_sz = pw ? 0 : (size_t)crs * nb * ohw;
    const size_t dw_sz = (size_t)d->K * crs;
    float *scratch = ssl_ctx_scratch(ctx, sizeof(float) * (col_sz + dw_sz) * T);
    if (!scratch) return;
    for (int t = 0; t < T; t++) /* only the per-thread weight-gradient sums start at 0 */
        memset(scratch + (size_t)t * (col_sz + dw_sz) + col_sz, 0, sizeof(float) * dw_sz);
#pragma omp parallel for schedule(static, 1) num_threads(T) /* static: deterministic sums */
    for (int ci = 0; ci < n_chunks; ci++) {
        int n0 = ci * nb, cnt = d->N - n0 < nb ? d->N - n0 : nb;
        int cols = (int)(cnt * ohw);
        float *mine = scratch + (size_t)thread_id() * (col_sz + dw_sz);
        float *dw_t = mine + col_sz;
        const float *dyp, *xp;
        int ldy, ldx;
        act_block(d->layout, d->N, d->K, ohw, n0, dy, &dyp, &ldy);
        if (pw) {
            act_block(d->layout, d->N, d->C, ohw, n0, x, &xp, &ldx);
            ssl_sgemm(0, 1, d->K, crs, cols, 1.0f, dyp, ldy, xp, ldx, 1.0f, dw_t, crs);
            if (dx) {
                const float *dxp;
                act_block(d->layout, d->N, d->C, ohw, n0, dx, &dxp, &ldx);
                ssl_sgemm(1, 0, d->C, cols, d->K, 1.0f, w, crs, dyp, ldy, 1.0f, (float *)dxp, ldx);
            }
        } else {
            float *col = mine;
            im2col(col, x, d, n0, cnt);
            ssl_sgemm(0, 1, d->K, crs, cols, 1.0f, dyp, ldy, col, cols, 1.0f, dw_t, crs);
            if (dx) { /* reuse the column buffer for the column gradient */
                ssl_sgemm(1, 0, crs, cols, d->K, 1.0f, w, crs, dyp, ldy, 0.0f, col, cols);
                col2im_add(dx, col, d, n0, cnt);
            }
        }
    }
    for (int t = 0; t < T; t++) {
        const float *p = scratch + (size_t)t * (col_sz + dw_sz) + col_sz;
        for (size_t i = 0; i < dw_sz; i++) dw[i] += p[i];
    }
}

/* A channel's values are `nseg` contiguous runs of `len` floats: one run of
 * N*HW in CNHW, one per image in NCHW; run j starts at bn_run(...). The
 * forward's statistics are summed vectorised in double: a float sum's
 * rounding depends on its order, and a deep net's few-value statistics
 * amplify it (a float SIMD sum missed ResNet-50's golden by 29x its
 * tolerance). */
static long bn_run(ssl_layout l, int N, int C, int HW, int c, int j)
{
    return l == SSL_LAYOUT_CNHW ? (long)c * N * HW : ((long)j * C + c) * HW;
}

/* From a channel's sums over m values (training) or its running statistics
 * (eval): running-statistics update, saved mean and 1/std, and the affine
 * y = x * a + b of the normalisation. */
static void bn_stats(double s, double s2, long m, int training, int c, float momentum, float eps,
                     const float *gamma, const float *beta, float *running_mean,
                     float *running_var, float *mean, float *invstd, float *a, float *b)
{
    double mu, var;
    if (training) {
        mu = s / m;
        var = s2 / m;
        if (running_mean) {
            double unbiased = m > 1 ? s2 / (m - 1) : var;
            running_mean[c] = (float)((1 - momentum) * running_mean[c] + momentum * mu);
            running_var[c] = (float)((1 - momentum) * running_var[c] + momentum * unbiased);
        }
    } else {
        mu = running_mean[c];
        var = running_var[c];
    }
    float is = (float)(1.0 / sqrt(var + eps));
    mean[c] = (float)mu;
    invstd[c] = is;
    *a = (gamma ? gamma[c] : 1.0f) * is;
    *b = (beta ? beta[c] : 0.0f) - (float)mu * *a;
}

/* Batch norm of an (N, C) matrix (row-major: NCHW with HW = 1), the heads'
 * case. A channel is a column, strided by C: threads take blocks of columns
 * and walk the rows, so each row's block is read contiguously (the per-channel
 * walk of the general loop touched a cache line per value). Each column's
 * sums run over the rows in order, in double. */
#define BN_COLS 64

static void bn_rows_fwd(ssl_ctx *ctx, float *y, float *mean, float *invstd, const float *x,
                        const float *skip, const float *gamma, const float *beta,
                        float *running_mean, float *running_var, int training, float momentum,
                        float eps, int relu, int N, int C)
{
    const int nb = (C + BN_COLS - 1) / BN_COLS;
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int cb = 0; cb < nb; cb++) {
        const int c0 = cb * BN_COLS, w = C - c0 < BN_COLS ? C - c0 : BN_COLS;
        double s[BN_COLS] = {0}, s2[BN_COLS] = {0};
        float fm[BN_COLS], a[BN_COLS], b[BN_COLS];
        if (training) {
            for (int n = 0; n < N; n++) {
                const float *p = x + (long)n * C + c0;
#pragma omp simd
                for (int j = 0; j < w; j++) s[j] += p[j];
            }
            for (int j = 0; j < w; j++) fm[j] = (float)(s[j] / N);
            for (int n = 0; n < N; n++) {
                const float *p = x + (long)n * C + c0;
#pragma omp simd
                for (int j = 0; j < w; j++) {
                    const double d = p[j] - fm[j];
                    s2[j] += d * d;
                }
            }
        }
        for (int j = 0; j < w; j++)
            bn_stats(s[j], s2[j], N, training, c0 + j, momentum, eps, gamma, beta, running_mean,
                     running_var, mean, invstd, &a[j], &b[j]);
        for (int n = 0; n < N; n++) {
            const long o = (long)n * C + c0;
            float *yo = y + o;
            const float *xo = x + o;
            float v[BN_COLS];
#pragma omp simd
            for (int j = 0; j < w; j++) v[j] = xo[j] * a[j] + b[j];
            if (skip) {
                const float *so = skip + o; /* read only when there is one */
#pragma omp simd
                for (int j = 0; j < w; j++) v[j] += so[j];
            }
#pragma omp simd
            for (int j = 0; j < w; j++) yo[j] = !relu || v[j] > 0.0f || v[j] != v[j] ? v[j] : 0.0f;
        }
    }
}

static void bn_rows_bwd(ssl_ctx *ctx, float *dx, float *dskip, float *dgamma, float *dbeta,
                        const float *dy, const float *y, const float *x, const float *mean,
                        const float *invstd, const float *gamma, int training, int relu, int N,
                        int C)
{
    const int nb = (C + BN_COLS - 1) / BN_COLS;
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int cb = 0; cb < nb; cb++) {
        const int c0 = cb * BN_COLS, w = C - c0 < BN_COLS ? C - c0 : BN_COLS;
        double sdy[BN_COLS] = {0}, sdyxh[BN_COLS] = {0};
        float g[BN_COLS], k1[BN_COLS], k2[BN_COLS];
        const float *mu = mean + c0;
        for (int n = 0; n < N; n++) {
            const long o = (long)n * C + c0;
            const float *dyo = dy + o, *xo = x + o, *yo = y ? y + o : NULL;
            if (relu) {
#pragma omp simd
                for (int j = 0; j < w; j++) {
                    const float dz = yo[j] > 0.0f ? dyo[j] : 0.0f;
                    sdy[j] += dz;
                    sdyxh[j] += (double)dz * (xo[j] - mu[j]);
                }
            } else {
#pragma omp simd
                for (int j = 0; j < w; j++) {
                    sdy[j] += dyo[j];
                    sdyxh[j] += (double)dyo[j] * (xo[j] - mu[j]);
                }
            }
        }
        for (int j = 0; j < w; j++) {
            const int c = c0 + j;
            const float is = invstd[c];
            sdyxh[j] *= is;
            if (dgamma) dgamma[c] += (float)sdyxh[j];
            if (dbeta) dbeta[c] += (float)sdy[j];
            g[j] = (gamma ? gamma[c] : 1.0f) * is;
            k1[j] = training ? (float)(sdy[j] / N) : 0.0f;
            k2[j] = training ? (float)(sdyxh[j] / N) * is : 0.0f;
        }
        if (!dx && !dskip) continue;
        for (int n = 0; n < N; n++) {
            const long o = (long)n * C + c0;
            const float *dyo = dy + o, *xo = x + o, *yo = y ? y + o : NULL;
            float dz[BN_COLS];
            if (relu) {
#pragma omp simd
                for (int j = 0; j < w; j++) dz[j] = yo[j] > 0.0f ? dyo[j] : 0.0f;
            } else {
                memcpy(dz, dyo, sizeof(float) * (size_t)w);
            }
            if (dskip) {
                float *ds = dskip + o;
#pragma omp simd
                for (int j = 0; j < w; j++) ds[j] += dz[j];
            }
            if (dx) {
                float *d = dx + o;
#pragma omp simd
                for (int j = 0; j < w; j++) d[j] += g[j] * (dz[j] - k1[j] - (xo[j] - mu[j]) * k2[j]);
            }
        }
    }
}

/* A channel's backward sums: sdy = sum dz and sdyxh = sum dz (x - mu),
 * dz = dy (relu: where y > 0), per image a float chain over its HW values
 * (no contraction: -std=c11), the images' sums then added in double in
 * image order. One chain is latency-bound (a value per 4 cycles, slower
 * than memory), so BN_CHAINS images run side by side: each image's chain,
 * and so the result, is the same as one image at a time. */
enum { BN_CHAINS = 8 };

static inline void bn_dsums(double *sdy, double *sdyxh, const float *dy, const float *x,
                            const float *y, float mu, int c, int N, int C, int HW,
                            ssl_layout l, int relu)
{
    /* full groups with the constant count (a variable count in one loop
     * measured 0.089 -> 0.122 s of BN backward per DINO step), then the
     * images left one at a time */
    int n = 0;
    for (; n + BN_CHAINS <= N; n += BN_CHAINS) {
        long o[BN_CHAINS];
        float a[BN_CHAINS] = {0}, b[BN_CHAINS] = {0};
        for (int k = 0; k < BN_CHAINS; k++) o[k] = ssl_act_index(l, N, C, HW, n + k, c, 0);
        for (int i = 0; i < HW; i++)
            for (int k = 0; k < BN_CHAINS; k++) {
                const float dz = !relu || y[o[k] + i] > 0.0f ? dy[o[k] + i] : 0.0f;
                a[k] += dz;
                b[k] += dz * (x[o[k] + i] - mu);
            }
        for (int k = 0; k < BN_CHAINS; k++) {
            *sdy += a[k];
            *sdyxh += b[k];
        }
    }
    for (; n < N; n++) {
        const long o = ssl_act_index(l, N, C, HW, n, c, 0);
        float a = 0, b = 0;
        for (int i = 0; i < HW; i++) {
            const float dz = !relu || y[o + i] > 0.0f ? dy[o + i] : 0.0f;
            a += dz;
            b += dz * (x[o + i] - mu);
        }
        *sdy += a;
        *sdyxh += b;
    }
}

static void cpu_bn_fwd(ssl_ctx *ctx, float *y, float *mean, float *invstd, const float *x,
                       const float *skip, const float *gamma, const float *beta,
                       float *running_mean, float *running_var, int training, float momentum,
                       float eps, int relu, int N, int C, int HW, ssl_layout l)
{
    if (HW == 1 && l == SSL_LAYOUT_NCHW) {
        bn_rows_fwd(ctx, y, mean, invstd, x, skip, gamma, beta, running_mean, running_var,
                    training, momentum, eps, relu, N, C);
        return;
    }
    const long m = (long)N * HW;
    const int nseg = l == SSL_LAYOUT_CNHW ? 1 : N;
    const long len = l == SSL_LAYOUT_CNHW ? m : HW;
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int c = 0; c < C; c++) {
        double s = 0, s2 = 0;
        if (training) {
            for (int j = 0; j < nseg; j++) {
                const float *p = x + bn_run(l, N, C, HW, c, j);
#pragma omp simd reduction(+ : s)
                for (long i = 0; i < len; i++) s += p[i];
            }
            const float fm = (float)(s / m);
            for (int j = 0; j < nseg; j++) {
                const float *p = x + bn_run(l, N, C, HW, c, j);
#pragma omp simd reduction(+ : s2)
                for (long i = 0; i < len; i++) {
                    const double d = p[i] - fm;
                    s2 += d * d;
                }
            }
        }
        float a, b;
        bn_stats(s, s2, m, training, c, momentum, eps, gamma, beta, running_mean, running_var, mean,
                 invstd, &a, &b);
        for (int j = 0; j < nseg; j++) {
            const long o = bn_run(l, N, C, HW, c, j);
            float *yo = y + o;
            const float *xo = x + o;
            if (!skip && !relu) {
#pragma omp simd
                for (long i = 0; i < len; i++) yo[i] = xo[i] * a + b;
            } else if (!skip) {
#pragma omp simd
                for (long i = 0; i < len; i++) {
                    float v = xo[i] * a + b;
                    yo[i] = (v > 0.0f || v != v) ? v : 0.0f; /* NaN stays NaN */
                }
            } else {
                const float *so = skip + o;
#pragma omp simd
                for (long i = 0; i < len; i++) {
                    float v = xo[i] * a + b + so[i];
                    yo[i] = !relu || v > 0.0f || v != v ? v : 0.0f;
                }
            }
        }
    }
}

static void cpu_bn_bwd(ssl_ctx *ctx, float *dx, float *dskip, float *dgamma, float *dbeta,
                       const float *dy, const float *y, const float *x, const float *mean,
                       const float *invstd, const float *gamma, int training, int relu, int N,
                       int C, int HW, ssl_layout l)
{
    if (HW == 1 && l == SSL_LAYOUT_NCHW) {
        bn_rows_bwd(ctx, dx, dskip, dgamma, dbeta, dy, y, x, mean, invstd, gamma, training, relu,
                    N, C);
        return;
    }
    const long m = (long)N * HW;
    const int nseg = l == SSL_LAYOUT_CNHW ? 1 : N;
    const long len = l == SSL_LAYOUT_CNHW ? m : HW;
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyxh = 0;
        const float mu = mean[c], is = invstd[c];
        if (relu) bn_dsums(&sdy, &sdyxh, dy, x, y, mu, c, N, C, HW, l, 1);
        else bn_dsums(&sdy, &sdyxh, dy, x, NULL, mu, c, N, C, HW, l, 0);
        sdyxh *= is;
        if (dgamma) dgamma[c] += (float)sdyxh;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx && !dskip) continue;
        const float g = (gamma ? gamma[c] : 1.0f) * is;
        const float k1 = training ? (float)(sdy / m) : 0.0f;
        const float k2 = training ? (float)(sdyxh / m) * is : 0.0f;
        for (int j = 0; j < nseg; j++) {
            const long o = bn_run(l, N, C, HW, c, j);
            const float *dyo = dy + o, *xo = x + o, *yo = y ? y + o : NULL;
            float *dxo = dx ? dx + o : NULL, *dso = dskip ? dskip + o : NULL;
            if (!relu && !dskip) {
#pragma omp simd
                for (long i = 0; i < len; i++) dxo[i] += g * (dyo[i] - k1 - (xo[i] - mu) * k2);
                continue;
            }
            /* y is read only under relu (it may be NULL otherwise) */
            if (dso && dxo && relu) {
#pragma omp simd
                for (long i = 0; i < len; i++) {
                    float dz = yo[i] > 0.0f ? dyo[i] : 0.0f;
                    dso[i] += dz;
                    dxo[i] += g * (dz - k1 - (xo[i] - mu) * k2);
                }
            } else if (dso && dxo) {
#pragma omp simd
                for (long i = 0; i < len; i++) {
                    dso[i] += dyo[i];
                    dxo[i] += g * (dyo[i] - k1 - (xo[i] - mu) * k2);
                }
            } else if (dso && relu) {
#pragma omp simd
                for (long i = 0; i < len; i++) dso[i] += yo[i] > 0.0f ? dyo[i] : 0.0f;
            } else if (dso) {
#pragma omp simd
                for (long i = 0; i < len; i++) dso[i] += dyo[i];
            } else { /* dx only, relu (the !relu case went above) */
#pragma omp simd
                for (long i = 0; i < len; i++) {
                    float dz = yo[i] > 0.0f ? dyo[i] : 0.0f;
                    dxo[i] += g * (dz - k1 - (xo[i] - mu) * k2);
                }
            }
        }
    }
}

static void cpu_relu_fwd(ssl_ctx *ctx, float *y, const float *x, long n)
{
#pragma omp parallel for simd schedule(static) num_threads(ctx->n_threads)
    for (long i = 0; i < n; i++) y[i] = (x[i] > 0.0f || x[i] != x[i]) ? x[i] : 0.0f; /* NaN stays NaN */
}

static void cpu_relu_bwd(ssl_ctx *ctx, float *dx, const float *dy, const float *y, long n)
{
#pragma omp parallel for simd schedule(static) num_threads(ctx->n_threads)
    for (long i = 0; i < n; i++) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
}

static void cpu_gap_fwd(ssl_ctx *ctx, float *y, const float *x, int N, int C, int HW,
                        ssl_layout l)
{
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            const float *p = x + ssl_act_index(l, N, C, HW, n, c, 0);
            float s = 0;
            for (int i = 0; i < HW; i++) s += p[i];
            y[(long)n * C + c] = s / (float)HW;
        }
}

static void cpu_gap_bwd(ssl_ctx *ctx, float *dx, const float *dy, int N, int C, int HW,
                        ssl_layout l)
{
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int c = 0; c < C; c++)
        for (int n = 0; n < N; n++) {
            float *p = dx + ssl_act_index(l, N, C, HW, n, c, 0);
            float g = dy[(long)n * C + c] / (float)HW;
            for (int i = 0; i < HW; i++) p[i] += g;
        }
}

static void cpu_linear_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                           const float *b, int N, int I, int O)
{
    int T = ctx->n_threads, rows = (N + T - 1) / T;
#pragma omp parallel for schedule(static) num_threads(T)
    for (int t = 0; t < T; t++) {
        int n0 = t * rows, cnt = N - n0 < rows ? N - n0 : rows;
        if (cnt <= 0) continue;
        ssl_sgemm(0, 1, cnt, O, I, 1.0f, x + (long)n0 * I, I, w, I, 0.0f, y + (long)n0 * O, O);
        if (b)
            for (int n = n0; n < n0 + cnt; n++)
                for (int o = 0; o < O; o++) y[(long)n * O + o] += b[o];
    }
}

#define LINEAR_DB_COLS 256 /* 1 KB of bias-gradient sums */

static void cpu_linear_bwd(ssl_ctx *ctx, float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int N, int I, int O)
{
    int T = ctx->n_threads, rows = (N + T - 1) / T, orows = (O + T - 1) / T;
#pragma omp parallel for schedule(static) num_threads(T)
    for (int t = 0; t < T; t++) {
        int n0 = t * rows, cnt = N - n0 < rows ? N - n0 : rows;
        if (dx && cnt > 0)
            ssl_sgemm(0, 0, cnt, I, O, 1.0f, dy + (long)n0 * O, O, w, I, 1.0f,
                      dx + (long)n0 * I, I);
        int o0 = t * orows, ocnt = O - o0 < orows ? O - o0 : orows;
        if (ocnt > 0) { /* rows o0.. of dw: dy[:, o0..]^T x */
            ssl_sgemm(1, 0, ocnt, I, N, 1.0f, dy + o0, O, x, I, 1.0f, dw + (long)o0 * I, I);
            if (db) /* column sums of dy, LINEAR_DB_COLS columns at a time along
                       the rows (vector code); each column still sums its rows in
                       order from 0, as one scalar loop per column would */
                for (int c0 = o0; c0 < o0 + ocnt; c0 += LINEAR_DB_COLS) {
                    int nc = o0 + ocnt - c0 < LINEAR_DB_COLS ? o0 + ocnt - c0 : LINEAR_DB_COLS;
                    float acc[LINEAR_DB_COLS] = {0};
                    for (int n = 0; n < N; n++) {
                        const float *row = dy + (long)n * O + c0;
                        for (int j = 0; j < nc; j++) acc[j] += row[j];
                    }
                    for (int j = 0; j < nc; j++) db[c0 + j] += acc[j];
                }
        }
    }
}

/* The stem's one max-pool is cheap: the reference serves. */
/* Pooling goes plane by plane, and a plane (one image's channel) is
 * contiguous in both layouts, in (n, c) or (c, n) order: each thread pools
 * a run of planes with the reference, as a (1, planes) NCHW tensor, so the
 * results are the reference's bit for bit. */
typedef enum { POOL_MAX_FWD, POOL_MAX_BWD, POOL_AVG_FWD, POOL_AVG_BWD } pool_kind;

static void pool_planes(ssl_ctx *ctx, pool_kind kind, float *out, int32_t *argmax_out,
                        const float *in, const int32_t *argmax_in, const ssl_pool_desc *d)
{
    const ssl_backend *ref = ssl_backend_ref();
    const long P = (long)d->N * d->C, xs = (long)d->H * d->W, ys = (long)d->OH * d->OW;
    if (P <= 0) return;
    const int T = P < ctx->n_threads ? (int)P : ctx->n_threads;
#pragma omp parallel for schedule(static) num_threads(T)
    for (int t = 0; t < T; t++) {
        const long p0 = P * t / T, p1 = P * (t + 1) / T;
        ssl_pool_desc r = *d;
        r.N = 1;
        r.C = (int)(p1 - p0);
        r.layout = SSL_LAYOUT_NCHW;
        switch (kind) {
        case POOL_MAX_FWD:
            ref->maxpool_fwd(ctx, out + p0 * ys, argmax_out + p0 * ys, in + p0 * xs, &r);
            break;
        case POOL_MAX_BWD:
            ref->maxpool_bwd(ctx, out + p0 * xs, in + p0 * ys, argmax_in + p0 * ys, &r);
            break;
        case POOL_AVG_FWD: ref->avgpool_fwd(ctx, out + p0 * ys, in + p0 * xs, &r); break;
        case POOL_AVG_BWD: ref->avgpool_bwd(ctx, out + p0 * xs, in + p0 * ys, &r); break;
        }
    }
}

static void cpu_maxpool_fwd(ssl_ctx *ctx, float *y, int32_t *argmax, const float *x,
                            const ssl_pool_desc *d)
{
    pool_planes(ctx, POOL_MAX_FWD, y, argmax, x, NULL, d);
}
static void cpu_maxpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const int32_t *argmax,
                            const ssl_pool_desc *d)
{
    pool_planes(ctx, POOL_MAX_BWD, dx, NULL, dy, argmax, d);
}
static void cpu_avgpool_fwd(ssl_ctx *ctx, float *y, const float *x, const ssl_pool_desc *d)
{
    pool_planes(ctx, POOL_AVG_FWD, y, NULL, x, NULL, d);
}
static void cpu_avgpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const ssl_pool_desc *d)
{
    pool_planes(ctx, POOL_AVG_BWD, dx, NULL, dy, NULL, d);
}

static const ssl_backend cpu_backend = {
    .name = "cpu",
    .device = SSL_DEVICE_CPU,
    .act_layout = SSL_LAYOUT_CNHW,
    .conv2d_fwd = cpu_conv2d_fwd,
    .conv2d_bwd = cpu_conv2d_bwd,
    .bn_fwd = cpu_bn_fwd,
    .bn_bwd = cpu_bn_bwd,
    .relu_fwd = cpu_relu_fwd,
    .relu_bwd = cpu_relu_bwd,
    .gap_fwd = cpu_gap_fwd,
    .gap_bwd = cpu_gap_bwd,
    .linear_fwd = cpu_linear_fwd,
    .linear_bwd = cpu_linear_bwd,
    .maxpool_fwd = cpu_maxpool_fwd,
    .maxpool_bwd = cpu_maxpool_bwd,
    .avgpool_fwd = cpu_avgpool_fwd,
    .avgpool_bwd = cpu_avgpool_bwd,
};

const ssl_backend *ssl_backend_cpu(void) { return &cpu_backend; }
