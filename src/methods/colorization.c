/* Colorization (Zhang, Isola & Efros 2016, "Colorful Image Colorization"):
 * an RGB view becomes CIE Lab (D65, sRGB gamma, skimage.color.rgb2lab as
 * the official code); the encoder sees the lightness L alone, a decoder on
 * its last feature map predicts, per pixel of the view at 1/4 resolution
 * (the paper's 56 x 56 of 224), a distribution over the Q in-gamut ab bins
 * of a 10-unit grid (lab.h: Q = 261 with our exact gamut, the paper 313),
 * trained with class-rebalanced softmax cross-entropy on hard labels (the
 * nearest bin of the pixel's ab; the paper's soft encoding over 5
 * neighbours is not done). --color-regression 1 is the paper's L2
 * regression baseline on ab / 110.
 *
 * Targets: the view's ab averaged over the pixels of each target cell
 * (adaptive average pooling, F.adaptive_avg_pool2d; the official Caffe
 * net samples every 4th pixel). An image without colour - no target pixel
 * with |a| or |b| > 5 - is left out of the loss (the paper's NonGrayMask).
 *
 * Class rebalancing (the paper's eq. 3-4): p~ = the empirical distribution
 * of the training split's target ab, smoothed by a Gaussian of sigma 5 (a
 * kernel density at the bin centres of the ab values rounded to 1 unit),
 * w ~ ((1 - lambda) p~ + lambda / Q)^-1 with lambda 0.5, scaled so that
 * sum_q p~_q w_q = 1; computed once per run by fit_data (at most 10000
 * images, evenly spread) and saved as "color_prior" and "color_weights".
 * The loss is the paper's sum_p w(l_p) CE_p / #pixels over the pixels of
 * coloured images (ssl_op_pixel_softmax_ce divides by sum w instead, so it
 * is rescaled by sum w / #pixels, a constant of the batch).
 *
 * Network: encoder input (L / 100 - 0.286) / 0.353, the 1-channel
 * normalization (ssl_aug_eval), so that a gray dataset with its lightness as
 * pixels (encoder_data) is the same input at evaluation. Decoder
 * ("decoder.", nn.Sequential indices): per stride-2 stage of the encoder
 * beyond two, ConvTranspose2d(F, F, 4, 2) - BN - ReLU (the paper's conv8
 * upsampling; one stage with the small stem: 28 px -> 4 x 4 features ->
 * 7 x 7 logits), then a 1x1 convolution to Q logits (2 for regression).
 * Pretext metric: per-pixel accuracy of the predicted bin (regression: the
 * bin of the predicted ab) on coloured images; the paper reports the AuC of
 * thresholded ab errors, ours is simpler.
 *
 * Recipe: the paper trains with Adam (lr 3e-5, betas 0.9/0.99, weight decay
 * 1e-3) for 450k iterations; our runs are ~10^3 steps, so AdamW at lr 1e-3
 * (no batch scaling), weight decay 1e-3, no warm-up. */
#include "eval/pictures.h"
#include "lab.h"
#include "pretext.h"
#include "nn/graph_internal.h"
#include "selfsup/graph_dense.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PRIOR_SIGMA 5.0       /* the paper's smoothing of the empirical distribution */
#define PRIOR_LAMBDA 0.5      /* the paper's mix with the uniform distribution */
#define GRAY_THRESH 5.0f      /* NonGrayMask: a coloured image has some |a| or |b| above */
#define AB_NORM 110.0f        /* regression target ab / 110 (the official PyTorch ab_norm) */
#define PRIOR_MAX_IMAGES 10000
#define MAX_UP 4
#define HIST_SIDE 256         /* 1-unit ab histogram, a and b in -128..127 */
#define ANNEAL_T 0.38f        /* the paper's annealed-mean temperature (pictures) */

typedef struct colorization_state {
    ssl_ab_bins bins;
    int Q, n_out;        /* bins; decoder outputs (Q, or 2 for regression) */
    float *bin_buf;      /* (Q, 2) "ab_bins" in m->extra */
    float *prior;        /* (Q) "color_prior" */
    float *weights;      /* (Q) "color_weights" */
    int n_up;
    ssl_tensor up_w[MAX_UP]; /* (F, F, 4, 4) */
    ssl_bn_layer up_bn[MAX_UP];
    ssl_tensor out_w, out_b; /* (n_out, F, 1, 1), (n_out) */
    float rgb_mean[3], rgb_std[3], l_mean, l_std;
    int64_t correct, total;
} colorization_state;

