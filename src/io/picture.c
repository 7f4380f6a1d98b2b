/* Pictures for `selfsup show` (see selfsup/picture.h): an RGB8 canvas,
 * float / uint8 image pasting, heat-map blending, shapes, a built-in bitmap
 * font, PNG output through libpng into an atomic write, and PCA of feature
 * rows to RGB. Nothing here allocates per pixel; drawing clips silently. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/picture.h"
#include "selfsup/io.h"

#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#ifdef SSL_HAVE_PNG
#include <png.h>
#endif

/* ---- canvas ---- */

int ssl_canvas_init(ssl_canvas *c, int w, int h, uint32_t bg, char *err)
{
    memset(c, 0, sizeof *c);
    if (w < 1 || h < 1 || w > SSL_CANVAS_MAX_SIDE || h > SSL_CANVAS_MAX_SIDE ||
        (long)w * h > SSL_CANVAS_MAX_PIXELS)
        return ssl_fail(err, SSL_EINVAL, "canvas: size %dx%d outside 1..%d a side and %ld pixels", w,
                        h, SSL_CANVAS_MAX_SIDE, (long)SSL_CANVAS_MAX_PIXELS);
    c->data = malloc((size_t)w * h * 3);
    if (!c->data) return ssl_fail(err, SSL_ENOMEM, "canvas: out of memory for %dx%d", w, h);
    c->w = w;
    c->h = h;
    ssl_canvas_fill(c, 0, 0, w, h, bg);
    return SSL_OK;
}

void ssl_canvas_free(ssl_canvas *c)
{
    if (!c) return;
    free(c->data);
    memset(c, 0, sizeof *c);
}

uint32_t ssl_canvas_get(const ssl_canvas *c, int x, int y)
{
    if (!c->data || x < 0 || y < 0 || x >= c->w || y >= c->h) return 0;
    const uint8_t *p = c->data + ((size_t)y * c->w + x) * 3;
    return SSL_RGB(p[0], p[1], p[2]);
}

/* The part of the w x h rectangle at (x, y) inside the canvas, as
 * [*x0, *x1) x [*y0, *y1); 0 when nothing is. Longs: x + w may not fit an int. */
static int clip(const ssl_canvas *c, long x, long y, long w, long h, int *x0, int *y0, int *x1,
                int *y1)
{
    if (!c->data || w <= 0 || h <= 0) return 0;
    long a = x < 0 ? 0 : x, b = y < 0 ? 0 : y;
    long e = x + w, f = y + h;
    if (e > c->w) e = c->w;
    if (f > c->h) f = c->h;
    if (a >= e || b >= f) return 0;
    *x0 = (int)a;
    *y0 = (int)b;
    *x1 = (int)e;
    *y1 = (int)f;
    return 1;
}

static inline uint8_t *px(const ssl_canvas *c, int x, int y)
{
    return c->data + ((size_t)y * c->w + x) * 3;
}

static inline void put(uint8_t *p, uint32_t rgb)
{
    p[0] = (uint8_t)(rgb >> 16);
    p[1] = (uint8_t)(rgb >> 8);
    p[2] = (uint8_t)rgb;
}

static inline uint8_t mix(uint8_t below, uint8_t over, float alpha)
{
    return (uint8_t)floorf((1.0f - alpha) * below + alpha * over + 0.5f);
}

static void fill(ssl_canvas *c, long x, long y, long w, long h, uint32_t rgb)
{
    int x0, y0, x1, y1;
    if (!clip(c, x, y, w, h, &x0, &y0, &x1, &y1)) return;
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++) put(px(c, i, j), rgb);
}

void ssl_canvas_fill(ssl_canvas *c, int x, int y, int w, int h, uint32_t rgb)
{
    fill(c, x, y, w, h, rgb);
}

void ssl_canvas_blend(ssl_canvas *c, int x, int y, int w, int h, uint32_t rgb, float alpha)
{
    if (!(alpha > 0)) return; /* NaN too */
    if (alpha > 1) alpha = 1;
    int x0, y0, x1, y1;
    if (!clip(c, x, y, w, h, &x0, &y0, &x1, &y1)) return;
    const uint8_t col[3] = {(uint8_t)(rgb >> 16), (uint8_t)(rgb >> 8), (uint8_t)rgb};
    for (int j = y0; j < y1; j++)
        for (int i = x0; i < x1; i++) {
            uint8_t *p = px(c, i, j);
            for (int k = 0; k < 3; k++) p[k] = mix(p[k], col[k], alpha);
        }
}

void ssl_canvas_frame(ssl_canvas *c, int x, int y, int w, int h, int thickness, uint32_t rgb)
{
    if (w <= 0 || h <= 0 || thickness <= 0) return;
    if (2L * thickness >= w || 2L * thickness >= h) {
        ssl_canvas_fill(c, x, y, w, h, rgb);
        return;
    }
    const long t = thickness; /* long: y + h may not fit an int */
    fill(c, x, y, w, t, rgb);                         /* top */
    fill(c, x, (long)y + h - t, w, t, rgb);           /* bottom */
    fill(c, x, (long)y + t, t, h - 2 * t, rgb);       /* left */
    fill(c, (long)x + w - t, (long)y + t, t, h - 2 * t, rgb); /* right */
}

void ssl_grid_cell(const ssl_grid *g, int row, int col, int *x, int *y)
{
    *x = g->x0 + g->pad + col * (g->cell_w + g->pad);
    *y = g->y0 + g->pad + row * (g->cell_h + g->pad);
}

