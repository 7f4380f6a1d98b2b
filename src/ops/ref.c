/* The plain C reference for every op: direct loops, one thread, double
 * accumulators where sums are long. It is the specification the fast paths
 * are tested against, so it favours obviousness over speed. */
#include "selfsup/ops.h"

#include <math.h>
#include <string.h>

int ssl_conv_out_size(int in, int k, int stride, int pad)
{
    int span = in + 2 * pad - k;
    /* C's division truncates toward zero, which would give one output for a
     * kernel up to `stride` larger than the padded input; floor gives none. */
    if (span < 0 || stride < 1) return 0;
    return span / stride + 1;
}

static void ref_conv2d_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                           const ssl_conv_desc *d)
{
    long xsn, xsc, ysn, ysc;
    ssl_layout_strides(d->layout, d->N, d->C, d->H, d->W, &xsn, &xsc);
    ssl_layout_strides(d->layout, d->N, d->K, d->OH, d->OW, &ysn, &ysc);
    for (int n = 0; n < d->N; n++)
        for (int k = 0; k < d->K; k++)
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    double acc = 0;
                    for (int c = 0; c < d->C; c++)
                        for (int r = 0; r < d->R; r++) {
                            int ih = oh * d->stride - d->pad + r;
                            if (ih < 0 || ih >= d->H) continue;
                            for (int s = 0; s < d->S; s++) {
                                int iw = ow * d->stride - d->pad + s;
                                if (iw < 0 || iw >= d->W) continue;
                                acc += (double)x[n * xsn + c * xsc + (long)ih * d->W + iw] *
                                       w[(((long)k * d->C + c) * d->R + r) * d->S + s];
                            }
                        }
                    y[n * ysn + k * ysc + (long)oh * d->OW + ow] = (float)acc;
                }
}

static void ref_conv2d_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy,
                           const float *x, const float *w, const ssl_conv_desc *d)
{
    long xsn, xsc, ysn, ysc;
    ssl_layout_strides(d->layout, d->N, d->C, d->H, d->W, &xsn, &xsc);
    ssl_layout_strides(d->layout, d->N, d->K, d->OH, d->OW, &ysn, &ysc);
    for (int n = 0; n < d->N; n++)
        for (int k = 0; k < d->K; k++)
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    float g = dy[n * ysn + k * ysc + (long)oh * d->OW + ow];
                    if (g == 0.0f) continue;
                    for (int c = 0; c < d->C; c++)
                        for (int r = 0; r < d->R; r++) {
                            int ih = oh * d->stride - d->pad + r;
                            if (ih < 0 || ih >= d->H) continue;
                            for (int s = 0; s < d->S; s++) {
                                int iw = ow * d->stride - d->pad + s;
                                if (iw < 0 || iw >= d->W) continue;
                                long xi = n * xsn + c * xsc + (long)ih * d->W + iw;
                                long wi = (((long)k * d->C + c) * d->R + r) * d->S + s;
                                dw[wi] += g * x[xi];
                                if (dx) dx[xi] += g * w[wi];
                            }
                        }
                }
}

static void ref_bn_fwd(ssl_ctx *ctx, float *y, float *mean, float *invstd, const float *x,
                       const float *skip, const float *gamma, const float *beta,
                       float *running_mean, float *running_var, int training, float momentum,
                       float eps, int relu, int N, int C, int HW, ssl_layout l)
{
    long m = (long)N * HW;
    for (int c = 0; c < C; c++) {
        double mu, var;
        if (training) {
            double s = 0, s2 = 0;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) s += x[ssl_act_index(l, N, C, HW, n, c, i)];
            mu = s / m;
            for (int n = 0; n < N; n++)
                for (int i = 0; i < HW; i++) {
                    double dv = x[ssl_act_index(l, N, C, HW, n, c, i)] - mu;
                    s2 += dv * dv;
                }
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
        float a = (gamma ? gamma[c] : 1.0f) * is;
        float b = (beta ? beta[c] : 0.0f) - (float)mu * a;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                long j = ssl_act_index(l, N, C, HW, n, c, i);
                float v = x[j] * a + b;
                if (skip) v += skip[j];
                y[j] = relu && !(v > 0.0f || v != v) ? 0.0f : v; /* NaN stays NaN */
            }
    }
}