static float clamp01(float v) { return v < 0 ? 0 : v > 1 ? 1 : v; }

void ssl_colorization_lab_view(const float *x, int h, int w, const float mean[3], const float std[3],
                               float l_mean, float l_std, float *l_in, float *ab)
{
    long n = (long)h * w;
    for (long i = 0; i < n; i++) {
        double lab[3];
        ssl_rgb_to_lab(clamp01(x[i] * std[0] + mean[0]), clamp01(x[n + i] * std[1] + mean[1]),
                       clamp01(x[2 * n + i] * std[2] + mean[2]), lab);
        l_in[i] = (float)((lab[0] / 100.0 - l_mean) / l_std);
        ab[i] = (float)lab[1];
        ab[n + i] = (float)lab[2];
    }
}

void ssl_adaptive_avgpool(const float *x, int c, int h, int w, int oh, int ow, float *y)
{
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < oh; i++) {
            int y0 = i * h / oh, y1 = ((i + 1) * h + oh - 1) / oh;
            for (int j = 0; j < ow; j++) {
                int x0 = j * w / ow, x1 = ((j + 1) * w + ow - 1) / ow;
                double s = 0;
                for (int yy = y0; yy < y1; yy++)
                    for (int xx = x0; xx < x1; xx++) s += x[((long)ch * h + yy) * w + xx];
                y[((long)ch * oh + i) * ow + j] = (float)(s / ((y1 - y0) * (x1 - x0)));
            }
        }
}

/* Labels of one image's pooled ab (2, n): -1 everywhere for a gray image. */
static void make_labels(const ssl_ab_bins *q, const float *ab, long n, int32_t *labels)
{
    int colored = 0;
    for (long i = 0; i < n && !colored; i++)
        colored = fabsf(ab[i]) > GRAY_THRESH || fabsf(ab[n + i]) > GRAY_THRESH;
    for (long i = 0; i < n; i++) labels[i] = colored ? ssl_ab_bin(q, ab[i], ab[n + i]) : -1;
}

int ssl_colorization_class_weights(const double *hist, const ssl_ab_bins *q, float *prior,
                                   float *weights)
{
    /* p~(c) = sum_{a,b} hist[a][b] g(c_a - a) g(c_b - b): separable, first
     * over b for each grid column of b, then over a at each bin. */
    double *g = malloc(sizeof(double) * 2 * SSL_AB_SIDE * HIST_SIDE), *col = g + SSL_AB_SIDE * HIST_SIDE;
    double p[SSL_AB_MAX_BINS], total = 0;
    if (!g) return SSL_ENOMEM;
    for (int j = 0; j < SSL_AB_SIDE; j++)
        for (int v = 0; v < HIST_SIDE; v++) {
            double d = SSL_AB_GRID * (j - SSL_AB_HALF) - (v - 128);
            g[j * HIST_SIDE + v] = exp(-d * d / (2 * PRIOR_SIGMA * PRIOR_SIGMA));
        }
    for (int a = 0; a < HIST_SIDE; a++)
        for (int j = 0; j < SSL_AB_SIDE; j++) {
            double s = 0;
            for (int v = 0; v < HIST_SIDE; v++) s += hist[a * HIST_SIDE + v] * g[j * HIST_SIDE + v];
            col[a * SSL_AB_SIDE + j] = s;
        }
    for (int t = 0; t < q->n; t++) {
        int i = (int)lrintf(q->center[t][0] / SSL_AB_GRID) + SSL_AB_HALF;
        int j = (int)lrintf(q->center[t][1] / SSL_AB_GRID) + SSL_AB_HALF;
        double s = 0;
        for (int a = 0; a < HIST_SIDE; a++) s += g[i * HIST_SIDE + a] * col[a * SSL_AB_SIDE + j];
        p[t] = s;
        total += s;
    }
    free(g);
    double norm = 0, w[SSL_AB_MAX_BINS];
    for (int t = 0; t < q->n; t++) {
        p[t] = total > 0 ? p[t] / total : 1.0 / q->n;
        w[t] = 1.0 / ((1 - PRIOR_LAMBDA) * p[t] + PRIOR_LAMBDA / q->n);
        norm += p[t] * w[t];
    }
    for (int t = 0; t < q->n; t++) {
        prior[t] = (float)p[t];
        weights[t] = (float)(w[t] / norm);
    }
    return SSL_OK;
}

