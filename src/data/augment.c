/* Per-image augmentations with torchvision's semantics on float images in
 * [0, 1]: RandomResizedCrop (bilinear, align_corners=False, no antialias),
 * horizontal flip, ColorJitter (random order), grayscale, Gaussian blur,
 * solarize, then Normalize - the SimCLR / BYOL pipeline order. */
#include "selfsup/data.h"

#include <math.h>
#include <string.h>

/* Red, green, blue weights of torchvision's rgb_to_grayscale. */
#define GRAY_R 0.2989f
#define GRAY_G 0.587f
#define GRAY_B 0.114f

static void aug_common(ssl_aug *a, int c, int h, int w)
{
    memset(a, 0, sizeof *a);
    a->out_h = h;
    a->out_w = w;
    a->crop_scale_min = a->crop_scale_max = 1.0f;
    a->solarize_threshold = 0.5f;
    a->blur_sigma_min = 0.1f;
    a->blur_sigma_max = 2.0f;
    a->blur_kernel = 3;
    if (c == 1) {
        a->mean[0] = 0.2860f; /* Fashion-MNIST train statistics */
        a->std[0] = 0.3530f;
    } else {
        static const float m[3] = {0.4914f, 0.4822f, 0.4465f}; /* CIFAR-10 train */
        static const float s[3] = {0.2470f, 0.2435f, 0.2616f};
        memcpy(a->mean, m, sizeof m);
        memcpy(a->std, s, sizeof s);
    }
    for (int i = c; i < 3; i++) {
        a->mean[i] = a->mean[0];
        a->std[i] = a->std[0];
    }
}

void ssl_aug_simclr(ssl_aug *a, int c, int h, int w)
{
    aug_common(a, c, h, w);
    a->crop_scale_min = 0.08f;
    a->crop_ratio_min = 3.0f / 4.0f;
    a->crop_ratio_max = 4.0f / 3.0f;
    a->flip_p = 0.5f;
    a->jitter_p = 0.8f;
    a->brightness = a->contrast = a->saturation = 0.4f;
    a->hue = 0.1f;
    a->gray_p = 0.2f;
    int side = h < w ? h : w;
    a->blur_p = side <= 32 ? 0.0f : 0.5f; /* blur destroys tiny images */
    int k = (int)(0.1f * (float)side);
    a->blur_kernel = (k < 3 ? 3 : k) | 1;
}

void ssl_aug_eval(ssl_aug *a, int c, int h, int w)
{
    aug_common(a, c, h, w);
    /* ratio 0 with scale 1: the whole image, no random crop */
    a->crop_ratio_min = a->crop_ratio_max = 0.0f;
}

size_t ssl_aug_scratch_floats(const ssl_aug *a, int c, int h, int w)
{
    size_t in = (size_t)h * w, out = (size_t)a->out_h * a->out_w;
    return 2 * (size_t)c * (in > out ? in : out);
}

static float uniform_in(ssl_rng *r, float lo, float hi)
{
    return lo + (hi - lo) * ssl_rng_uniform(r);
}

/* torchvision RandomResizedCrop.get_params: 10 tries, then a center crop. */
static void crop_params(const ssl_aug *a, int h, int w, ssl_rng *r, int *ci, int *cj, int *ch,
                        int *cw)
{
    if (a->crop_scale_min >= 1.0f && a->crop_ratio_min <= 0.0f) {
        *ci = *cj = 0;
        *ch = h;
        *cw = w;
        return;
    }
    double area = (double)h * w;
    double lr0 = log(a->crop_ratio_min), lr1 = log(a->crop_ratio_max);
    for (int t = 0; t < 10; t++) {
        double target = area * uniform_in(r, a->crop_scale_min, a->crop_scale_max);
        double ar = exp(lr0 + (lr1 - lr0) * ssl_rng_uniform(r));
        int tw = (int)nearbyint(sqrt(target * ar)); /* Python round(): half to even */
        int th = (int)nearbyint(sqrt(target / ar));
        if (tw > 0 && tw <= w && th > 0 && th <= h) {
            *ci = (int)ssl_rng_below(r, (uint32_t)(h - th + 1));
            *cj = (int)ssl_rng_below(r, (uint32_t)(w - tw + 1));
            *ch = th;
            *cw = tw;
            return;
        }
    }
    double in_ratio = (double)w / h;
    int tw = w, th = h;
    if (in_ratio < a->crop_ratio_min) {
        th = (int)nearbyint(w / (double)a->crop_ratio_min);
    } else if (in_ratio > a->crop_ratio_max) {
        tw = (int)nearbyint(h * (double)a->crop_ratio_max);
    }
    if (th < 1) th = 1;
    if (tw < 1) tw = 1;
    *ch = th;
    *cw = tw;
    *ci = (h - th) / 2;
    *cj = (w - tw) / 2;
}