int ssl_grid_width(const ssl_grid *g, int cols)
{
    return g->x0 + g->pad + cols * (g->cell_w + g->pad);
}

int ssl_grid_height(const ssl_grid *g, int rows)
{
    return g->y0 + g->pad + rows * (g->cell_h + g->pad);
}

/* ---- value mapping ---- */

/* [lo, hi] for a paste: as given, or the finite min / max of v (n). *flat:
 * no spread, every value maps to the middle. */
static int value_range(const float *v, long n, float lo, float hi, const char *what, double *a,
                       double *b, int *flat, char *err)
{
    *flat = 0;
    if (!isfinite(lo) || !isfinite(hi))
        return ssl_fail(err, SSL_EINVAL, "%s: range [%g, %g] is not finite", what, (double)lo,
                        (double)hi);
    if (lo != hi) {
        *a = lo;
        *b = hi;
        return SSL_OK;
    }
    double mn = INFINITY, mx = -INFINITY;
    for (long i = 0; i < n; i++)
        if (isfinite(v[i])) {
            if (v[i] < mn) mn = v[i];
            if (v[i] > mx) mx = v[i];
        }
    if (!(mn < mx)) { /* constant, or nothing finite */
        *flat = 1;
        mn = 0;
        mx = 1;
    }
    *a = mn;
    *b = mx;
    return SSL_OK;
}

/* v mapped by [a, b] to [0, 1]: clamped, NaN as 0. */
static inline double unit(float v, double a, double b, int flat)
{
    if (flat && isfinite(v)) return 0.5;
    double t = ((double)v - a) / (b - a);
    if (!(t > 0)) return 0; /* NaN too */
    return t < 1 ? t : 1;
}

static int check_image(const char *what, int scale, int ch, int h, int w, int need_ch, char *err)
{
    if (need_ch && ch != 1 && ch != 3)
        return ssl_fail(err, SSL_EINVAL, "%s: %d channels, need 1 (gray) or 3 (RGB)", what, ch);
    if (h < 1 || w < 1 || scale < 1)
        return ssl_fail(err, SSL_EINVAL, "%s: bad size %dx%d or scale %d", what, w, h, scale);
    if ((long)h * scale > SSL_CANVAS_MAX_SIDE || (long)w * scale > SSL_CANVAS_MAX_SIDE)
        return ssl_fail(err, SSL_EINVAL, "%s: %dx%d at scale %d is over %d pixels a side", what, w,
                        h, scale, SSL_CANVAS_MAX_SIDE);
    return SSL_OK;
}

int ssl_canvas_paste(ssl_canvas *c, int x, int y, int scale, const float *img, int ch, int h,
                     int w, float lo, float hi, char *err)
{
    int rc = check_image("paste", scale, ch, h, w, 1, err);
    if (rc) return rc;
    const long plane = (long)h * w;
    double a = 0, b = 1;
    int flat;
    rc = value_range(img, plane * ch, lo, hi, "paste", &a, &b, &flat, err);
    if (rc) return rc;
    int x0, y0, x1, y1;
    if (!clip(c, x, y, (long)w * scale, (long)h * scale, &x0, &y0, &x1, &y1)) return SSL_OK;
    for (int j = y0; j < y1; j++) {
        const long row = (long)((j - y) / scale) * w;
        for (int i = x0; i < x1; i++) {
            const long s = row + (i - x) / scale;
            uint8_t *p = px(c, i, j);
            for (int k = 0; k < 3; k++) {
                double t = unit(img[(ch == 3 ? k : 0) * plane + s], a, b, flat);
                p[k] = (uint8_t)floor(t * 255.0 + 0.5);
            }
        }
    }
    return SSL_OK;
}

int ssl_canvas_paste_u8(ssl_canvas *c, int x, int y, int scale, const uint8_t *img, int ch, int h,
                        int w, char *err)
{
    int rc = check_image("paste", scale, ch, h, w, 1, err);
    if (rc) return rc;
    const long plane = (long)h * w;
    int x0, y0, x1, y1;
    if (!clip(c, x, y, (long)w * scale, (long)h * scale, &x0, &y0, &x1, &y1)) return SSL_OK;
    for (int j = y0; j < y1; j++) {
        const long row = (long)((j - y) / scale) * w;
        for (int i = x0; i < x1; i++) {
            const long s = row + (i - x) / scale;
            uint8_t *p = px(c, i, j);
            for (int k = 0; k < 3; k++) p[k] = img[(ch == 3 ? k : 0) * plane + s];
        }
    }
    return SSL_OK;
}

/* ---- colour maps ---- */

/* matplotlib's viridis at 10 evenly spaced points (R's viridis(10)). */
static const uint8_t viridis[10][3] = {
    {0x44, 0x01, 0x54}, {0x48, 0x28, 0x78}, {0x3E, 0x4A, 0x89}, {0x31, 0x68, 0x8E},
    {0x26, 0x82, 0x8E}, {0x1F, 0x9E, 0x89}, {0x35, 0xB7, 0x79}, {0x6D, 0xCD, 0x59},
    {0xB4, 0xDE, 0x2C}, {0xFD, 0xE7, 0x25},
};
/* coolwarm's ends and middle. */
static const uint8_t bluered[3][3] = {{59, 76, 192}, {221, 221, 221}, {180, 4, 38}};
static const uint8_t gray[2][3] = {{0, 0, 0}, {255, 255, 255}};