/* The gradient reaching the batch norm's output through the ReLU. */
static float ref_dz(const float *dy, const float *y, int relu, long j)
{
    return relu && !(y[j] > 0.0f) ? 0.0f : dy[j];
}

static void ref_bn_bwd(ssl_ctx *ctx, float *dx, float *dskip, float *dgamma, float *dbeta,
                       const float *dy, const float *y, const float *x, const float *mean,
                       const float *invstd, const float *gamma, int training, int relu, int N,
                       int C, int HW, ssl_layout l)
{
    long m = (long)N * HW;
    for (int c = 0; c < C; c++) {
        double sdy = 0, sdyxh = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                long j = ssl_act_index(l, N, C, HW, n, c, i);
                double xh = (x[j] - mean[c]) * invstd[c];
                float dz = ref_dz(dy, y, relu, j);
                sdy += dz;
                sdyxh += dz * xh;
                if (dskip) dskip[j] += dz;
            }
        if (dgamma) dgamma[c] += (float)sdyxh;
        if (dbeta) dbeta[c] += (float)sdy;
        if (!dx) continue;
        double g = (gamma ? gamma[c] : 1.0) * invstd[c];
        for (int n = 0; n < N; n++)
            for (int i = 0; i < HW; i++) {
                long j = ssl_act_index(l, N, C, HW, n, c, i);
                float dz = ref_dz(dy, y, relu, j);
                if (training) {
                    double xh = (x[j] - mean[c]) * invstd[c];
                    dx[j] += (float)(g * (dz - sdy / m - xh * sdyxh / m));
                } else {
                    dx[j] += (float)(g * dz);
                }
            }
    }
}

static void ref_relu_fwd(ssl_ctx *ctx, float *y, const float *x, long n)
{
    for (long i = 0; i < n; i++) y[i] = (x[i] > 0.0f || x[i] != x[i]) ? x[i] : 0.0f; /* NaN stays NaN */
}

static void ref_relu_bwd(ssl_ctx *ctx, float *dx, const float *dy, const float *y, long n)
{
    for (long i = 0; i < n; i++)
        if (y[i] > 0.0f) dx[i] += dy[i];
}

static void ref_maxpool_fwd(ssl_ctx *ctx, float *y, int32_t *argmax, const float *x,
                            const ssl_pool_desc *d)
{
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            const float *xp = x + ssl_act_index(d->layout, d->N, d->C, d->H * d->W, n, c, 0);
            long yo = ssl_act_index(d->layout, d->N, d->C, d->OH * d->OW, n, c, 0);
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    float best = -INFINITY;
                    int bi = -1;
                    for (int r = 0; r < d->k; r++) {
                        int ih = oh * d->stride - d->pad + r;
                        if (ih < 0 || ih >= d->H) continue;
                        for (int s = 0; s < d->k; s++) {
                            int iw = ow * d->stride - d->pad + s;
                            if (iw < 0 || iw >= d->W) continue;
                            float v = xp[ih * d->W + iw];
                            if (v > best || bi < 0 || isnan(v)) { best = v; bi = ih * d->W + iw; }
                        }
                    }
                    y[yo + oh * d->OW + ow] = best;
                    argmax[yo + oh * d->OW + ow] = bi; /* index inside (n, c)'s plane */
                }
        }
}

static void ref_maxpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const int32_t *argmax,
                            const ssl_pool_desc *d)
{
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            float *dxp = dx + ssl_act_index(d->layout, d->N, d->C, d->H * d->W, n, c, 0);
            long yo = ssl_act_index(d->layout, d->N, d->C, d->OH * d->OW, n, c, 0);
            for (int o = 0; o < d->OH * d->OW; o++)
                if (argmax[yo + o] >= 0) dxp[argmax[yo + o]] += dy[yo + o];
        }
}