/* PyTorch's source index and weight for upsample_bilinear2d, align_corners=False. */
static inline void bilinear_index(float scale, int dst, int in_size, int *i0, int *i1, float *l1)
{
    float s = scale * ((float)dst + 0.5f) - 0.5f;
    if (s < 0) s = 0;
    int i = (int)floorf(s);
    if (i > in_size - 1) i = in_size - 1;
    float l = s - (float)i;
    *l1 = l < 0 ? 0 : (l > 1 ? 1 : l);
    *i0 = i;
    *i1 = i + (i < in_size - 1 ? 1 : 0);
}

/* src (c, h, w) uint8, crop (ci, cj, ch, cw) -> dst (c, oh, ow) in [0, 1]. */
static void crop_resize(const uint8_t *src, int c, int h, int w, int ci, int cj, int ch, int cw,
                        float *dst, int oh, int ow)
{
    float lut[256];
    for (int v = 0; v < 256; v++) lut[v] = (float)v / 255.0f; /* ToTensor's exact division */
    float sy = (float)ch / (float)oh, sx = (float)cw / (float)ow;
    for (int y = 0; y < oh; y++) {
        int y0, y1;
        float ly;
        bilinear_index(sy, y, ch, &y0, &y1, &ly);
        float hy = 1.0f - ly;
        for (int x = 0; x < ow; x++) {
            int x0, x1;
            float lx;
            bilinear_index(sx, x, cw, &x0, &x1, &lx);
            float hx = 1.0f - lx;
            for (int k = 0; k < c; k++) {
                const uint8_t *p = src + (size_t)k * h * w + (size_t)ci * w + cj;
                const uint8_t *r0 = p + (size_t)y0 * w, *r1 = p + (size_t)y1 * w;
                dst[((size_t)k * oh + y) * ow + x] =
                    hy * (hx * lut[r0[x0]] + lx * lut[r0[x1]]) +
                    ly * (hx * lut[r1[x0]] + lx * lut[r1[x1]]);
            }
        }
    }
}

static inline float clamp01(float x) { return x < 0 ? 0 : (x > 1 ? 1 : x); }

/* img (c, n): ratio * img + (1 - ratio) * other, clamped; other (n) or a constant. */
static void blend_const(float *img, size_t len, float other, float ratio)
{
    for (size_t i = 0; i < len; i++) img[i] = clamp01(ratio * img[i] + (1.0f - ratio) * other);
}

static float gray_mean(const float *img, int c, size_t n)
{
    double s = 0;
    if (c == 1) {
        for (size_t i = 0; i < n; i++) s += img[i];
    } else {
        for (size_t i = 0; i < n; i++)
            s += GRAY_R * img[i] + GRAY_G * img[n + i] + GRAY_B * img[2 * n + i];
    }
    return (float)(s / (double)n);
}

/* img (3, n): blend with its own grayscale (torchvision adjust_saturation). */
static void saturate(float *img, size_t n, float f)
{
    for (size_t i = 0; i < n; i++) {
        float g = GRAY_R * img[i] + GRAY_G * img[n + i] + GRAY_B * img[2 * n + i];
        for (int k = 0; k < 3; k++) {
            float *p = img + k * n + i;
            *p = clamp01(f * *p + (1.0f - f) * g);
        }
    }
}