void ssl_colorization_annealed_mean(const float *logits, int Q, long n, const ssl_ab_bins *q,
                                    float T, float *ab)
{
    for (long i = 0; i < n; i++) {
        double mx = -INFINITY, z = 0, a = 0, b = 0;
        for (int t = 0; t < Q; t++) mx = fmax(mx, logits[t * n + i] / T);
        for (int t = 0; t < Q; t++) {
            double e = exp(logits[t * n + i] / T - mx);
            z += e;
            a += e * q->center[t][0];
            b += e * q->center[t][1];
        }
        ab[i] = (float)(a / z);
        ab[n + i] = (float)(b / z);
    }
}

/* The side of the targets for views of side S: two halvings (1/4). */
static int target_side(const ssl_encoder *enc, int S)
{
    int sizes[8];
    ssl_encoder_halvings(enc, S, sizes);
    return sizes[2];
}

static int colorization_fit(ssl_method *m, const ssl_dataset *ds, char *err)
{
    colorization_state *s = m->state_ptr;
    if (ds->c != 3)
        return ssl_fail(err, SSL_EINVAL, "colorization needs RGB images (3 channels), %s has %d",
                        ds->source, ds->c);
    const int H = ds->h, W = ds->w, th = target_side(&m->encoder, H), tw = target_side(&m->encoder, W);
    const long px = (long)H * W, tp = (long)th * tw;
    double *hist = calloc((size_t)HIST_SIDE * HIST_SIDE, sizeof(double));
    float *ab = malloc(sizeof(float) * (2 * px + 2 * tp));
    int32_t *lab_ok = malloc(sizeof(int32_t) * tp);
    if (!hist || !ab || !lab_ok) {
        free(hist), free(ab), free(lab_ok);
        return ssl_fail(err, SSL_ENOMEM, "colorization: out of memory for the colour prior");
    }
    double lin[256];
    for (int v = 0; v < 256; v++) lin[v] = v / 255.0;
    int n_used = ds->n < PRIOR_MAX_IMAGES ? ds->n : PRIOR_MAX_IMAGES;
    double counted = 0;
    for (int k = 0; k < n_used; k++) {
        const uint8_t *img = ds->images + (long)k * ds->n / n_used * 3 * px;
        for (long i = 0; i < px; i++) {
            double lab[3];
            ssl_rgb_to_lab(lin[img[i]], lin[img[px + i]], lin[img[2 * px + i]], lab);
            ab[i] = (float)lab[1];
            ab[px + i] = (float)lab[2];
        }
        float *pooled = ab + 2 * px;
        ssl_adaptive_avgpool(ab, 2, H, W, th, tw, pooled);
        make_labels(&s->bins, pooled, tp, lab_ok);
        if (lab_ok[0] < 0) continue; /* gray: not in the loss, not in the prior */
        for (long i = 0; i < tp; i++) {
            int a = (int)floor(pooled[i] + 0.5) + 128, b = (int)floor(pooled[tp + i] + 0.5) + 128;
            a = a < 0 ? 0 : a > HIST_SIDE - 1 ? HIST_SIDE - 1 : a;
            b = b < 0 ? 0 : b > HIST_SIDE - 1 ? HIST_SIDE - 1 : b;
            hist[a * HIST_SIDE + b] += 1;
            counted++;
        }
    }
    free(ab);
    free(lab_ok);
    if (counted == 0) {
        free(hist);
        return ssl_fail(err, SSL_EINVAL,
                        "colorization: no training image has colour (|a| or |b| > 5 somewhere): nothing to learn");
    }
    int rc = ssl_colorization_class_weights(hist, &s->bins, s->prior, s->weights);
    free(hist);
    return rc ? ssl_fail(err, rc, "colorization: out of memory for the colour prior") : SSL_OK;
}

static int colorization_encoder_channels(const ssl_method_config *cfg, int c, char *err)
{
    if (c != 3)
        return ssl_fail(err, SSL_EINVAL,
                        "colorization needs RGB images (3 channels), the data has %d (image folders: --channels 3)", c);
    return 1;
}

