/* Ops: plain functions on raw float pointers, outputs first, sizes last.
 * Every op has a plain C reference ("ref" backend); faster paths ("cpu":
 * BLAS + threads, later oneDNN / CUDA) sit behind the same dispatch table and
 * are tested against the reference. Backward functions accumulate (+=) into
 * the gradients they are given. */
#ifndef SELFSUP_OPS_H
#define SELFSUP_OPS_H

#include "selfsup/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Row-major C = alpha * op(A) * op(B) + beta * C; op(A) is M x K, op(B) K x N.
 * Uses OpenBLAS when built with it, else a plain blocked loop. Single call,
 * single thread: callers split work across threads themselves. */
void ssl_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc);
/* The plain loop used when there is no BLAS, and by the reference backend. */
void ssl_sgemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta,
                   float *C, int ldc);
/* Threads inside each BLAS call (we use 1 and parallelize around it). */
void ssl_blas_set_threads(int n);

/* Memory layout of a 4-D activation with logical shape (N, C, H, W).
 * NCHW is PyTorch's; CNHW keeps each channel's N*H*W values together, which
 * turns a whole-batch convolution into one matrix product and makes batch
 * norm statistics contiguous. */
typedef enum ssl_layout {
    SSL_LAYOUT_NCHW = 0,
    SSL_LAYOUT_CNHW = 1
} ssl_layout;

typedef enum ssl_device {
    SSL_DEVICE_CPU = 0,
    SSL_DEVICE_CUDA = 1
} ssl_device;

/* Strides (in floats) of n and c for a layout; h and w are always H*... and 1. */
static inline void ssl_layout_strides(ssl_layout l, int N, int C, int H, int W,
                                      long *sn, long *sc)
{
    if (l == SSL_LAYOUT_CNHW) { *sn = (long)H * W; *sc = (long)N * H * W; }
    else { *sn = (long)C * H * W; *sc = (long)H * W; }
}

/* Offset of element (n, c, i) of an activation (N, C, hw) in layout l. */
static inline long ssl_act_index(ssl_layout l, int N, int C, int hw, int n, int c, int i)
{
    return l == SSL_LAYOUT_CNHW ? ((long)c * N + n) * hw + i : ((long)n * C + c) * hw + i;
}

/* Convolution geometry (groups = 1). x: (N, C, H, W), w: (K, C, R, S),
 * y: (N, K, OH, OW); x and y share `layout`. */
typedef struct ssl_conv_desc {
    int N, C, H, W;
    int K, R, S;
    int stride, pad;
    int OH, OW;
    ssl_layout layout;
} ssl_conv_desc;

int ssl_conv_out_size(int in, int k, int stride, int pad); /* floor((in+2p-k)/s)+1 */

/* Pooling geometry: x (N, C, H, W) -> y (N, C, OH, OW), same layout. */
typedef struct ssl_pool_desc {
    int N, C, H, W;
    int k, stride, pad;
    int OH, OW;
    ssl_layout layout;
} ssl_pool_desc;

/* The dispatch table; every entry is set. Shapes:
 * "act" means a 4-D activation (N, C, HW) in the given layout; 2-D tensors
 * (N, F) are activations with HW = 1 in NCHW. */