uint32_t ssl_cmap_rgb(ssl_cmap cmap, float t)
{
    const uint8_t(*pts)[3];
    int n;
    switch (cmap) {
    case SSL_CMAP_BLUERED: pts = bluered; n = 3; break;
    case SSL_CMAP_GRAY: pts = gray; n = 2; break;
    default: pts = viridis; n = 10; break;
    }
    double u = t > 0 ? (t < 1 ? (double)t : 1.0) : 0.0; /* NaN -> 0 */
    double s = u * (n - 1);
    int i = (int)s;
    if (i >= n - 1) i = n - 2;
    double f = s - i;
    uint32_t out = 0;
    for (int k = 0; k < 3; k++) {
        double v = pts[i][k] + f * (pts[i + 1][k] - pts[i][k]);
        out = (out << 8) | (uint32_t)floor(v + 0.5);
    }
    return out;
}

int ssl_canvas_heat(ssl_canvas *c, int x, int y, int out_w, int out_h, const float *map, int mh,
                    int mw, float lo, float hi, ssl_cmap cmap, float alpha, char *err)
{
    if (mh < 1 || mw < 1 || out_w < 1 || out_h < 1 || out_w > SSL_CANVAS_MAX_SIDE ||
        out_h > SSL_CANVAS_MAX_SIDE)
        return ssl_fail(err, SSL_EINVAL, "heat: bad sizes (map %dx%d, box %dx%d)", mw, mh, out_w,
                        out_h);
    if (!(alpha >= 0 && alpha <= 1))
        return ssl_fail(err, SSL_EINVAL, "heat: alpha %g outside [0, 1]", (double)alpha);
    if (cmap != SSL_CMAP_VIRIDIS && cmap != SSL_CMAP_BLUERED && cmap != SSL_CMAP_GRAY)
        return ssl_fail(err, SSL_EINVAL, "heat: unknown colour map %d", (int)cmap);
    const long n = (long)mh * mw;
    double a = 0, b = 1;
    int flat;
    int rc = value_range(map, n, lo, hi, "heat", &a, &b, &flat, err);
    if (rc) return rc;
    int x0, y0, x1, y1;
    if (!clip(c, x, y, out_w, out_h, &x0, &y0, &x1, &y1)) return SSL_OK;
    /* Mapping (and clamping) first keeps NaN and out-of-range values from
     * bleeding into their neighbours through the interpolation. */
    double *t = malloc(sizeof(double) * (size_t)n);
    if (!t) return ssl_fail(err, SSL_ENOMEM, "heat: out of memory");
    for (long i = 0; i < n; i++) t[i] = unit(map[i], a, b, flat);
    const double sy = (double)mh / out_h, sx = (double)mw / out_w;
    for (int j = y0; j < y1; j++) {
        double fy = ((j - y) + 0.5) * sy - 0.5;
        if (fy < 0) fy = 0;
        const int r0 = (int)fy, r1 = r0 + (r0 < mh - 1);
        const double ly = fy - r0;
        for (int i = x0; i < x1; i++) {
            double fx = ((i - x) + 0.5) * sx - 0.5;
            if (fx < 0) fx = 0;
            const int q0 = (int)fx, q1 = q0 + (q0 < mw - 1);
            const double lx = fx - q0;
            const double v = (1 - ly) * ((1 - lx) * t[(long)r0 * mw + q0] + lx * t[(long)r0 * mw + q1]) +
                             ly * ((1 - lx) * t[(long)r1 * mw + q0] + lx * t[(long)r1 * mw + q1]);
            const uint32_t col = ssl_cmap_rgb(cmap, (float)v);
            uint8_t *p = px(c, i, j);
            p[0] = mix(p[0], (uint8_t)(col >> 16), alpha);
            p[1] = mix(p[1], (uint8_t)(col >> 8), alpha);
            p[2] = mix(p[2], (uint8_t)col, alpha);
        }
    }
    free(t);
    return SSL_OK;
}

/* ---- text ---- */

/* Glyphs for ASCII 32..126, 8 rows each (rows 0-6 the cap height, row 7 the
 * descender), 5 columns per row, bit 4 the leftmost. */
