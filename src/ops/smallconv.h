/* Convolution of planes no larger than the kernel (internal to the CPU
 * backends): the 3x3 and 2x2 maps that small crops reach in a ResNet's last
 * stages. Same contracts as the backend table's conv2d_fwd / conv2d_bwd
 * (ops.h): forward overwrites y, backward adds into dx (may be NULL) and dw;
 * activations in either layout, weights (K, C, R, S). Runs on
 * ctx->n_threads OpenMP threads, buffers from ssl_ctx_scratch. Results do
 * not depend on the thread count. */
#ifndef SELFSUP_OPS_SMALLCONV_H
#define SELFSUP_OPS_SMALLCONV_H

#include "selfsup/ops.h"

/* 1 when d joins at most 16 input-output pixel pairs (a 2x2 plane to a 2x2
 * plane, or smaller: the dense block per channel pair has no more entries
 * than Winograd F(2x2, 3x3) has multiplications), with 8+ images, and the
 * dense matrix stays small enough to be rebuilt each call. On 3x3 planes
 * (81 entries against F(4x4, 3x3)'s 36) the GEMM measured slower than
 * Winograd (bench/winograd_layers: 5.5 / 10.6 ms against 4.3 / 9.3, 64
 * channels, N 2048). */
int ssl_smallconv_suits(const ssl_conv_desc *d);

void ssl_smallconv_fwd(ssl_ctx *ctx, float *y, const float *x, const float *w,
                       const ssl_conv_desc *d);
void ssl_smallconv_bwd(ssl_ctx *ctx, float *dx, float *dw, const float *dy, const float *x,
                       const float *w, const ssl_conv_desc *d);

#endif