static int colorization_encoder_data(const ssl_dataset *src, ssl_dataset *dst, char *err)
{
    if (src->c != 1 && src->c != 3)
        return ssl_fail(err, SSL_EINVAL, "colorization: %s has %d channels (1 or 3 work)", src->source, src->c);
    *dst = *src;
    dst->c = 1;
    const long px = (long)src->h * src->w;
    dst->images = malloc((size_t)src->n * px);
    dst->labels = src->labels ? malloc(sizeof(int32_t) * src->n) : NULL;
    if (!dst->images || (src->labels && !dst->labels)) {
        free(dst->images), free(dst->labels);
        memset(dst, 0, sizeof *dst);
        return ssl_fail(err, SSL_ENOMEM, "colorization: out of memory for the lightness of %s", src->source);
    }
    if (src->labels) memcpy(dst->labels, src->labels, sizeof(int32_t) * src->n);
    /* L depends on the luminance Y alone: per-channel linearization tables,
     * then one cube root per pixel; the same doubles as ssl_rgb_to_lab. */
    double lin[256];
    for (int v = 0; v < 256; v++) lin[v] = ssl_srgb_linear(v / 255.0);
#pragma omp parallel for schedule(static)
    for (int i = 0; i < src->n; i++) {
        const uint8_t *img = src->images + (long)i * src->c * px;
        uint8_t *out = dst->images + (long)i * px;
        for (long p = 0; p < px; p++) {
            const int c3 = src->c == 3;
            double L = ssl_lab_lightness_linear(lin[img[p]], lin[img[c3 ? px + p : p]],
                                                lin[img[c3 ? 2 * px + p : p]]);
            long q = lrint(L * 2.55);
            out[p] = (uint8_t)(q < 0 ? 0 : q > 255 ? 255 : q);
        }
    }
    return SSL_OK;
}

static int colorization_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->color_regression == SSL_UNSET) cfg->color_regression = 0;
    if (cfg->view_size == SSL_UNSET) cfg->view_size = 0;
    if (cfg->color_regression > 1)
        return ssl_fail(err, SSL_EINVAL, "--color-regression must be 0 or 1 (got %d)", cfg->color_regression);
    if (cfg->view_size > 4096)
        return ssl_fail(err, SSL_EINVAL, "--view-size must be <= 4096 (got %d)", cfg->view_size);
    return SSL_OK;
}

/* RGB views whatever the encoder takes (the loader applies them to the
 * 3-channel data): a random crop of 60-100% + flip (the paper: random
 * 176-px crops of 256-px images and flips), 3-channel normalization, which
 * loss() undoes. */
static int colorization_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    return ssl_pretext_views(cfg, 3, h, w, augs);
}

static int colorization_init(ssl_method *m, ssl_rng *rng, char *err)
{
    colorization_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "colorization: out of memory");
    m->state_ptr = s;
    ssl_ab_bins_gamut(&s->bins);
    const int Q = s->Q = s->bins.n, F = m->encoder.feat_dim;
    s->n_out = m->cfg.color_regression ? 2 : Q;
    int sizes[8];
    s->n_up = ssl_encoder_halvings(&m->encoder, 64, sizes) - 2;
    int bshape[2] = {Q, 2};
    s->bin_buf = ssl_registry_buffer(&m->extra, "ab_bins", 2, bshape, 0.0f);
    s->prior = ssl_registry_buffer(&m->extra, "color_prior", 1, &Q, 1.0f / Q);
    s->weights = ssl_registry_buffer(&m->extra, "color_weights", 1, &Q, 1.0f);
    if (!s->bin_buf || !s->prior || !s->weights) return ssl_fail(err, SSL_ENOMEM, "colorization: out of memory");
    memcpy(s->bin_buf, s->bins.center, sizeof(float) * 2 * Q);
    char name[64];
    int rc = SSL_OK;
    for (int t = 0; t < s->n_up && !rc; t++) {
        int wshape[4] = {F, F, 4, 4};
        snprintf(name, sizeof name, "decoder.%d.weight", 3 * t);
        rc = ssl_registry_param(&m->heads, name, 4, wshape, 0, &s->up_w[t]);
        if (!rc) ssl_init_normal(s->up_w[t].data, (long)F * F * 16, 0.02f, rng);
        snprintf(name, sizeof name, "decoder.%d", 3 * t + 1);
        if (!rc) rc = ssl_registry_bn(&m->heads, name, F, &s->up_bn[t]);
    }
    int oshape[4] = {s->n_out, F, 1, 1};
    snprintf(name, sizeof name, "decoder.%d.weight", 3 * s->n_up);
    if (!rc) rc = ssl_registry_param(&m->heads, name, 4, oshape, 0, &s->out_w);
    snprintf(name, sizeof name, "decoder.%d.bias", 3 * s->n_up);
    if (!rc) rc = ssl_registry_param(&m->heads, name, 1, &s->n_out, 1, &s->out_b);
    if (rc) return ssl_fail(err, SSL_ENOMEM, "colorization: out of memory for the decoder");
    ssl_init_normal(s->out_w.data, (long)s->n_out * F, 0.02f, rng);
    ssl_aug a;
    ssl_aug_eval(&a, 3, 1, 1);
    memcpy(s->rgb_mean, a.mean, sizeof s->rgb_mean);
    memcpy(s->rgb_std, a.std, sizeof s->rgb_std);
    ssl_aug_eval(&a, 1, 1, 1);
    s->l_mean = a.mean[0];
    s->l_std = a.std[0];
    return SSL_OK;
}