static const uint8_t font[95][SSL_FONT_H] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}, /* 0x20 space */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x00, 0x04, 0x00}, /* 0x21 ! */
    {0x0a, 0x0a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00}, /* 0x22 " */
    {0x0a, 0x0a, 0x1f, 0x0a, 0x1f, 0x0a, 0x0a, 0x00}, /* 0x23 # */
    {0x04, 0x0f, 0x14, 0x0e, 0x05, 0x1e, 0x04, 0x00}, /* 0x24 $ */
    {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03, 0x00}, /* 0x25 % */
    {0x0c, 0x12, 0x14, 0x08, 0x15, 0x12, 0x0d, 0x00}, /* 0x26 & */
    {0x04, 0x04, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00}, /* 0x27 ' */
    {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02, 0x00}, /* 0x28 ( */
    {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08, 0x00}, /* 0x29 ) */
    {0x00, 0x04, 0x15, 0x0e, 0x15, 0x04, 0x00, 0x00}, /* 0x2a * */
    {0x00, 0x04, 0x04, 0x1f, 0x04, 0x04, 0x00, 0x00}, /* 0x2b + */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x04, 0x08}, /* 0x2c , */
    {0x00, 0x00, 0x00, 0x1f, 0x00, 0x00, 0x00, 0x00}, /* 0x2d - */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x0c, 0x00}, /* 0x2e . */
    {0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00, 0x00}, /* 0x2f / */
    {0x0e, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0e, 0x00}, /* 0x30 0 */
    {0x04, 0x0c, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* 0x31 1 */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1f, 0x00}, /* 0x32 2 */
    {0x1f, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0e, 0x00}, /* 0x33 3 */
    {0x02, 0x06, 0x0a, 0x12, 0x1f, 0x02, 0x02, 0x00}, /* 0x34 4 */
    {0x1f, 0x10, 0x1e, 0x01, 0x01, 0x11, 0x0e, 0x00}, /* 0x35 5 */
    {0x06, 0x08, 0x10, 0x1e, 0x11, 0x11, 0x0e, 0x00}, /* 0x36 6 */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08, 0x00}, /* 0x37 7 */
    {0x0e, 0x11, 0x11, 0x0e, 0x11, 0x11, 0x0e, 0x00}, /* 0x38 8 */
    {0x0e, 0x11, 0x11, 0x0f, 0x01, 0x02, 0x0c, 0x00}, /* 0x39 9 */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x0c, 0x00, 0x00}, /* 0x3a : */
    {0x00, 0x0c, 0x0c, 0x00, 0x0c, 0x04, 0x08, 0x00}, /* 0x3b ; */
    {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02, 0x00}, /* 0x3c < */
    {0x00, 0x00, 0x1f, 0x00, 0x1f, 0x00, 0x00, 0x00}, /* 0x3d = */
    {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08, 0x00}, /* 0x3e > */
    {0x0e, 0x11, 0x01, 0x02, 0x04, 0x00, 0x04, 0x00}, /* 0x3f ? */
    {0x0e, 0x11, 0x01, 0x0d, 0x15, 0x15, 0x0e, 0x00}, /* 0x40 @ */
    {0x0e, 0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x00}, /* 0x41 A */
    {0x1e, 0x11, 0x11, 0x1e, 0x11, 0x11, 0x1e, 0x00}, /* 0x42 B */
    {0x0e, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0e, 0x00}, /* 0x43 C */
    {0x1c, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1c, 0x00}, /* 0x44 D */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x1f, 0x00}, /* 0x45 E */
    {0x1f, 0x10, 0x10, 0x1e, 0x10, 0x10, 0x10, 0x00}, /* 0x46 F */
    {0x0e, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0f, 0x00}, /* 0x47 G */
    {0x11, 0x11, 0x11, 0x1f, 0x11, 0x11, 0x11, 0x00}, /* 0x48 H */
    {0x0e, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* 0x49 I */
    {0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0c, 0x00}, /* 0x4a J */
    {0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11, 0x00}, /* 0x4b K */
    {0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1f, 0x00}, /* 0x4c L */
    {0x11, 0x1b, 0x15, 0x15, 0x11, 0x11, 0x11, 0x00}, /* 0x4d M */
    {0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x00}, /* 0x4e N */
    {0x0e, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00}, /* 0x4f O */
    {0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10, 0x10, 0x00}, /* 0x50 P */
    {0x0e, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0d, 0x00}, /* 0x51 Q */
    {0x1e, 0x11, 0x11, 0x1e, 0x14, 0x12, 0x11, 0x00}, /* 0x52 R */
    {0x0f, 0x10, 0x10, 0x0e, 0x01, 0x01, 0x1e, 0x00}, /* 0x53 S */
    {0x1f, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00}, /* 0x54 T */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0e, 0x00}, /* 0x55 U */
    {0x11, 0x11, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00}, /* 0x56 V */
    {0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0a, 0x00}, /* 0x57 W */
    {0x11, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x11, 0x00}, /* 0x58 X */
    {0x11, 0x11, 0x0a, 0x04, 0x04, 0x04, 0x04, 0x00}, /* 0x59 Y */
    {0x1f, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1f, 0x00}, /* 0x5a Z */
    {0x0e, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0e, 0x00}, /* 0x5b [ */
    {0x00, 0x10, 0x08, 0x04, 0x02, 0x01, 0x00, 0x00}, /* 0x5c backslash */
    {0x0e, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0e, 0x00}, /* 0x5d ] */
    {0x04, 0x0a, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00}, /* 0x5e ^ */
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x1f}, /* 0x5f _ */
    {0x08, 0x04, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00}, /* 0x60 ` */
    {0x00, 0x00, 0x0e, 0x01, 0x0f, 0x11, 0x0f, 0x00}, /* 0x61 a */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1e, 0x00}, /* 0x62 b */
    {0x00, 0x00, 0x0e, 0x10, 0x10, 0x11, 0x0e, 0x00}, /* 0x63 c */
    {0x01, 0x01, 0x0d, 0x13, 0x11, 0x11, 0x0f, 0x00}, /* 0x64 d */
    {0x00, 0x00, 0x0e, 0x11, 0x1f, 0x10, 0x0e, 0x00}, /* 0x65 e */
    {0x06, 0x09, 0x08, 0x1c, 0x08, 0x08, 0x08, 0x00}, /* 0x66 f */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* 0x67 g */
    {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00}, /* 0x68 h */
    {0x04, 0x00, 0x0c, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* 0x69 i */
    {0x02, 0x00, 0x06, 0x02, 0x02, 0x02, 0x12, 0x0c}, /* 0x6a j */
    {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12, 0x00}, /* 0x6b k */
    {0x0c, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0e, 0x00}, /* 0x6c l */
    {0x00, 0x00, 0x1a, 0x15, 0x15, 0x15, 0x15, 0x00}, /* 0x6d m */
    {0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11, 0x00}, /* 0x6e n */
    {0x00, 0x00, 0x0e, 0x11, 0x11, 0x11, 0x0e, 0x00}, /* 0x6f o */
    {0x00, 0x00, 0x1e, 0x11, 0x11, 0x1e, 0x10, 0x10}, /* 0x70 p */
    {0x00, 0x00, 0x0f, 0x11, 0x11, 0x0f, 0x01, 0x01}, /* 0x71 q */
    {0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10, 0x00}, /* 0x72 r */
    {0x00, 0x00, 0x0f, 0x10, 0x0e, 0x01, 0x1e, 0x00}, /* 0x73 s */
    {0x08, 0x08, 0x1c, 0x08, 0x08, 0x09, 0x06, 0x00}, /* 0x74 t */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0d, 0x00}, /* 0x75 u */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0a, 0x04, 0x00}, /* 0x76 v */
    {0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0a, 0x00}, /* 0x77 w */
    {0x00, 0x00, 0x11, 0x0a, 0x04, 0x0a, 0x11, 0x00}, /* 0x78 x */
    {0x00, 0x00, 0x11, 0x11, 0x11, 0x0f, 0x01, 0x0e}, /* 0x79 y */
    {0x00, 0x00, 0x1f, 0x02, 0x04, 0x08, 0x1f, 0x00}, /* 0x7a z */
    {0x02, 0x04, 0x04, 0x08, 0x04, 0x04, 0x02, 0x00}, /* 0x7b { */
    {0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04, 0x00}, /* 0x7c | */
    {0x08, 0x04, 0x04, 0x02, 0x04, 0x04, 0x08, 0x00}, /* 0x7d } */
    {0x00, 0x00, 0x08, 0x15, 0x02, 0x00, 0x00, 0x00}, /* 0x7e ~ */
};

