/* Convolutions on planes no larger than their kernel. Per image such a
 * convolution is a linear map from the image's C x H x W values to its
 * K x OH x OW values, y_n = M x_n, where M (K OH OW, C H W) holds the taps
 * of the kernel that join output pixel q to input pixel p (zero where the
 * tap falls in the padding). With H W <= R S, M has no more entries than the
 * direct convolution has multiply-adds (for 2x2 maps and a 3x3 kernel, 16
 * against 36 per channel pair; ssl_smallconv_suits takes the planes where
 * it also beats Winograd), so the layer becomes one GEMM over all the
 * images, the backend's linear op, without im2col or tile transforms:
 *   forward          Y (N, K OH OW) = X (N, C H W) M^T
 *   backward data    dX += dY M
 *   backward weights dM = dY^T X, each entry added back onto its tap of dw.
 * In NCHW, X and Y are the activations as they lie; CNHW is copied to and
 * from (N, C H W) rows. Checked against ref.c by tests/test_ops.c and
 * tests/test_dnnl.c. */
#include "smallconv.h"

#include <string.h>

/* M's entries (floats) at most: rebuilt every call, and kept in scratch
 * twice by the backward (M and dM): 2 x 16 MB */
#define SMALLCONV_MAX_M (4L << 20)
/* (output pixel, tap) pairs that land inside the plane, at most */
#define SMALLCONV_MAX_TAPS 128

int ssl_smallconv_suits(const ssl_conv_desc *d)
{
    const long hw = (long)d->H * d->W, ohw = (long)d->OH * d->OW;
    if (d->R * d->S < 2 || hw * ohw > 16 || d->N < 8) return 0;
    return ohw * d->R * d->S <= SMALLCONV_MAX_TAPS && (long)d->K * ohw * d->C * hw <= SMALLCONV_MAX_M;
}

/* The block of M that joins channel c to output channel k is the same for
 * every (k, c): entry mo[t] of the block (q I + p: output pixel q, input
 * pixel p, I = C H W) is tap wo[t] (r S + s) of w[k][c]. Returns the count. */
static int tap_table(int *mo, int *wo, const ssl_conv_desc *d)
{
    const int I = d->C * d->H * d->W;
    int n = 0;
    for (int oh = 0; oh < d->OH; oh++)
        for (int ow = 0; ow < d->OW; ow++)
            for (int r = 0; r < d->R; r++) {
                const int h = oh * d->stride - d->pad + r;
                if (h < 0 || h >= d->H) continue;
                for (int s = 0; s < d->S; s++) {
                    const int x = ow * d->stride - d->pad + s;
                    if (x < 0 || x >= d->W) continue;
                    mo[n] = (oh * d->OW + ow) * I + h * d->W + x;
                    wo[n++] = r * d->S + s;
                }
            }
    return n;
}

/* M (K OHW, C HW) from w (fold 0), or dw += the taps' sums of dM (fold 1) */
static void taps(float *M, float *w, int fold, const ssl_conv_desc *d)
{
    int mo[SMALLCONV_MAX_TAPS], wo[SMALLCONV_MAX_TAPS];
    const int n = tap_table(mo, wo, d), HW = d->H * d->W, RS = d->R * d->S;
    const long kstride = (long)d->OH * d->OW * d->C * HW;
    if (!fold) memset(M, 0, sizeof(float) * (size_t)d->K * kstride);
    for (int k = 0; k < d->K; k++)
        for (int c = 0; c < d->C; c++) {
            float *mb = M + k * kstride + (long)c * HW, *wb = w + ((long)k * d->C + c) * RS;
            if (fold)
                for (int t = 0; t < n; t++) wb[wo[t]] += mb[mo[t]];
            else
                for (int t = 0; t < n; t++) mb[mo[t]] = wb[wo[t]];
        }
}

/* rows (N, ch hw) <-> an activation (N, ch, hw) in layout l; add: += */
static void to_rows(ssl_ctx *ctx, float *rows, const float *a, int N, int ch, int hw, ssl_layout l)
{
    long sn, sc;
    ssl_layout_strides(l, N, ch, 1, hw, &sn, &sc);
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < ch; c++)
            memcpy(rows + ((long)n * ch + c) * hw, a + n * sn + c * sc, sizeof(float) * (size_t)hw);
}

static void from_rows(ssl_ctx *ctx, float *a, const float *rows, int N, int ch, int hw,
                      ssl_layout l, int add)
{
    long sn, sc;
    ssl_layout_strides(l, N, ch, 1, hw, &sn, &sc);
#pragma omp parallel for schedule(static) num_threads(ctx->n_threads)
    for (int n = 0; n < N; n++)
        for (int c = 0; c < ch; c++) {
            float *dst = a + n * sn + c * sc;
            const float *src = rows + ((long)n * ch + c) * hw;
            for (int i = 0; i < hw; i++) dst[i] = add ? dst[i] + src[i] : src[i];
        }
}

static size_t round16(size_t n) { return (n + 15) / 16 * 16; } /* floats: 64-byte steps */

void ssl_smallconv_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                       const ssl_conv_desc *d)
{
    const int HW = d->H * d->W, OHW = d->OH * d->OW, I = d->C * HW, O = d->K * OHW;
    const int rows = d->layout == SSL_LAYOUT_NCHW; /* activations are already (N, C HW) */
    const size_t nm = round16((size_t)O * I), nx = rows ? 0 : round16((size_t)d->N * I);
    const size_t ny = rows ? 0 : (size_t)d->N * O;
    float *M = ssl_ctx_scratch(ctx, sizeof(float) * (nm + nx + ny));
    if (!M) return;
    float *X = M + nm, *Y = rows ? y : X + nx;
    taps(M, (float *)w, 0, d); /* reads w only */
    if (!rows) to_rows(ctx, X, x, d->N, d->C, HW, d->layout);
    ssl_backend_cpu()->linear_fwd(ctx, Y, rows ? x : X, M, NULL, d->N, I, O);
    if (!rows) from_rows(ctx, y, Y, d->N, d->K, OHW, d->layout, 0);
}

void ssl_smallconv_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy, const float *x,
                       const float *w, const ssl_conv_desc *d)
{
    const int HW = d->H * d->W, OHW = d->OH * d->OW, I = d->C * HW, O = d->K * OHW;
    const int rows = d->layout == SSL_LAYOUT_NCHW;
    const size_t nm = round16((size_t)O * I);
    const size_t nx = rows ? 0 : round16((size_t)d->N * I), ny = rows ? 0 : round16((size_t)d->N * O);
    const size_t ndx = rows || !dx ? 0 : (size_t)d->N * I;
    float *M = ssl_ctx_scratch(ctx, sizeof(float) * (2 * nm + nx + ny + ndx));
    if (!M) return;
    float *dM = M + nm, *X = dM + nm, *dY = X + nx, *dX = rows ? dx : dY + ny;
    taps(M, (float *)w, 0, d); /* reads w only */
    memset(dM, 0, sizeof(float) * (size_t)O * I);
    if (!rows) {
        to_rows(ctx, X, x, d->N, d->C, HW, d->layout);
        to_rows(ctx, dY, dy, d->N, d->K, OHW, d->layout);
        if (dx) memset(dX, 0, sizeof(float) * ndx);
    }
    ssl_backend_cpu()->linear_bwd(ctx, dx ? dX : NULL, dM, NULL, rows ? dy : dY, rows ? x : X, M,
                                  d->N, I, O);
    taps(dM, dw, 1, d);
    if (!rows && dx) from_rows(ctx, dx, dX, d->N, d->C, HW, d->layout, 1);
}
