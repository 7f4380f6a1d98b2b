/* Winograd convolution for 3x3 kernels, stride 1, pad 1 (internal to the CPU
 * backends). Same contracts as the backend table's conv2d_fwd / conv2d_bwd
 * (ops.h): forward overwrites y, backward adds into dx (may be NULL) and dw.
 * Activations in either layout; weights (K, C, 3, 3). Runs on
 * ctx->n_threads OpenMP threads; buffers come from ssl_ctx_scratch (a few MB
 * for small layers, about 70 MB for the backward of 512 x 512 channels at
 * 4 x 4 on 2 threads), so repeated calls allocate nothing. Forward and dx do not
 * depend on the thread count; dw is repeatable for a given thread count
 * (and independent of it where the threads split the output channels). */
#ifndef SELFSUP_OPS_WINOGRAD_H
#define SELFSUP_OPS_WINOGRAD_H

#include "selfsup/ops.h"

/* 1 when d is a 3x3, stride 1, pad 1 convolution (output the size of the
 * input) with enough channels for Winograd to beat the direct backends. */
int ssl_winograd_suits(const ssl_conv_desc *d);

/* 1 when this build has the AVX2 + FMA kernels. Without them (a build
 * without -march=native, e.g. the sanitizer one) the plain C path is
 * correct but slower than im2col + BLAS, so the backends don't use it. */
int ssl_winograd_fast(void);

/* The output tile ssl_winograd_conv_fwd/bwd use for d: 4 (F(4x4, 3x3)) or
 * 2 (F(2x2, 3x3)). */
int ssl_winograd_tile(const ssl_conv_desc *d);

/* y (N, K, H, W) = conv(x (N, C, H, W), w (K, C, 3, 3)). d must be 3x3,
 * stride 1, pad 1 (else ctx->failed = SSL_ESHAPE and nothing is written). */
void ssl_winograd_conv_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                           const ssl_conv_desc *d);
/* dx (N, C, H, W) += conv_bwd_data(dy (N, K, H, W), w); dx may be NULL.
 * dw (K, C, 3, 3) += conv_bwd_weights(dy, x (N, C, H, W)). */
void ssl_winograd_conv_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy,
                           const float *x, const float *w, const ssl_conv_desc *d);

/* The same with the choices made by the caller: for tests and benchmarks. */
typedef struct ssl_winograd_opts {
    int tile;         /* output tile m: 2 or 4; 0: ssl_winograd_tile's choice */
    long block_bytes; /* a thread's transformed tiles per block (at least 24
                         tiles' worth); 0: the default */
    int split_k;      /* weight gradient: 1 threads split the output channels
                         (one dW' in all, sums independent of the thread
                         count), -1 the tiles (a dW' each), 0 by size */
} ssl_winograd_opts;

void ssl_winograd_conv_fwd_opts(ssl_ctx *ctx, const ssl_winograd_opts *o, float *y,
                                const float *x, const float *w, const ssl_conv_desc *d);
void ssl_winograd_conv_bwd_opts(ssl_ctx *ctx, const ssl_winograd_opts *o, float *dx, float *dw,
                                const float *dy, const float *x, const float *w,
                                const ssl_conv_desc *d);

#endif