void ssl_canvas_text(ssl_canvas *c, int x, int y, int scale, uint32_t rgb, const char *s)
{
    if (!s || !c->data) return;
    if (scale < 1) scale = 1;
    long cx = x, cy = y; /* long: long strings at large scales run far off the canvas */
    for (; *s && cy < c->h; s++) { /* lines only go down */
        unsigned char ch = (unsigned char)*s;
        if (ch == '\n') {
            cx = x;
            cy += (long)SSL_FONT_LINE * scale;
            continue;
        }
        if (ch < 32 || ch > 126) ch = '?';
        if (cx < c->w && cy < c->h && cx + (long)SSL_FONT_W * scale > 0 &&
            cy + (long)SSL_FONT_H * scale > 0) {
            const uint8_t *g = font[ch - 32];
            for (int r = 0; r < SSL_FONT_H; r++)
                for (int k = 0; k < SSL_FONT_W; k++)
                    if (g[r] & (0x10 >> k))
                        fill(c, cx + (long)k * scale, cy + (long)r * scale, scale, scale, rgb);
        }
        cx += (long)SSL_FONT_ADVANCE * scale;
    }
}

int ssl_text_width(const char *s, int scale)
{
    if (scale < 1) scale = 1;
    long best = 0, n = 0;
    for (;; s++) {
        if (!*s || *s == '\n') {
            if (n > best) best = n;
            n = 0;
            if (!*s) break;
        } else {
            n++;
        }
    }
    long px = best ? (best * SSL_FONT_ADVANCE - 1) * scale : 0;
    return px < INT_MAX ? (int)px : INT_MAX;
}

int ssl_text_height(const char *s, int scale)
{
    if (scale < 1) scale = 1;
    long lines = 1;
    for (; *s; s++) lines += *s == '\n';
    long px = ((lines - 1) * SSL_FONT_LINE + SSL_FONT_H) * scale;
    return px < INT_MAX ? (int)px : INT_MAX;
}

/* ---- PNG ---- */

#ifdef SSL_HAVE_PNG
/* The encoder's state lives on the heap: it changes between setjmp and a
 * longjmp from libpng, which local variables may not survive. */
typedef struct png_job {
    jmp_buf jb;
    uint8_t *buf;
    size_t len, cap;
    char msg[160];
} png_job;

