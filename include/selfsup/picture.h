/* Pictures for `selfsup show`: an RGB canvas, images pasted from float or
 * uint8 tensors, attention heat maps, rectangles and frames, a built-in 5x7
 * bitmap font, PNG output (libpng, atomic write), and PCA of feature rows to
 * RGB for DINOv2-style feature pictures.
 *
 * Coordinates are pixels, x to the right and y down from the top-left
 * corner. Drawing clips to the canvas: shapes partly or wholly outside are
 * cut, never an error. Colours are 0xRRGGBB. */
#ifndef SELFSUP_PICTURE_H
#define SELFSUP_PICTURE_H

#include <stdint.h>

#include "selfsup/core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SSL_RGB(r, g, b) (((uint32_t)(r) << 16) | ((uint32_t)(g) << 8) | (uint32_t)(b))
#define SSL_COLOR_BLACK 0x000000u
#define SSL_COLOR_WHITE 0xFFFFFFu
#define SSL_COLOR_GRAY 0x808080u
#define SSL_COLOR_RED 0xE00000u
#define SSL_COLOR_GREEN 0x00B000u
#define SSL_COLOR_BLUE 0x0040E0u

/* Largest canvas: 16384 pixels a side and 64 Mi pixels (192 MiB). */
#define SSL_CANVAS_MAX_SIDE 16384
#define SSL_CANVAS_MAX_PIXELS (1L << 26)

typedef struct ssl_canvas {
    int w, h;
    uint8_t *data; /* (h, w, 3) RGB, row-major */
} ssl_canvas;

/* A w x h canvas filled with bg. On failure c is left empty (data NULL). */
int ssl_canvas_init(ssl_canvas *c, int w, int h, uint32_t bg, char *err);
void ssl_canvas_free(ssl_canvas *c);

/* The pixel at (x, y) as 0xRRGGBB; 0 outside the canvas. */
uint32_t ssl_canvas_get(const ssl_canvas *c, int x, int y);

/* ---- images ----------------------------------------------------------- */

/* Pastes img (ch, h, w) plane-major, ch 1 (gray) or 3 (RGB), with its
 * top-left corner at (x, y), each pixel a scale x scale block (nearest
 * neighbour). Values map linearly from [lo, hi] to 0..255, rounded to
 * nearest and clamped (lo > hi inverts). lo == hi: the image's own min and
 * max over its finite values, all channels together; a constant image is
 * then mid gray (128). NaN and -inf draw as 0, +inf as 255.
 * Errors: ch not 1 or 3, sizes < 1, scale < 1 or an upscaled side over
 * SSL_CANVAS_MAX_SIDE, NaN or infinite lo / hi. */
int ssl_canvas_paste(ssl_canvas *c, int x, int y, int scale, const float *img, int ch, int h,
                     int w, float lo, float hi, char *err);
/* The same for uint8 pixels img (ch, h, w) as stored in datasets (no mapping). */
int ssl_canvas_paste_u8(ssl_canvas *c, int x, int y, int scale, const uint8_t *img, int ch, int h,
                        int w, char *err);

typedef enum ssl_cmap {
    SSL_CMAP_VIRIDIS = 0, /* matplotlib's viridis: dark blue, green, yellow */
    SSL_CMAP_BLUERED,     /* diverging: blue, light gray, red (matplotlib's coolwarm ends) */
    SSL_CMAP_GRAY         /* black to white */
} ssl_cmap;

/* The colour of t in [0, 1] (clamped; NaN as 0), linear between control points. */
uint32_t ssl_cmap_rgb(ssl_cmap cmap, float t);

/* Blends a heat map over the out_w x out_h box at (x, y): map (mh, mw) is
 * resized bilinearly to the box (F.interpolate(mode="bilinear",
 * align_corners=False) sample positions), its values mapped to [0, 1] by
 * [lo, hi] as in ssl_canvas_paste (lo == hi: its own min / max, a constant
 * map at 0.5), coloured by cmap and drawn as
 * (1 - alpha) * below + alpha * colour. For attention maps (14x14 patches
 * over a 28-pixel image shown at 4x: mh = mw = 14, out 112 x 112).
 * Errors: sizes < 1, out side over SSL_CANVAS_MAX_SIDE, alpha outside
 * [0, 1], unknown cmap, NaN or infinite lo / hi. */
int ssl_canvas_heat(ssl_canvas *c, int x, int y, int out_w, int out_h, const float *map, int mh,
                    int mw, float lo, float hi, ssl_cmap cmap, float alpha, char *err);