/* img (3, n): torchvision's _rgb2hsv, hue shift, _hsv2rgb. */
static void hue_shift(float *img, size_t n, float shift)
{
    for (size_t i = 0; i < n; i++) {
        float r = img[i], g = img[n + i], b = img[2 * n + i];
        float maxc = fmaxf(r, fmaxf(g, b)), minc = fminf(r, fminf(g, b));
        int eqc = maxc == minc;
        float cr = maxc - minc;
        float s = cr / (eqc ? 1.0f : maxc);
        float div = eqc ? 1.0f : cr;
        float rc = (maxc - r) / div, gc = (maxc - g) / div, bc = (maxc - b) / div;
        float hh;
        if (maxc == r) hh = bc - gc;
        else if (maxc == g) hh = 2.0f + rc - bc;
        else hh = 4.0f + gc - rc;
        hh = fmodf(hh / 6.0f + 1.0f, 1.0f);
        hh = fmodf(hh + shift, 1.0f);
        if (hh < 0) hh += 1.0f;
        float v = maxc;
        float h6 = hh * 6.0f;
        float fi = floorf(h6);
        float f = h6 - fi;
        int sector = ((int)fi) % 6;
        float p = clamp01(v * (1.0f - s));
        float q = clamp01(v * (1.0f - s * f));
        float t = clamp01(v * (1.0f - s * (1.0f - f)));
        switch (sector) {
        case 0: r = v; g = t; b = p; break;
        case 1: r = q; g = v; b = p; break;
        case 2: r = p; g = v; b = t; break;
        case 3: r = p; g = q; b = v; break;
        case 4: r = t; g = p; b = v; break;
        default: r = v; g = p; b = q; break;
        }
        img[i] = r;
        img[n + i] = g;
        img[2 * n + i] = b;
    }
}

static void color_jitter(const ssl_aug *a, float *img, int c, size_t n, ssl_rng *r)
{
    int order[4] = {0, 1, 2, 3};
    for (int i = 3; i > 0; i--) { /* random order, like torch.randperm(4) */
        int j = (int)ssl_rng_below(r, (uint32_t)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    float fb = uniform_in(r, fmaxf(0, 1 - a->brightness), 1 + a->brightness);
    float fc = uniform_in(r, fmaxf(0, 1 - a->contrast), 1 + a->contrast);
    float fs = uniform_in(r, fmaxf(0, 1 - a->saturation), 1 + a->saturation);
    float fh = uniform_in(r, -a->hue, a->hue);
    for (int k = 0; k < 4; k++) {
        switch (order[k]) {
        case 0:
            if (a->brightness > 0) blend_const(img, (size_t)c * n, 0.0f, fb);
            break;
        case 1:
            if (a->contrast > 0) blend_const(img, (size_t)c * n, gray_mean(img, c, n), fc);
            break;
        case 2:
            if (a->saturation > 0 && c == 3) saturate(img, n, fs);
            break;
        default:
            if (a->hue > 0 && c == 3) hue_shift(img, n, fh);
            break;
        }
    }
}

static void grayscale(float *img, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float g = GRAY_R * img[i] + GRAY_G * img[n + i] + GRAY_B * img[2 * n + i];
        img[i] = img[n + i] = img[2 * n + i] = g;
    }
}

/* torch's "reflect" padding index (edge not repeated), for any distance. */
static inline int reflect(int i, int n)
{
    if (n == 1) return 0;
    int period = 2 * (n - 1);
    i = i < 0 ? -i : i;
    i %= period;
    return i >= n ? period - i : i;
}

/* img (c, h, w), tmp (c, h, w): separable Gaussian blur, reflect padding. */
static void blur(float *img, float *tmp, int c, int h, int w, int ks, float sigma)
{
    float kern[65];
    if (ks > 65) ks = 65;
    if (ks < 1) ks = 1;
    ks |= 1;
    float half = (float)(ks - 1) * 0.5f, sum = 0;
    for (int i = 0; i < ks; i++) {
        float x = -half + (float)i;
        kern[i] = expf(-0.5f * (x / sigma) * (x / sigma));
        sum += kern[i];
    }
    for (int i = 0; i < ks; i++) kern[i] /= sum;
    int r = ks / 2;
    for (int k = 0; k < c; k++) {
        float *p = img + (size_t)k * h * w, *t = tmp + (size_t)k * h * w;
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float s = 0;
                for (int d = -r; d <= r; d++) s += kern[d + r] * p[(size_t)y * w + reflect(x + d, w)];
                t[(size_t)y * w + x] = s;
            }
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                float s = 0;
                for (int d = -r; d <= r; d++) s += kern[d + r] * t[(size_t)reflect(y + d, h) * w + x];
                p[(size_t)y * w + x] = s;
            }
    }
}