/* libpng must not return from its error function: longjmp back. */
static void png_on_error(png_structp png, png_const_charp msg)
{
    png_job *j = png_get_error_ptr(png);
    snprintf(j->msg, sizeof j->msg, "%s", msg);
    longjmp(j->jb, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static void png_write_mem(png_structp png, png_bytep data, png_size_t len)
{
    png_job *j = png_get_io_ptr(png);
    if (len > j->cap - j->len) {
        size_t cap = j->cap ? j->cap : 1 << 16;
        while (cap - j->len < len) cap *= 2;
        uint8_t *p = realloc(j->buf, cap);
        if (!p) png_error(png, "out of memory");
        j->buf = p;
        j->cap = cap;
    }
    memcpy(j->buf + j->len, data, len);
    j->len += len;
}

static void png_flush_mem(png_structp png)
{
    (void)png;
}
#endif

int ssl_canvas_write_png(const ssl_canvas *c, const char *path, char *err)
{
    if (!path || !*path) return ssl_fail(err, SSL_EINVAL, "write PNG: empty path");
    if (!c->data || c->w < 1 || c->h < 1)
        return ssl_fail(err, SSL_EINVAL, "%s: the canvas is empty", path);
#ifndef SSL_HAVE_PNG
    return ssl_fail(err, SSL_EDEVICE,
                    "%s: selfsup was built without PNG support (install libpng-dev and rebuild)",
                    path);
#else
    png_job *job = calloc(1, sizeof *job);
    png_bytep *rows = malloc(sizeof(png_bytep) * (size_t)c->h);
    png_structp png = job && rows ? png_create_write_struct(PNG_LIBPNG_VER_STRING, job,
                                                            png_on_error, png_on_warning)
                                  : NULL;
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_write_struct(png ? &png : NULL, NULL);
        free(rows);
        free(job);
        return ssl_fail(err, SSL_ENOMEM, "%s: out of memory for the PNG encoder", path);
    }
    if (setjmp(job->jb)) {
        png_destroy_write_struct(&png, &info);
        int code = strcmp(job->msg, "out of memory") ? SSL_EINVAL : SSL_ENOMEM;
        int rc = ssl_fail(err, code, "%s: PNG encoding failed (%s)", path, job->msg);
        free(job->buf);
        free(job);
        free(rows);
        return rc;
    }
    for (int y = 0; y < c->h; y++) rows[y] = c->data + (size_t)y * c->w * 3;
    png_set_write_fn(png, job, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, (png_uint_32)c->w, (png_uint_32)c->h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    const void *parts[1] = {job->buf};
    const size_t sizes[1] = {job->len};
    int rc = ssl_write_file_atomic(path, parts, sizes, 1, err);
    free(job->buf);
    free(job);
    return rc;
#endif
}

/* ---- PCA ---- */

#define PCA_EXTRA 12    /* subspace size k + 12: convergence goes as lambda_{k+13} / lambda_k */
#define PCA_MAX_ITER 300
#define PCA_TOL 1e-9    /* residual |A y - l y| relative to the largest eigenvalue */

/* Four partial sums in a fixed order: vectorizes without -ffast-math and
 * stays deterministic. */
static double dot(const double *a, const double *b, long n)
{
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    long i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++) s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* Makes the p vectors v (p, m) orthonormal in order (modified Gram-Schmidt,
 * twice). A vector that vanishes against the ones before it (rank
 * deficiency) is replaced by a fresh one from rng. */
static void orthonormalize(double *v, int p, long m, ssl_rng *rng)
{
    for (int j = 0; j < p; j++) {
        double *vj = v + j * m;
        for (int tries = 0;; tries++) {
            double before = sqrt(dot(vj, vj, m));
            for (int pass = 0; pass < 2; pass++)
                for (int i = 0; i < j; i++) {
                    const double *vi = v + i * m;
                    const double r = dot(vi, vj, m);
                    for (long e = 0; e < m; e++) vj[e] -= r * vi[e];
                }
            double nrm = sqrt(dot(vj, vj, m));
            if (nrm > 1e-8 * before && nrm > 0) {
                for (long e = 0; e < m; e++) vj[e] /= nrm;
                break;
            }
            /* j < m always (p <= m), so a random vector has a part outside
             * the span of the first j; two tries are plenty in practice. */
            for (long e = 0; e < m; e++) vj[e] = ssl_rng_uniform(rng) - 0.5;
            if (tries > 8) break;
        }
    }
}

/* Eigen-decomposition of the symmetric h (p, p) (destroyed) by cyclic
 * Jacobi: ev (p) descending, u (p, p) with eigenvector j in column j. */
static void jacobi(double *h, int p, double *ev, double *u)
{
    for (int i = 0; i < p * p; i++) u[i] = 0;
    for (int i = 0; i < p; i++) u[i * p + i] = 1;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < p; i++) {
            diag += h[i * p + i] * h[i * p + i];
            for (int j = i + 1; j < p; j++) off += h[i * p + j] * h[i * p + j];
        }
        if (off <= 1e-30 * diag || off == 0) break;
        for (int a = 0; a < p; a++)
            for (int b = a + 1; b < p; b++) {
                const double hab = h[a * p + b];
                if (hab == 0) continue;
                const double theta = (h[b * p + b] - h[a * p + a]) / (2 * hab);
                const double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                const double cs = 1 / sqrt(t * t + 1), sn = t * cs;
                for (int k = 0; k < p; k++) { /* columns a, b */
                    const double ka = h[k * p + a], kb = h[k * p + b];
                    h[k * p + a] = cs * ka - sn * kb;
                    h[k * p + b] = sn * ka + cs * kb;
                }
                for (int k = 0; k < p; k++) { /* rows a, b */
                    const double ak = h[a * p + k], bk = h[b * p + k];
                    h[a * p + k] = cs * ak - sn * bk;
                    h[b * p + k] = sn * ak + cs * bk;
                }
                for (int k = 0; k < p; k++) {
                    const double ka = u[k * p + a], kb = u[k * p + b];
                    u[k * p + a] = cs * ka - sn * kb;
                    u[k * p + b] = sn * ka + cs * kb;
                }
            }
    }
    for (int i = 0; i < p; i++) ev[i] = h[i * p + i];
    for (int i = 0; i < p; i++) { /* selection sort, descending; stable for equal values */
        int best = i;
        for (int j = i + 1; j < p; j++)
            if (ev[j] > ev[best]) best = j;
        if (best == i) continue;
        double t = ev[i];
        ev[i] = ev[best];
        ev[best] = t;
        for (int k = 0; k < p; k++) {
            t = u[k * p + i];
            u[k * p + i] = u[k * p + best];
            u[k * p + best] = t;
        }
    }
}

