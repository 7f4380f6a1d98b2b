/* CIE L*a*b* colour for the colorization method (Zhang, Isola & Efros 2016):
 * sRGB <-> Lab as skimage.color.rgb2lab / lab2rgb (what the official code
 * calls), the quantized ab output space (bins on a 10-unit grid, kept where
 * sRGB colours exist); and the pieces of the pixel decoders that
 * colorization and inpainting share. Private to src/methods; tests call it. */
#ifndef SELFSUP_METHODS_LAB_H
#define SELFSUP_METHODS_LAB_H

#include <stdint.h>

#include "selfsup/method.h"

/* sRGB r, g, b in [0, 1] (gamma-encoded) -> L in [0, 100], a, b: the sRGB
 * transfer function (12.92 below 0.04045, else ((c + 0.055) / 1.055)^2.4),
 * skimage's sRGB -> XYZ matrix, the D65 white (0.95047, 1, 1.08883) and
 * f(t) = cbrt(t) above 0.008856, else 7.787 t + 16/116. Double precision. */
void ssl_rgb_to_lab(double r, double g, double b, double lab[3]);
/* The inverse, clipped to [0, 1] (for pictures of predicted colours). */
void ssl_lab_to_rgb(double L, double a, double b, double rgb[3]);
/* The sRGB transfer function's inverse: gamma-encoded c in [0, 1] -> linear. */
double ssl_srgb_linear(double c);
/* L of linear sRGB (r, g, b): 116 f(Y) - 16, what ssl_rgb_to_lab computes
 * after linearizing (L depends on the luminance Y alone). */
double ssl_lab_lightness_linear(double r, double g, double b);

/* The ab bins: centres (10 i, 10 j) for the cells i, j in
 * -SSL_AB_HALF..SSL_AB_HALF, numbered in (a, b) row-major order. */
#define SSL_AB_GRID 10
#define SSL_AB_HALF 11 /* |a|, |b| of sRGB colours stay below 115 */
#define SSL_AB_SIDE (2 * SSL_AB_HALF + 1)
#define SSL_AB_MAX_BINS (SSL_AB_SIDE * SSL_AB_SIDE)

typedef struct ssl_ab_bins {
    int n;                            /* Q */
    float center[SSL_AB_MAX_BINS][2]; /* (Q, 2): a, b */
    int16_t cell[SSL_AB_MAX_BINS];    /* cell (i, j) -> bin, or -1 out of gamut */
} ssl_ab_bins;

/* The in-gamut bins: a cell is kept when the ab of some 8-bit sRGB colour
 * rounds to it (floor(a / 10 + 1/2), likewise b). The colours on the faces
 * of the RGB cube suffice: Lab is a diffeomorphism of the cube, so every
 * (L-ranging) line of constant ab that meets the solid meets its surface.
 * Q = 261 (Zhang et al. release 313 points, "in-gamut" by an unstated
 * criterion; the grid and the extent, a in [-90, 100], b in [-110, 90],
 * are the same). Deterministic; ~390k conversions. */
void ssl_ab_bins_gamut(ssl_ab_bins *q);
/* Bins from centres (n, 2), e.g. a checkpoint's; 0 when one is not a grid
 * point of the range or appears twice. */
int ssl_ab_bins_set(ssl_ab_bins *q, const float *centers, int n);
/* The bin of (a, b): the rounded cell when it is in gamut, else the nearest
 * centre (squared distance, the first on ties). */
int ssl_ab_bin(const ssl_ab_bins *q, float a, float b);

/* ---- colorization (colorization.c) ---- */
/* One normalized RGB view x (3, h, w) (x * std + mean in [0, 1], clipped)
 * -> the encoder's input l_in (h, w) = (L / 100 - l_mean) / l_std and
 * ab (2, h, w). */
void ssl_colorization_lab_view(const float *x, int h, int w, const float mean[3], const float std[3],
                               float l_mean, float l_std, float *l_in, float *ab);
/* F.adaptive_avg_pool2d: x (c, h, w) -> y (c, oh, ow), cell (i, j) the mean
 * of rows floor(i h / oh) .. ceil((i + 1) h / oh) - 1 (columns likewise). */
void ssl_adaptive_avgpool(const float *x, int c, int h, int w, int oh, int ow, float *y);
/* The paper's class rebalancing from hist (256, 256): counts of target ab
 * rounded to integers, hist[(a + 128) * 256 + b + 128]. prior (Q) = p~,
 * the kernel density (Gaussian, sigma 5) at the bin centres normalized to
 * sum 1; weights (Q) = ((1 - 0.5) p~ + 0.5 / Q)^-1 scaled to
 * sum p~ w = 1. SSL_OK or SSL_ENOMEM. */
int ssl_colorization_class_weights(const double *hist, const ssl_ab_bins *q, float *prior,
                                   float *weights);
/* The paper's annealed mean: logits (Q, n) of n pixels (one image's NCHW
 * planes) -> ab (2, n) = sum_q softmax(logits / T)_q centre_q (T = 0.38 in
 * the paper; T = 1 the mean, T -> 0 the mode). */
void ssl_colorization_annealed_mean(const float *logits, int Q, long n, const ssl_ab_bins *q,
                                    float T, float *ab);

/* ---- inpainting (inpainting.c) ---- */
/* The hole of one h x w view: mask (h, w) = 1 inside, 0 elsewhere.
 * cfg->mask_blocks 0: one central square of side round(mask_size * side)
 * at ((h - side_h) / 2, (w - side_w) / 2); N >= 1: N squares of side
 * round(mask_size / sqrt(N) * side) (at least 1 px), top-left corners
 * drawn from r as ssl_rng_below(h - side + 1) then (w - side + 1). */
void ssl_inpainting_mask(const ssl_method_config *cfg, int h, int w, ssl_rng *r, float *mask);

/* ---- pixel decoders (colorization, inpainting) ---- */
/* The encoder's stride-2 stages (3 with the small stem, 5 with the
 * ImageNet stem's conv and pool) and the sides they make from a side of
 * side pixels: sizes[0] = side, sizes[i + 1] = ceil(sizes[i] / 2) (a
 * 3x3/2 pad-1 conv, a 7x7/2 pad-3 conv and a 3x3/2 pad-1 pool all give
 * that), sizes (k + 1). Returns k. */
int ssl_encoder_halvings(const ssl_encoder *enc, int side, int *sizes);
/* One decoder step back up that chain: a 4x4 stride-2 transposed
 * convolution (DCGAN's, Pathak et al.'s) of x (N, Ci, s, s) with w
 * (Ci, Co, 4, 4), b (Co) or NULL to (N, Co, out, out), out = 2s (padding 1)
 * or 2s - 1 (padding 2, output padding 1: the 2s map without its first
 * row and column). Other sizes are an error. */
ssl_tensor *ssl_upconv(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b, int out);
/* w (n) ~ N(0, std^2): DCGAN's init, which Pathak et al.'s code uses. */
void ssl_init_normal(float *w, long n, float std, ssl_rng *rng);

#endif
