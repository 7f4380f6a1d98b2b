/* Graph ops for the dense pretext tasks: decoders (transposed convolution,
 * upsampling, per-channel bias, output nonlinearities), their losses
 * (masked L2 for inpainting, per-pixel cross-entropy for colorization,
 * binary cross-entropy for a discriminator) and patch-level contrast
 * (bilinear sampling of a feature map at given points, InfoNCE over
 * patches). Implemented in src/nn/graph_dense.c as plain C (+ ssl_sgemm),
 * the same on every backend.
 *
 * Conventions as in graph.h: NULL in -> NULL out; shape errors return NULL
 * with ctx->err set; losses return a (1) tensor whose backward scales by the
 * incoming gradient and accumulates (+=) into the inputs that require one.
 * 4-D inputs may be in any ssl_layout; 4-D outputs keep the input's layout.
 * Arrays passed as const pointers (targets, masks, labels, weights,
 * coordinates) are read during the call only: the ops copy or fold into
 * saved buffers what their backward needs. */
#ifndef SELFSUP_GRAPH_DENSE_H
#define SELFSUP_GRAPH_DENSE_H

#include "selfsup/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- decoder layers ---- */

/* torch.nn.ConvTranspose2d (groups 1, dilation 1): x (N, Ci, H, W),
 * w (Ci, Co, R, S) as ConvTranspose2d.weight, b (Co) or NULL ->
 * (N, Co, OH, OW) with OH = (H - 1) * stride - 2 * pad + R + output_pad
 * (OW likewise with S). stride >= 1, pad >= 0, 0 <= output_pad < stride. */
ssl_tensor *ssl_op_conv_transpose2d(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b,
                                    int stride, int pad, int output_pad);

typedef enum ssl_upsample_mode {
    SSL_UPSAMPLE_NEAREST = 0,
    SSL_UPSAMPLE_BILINEAR = 1 /* align_corners=False */
} ssl_upsample_mode;

/* nn.Upsample(scale_factor=factor, mode=...) / F.interpolate: x (N, C, H, W)
 * -> (N, C, factor * H, factor * W), factor >= 1 an integer. Bilinear samples
 * output pixel o at input coordinate max((o + 0.5) / factor - 0.5, 0). */
ssl_tensor *ssl_op_upsample(ssl_graph *g, ssl_tensor *x, int factor, ssl_upsample_mode mode);

/* x (N, C, H, W) or (N, C), b (C) -> x + b[c] (a conv2d's bias). */
ssl_tensor *ssl_op_add_bias_channel(ssl_graph *g, ssl_tensor *x, ssl_tensor *b);

/* Element-wise, any shape and layout. leaky_relu: x > 0 ? x : slope * x
 * (the gradient at x = 0 is slope, as in torch). */
ssl_tensor *ssl_op_sigmoid(ssl_graph *g, ssl_tensor *x);
ssl_tensor *ssl_op_tanh(ssl_graph *g, ssl_tensor *x);
ssl_tensor *ssl_op_leaky_relu(ssl_graph *g, ssl_tensor *x, float slope);

/* ---- losses, each -> (1) ---- */

/* Inpainting's L2: pred (N, C, H, W) any layout; target in pred's layout
 * (same memory order, N*C*H*W floats); mask weights m >= 0, either
 * mask_channels = 1: (N, 1, H, W) per pixel, index n*H*W + h*W + w, applied
 * to every channel, or mask_channels = C: per element in pred's layout; mask
 * NULL means all ones (plain F.mse_loss). Loss = sum_e m_e (pred_e - target_e)^2
 * / sum_e m_e over all N*C*H*W elements (a per-pixel mask counts C times),
 * i.e. the mean over the masked elements; torch:
 * ((pred - target)**2 * m).sum() / m.expand_as(pred).sum(). A mask that sums
 * to 0 gives loss 0 and no gradient (torch: NaN). */
ssl_tensor *ssl_op_masked_mse(ssl_graph *g, ssl_tensor *pred, const float *target,
                              const float *mask, int mask_channels);

/* Colorization's per-pixel classification: logits (N, Q, H, W) any layout;
 * labels (N*H*W) int32 in [0, Q) or -1 (ignored), index n*H*W + h*W + w;
 * class_weights (Q) >= 0 or NULL (all 1). As F.cross_entropy(logits, labels,
 * weight=class_weights, ignore_index=-1): sum_p w[l_p] ce_p / sum_p w[l_p]
 * over the pixels not ignored, ce_p = -log softmax(logits[n, :, h, w])[l_p].
 * Zhang et al. 2016 instead divide the weighted sum by the number of pixels,
 * with weights normalized to mean 1 under the color prior; that differs per
 * batch by the factor sum_p w[l_p] / #pixels. No pixel counted (all ignored
 * or zero weight): loss 0 and no gradient (torch: NaN). */
ssl_tensor *ssl_op_pixel_softmax_ce(ssl_graph *g, ssl_tensor *logits, const int32_t *labels,
                                    const float *class_weights);

/* A discriminator's loss: logits any shape, targets (numel(logits)) in
 * logits' memory order (usually all 0 or all 1) -> mean over elements of
 * max(x, 0) - x t + log(1 + exp(-|x|)), as
 * F.binary_cross_entropy_with_logits(logits, targets). */
ssl_tensor *ssl_op_bce_logits(ssl_graph *g, ssl_tensor *logits, const float *targets);

/* ---- patch-level contrast ---- */

/* Bilinear samples of a feature map at fractional points: x (N, C, h, w) any
 * layout, coords (N, P, 2) float (u, v) = (column, row) in feature-map pixel
 * units, where (j, i) is the centre of cell x[:, :, i, j] -> (N*P, C)
 * row-major, row n*P + p. Points outside read zeros (padding_mode='zeros'),
 * so (u, v) in [-1, w] x [-1, h] give partial values. Gradient flows into x,
 * not into coords. torch: F.grid_sample(x, grid, mode='bilinear',
 * padding_mode='zeros', align_corners=False) with grid (N, 1, P, 2) =
 * ((2u + 1) / w - 1, (2v + 1) / h - 1), then permuted to (N*P, C).
 * A point at image coordinate X (pixels) of a crop that starts at x0 and is
 * cw pixels wide, with the feature map covering the crop, is at
 * u = (X - x0) * w / cw - 0.5 (v likewise). Non-finite coords are an error. */
ssl_tensor *ssl_op_grid_sample(ssl_graph *g, ssl_tensor *x, const float *coords, int P);

/* Patch-level InfoNCE: q, k (M, D), M = N*P matched rows (row i of k is the
 * positive of row i of q; every other row, of the same image or of another,
 * is a negative), usually L2-normalized -> (1):
 * mean_i -log softmax(q k^T / T)_i[i], i.e. F.cross_entropy(q @ k.T / T,
 * arange(M)). Mathematically ssl_op_matmul(q, k, 1), ssl_op_scale(1/T) and
 * ssl_op_softmax_ce with labels 0..M-1; fused here so that the (M, M) logits
 * are never stored: the forward keeps each row's log-sum-exp (M floats) and
 * the backward recomputes the logits in row blocks (one more q k^T). Gradients
 * go to whichever of q, k require them (detach k for a momentum encoder);
 * q and k may be the same tensor. */
ssl_tensor *ssl_op_dense_infonce(ssl_graph *g, ssl_tensor *q, ssl_tensor *k, float temperature);

#ifdef __cplusplus
}
#endif
#endif