/* The k leading eigenpairs of the symmetric a (m, m): y (k, m) unit
 * eigenvectors, ev (k). Subspace iteration from a fixed random basis with
 * Rayleigh-Ritz each step; stops when every wanted pair's residual is small. */
static int top_eigen(const double *a, long m, int k, double *y, double *ev, char *err)
{
    const int p = (int)(m < k + PCA_EXTRA ? m : k + PCA_EXTRA);
    double *v = malloc(sizeof(double) * (size_t)p * m), *w = malloc(sizeof(double) * (size_t)p * m);
    double *ay = malloc(sizeof(double) * (size_t)p * m), *yy = malloc(sizeof(double) * (size_t)p * m);
    double *h = malloc(sizeof(double) * (size_t)p * p), *u = malloc(sizeof(double) * (size_t)p * p);
    double *lam = malloc(sizeof(double) * (size_t)p);
    int rc = SSL_OK;
    if (!v || !w || !ay || !yy || !h || !u || !lam) {
        rc = ssl_fail(err, SSL_ENOMEM, "pca: out of memory");
        goto done;
    }
    ssl_rng rng;
    ssl_rng_seed(&rng, 0x9ca5eedULL);
    for (long i = 0; i < (long)p * m; i++) v[i] = ssl_rng_uniform(&rng) - 0.5;
    orthonormalize(v, p, m, &rng);
    for (int it = 0;; it++) {
        for (long r = 0; r < m; r++) /* w = A v, each row of A read once */
            for (int j = 0; j < p; j++) w[j * m + r] = dot(a + r * m, v + j * m, m);
        for (int i = 0; i < p; i++) /* h = v^T A v, symmetrized against rounding */
            for (int j = 0; j <= i; j++)
                h[i * p + j] = h[j * p + i] =
                    0.5 * (dot(v + i * m, w + j * m, m) + dot(v + j * m, w + i * m, m));
        jacobi(h, p, lam, u);
        /* Ritz vectors yy = v u and their images ay = w u. */
        for (int j = 0; j < p; j++)
            for (long r = 0; r < m; r++) {
                double s = 0, t = 0;
                for (int i = 0; i < p; i++) {
                    s += v[i * m + r] * u[i * p + j];
                    t += w[i * m + r] * u[i * p + j];
                }
                yy[j * m + r] = s;
                ay[j * m + r] = t;
            }
        double worst = 0;
        for (int j = 0; j < k; j++) {
            double s = 0;
            for (long r = 0; r < m; r++) {
                const double e = ay[j * m + r] - lam[j] * yy[j * m + r];
                s += e * e;
            }
            if (sqrt(s) > worst) worst = sqrt(s);
        }
        /* Past the limit the answer is still a good picture: the leading
         * eigenvalues are then nearly equal, and any mix of them is as valid. */
        if (worst <= PCA_TOL * fabs(lam[0]) || it + 1 >= PCA_MAX_ITER) break;
        memcpy(v, ay, sizeof(double) * (size_t)p * m);
        orthonormalize(v, p, m, &rng);
    }
    memcpy(y, yy, sizeof(double) * (size_t)k * m);
    for (int j = 0; j < k; j++) ev[j] = lam[j] > 0 ? lam[j] : 0;
done:
    free(v);
    free(w);
    free(ay);
    free(yy);
    free(h);
    free(u);
    free(lam);
    return rc;
}

static int pca_check(const float *x, int n, int d, int k, char *err)
{
    if (!x || n < 2 || d < 1 || k < 1 || k > d)
        return ssl_fail(err, SSL_EINVAL,
                        "pca: need n >= 2 rows, d >= 1 and 1 <= k <= d (got n %d, d %d, k %d)", n, d,
                        k);
    for (long i = 0; i < (long)n * d; i++)
        if (!isfinite(x[i]))
            return ssl_fail(err, SSL_EINVAL, "pca: feature %ld of row %ld is not finite", i % d,
                            i / d);
    return SSL_OK;
}