static void ref_avgpool_fwd(ssl_ctx *ctx, float *y, const float *x, const ssl_pool_desc *d)
{
    float inv = 1.0f / (float)(d->k * d->k);
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            const float *xp = x + ssl_act_index(d->layout, d->N, d->C, d->H * d->W, n, c, 0);
            long yo = ssl_act_index(d->layout, d->N, d->C, d->OH * d->OW, n, c, 0);
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    float s = 0;
                    for (int r = 0; r < d->k; r++) {
                        int ih = oh * d->stride - d->pad + r;
                        if (ih < 0 || ih >= d->H) continue;
                        for (int q = 0; q < d->k; q++) {
                            int iw = ow * d->stride - d->pad + q;
                            if (iw >= 0 && iw < d->W) s += xp[ih * d->W + iw];
                        }
                    }
                    y[yo + oh * d->OW + ow] = s * inv;
                }
        }
}

static void ref_avgpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const ssl_pool_desc *d)
{
    float inv = 1.0f / (float)(d->k * d->k);
    for (int n = 0; n < d->N; n++)
        for (int c = 0; c < d->C; c++) {
            float *dxp = dx + ssl_act_index(d->layout, d->N, d->C, d->H * d->W, n, c, 0);
            long yo = ssl_act_index(d->layout, d->N, d->C, d->OH * d->OW, n, c, 0);
            for (int oh = 0; oh < d->OH; oh++)
                for (int ow = 0; ow < d->OW; ow++) {
                    float g = dy[yo + oh * d->OW + ow] * inv;
                    for (int r = 0; r < d->k; r++) {
                        int ih = oh * d->stride - d->pad + r;
                        if (ih < 0 || ih >= d->H) continue;
                        for (int q = 0; q < d->k; q++) {
                            int iw = ow * d->stride - d->pad + q;
                            if (iw >= 0 && iw < d->W) dxp[ih * d->W + iw] += g;
                        }
                    }
                }
        }
}

static void ref_gap_fwd(ssl_ctx *ctx, float *y, const float *x, int N, int C, int HW,
                        ssl_layout l)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const float *xp = x + ssl_act_index(l, N, C, HW, n, c, 0);
            double s = 0;
            for (int i = 0; i < HW; i++) s += xp[i];
            y[(long)n * C + c] = (float)(s / HW);
        }
}

static void ref_gap_bwd(ssl_ctx *ctx, float *dx, const float *dy, int N, int C, int HW,
                        ssl_layout l)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            float *dxp = dx + ssl_act_index(l, N, C, HW, n, c, 0);
            float g = dy[(long)n * C + c] / (float)HW;
            for (int i = 0; i < HW; i++) dxp[i] += g;
        }
}

static void ref_linear_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                           const float *b, int N, int I, int O)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double s = b ? b[o] : 0.0;
            for (int i = 0; i < I; i++) s += (double)x[(long)n * I + i] * w[(long)o * I + i];
            y[(long)n * O + o] = (float)s;
        }
}

static void ref_linear_bwd(ssl_ctx *ctx, float *dx, float *dw, float *db, const float *dy,
                           const float *x, const float *w, int N, int I, int O)
{
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            float g = dy[(long)n * O + o];
            if (db) db[o] += g;
            for (int i = 0; i < I; i++) {
                dw[(long)o * I + i] += g * x[(long)n * I + i];
                if (dx) dx[(long)n * I + i] += g * w[(long)o * I + i];
            }
        }
}

static const ssl_backend ref_backend = {
    .name = "ref",
    .device = SSL_DEVICE_CPU,
    .act_layout = SSL_LAYOUT_CNHW,
    .conv2d_fwd = ref_conv2d_fwd,
    .conv2d_bwd = ref_conv2d_bwd,
    .bn_fwd = ref_bn_fwd,
    .bn_bwd = ref_bn_bwd,
    .relu_fwd = ref_relu_fwd,
    .relu_bwd = ref_relu_bwd,
    .maxpool_fwd = ref_maxpool_fwd,
    .maxpool_bwd = ref_maxpool_bwd,
    .avgpool_fwd = ref_avgpool_fwd,
    .avgpool_bwd = ref_avgpool_bwd,
    .gap_fwd = ref_gap_fwd,
    .gap_bwd = ref_gap_bwd,
    .linear_fwd = ref_linear_fwd,
    .linear_bwd = ref_linear_bwd,
};

const ssl_backend *ssl_backend_ref(void) { return &ref_backend; }
