/* The profiling backend: every entry times the inner backend's call. The
 * profile is found through ctx->profile, so the table itself holds no state
 * beyond the inner table it forwards to. */
#include "selfsup/ops.h"

#include <stdio.h>
#include <string.h>

static const char *const kind_names[SSL_PROF_N] = {
    "conv fwd", "conv bwd", "bn fwd", "bn bwd", "relu", "pool", "global pool", "linear",
};

const char *ssl_prof_kind_name(ssl_prof_kind k)
{
    return k >= 0 && k < SSL_PROF_N ? kind_names[k] : "?";
}

void ssl_profile_clear(ssl_profile *p)
{
    memset(p->sec, 0, sizeof p->sec);
    memset(p->flop, 0, sizeof p->flop);
    memset(p->calls, 0, sizeof p->calls);
}

static void add(ssl_ctx *ctx, ssl_prof_kind k, double t0, double flop)
{
    ssl_profile *p = ctx->profile;
    p->sec[k] += ssl_time() - t0;
    p->flop[k] += flop;
    p->calls[k]++;
}

#define INNER (ctx->profile->inner)

static double conv_flop(const ssl_conv_desc *d)
{
    return 2.0 * d->N * d->K * d->OH * d->OW * (double)d->C * d->R * d->S;
}

static void p_conv_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                       const ssl_conv_desc *d)
{
    double t0 = ssl_time();
    INNER->conv2d_fwd(ctx, y, x, w, d);
    add(ctx, SSL_PROF_CONV_FWD, t0, conv_flop(d));
}

static void p_conv_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy, const float *x,
                       const float *w, const ssl_conv_desc *d)
{
    double t0 = ssl_time();
    INNER->conv2d_bwd(ctx, dx, dw, dy, x, w, d);
    add(ctx, SSL_PROF_CONV_BWD, t0, conv_flop(d) * (dx ? 2 : 1));
}

static void p_bn_fwd(ssl_ctx *ctx, float *y, float *mean, float *invstd, const float *x,
                     const float *skip, const float *gamma, const float *beta,
                     float *running_mean, float *running_var, int training, float momentum,
                     float eps, int relu, int N, int C, int HW, ssl_layout l)
{
    double t0 = ssl_time();
    INNER->bn_fwd(ctx, y, mean, invstd, x, skip, gamma, beta, running_mean, running_var,
                  training, momentum, eps, relu, N, C, HW, l);
    add(ctx, SSL_PROF_BN_FWD, t0, 0);
}

static void p_bn_bwd(ssl_ctx *ctx, float *dx, float *dskip, float *dgamma, float *dbeta,
                     const float *dy, const float *y, const float *x, const float *mean,
                     const float *invstd, const float *gamma, int training, int relu, int N,
                     int C, int HW, ssl_layout l)
{
    double t0 = ssl_time();
    INNER->bn_bwd(ctx, dx, dskip, dgamma, dbeta, dy, y, x, mean, invstd, gamma, training, relu,
                  N, C, HW, l);
    add(ctx, SSL_PROF_BN_BWD, t0, 0);
}

static void p_relu_fwd(ssl_ctx *ctx, float *y, const float *x, long n)
{
    double t0 = ssl_time();
    INNER->relu_fwd(ctx, y, x, n);
    add(ctx, SSL_PROF_RELU, t0, 0);
}

static void p_relu_bwd(ssl_ctx *ctx, float *dx, const float *dy, const float *y, long n)
{
    double t0 = ssl_time();
    INNER->relu_bwd(ctx, dx, dy, y, n);
    add(ctx, SSL_PROF_RELU, t0, 0);
}

static void p_maxpool_fwd(ssl_ctx *ctx, float *y, int32_t *argmax, const float *x,
                          const ssl_pool_desc *d)
{
    double t0 = ssl_time();
    INNER->maxpool_fwd(ctx, y, argmax, x, d);
    add(ctx, SSL_PROF_POOL, t0, 0);
}

static void p_maxpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const int32_t *argmax,
                          const ssl_pool_desc *d)
{
    double t0 = ssl_time();
    INNER->maxpool_bwd(ctx, dx, dy, argmax, d);
    add(ctx, SSL_PROF_POOL, t0, 0);
}

static void p_avgpool_fwd(ssl_ctx *ctx, float *y, const float *x, const ssl_pool_desc *d)
{
    double t0 = ssl_time();
    INNER->avgpool_fwd(ctx, y, x, d);
    add(ctx, SSL_PROF_POOL, t0, 0);
}

static void p_avgpool_bwd(ssl_ctx *ctx, float *dx, const float *dy, const ssl_pool_desc *d)
{
    double t0 = ssl_time();
    INNER->avgpool_bwd(ctx, dx, dy, d);
    add(ctx, SSL_PROF_POOL, t0, 0);
}

static void p_gap_fwd(ssl_ctx *ctx, float *y, const float *x, int N, int C, int HW,
                      ssl_layout l)
{
    double t0 = ssl_time();
    INNER->gap_fwd(ctx, y, x, N, C, HW, l);
    add(ctx, SSL_PROF_GAP, t0, 0);
}

static void p_gap_bwd(ssl_ctx *ctx, float *dx, const float *dy, int N, int C, int HW,
                      ssl_layout l)
{
    double t0 = ssl_time();
    INNER->gap_bwd(ctx, dx, dy, N, C, HW, l);
    add(ctx, SSL_PROF_GAP, t0, 0);
}

static void p_linear_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                         const float *b, int N, int I, int O)
{
    double t0 = ssl_time();
    INNER->linear_fwd(ctx, y, x, w, b, N, I, O);
    add(ctx, SSL_PROF_LINEAR, t0, 2.0 * N * I * O);
}

static void p_linear_bwd(ssl_ctx *ctx, float *dx, float *dw, float *db, const float *dy,
                         const float *x, const float *w, int N, int I, int O)
{
    double t0 = ssl_time();
    INNER->linear_bwd(ctx, dx, dw, db, dy, x, w, N, I, O);
    add(ctx, SSL_PROF_LINEAR, t0, 2.0 * N * I * O * (dx ? 2 : 1));
}

const ssl_backend *ssl_profile_wrap(ssl_profile *p, const ssl_backend *inner)
{
    memset(p, 0, sizeof *p);
    p->inner = inner;
    snprintf(p->name, sizeof p->name, "%s (profiled)", inner->name);
    p->table = (ssl_backend){
        .name = p->name,
        .device = inner->device,
        .act_layout = inner->act_layout,
        .conv2d_fwd = p_conv_fwd,
        .conv2d_bwd = p_conv_bwd,
        .bn_fwd = p_bn_fwd,
        .bn_bwd = p_bn_bwd,
        .relu_fwd = p_relu_fwd,
        .relu_bwd = p_relu_bwd,
        .maxpool_fwd = p_maxpool_fwd,
        .maxpool_bwd = p_maxpool_bwd,
        .avgpool_fwd = p_avgpool_fwd,
        .avgpool_bwd = p_avgpool_bwd,
        .gap_fwd = p_gap_fwd,
        .gap_bwd = p_gap_bwd,
        .linear_fwd = p_linear_fwd,
        .linear_bwd = p_linear_bwd,
    };
    return &p->table;
}