/* Correct predictions of out (B, n_out, T, T) NCHW against labels. */
static void count_correct(colorization_state *s, const float *out, const int32_t *labels, int B,
                          long tp)
{
    s->correct = s->total = 0;
    for (int b = 0; b < B; b++)
        for (long i = 0; i < tp; i++) {
            int32_t l = labels[b * tp + i];
            if (l < 0) continue;
            const float *o = out + (long)b * s->n_out * tp + i;
            int pred = 0;
            if (s->n_out == 2) {
                pred = ssl_ab_bin(&s->bins, AB_NORM * o[0], AB_NORM * o[tp]);
            } else {
                for (int q = 1; q < s->n_out; q++)
                    if (o[q * tp] > o[pred * tp]) pred = q;
            }
            s->correct += pred == l;
            s->total++;
        }
}

/* Encoder on the lightness xl (B, 1, S, S), then the decoder -> logits
 * (B, n_out, T, T) NCHW, T the side of the targets. */
static ssl_tensor *decode(ssl_method *m, ssl_graph *g, ssl_tensor *xl, int S)
{
    colorization_state *s = m->state_ptr;
    int sizes[8];
    const int k = ssl_encoder_halvings(&m->encoder, S, sizes);
    ssl_tensor *h = ssl_op_to_layout(g, ssl_encoder_forward_dense(g, &m->encoder, xl), SSL_LAYOUT_NCHW);
    for (int t = 0; t < s->n_up; t++)
        h = ssl_op_bn_act(g, ssl_upconv(g, h, &s->up_w[t], NULL, sizes[k - 1 - t]), &s->up_bn[t], NULL, 1);
    return ssl_op_add_bias_channel(g, ssl_op_conv2d(g, h, &s->out_w, 1, 0), &s->out_b);
}

static ssl_tensor *colorization_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    colorization_state *s = m->state_ptr;
    ssl_tensor *x = views[0];
    if (x->ndim != 4 || x->layout != SSL_LAYOUT_NCHW || x->shape[1] != 3 || x->shape[2] != x->shape[3])
        return ssl_pretext_error(g, "colorization", "needs square RGB views (3 channels, NCHW)");
    if (!ssl_ab_bins_set(&s->bins, s->bin_buf, s->Q))
        return ssl_pretext_error(g, "colorization", "'ab_bins' holds a centre off the 10-unit ab grid");
    const int B = x->shape[0], S = x->shape[2];
    int sizes[8];
    ssl_encoder_halvings(&m->encoder, S, sizes);
    const int T = sizes[2];
    const long px = (long)S * S, tp = (long)T * T;
    int lshape[4] = {B, 1, S, S};
    ssl_tensor *xl = ssl_tensor_new(g, 4, lshape, SSL_LAYOUT_NCHW);
    float *ab = ssl_graph_saved(g, sizeof(float) * 2 * px);
    float *target = ssl_graph_saved(g, sizeof(float) * 2 * tp * B); /* pooled ab (B, 2, T, T) */
    int32_t *labels = ssl_pretext_labels(g, (int)(B * tp));
    if (!xl || !ab || !target || !labels) return NULL;
    for (int b = 0; b < B; b++) {
        ssl_colorization_lab_view(x->data + 3 * px * b, S, S, s->rgb_mean, s->rgb_std, s->l_mean,
                                  s->l_std, xl->data + px * b, ab);
        ssl_adaptive_avgpool(ab, 2, S, S, T, T, target + 2 * tp * b);
        make_labels(&s->bins, target + 2 * tp * b, tp, labels + tp * b);
    }
    ssl_tensor *out = decode(m, g, xl, S);
    if (!out) return NULL;
    if (out->layout != SSL_LAYOUT_NCHW || out->shape[1] != s->n_out || out->shape[2] != T || out->shape[3] != T)
        return ssl_pretext_error(g, "colorization", "the decoder's output does not match the targets");
    count_correct(s, out->data, labels, B, tp);
    if (s->n_out == 2) { /* regression on ab / 110, coloured images only */
        float *mask = ssl_graph_saved(g, sizeof(float) * tp * B);
        if (!mask) return NULL;
        for (long i = 0; i < 2 * tp * B; i++) target[i] /= AB_NORM;
        for (long i = 0; i < tp * B; i++) mask[i] = labels[i] >= 0;
        return ssl_op_masked_mse(g, out, target, mask, 1);
    }
    double wsum = 0;
    for (long i = 0; i < tp * B; i++)
        if (labels[i] >= 0) wsum += s->weights[labels[i]];
    ssl_tensor *ce = ssl_op_pixel_softmax_ce(g, out, labels, s->weights);
    return s->total ? ssl_op_scale(g, ce, (float)(wsum / s->total)) : ce;
}