void ssl_aug_apply(const ssl_aug *a, const uint8_t *src, int c, int h, int w, float *dst,
                   float *scratch, ssl_rng *rng)
{
    ssl_aug_apply_geo(a, src, c, h, w, dst, scratch, rng, NULL);
}

void ssl_crop_geo_to_feature(const ssl_crop_geo *geo, float X, float Y, int fh, int fw, float *u,
                             float *v)
{
    /* The view resamples its box with align_corners=False, so box edges map
     * to view edges and a flip mirrors about the box's centre. */
    float dx = geo->flipped ? geo->x0 + geo->w - X : X - geo->x0;
    *u = dx * (float)fw / geo->w - 0.5f;
    *v = (Y - geo->y0) * (float)fh / geo->h - 0.5f;
}

void ssl_aug_apply_geo(const ssl_aug *a, const uint8_t *src, int c, int h, int w, float *dst,
                       float *scratch, ssl_rng *rng, ssl_crop_geo *geo)
{
    const int oh = a->out_h, ow = a->out_w;
    const size_t n = (size_t)oh * ow;
    float *img = scratch;
    float *tmp = scratch + ssl_aug_scratch_floats(a, c, h, w) / 2;

    int ci, cj, ch, cw;
    crop_params(a, h, w, rng, &ci, &cj, &ch, &cw);
    crop_resize(src, c, h, w, ci, cj, ch, cw, img, oh, ow);

    int flip = a->flip_p > 0 && ssl_rng_uniform(rng) < a->flip_p;
    if (geo) *geo = (ssl_crop_geo){(float)cj, (float)ci, (float)cw, (float)ch, flip};
    if (flip) {
        for (int k = 0; k < c; k++)
            for (int y = 0; y < oh; y++) {
                float *row = img + ((size_t)k * oh + y) * ow;
                for (int x = 0; x < ow / 2; x++) {
                    float t = row[x];
                    row[x] = row[ow - 1 - x];
                    row[ow - 1 - x] = t;
                }
            }
    }
    if (a->jitter_p > 0 && ssl_rng_uniform(rng) < a->jitter_p) color_jitter(a, img, c, n, rng);
    if (a->gray_p > 0 && ssl_rng_uniform(rng) < a->gray_p && c == 3) grayscale(img, n);
    if (a->blur_p > 0 && ssl_rng_uniform(rng) < a->blur_p) {
        float sigma = uniform_in(rng, a->blur_sigma_min, a->blur_sigma_max);
        blur(img, tmp, c, oh, ow, a->blur_kernel, sigma);
    }
    if (a->solarize_p > 0 && ssl_rng_uniform(rng) < a->solarize_p) {
        for (size_t i = 0; i < (size_t)c * n; i++)
            if (img[i] >= a->solarize_threshold) img[i] = 1.0f - img[i];
    }
    for (int k = 0; k < c; k++) {
        float m = a->mean[k], s = a->std[k];
        const float *p = img + (size_t)k * n;
        float *q = dst + (size_t)k * n;
        for (size_t i = 0; i < n; i++) q[i] = (p[i] - m) / s;
    }
}