/* PCA in double, arguments checked: mean (d), comp (k, d) signed unit rows, var (k). */
static int pca_run(const float *x, int n, int d, int k, double *mean, double *comp, double *var,
                   char *err)
{
    const int gram = n < d; /* the smaller of X^T X and X X^T */
    const long m = gram ? n : d;
    double *xc = malloc(sizeof(double) * (size_t)n * d);
    double *a = calloc((size_t)m * m, sizeof(double));
    double *y = malloc(sizeof(double) * (size_t)k * m);
    int rc = SSL_OK;
    if (!xc || !a || !y) {
        rc = ssl_fail(err, SSL_ENOMEM, "pca: out of memory for %d x %d features", n, d);
        goto done;
    }
    for (int j = 0; j < d; j++) mean[j] = 0;
    for (long i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mean[j] += x[i * d + j];
    for (int j = 0; j < d; j++) mean[j] /= n;
    for (long i = 0; i < n; i++)
        for (int j = 0; j < d; j++) xc[i * d + j] = x[i * d + j] - mean[j];
    if (gram) { /* a = Xc Xc^T / (n - 1) */
        for (long i = 0; i < n; i++)
            for (long j = 0; j <= i; j++)
                a[i * m + j] = a[j * m + i] = dot(xc + i * d, xc + j * d, d) / (n - 1);
    } else { /* a = Xc^T Xc / (n - 1), upper triangle by rows of Xc, then mirrored */
        for (long i = 0; i < n; i++) {
            const double *r = xc + i * d;
            for (long p = 0; p < d; p++) {
                if (r[p] == 0) continue;
                double *ap = a + p * m;
                for (long q = p; q < d; q++) ap[q] += r[p] * r[q];
            }
        }
        for (long p = 0; p < d; p++)
            for (long q = p; q < d; q++) a[q * m + p] = a[p * m + q] /= (n - 1);
    }
    /* The Gram matrix has only n eigenpairs; the rest have no variance. */
    const int kk = k < m ? k : (int)m;
    rc = top_eigen(a, m, kk, y, var, err);
    if (rc) goto done;
    for (int j = kk; j < k; j++) var[j] = 0;
    if (gram) { /* direction Xc^T u / |Xc^T u| for each eigenvector u of the Gram matrix */
        ssl_rng rng;
        ssl_rng_seed(&rng, 0x9ca5eedULL + 1);
        for (int j = 0; j < k; j++) {
            double *cj = comp + (long)j * d;
            for (int e = 0; e < d; e++) cj[e] = 0;
            for (long i = 0; i < n && j < kk; i++) {
                const double ui = y[j * m + i];
                for (int e = 0; e < d; e++) cj[e] += ui * xc[i * d + e];
            }
            /* |Xc^T u|^2 = (n - 1) var: only a direction with variance carries one. */
            if (!(var[j] > 1e-12 * var[0])) {
                var[j] = 0;
                for (int e = 0; e < d; e++) cj[e] = 0;
            }
        }
        /* Normalizes, and fills the zero-variance ones with orthogonal unit vectors. */
        orthonormalize(comp, k, d, &rng);
    } else {
        memcpy(comp, y, sizeof(double) * (size_t)k * d);
    }
    for (int j = 0; j < k; j++) { /* sign: largest-magnitude entry positive */
        double *cj = comp + (long)j * d;
        int big = 0;
        for (int e = 1; e < d; e++)
            if (fabs(cj[e]) > fabs(cj[big])) big = e;
        if (cj[big] < 0)
            for (int e = 0; e < d; e++) cj[e] = -cj[e];
    }
done:
    free(xc);
    free(a);
    free(y);
    return rc;
}

int ssl_pca(const float *x, int n, int d, int k, float *components, float *variances, char *err)
{
    int rc = pca_check(x, n, d, k, err);
    if (rc) return rc;
    double *mean = malloc(sizeof(double) * (size_t)d);
    double *comp = malloc(sizeof(double) * (size_t)k * d);
    double *var = malloc(sizeof(double) * (size_t)k);
    rc = !mean || !comp || !var ? ssl_fail(err, SSL_ENOMEM, "pca: out of memory")
                                : pca_run(x, n, d, k, mean, comp, var, err);
    if (!rc) {
        for (long i = 0; i < (long)k * d; i++) components[i] = (float)comp[i];
        if (variances)
            for (int j = 0; j < k; j++) variances[j] = (float)var[j];
    }
    free(mean);
    free(comp);
    free(var);
    return rc;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-th percentile (0..100) of sorted s (n), linear between ranks as numpy's default. */
static double percentile(const double *s, int n, double q)
{
    const double pos = q / 100.0 * (n - 1);
    const int i = (int)pos;
    if (i >= n - 1) return s[n - 1];
    return s[i] + (pos - i) * (s[i + 1] - s[i]);
}

int ssl_pca_rgb(const float *x, int n, int d, float pct, float *rgb, char *err)
{
    if (!(pct >= 0 && pct < 50))
        return ssl_fail(err, SSL_EINVAL, "pca rgb: percentile %g outside [0, 50)", (double)pct);
    const int k = d < 3 ? d : 3;
    int rc = pca_check(x, n, d, k, err);
    if (rc) return rc;
    double *mean = malloc(sizeof(double) * (size_t)d);
    double *comp = malloc(sizeof(double) * (size_t)k * d);
    double *var = malloc(sizeof(double) * 3);
    double *proj = malloc(sizeof(double) * (size_t)n);
    double *sorted = malloc(sizeof(double) * (size_t)n);
    rc = !mean || !comp || !var || !proj || !sorted
             ? ssl_fail(err, SSL_ENOMEM, "pca rgb: out of memory")
             : pca_run(x, n, d, k, mean, comp, var, err);
    if (rc) goto done;
    for (int j = 0; j < 3; j++) {
        /* Rounding leaves tiny projections on a direction without variance:
         * scaled to 0..1 they would be noise. */
        if (j >= k || !(var[j] > 1e-12 * var[0])) {
            for (long i = 0; i < n; i++) rgb[i * 3 + j] = 0.5f;
            continue;
        }
        const double *cj = comp + (long)j * d;
        for (long i = 0; i < n; i++) {
            double s = 0;
            for (int e = 0; e < d; e++) s += ((double)x[i * d + e] - mean[e]) * cj[e];
            proj[i] = sorted[i] = s;
        }
        qsort(sorted, (size_t)n, sizeof(double), cmp_double);
        const double lo = percentile(sorted, n, pct), hi = percentile(sorted, n, 100.0 - pct);
        for (long i = 0; i < n; i++) {
            double t = hi > lo ? (proj[i] - lo) / (hi - lo) : 0.5;
            rgb[i * 3 + j] = (float)(t < 0 ? 0 : t > 1 ? 1 : t);
        }
    }
done:
    free(mean);
    free(comp);
    free(var);
    free(proj);
    free(sorted);
    return rc;
}