static int colorization_metrics(const ssl_method *m, int64_t *correct, int64_t *total)
{
    const colorization_state *s = m->state_ptr;
    *correct = s->correct;
    *total = s->total;
    return s->Q;
}

static void colorization_free(ssl_method *m) { ssl_free(m->state_ptr); }

/* F.interpolate(mode="bilinear", align_corners=False): x (c, h, w) -> y (c, oh, ow). */
static void upsample_bilinear(const float *x, int c, int h, int w, int oh, int ow, float *y)
{
    for (int i = 0; i < oh; i++) {
        double sy = ((double)i + 0.5) * h / oh - 0.5;
        sy = sy < 0 ? 0 : sy;
        int y0 = (int)sy, y1 = y0 + 1 < h ? y0 + 1 : h - 1;
        double fy = sy - y0;
        for (int j = 0; j < ow; j++) {
            double sx = ((double)j + 0.5) * w / ow - 0.5;
            sx = sx < 0 ? 0 : sx;
            int x0 = (int)sx, x1 = x0 + 1 < w ? x0 + 1 : w - 1;
            double fx = sx - x0;
            for (int ch = 0; ch < c; ch++) {
                const float *p = x + (long)ch * h * w;
                double top = p[y0 * w + x0] * (1 - fx) + p[y0 * w + x1] * fx;
                double bot = p[y1 * w + x0] * (1 - fx) + p[y1 * w + x1] * fx;
                y[((long)ch * oh + i) * ow + j] = (float)(top * (1 - fy) + bot * fy);
            }
        }
    }
}

int ssl_colorization_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int S,
                             float *light, float *rgb, char *err)
{
    if (m->ops != &ssl_method_colorization || !m->state_ptr)
        return ssl_fail(err, SSL_EINVAL, "colorization pictures need a model trained with --method colorization");
    colorization_state *s = m->state_ptr;
    if (!ssl_ab_bins_set(&s->bins, s->bin_buf, s->Q))
        return ssl_fail(err, SSL_EINVAL, "colorization: 'ab_bins' holds a centre off the 10-unit ab grid");
    int sizes[8];
    ssl_encoder_halvings(&m->encoder, S, sizes);
    const int T = sizes[2];
    const long px = (long)S * S, tp = (long)T * T;
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    g.record = 0;
    int lshape[4] = {n, 1, S, S};
    ssl_tensor *xl = ssl_tensor_new(&g, 4, lshape, SSL_LAYOUT_NCHW);
    float *ab = malloc(sizeof(float) * 2 * (size_t)(px > tp ? px : tp)), *abt = malloc(sizeof(float) * 2 * (size_t)tp);
    int rc = xl && ab && abt ? SSL_OK : ssl_fail(err, SSL_ENOMEM, "colorization: out of memory for the pictures");
    for (int b = 0; b < n && !rc; b++) {
        ssl_colorization_lab_view(x + 3 * px * b, S, S, s->rgb_mean, s->rgb_std, s->l_mean, s->l_std,
                                  xl->data + px * b, ab);
        for (long i = 0; i < px; i++) light[px * b + i] = xl->data[px * b + i] * s->l_std + s->l_mean;
    }
    ssl_tensor *out = rc ? NULL : decode(m, &g, xl, S);
    if (!rc && !out) rc = ssl_show_graph_error(ctx, err);
    if (!rc && (out->layout != SSL_LAYOUT_NCHW || out->shape[1] != s->n_out || out->shape[2] != T || out->shape[3] != T))
        rc = ssl_fail(err, SSL_ESHAPE, "colorization: the decoder's output does not match the targets");
    for (int b = 0; b < n && !rc; b++) {
        const float *o = out->data + (long)b * s->n_out * tp;
        if (s->n_out == 2) /* regression: ab / 110 */
            for (long i = 0; i < 2 * tp; i++) abt[i] = AB_NORM * o[i];
        else
            ssl_colorization_annealed_mean(o, s->Q, tp, &s->bins, ANNEAL_T, abt);
        upsample_bilinear(abt, 2, T, T, S, S, ab);
        for (long i = 0; i < px; i++) {
            double c3[3];
            ssl_lab_to_rgb(100.0 * light[px * b + i], ab[i], ab[px + i], c3);
            for (int ch = 0; ch < 3; ch++) rgb[(3 * b + ch) * px + i] = (float)c3[ch];
        }
    }
    free(ab);
    free(abt);
    ssl_graph_free(&g);
    return rc;
}