typedef struct ssl_backend {
    const char *name;
    ssl_device device;
    ssl_layout act_layout; /* the layout models keep 4-D activations in */
    /* y = conv(x, w) */
    void (*conv2d_fwd)(ssl_ctx *ctx, float *y, const float *x, const float *w,
                       const ssl_conv_desc *d);
    /* dx += dconv/dx (dx may be NULL), dw += dconv/dw */
    void (*conv2d_bwd)(ssl_ctx *ctx, float *dx, float *dw, const float *dy,
                       const float *x, const float *w, const ssl_conv_desc *d);
    /* Batch norm over (N, HW) per channel, fused with what follows it in a
     * residual network (one pass over memory instead of three):
     *   y = act(gamma * (x - mean) * invstd + beta + skip)
     * skip (an activation like x) may be NULL; act is ReLU when relu, else
     * the identity. training: batch statistics, saved to mean/invstd (C),
     * running stats updated with momentum (PyTorch rule, unbiased
     * variance); else running stats are used (mean/invstd still written,
     * from the running stats). gamma/beta NULL: 1/0. */
    void (*bn_fwd)(ssl_ctx *ctx, float *y, float *mean, float *invstd, const float *x,
                   const float *skip, const float *gamma, const float *beta,
                   float *running_mean, float *running_var, int training, float momentum,
                   float eps, int relu, int N, int C, int HW, ssl_layout l);
    /* With dz = relu ? dy * (y > 0) : dy (y: the forward's output, read only
     * when relu): dskip += dz (dskip may be NULL), and dx, dgamma, dbeta +=
     * the batch norm backward of dz (each may be NULL); training selects the
     * formula (batch statistics depend on x, running statistics do not). */
    void (*bn_bwd)(ssl_ctx *ctx, float *dx, float *dskip, float *dgamma, float *dbeta,
                   const float *dy, const float *y, const float *x, const float *mean,
                   const float *invstd, const float *gamma, int training, int relu, int N,
                   int C, int HW, ssl_layout l);
    /* y = max(x, 0); dx += dy * (y > 0). n elements. */
    void (*relu_fwd)(ssl_ctx *ctx, float *y, const float *x, long n);
    void (*relu_bwd)(ssl_ctx *ctx, float *dx, const float *dy, const float *y, long n);
    /* Max pooling; argmax (int32, per output) is saved for the backward. */
    void (*maxpool_fwd)(ssl_ctx *ctx, float *y, int32_t *argmax, const float *x,
                        const ssl_pool_desc *d);
    void (*maxpool_bwd)(ssl_ctx *ctx, float *dx, const float *dy, const int32_t *argmax,
                        const ssl_pool_desc *d);
    /* Average pooling, padding counted (PyTorch count_include_pad=True). */
    void (*avgpool_fwd)(ssl_ctx *ctx, float *y, const float *x, const ssl_pool_desc *d);
    void (*avgpool_bwd)(ssl_ctx *ctx, float *dx, const float *dy, const ssl_pool_desc *d);
    /* Global average pool: x act (N, C, HW) -> y (N, C) row-major. */
    void (*gap_fwd)(ssl_ctx *ctx, float *y, const float *x, int N, int C, int HW, ssl_layout l);
    void (*gap_bwd)(ssl_ctx *ctx, float *dx, const float *dy, int N, int C, int HW, ssl_layout l);
    /* y (N, O) = x (N, I) * w^T (w: (O, I)) + b (O, may be NULL). */
    void (*linear_fwd)(ssl_ctx *ctx, float *y, const float *x, const float *w, const float *b,
                       int N, int I, int O);
    /* dx += dy * w (dx may be NULL), dw += dy^T x, db += sum_n dy (db may be NULL) */
    void (*linear_bwd)(ssl_ctx *ctx, float *dx, float *dw, float *db, const float *dy,
                       const float *x, const float *w, int N, int I, int O);
} ssl_backend;

/* ---- profiling: where a step's time goes ----
 * ssl_profile_wrap returns a backend that forwards every call to `inner`
 * and adds its wall time, call count and (for convolutions) FLOP to p, per
 * kind of op. Install it as ctx->backend with ctx->profile = p (the table
 * lives in p). Time outside the table (elementwise sums, concatenation,
 * losses, the optimizer) is the step's time minus the sum. */
typedef enum ssl_prof_kind {
    SSL_PROF_CONV_FWD, SSL_PROF_CONV_BWD, SSL_PROF_BN_FWD, SSL_PROF_BN_BWD, SSL_PROF_RELU,
    SSL_PROF_POOL, SSL_PROF_GAP, SSL_PROF_LINEAR, SSL_PROF_N
} ssl_prof_kind;

typedef struct ssl_profile {
    ssl_backend table;
    const ssl_backend *inner;
    char name[48];
    double sec[SSL_PROF_N], flop[SSL_PROF_N];
    long calls[SSL_PROF_N];
} ssl_profile;

const ssl_backend *ssl_profile_wrap(ssl_profile *p, const ssl_backend *inner);
/* Zeroes the counters (keeps the table). */
void ssl_profile_clear(ssl_profile *p);
/* "conv fwd", "bn bwd", ... */
const char *ssl_prof_kind_name(ssl_prof_kind k);

/* The plain C reference (single thread, direct loops) and the default CPU
 * backend (im2col + BLAS, OpenMP across images and channels). */
const ssl_backend *ssl_backend_ref(void);
const ssl_backend *ssl_backend_cpu(void);
const ssl_backend *ssl_backend_default(void);
/* "ref", "cpu", "dnnl" (SSL_EDEVICE when not built), "cuda" (not built yet). */
int ssl_backend_by_name(const char *name, const ssl_backend **out, char *err);

#ifdef __cplusplus
}
#endif
#endif