/* ---- shapes ----------------------------------------------------------- */

/* Fills the w x h rectangle at (x, y). */
void ssl_canvas_fill(ssl_canvas *c, int x, int y, int w, int h, uint32_t rgb);
/* Blends rgb over the rectangle: (1 - alpha) * below + alpha * rgb, alpha
 * clamped to [0, 1]; to shade masked patches and still see what is below. */
void ssl_canvas_blend(ssl_canvas *c, int x, int y, int w, int h, uint32_t rgb, float alpha);
/* A frame of the given thickness drawn inside the w x h rectangle at (x, y)
 * (a frame around a pasted tile at (x, y) of size w x h covers its border
 * pixels; draw it at (x - t, y - t, w + 2t, h + 2t) to keep them). */
void ssl_canvas_frame(ssl_canvas *c, int x, int y, int w, int h, int thickness, uint32_t rgb);

/* A grid of equal cells: cell (row, col) starts at
 *   x = x0 + pad + col * (cell_w + pad),  y = y0 + pad + row * (cell_h + pad),
 * so cells are separated and surrounded by pad pixels; x0 / y0 leave room
 * for a title or row labels. */
typedef struct ssl_grid {
    int x0, y0;
    int cell_w, cell_h;
    int pad;
} ssl_grid;

void ssl_grid_cell(const ssl_grid *g, int row, int col, int *x, int *y);
/* Canvas size that holds cols columns / rows rows, with the trailing pad. */
int ssl_grid_width(const ssl_grid *g, int cols);
int ssl_grid_height(const ssl_grid *g, int rows);

/* ---- text ------------------------------------------------------------- */

/* The built-in font: 5x7 glyphs (ASCII 32..126) with a one-row descender
 * (g j p q y , _) in a 6-pixel advance; lines 10 pixels apart (at scale 1). */
#define SSL_FONT_W 5
#define SSL_FONT_H 8
#define SSL_FONT_ADVANCE 6
#define SSL_FONT_LINE 10

/* Draws s with the top-left of its first glyph cell at (x, y), each font
 * pixel a scale x scale block (scale < 1 is taken as 1). '\n' starts a new
 * line at x; other bytes outside 32..126 draw as '?'. */
void ssl_canvas_text(ssl_canvas *c, int x, int y, int scale, uint32_t rgb, const char *s);
/* Size of the ink box of s at scale: the widest line ((n * 6 - 1) * scale for
 * n characters, 0 for none) and (lines - 1) * 10 * scale + 8 * scale. */
int ssl_text_width(const char *s, int scale);
int ssl_text_height(const char *s, int scale);

/* ---- output ----------------------------------------------------------- */

/* 8-bit RGB PNG, written atomically (temporary file + rename): a failed
 * write leaves nothing at path. Errors name the path (missing or unwritable
 * folder, disk full); SSL_EDEVICE when built without libpng. */
int ssl_canvas_write_png(const ssl_canvas *c, const char *path, char *err);

/* ---- PCA of features -------------------------------------------------- */

/* The k leading principal directions of the rows of x (n, d): components
 * (k, d), unit rows, orthogonal, in order of decreasing variance, each
 * signed so that its largest-magnitude entry is positive (ties: the first);
 * variances (k) (may be NULL): the variance along each, with the n - 1
 * divisor. Computed in double by subspace iteration with Rayleigh-Ritz on
 * the d x d covariance, or on the n x n Gram matrix when n < d; a fixed
 * starting basis makes it deterministic. Directions beyond the rank of the
 * centred data have variance 0 and are some unit vectors orthogonal to the
 * others. Errors: n < 2, d < 1, k outside 1..d, non-finite features. */
int ssl_pca(const float *x, int n, int d, int k, float *components, float *variances, char *err);

/* Feature rows x (n, d) to colours rgb (n, 3) in [0, 1]: the projections on
 * the first 3 principal components, each scaled by its own range, either
 * min..max (pct = 0) or its pct-th..(100 - pct)-th percentiles (pct = 1:
 * 1st..99th, values beyond clamped). A component without spread (d < 3, or
 * all rows equal along it) gives 0.5. For an image's patch features (n =
 * gh * gw patches) rgb is (gh, gw, 3): transpose to (3, gh, gw) for
 * ssl_canvas_paste. Errors as ssl_pca, and pct outside [0, 50). */
int ssl_pca_rgb(const float *x, int n, int d, float pct, float *rgb, char *err);

#ifdef __cplusplus
}
#endif
#endif