/* colorization.png, per image: the lightness the encoder sees, that
 * lightness with the predicted colour, and the original view. */
static int colorization_show(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                             const char *out_dir, char *err)
{
    if (ds->c != 3)
        return ssl_fail(err, SSL_EINVAL, "colorization pictures need RGB images, %s has %d channel(s)", ds->source,
                        ds->c);
    ssl_aug a;
    float *x = ssl_show_views(m, ds, first, n, &a, err);
    if (!x) return SSL_EINVAL;
    const int S = a.out_h;
    const long px = (long)S * S;
    float *light = malloc(sizeof(float) * (size_t)n * px), *rgb = malloc(sizeof(float) * 3 * (size_t)n * px);
    int rc = S == a.out_w ? SSL_OK : ssl_fail(err, SSL_EINVAL, "colorization: views are not square");
    if (!rc && (!light || !rgb)) rc = ssl_fail(err, SSL_ENOMEM, "colorization: out of memory for the pictures");
    if (!rc) rc = ssl_colorization_predict(m, ctx, x, n, S, light, rgb, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 0);
    static const char *const titles[3] = {"lightness (input)", "predicted colour", "original"};
    ssl_canvas cv = {0};
    if (!rc) rc = ssl_show_canvas(&cv, &l, n, 3, titles, err);
    for (int i = 0; i < n && !rc; i++) {
        int x0, y0;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        rc = ssl_canvas_paste(&cv, x0, y0, l.scale, light + i * px, 1, S, S, 0.0f, 1.0f, err);
        ssl_show_cell(&l, i, 1, &x0, &y0);
        if (!rc) rc = ssl_canvas_paste(&cv, x0, y0, l.scale, rgb + 3 * i * px, 3, S, S, 0.0f, 1.0f, err);
        ssl_show_cell(&l, i, 2, &x0, &y0);
        if (!rc) rc = ssl_show_paste(&cv, x0, y0, l.scale, x + 3 * i * px, 3, S, S, &a, err);
    }
    if (!rc) rc = ssl_show_write(&cv, out_dir, "colorization.png", err);
    ssl_canvas_free(&cv);
    free(light);
    free(rgb);
    ssl_free(x);
    return rc;
}

const ssl_method_ops ssl_method_colorization = {
    .needs_feature_map = 1,
    .name = "colorization",
    .summary = "Colorization: L in, per-pixel ab-bin classifier at 1/4 resolution, class-rebalanced CE (RGB data)",
    .defaults = "261 in-gamut ab bins (grid 10), rebalancing lambda 0.5 sigma 5, crop 60-100% + flip; "
                "AdamW lr 1e-3, wd 1e-3 (paper: Adam 3e-5 for 450k steps)",
    .optim = {"adamw", 1e-3f, "none", 1e-3f, 0.9f, 0.0f},
    .validate = colorization_validate,
    .views = colorization_views,
    .init = colorization_init,
    .loss = colorization_loss,
    .free = colorization_free,
    .pretext_metrics = colorization_metrics,
    .encoder_channels = colorization_encoder_channels,
    .encoder_data = colorization_encoder_data,
    .fit_data = colorization_fit,
    .show = colorization_show,
};
