/* Picture tests: value mapping and nearest-neighbour upscaling of pasted
 * images, heat-map interpolation and blending, shapes, the bitmap font, a
 * PNG round trip through the project's own decoder (ssl_image_decode) with
 * exact pixel checks, failed writes that leave nothing behind, and PCA on
 * synthetic data with known principal directions (both the covariance and
 * the Gram path). */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/core.h"
#include "selfsup/data.h"
#include "selfsup/picture.h"

#include "check.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tdir[256];

#define BG 0x204060u /* background: no drawn value equals it by accident */

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static int count_tmp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d) return 0;
    for (struct dirent *e; (e = readdir(d));) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

static uint32_t gray(int v)
{
    return SSL_RGB(v, v, v);
}

/* ---------------------------------------------------------------- canvas */

static void test_canvas_basics(void)
{
    char err[SSL_ERR_LEN];
    ssl_canvas c;
    CHECK(ssl_canvas_init(&c, 0, 5, 0, err) == SSL_EINVAL && !c.data, "zero width refused");
    CHECK(ssl_canvas_init(&c, 5, -1, 0, err) == SSL_EINVAL, "negative height refused");
    CHECK(ssl_canvas_init(&c, SSL_CANVAS_MAX_SIDE + 1, 1, 0, err) == SSL_EINVAL, "too wide refused");
    CHECK(ssl_canvas_init(&c, SSL_CANVAS_MAX_SIDE, SSL_CANVAS_MAX_SIDE, 0, err) == SSL_EINVAL,
          "too many pixels refused: %s", err);
    CHECK(ssl_canvas_init(&c, 7, 3, 0x123456, err) == SSL_OK, "init: %s", err);
    CHECK(c.w == 7 && c.h == 3, "size kept");
    CHECK(ssl_canvas_get(&c, 6, 2) == 0x123456 && c.data[0] == 0x12 && c.data[1] == 0x34 &&
              c.data[2] == 0x56,
          "background RGB order");
    CHECK(ssl_canvas_get(&c, 7, 0) == 0 && ssl_canvas_get(&c, -1, 0) == 0, "outside reads 0");
    /* Shapes partly or wholly outside clip, never write out of bounds (ASan). */
    ssl_canvas_fill(&c, -5, -5, 7, 6, 0xFF0000);
    CHECK(ssl_canvas_get(&c, 0, 0) == 0xFF0000 && ssl_canvas_get(&c, 1, 0) == 0xFF0000 &&
              ssl_canvas_get(&c, 2, 0) == 0x123456 && ssl_canvas_get(&c, 0, 1) == 0x123456,
          "fill clipped at the top-left");
    ssl_canvas_fill(&c, 6, 2, 1 << 30, 1 << 30, 0x00FF00);
    CHECK(ssl_canvas_get(&c, 6, 2) == 0x00FF00 && ssl_canvas_get(&c, 5, 2) == 0x123456,
          "huge fill clipped at the bottom-right");
    ssl_canvas_fill(&c, 100, 100, 5, 5, 0);
    ssl_canvas_fill(&c, -100, 0, 5, 5, 0);
    ssl_canvas_frame(&c, 2000000000, 2000000000, 2000000000, 2000000000, 3, 0);
    ssl_canvas_text(&c, -1000000, -1000000, 1000, 0, "far away");
    ssl_canvas_text(&c, 2000000000, 0, 1, 0, "x");
    CHECK(ssl_canvas_get(&c, 3, 1) == 0x123456, "shapes outside draw nothing");
    ssl_canvas_free(&c);
    CHECK(c.data == NULL && c.w == 0, "free empties");
    ssl_canvas_free(&c); /* twice is fine */
    ssl_canvas_fill(&c, 0, 0, 3, 3, 0);
    ssl_canvas_text(&c, 0, 0, 1, 0, "x");
    CHECK(ssl_canvas_paste_u8(&c, 0, 0, 1, (const uint8_t *)"abc", 1, 1, 3, err) == SSL_OK,
          "drawing on an empty canvas is a no-op");
}

/* A gray gradient with a given range, upscaled x4: the exact byte of each
 * block, its edges, and the background right next to it. */
static void test_paste_gray(ssl_canvas *c)
{
    char err[SSL_ERR_LEN];
    const float g[2 * 5] = {0.0f, 0.25f, 0.5f, 0.75f, 1.0f, -0.5f, 2.0f, NAN, INFINITY, -INFINITY};
    /* t * 255 rounded to nearest: 63.75 -> 64, 127.5 -> 128, 191.25 -> 191;
     * out of range clamps, NaN / -inf -> 0, +inf -> 255. */
    const int want[2 * 5] = {0, 64, 128, 191, 255, 0, 255, 0, 255, 0};
    const int X = 4, Y = 20, S = 4;
    CHECK(ssl_canvas_paste(c, X, Y, S, g, 1, 2, 5, 0.0f, 1.0f, err) == SSL_OK, "paste: %s", err);
    int bad = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 5; j++)
            for (int dy = 0; dy < S; dy++)
                for (int dx = 0; dx < S; dx++)
                    bad += ssl_canvas_get(c, X + j * S + dx, Y + i * S + dy) != gray(want[i * 5 + j]);
    CHECK(bad == 0, "gray gradient: %d pixels off", bad);
    CHECK(ssl_canvas_get(c, X - 1, Y) == BG && ssl_canvas_get(c, X + 5 * S, Y) == BG &&
              ssl_canvas_get(c, X, Y - 1) == BG && ssl_canvas_get(c, X, Y + 2 * S) == BG,
          "nothing drawn outside the 20x8 block");

    /* Auto range: min -> 0, max -> 255, the rest linear; non-finite ignored for the range. */
    const float a[4] = {-3.0f, 1.0f, 5.0f, NAN};
    CHECK(ssl_canvas_paste(c, 40, 20, 1, a, 1, 1, 4, 0, 0, err) == SSL_OK, "auto paste: %s", err);
    CHECK(ssl_canvas_get(c, 40, 20) == gray(0) && ssl_canvas_get(c, 41, 20) == gray(128) &&
              ssl_canvas_get(c, 42, 20) == gray(255) && ssl_canvas_get(c, 43, 20) == gray(0),
          "auto range: %06x %06x %06x", ssl_canvas_get(c, 40, 20), ssl_canvas_get(c, 41, 20),
          ssl_canvas_get(c, 42, 20));
    /* lo > hi inverts; a constant image in auto range is mid gray. */
    const float k[2] = {0.25f, 0.25f};
    CHECK(ssl_canvas_paste(c, 40, 22, 1, k, 1, 1, 2, 1.0f, 0.0f, err) == SSL_OK &&
              ssl_canvas_get(c, 40, 22) == gray(191),
          "inverted range: %06x", ssl_canvas_get(c, 40, 22));
    CHECK(ssl_canvas_paste(c, 40, 23, 1, k, 1, 1, 2, 0, 0, err) == SSL_OK &&
              ssl_canvas_get(c, 41, 23) == gray(128),
          "constant image: %06x", ssl_canvas_get(c, 41, 23));

    /* Bad arguments are errors, and draw nothing. */
    CHECK(ssl_canvas_paste(c, 0, 0, 1, g, 2, 1, 5, 0, 1, err) == SSL_EINVAL, "2 channels refused");
    CHECK(ssl_canvas_paste(c, 0, 0, 0, g, 1, 1, 5, 0, 1, err) == SSL_EINVAL, "scale 0 refused");
    CHECK(ssl_canvas_paste(c, 0, 0, 1, g, 1, 0, 5, 0, 1, err) == SSL_EINVAL, "height 0 refused");
    CHECK(ssl_canvas_paste(c, 0, 0, 5000, g, 1, 1, 5, 0, 1, err) == SSL_EINVAL, "giant scale refused");
    CHECK(ssl_canvas_paste(c, 0, 0, 1, g, 1, 1, 5, NAN, 1, err) == SSL_EINVAL &&
              strstr(err, "not finite"),
          "NaN range refused: %s", err);
    CHECK(ssl_canvas_get(c, 0, 0) == BG, "a refused paste draws nothing");
}

static void test_paste_rgb(ssl_canvas *c)
{
    char err[SSL_ERR_LEN];
    /* (3, 2, 2) plane-major; range [-1, 1]: -1 -> 0, 0 -> 128, 0.5 -> 191, 1 -> 255. */
    const float img[12] = {-1, 0, 0.5f, 1, /* R */ 1, -1, 0, 0.5f, /* G */ 0.5f, 1, -1, 0 /* B */};
    const uint32_t want[4] = {SSL_RGB(0, 255, 191), SSL_RGB(128, 0, 255), SSL_RGB(191, 128, 0),
                              SSL_RGB(255, 191, 128)};
    const int X = 60, Y = 4, S = 3;
    CHECK(ssl_canvas_paste(c, X, Y, S, img, 3, 2, 2, -1, 1, err) == SSL_OK, "rgb paste: %s", err);
    int bad = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int d = 0; d < S * S; d++)
                bad += ssl_canvas_get(c, X + j * S + d % S, Y + i * S + d / S) != want[i * 2 + j];
    CHECK(bad == 0, "rgb image: %d pixels off (top-left %06x)", bad, ssl_canvas_get(c, X, Y));
    CHECK(ssl_canvas_get(c, X + 2 * S, Y) == BG && ssl_canvas_get(c, X, Y + 2 * S) == BG,
          "rgb block ends at 6x6");

    /* uint8 (1, 2, 2) at x2: bytes as they are, gray. */
    const uint8_t u[4] = {7, 77, 177, 250};
    CHECK(ssl_canvas_paste_u8(c, 70, 4, 2, u, 1, 2, 2, err) == SSL_OK, "u8 paste: %s", err);
    CHECK(ssl_canvas_get(c, 71, 5) == gray(7) && ssl_canvas_get(c, 72, 4) == gray(77) &&
              ssl_canvas_get(c, 70, 7) == gray(177) && ssl_canvas_get(c, 73, 7) == gray(250) &&
              ssl_canvas_get(c, 74, 4) == BG,
          "u8 paste pixels");
    const uint8_t u3[3] = {1, 2, 3};
    CHECK(ssl_canvas_paste_u8(c, 76, 4, 1, u3, 3, 1, 1, err) == SSL_OK &&
              ssl_canvas_get(c, 76, 4) == SSL_RGB(1, 2, 3),
          "u8 RGB planes");
}

static void test_shapes(ssl_canvas *c)
{
    /* A red 2-pixel frame inside the 12x10 box at (4, 40). */
    ssl_canvas_frame(c, 4, 40, 12, 10, 2, SSL_COLOR_RED);
    CHECK(ssl_canvas_get(c, 4, 40) == SSL_COLOR_RED && ssl_canvas_get(c, 5, 41) == SSL_COLOR_RED &&
              ssl_canvas_get(c, 15, 49) == SSL_COLOR_RED && ssl_canvas_get(c, 14, 45) == SSL_COLOR_RED &&
              ssl_canvas_get(c, 9, 48) == SSL_COLOR_RED,
          "frame pixels red");
    CHECK(ssl_canvas_get(c, 6, 42) == BG && ssl_canvas_get(c, 13, 47) == BG &&
              ssl_canvas_get(c, 16, 45) == BG && ssl_canvas_get(c, 9, 50) == BG &&
              ssl_canvas_get(c, 3, 40) == BG,
          "inside and outside of the frame untouched");
    /* A frame thicker than half the box fills it. */
    ssl_canvas_frame(c, 20, 40, 4, 4, 2, SSL_COLOR_BLUE);
    CHECK(ssl_canvas_get(c, 21, 41) == SSL_COLOR_BLUE && ssl_canvas_get(c, 22, 42) == SSL_COLOR_BLUE,
          "thick frame fills");
    /* Blend white at 0.5 over black: 127.5 -> 128; alpha 1 replaces, 0 keeps. */
    ssl_canvas_fill(c, 26, 40, 6, 2, SSL_COLOR_BLACK);
    ssl_canvas_blend(c, 26, 40, 2, 2, SSL_COLOR_WHITE, 0.5f);
    ssl_canvas_blend(c, 28, 40, 2, 2, SSL_COLOR_WHITE, 1.0f);
    ssl_canvas_blend(c, 30, 40, 2, 2, SSL_COLOR_WHITE, 0.0f);
    CHECK(ssl_canvas_get(c, 27, 41) == gray(128) && ssl_canvas_get(c, 28, 40) == SSL_COLOR_WHITE &&
              ssl_canvas_get(c, 31, 41) == SSL_COLOR_BLACK,
          "blend: %06x", ssl_canvas_get(c, 27, 41));

    ssl_grid g = {.x0 = 10, .y0 = 12, .cell_w = 112, .cell_h = 120, .pad = 4};
    int x, y;
    ssl_grid_cell(&g, 0, 0, &x, &y);
    CHECK(x == 14 && y == 16, "cell (0, 0) at (%d, %d)", x, y);
    ssl_grid_cell(&g, 2, 3, &x, &y);
    CHECK(x == 10 + 4 + 3 * 116 && y == 12 + 4 + 2 * 124, "cell (2, 3) at (%d, %d)", x, y);
    CHECK(ssl_grid_width(&g, 3) == 10 + 4 + 3 * 116 && ssl_grid_height(&g, 2) == 12 + 4 + 2 * 124,
          "grid size");
}

/* 'A' at scale 2 is 18 set font pixels: 72 red canvas pixels, all inside its
 * 10x16 box, at the places the glyph says. */
static void test_text(ssl_canvas *c)
{
    const int X = 40, Y = 34, S = 2;
    ssl_canvas_text(c, X, Y, S, SSL_COLOR_RED, "A");
    int inside = 0, outside = 0;
    for (int y = Y - 4; y < Y + 20; y++)
        for (int x = X - 4; x < X + 16; x++) {
            if (ssl_canvas_get(c, x, y) != SSL_COLOR_RED) continue;
            if (x >= X && x < X + SSL_FONT_W * S && y >= Y && y < Y + SSL_FONT_H * S)
                inside++;
            else
                outside++;
        }
    CHECK(inside == 72 && outside == 0, "'A': %d red pixels in its box (want 72), %d outside",
          inside, outside);
    /* .###. on top, #...# below it, ##### across row 4, nothing in row 7. */
    CHECK(ssl_canvas_get(c, X, Y) == BG && ssl_canvas_get(c, X + 2, Y) == SSL_COLOR_RED &&
              ssl_canvas_get(c, X + 7, Y + 1) == SSL_COLOR_RED &&
              ssl_canvas_get(c, X + 8, Y) == BG && ssl_canvas_get(c, X, Y + 2) == SSL_COLOR_RED &&
              ssl_canvas_get(c, X + 4, Y + 2) == BG && ssl_canvas_get(c, X + 5, Y + 9) == SSL_COLOR_RED &&
              ssl_canvas_get(c, X + 9, Y + 13) == SSL_COLOR_RED &&
              ssl_canvas_get(c, X + 1, Y + 14) == BG,
          "'A' glyph pixels");

    /* 'F' is not symmetric: ##### on top, then #.... (left column only). */
    ssl_canvas_text(c, 112, 20, 1, SSL_COLOR_GREEN, "F");
    CHECK(ssl_canvas_get(c, 116, 20) == SSL_COLOR_GREEN && ssl_canvas_get(c, 112, 21) == SSL_COLOR_GREEN &&
              ssl_canvas_get(c, 116, 21) == BG && ssl_canvas_get(c, 115, 23) == SSL_COLOR_GREEN &&
              ssl_canvas_get(c, 116, 23) == BG,
          "'F' glyph pixels (left to right)");

    /* Every printable glyph draws inside its cell; space draws nothing;
     * 'g' uses its descender row, 'A' does not. */
    char err[SSL_ERR_LEN];
    ssl_canvas t;
    if (ssl_canvas_init(&t, SSL_FONT_ADVANCE * 95, SSL_FONT_LINE, 0, err)) {
        CHECK(0, "%s", err);
        return;
    }
    char all[96];
    for (int i = 0; i < 95; i++) all[i] = (char)(32 + i);
    all[95] = '\0';
    ssl_canvas_text(&t, 0, 0, 1, 0xFFFFFF, all);
    int empty = 0, spill = 0;
    for (int i = 0; i < 95; i++) {
        int ink = 0;
        for (int y = 0; y < SSL_FONT_LINE; y++)
            for (int x = 0; x < SSL_FONT_ADVANCE; x++) {
                int on = ssl_canvas_get(&t, i * SSL_FONT_ADVANCE + x, y) != 0;
                ink += on;
                spill += on && (x >= SSL_FONT_W || y >= SSL_FONT_H);
            }
        empty += (ink == 0) != (i == 0);
    }
    CHECK(empty == 0 && spill == 0, "glyph table: %d wrong-empty glyphs, %d pixels outside cells",
          empty, spill);
    int g_desc = 0, a_desc = 0;
    for (int x = 0; x < SSL_FONT_W; x++) {
        g_desc += ssl_canvas_get(&t, ('g' - 32) * SSL_FONT_ADVANCE + x, 7) != 0;
        a_desc += ssl_canvas_get(&t, ('A' - 32) * SSL_FONT_ADVANCE + x, 7) != 0;
    }
    CHECK(g_desc > 0 && a_desc == 0, "descender row: g %d, A %d", g_desc, a_desc);
    /* Bytes outside ASCII draw as '?'. */
    ssl_canvas_fill(&t, 0, 0, t.w, t.h, 0);
    ssl_canvas_text(&t, 0, 0, 1, 0xFFFFFF, "\x80?");
    int same = 1;
    for (int y = 0; y < SSL_FONT_H; y++)
        for (int x = 0; x < SSL_FONT_W; x++)
            same &= ssl_canvas_get(&t, x, y) == ssl_canvas_get(&t, SSL_FONT_ADVANCE + x, y);
    CHECK(same, "non-ASCII drawn as '?'");
    ssl_canvas_free(&t);

    CHECK(ssl_text_width("pred 90 / true 180", 1) == 18 * 6 - 1, "width %d",
          ssl_text_width("pred 90 / true 180", 1));
    CHECK(ssl_text_width("head 3\nrecon", 3) == (6 * 6 - 1) * 3 && ssl_text_width("", 2) == 0,
          "widest line");
    CHECK(ssl_text_height("orig", 2) == 16 && ssl_text_height("a\nb", 1) == 18, "height");
    /* A second line starts at x, SSL_FONT_LINE * scale lower. */
    ssl_canvas_text(c, 100, 40, 1, SSL_COLOR_GREEN, "-\n-");
    CHECK(ssl_canvas_get(c, 100, 43) == SSL_COLOR_GREEN && ssl_canvas_get(c, 100, 53) == SSL_COLOR_GREEN &&
              ssl_canvas_get(c, 106, 53) == BG,
          "newline");
}

static void test_heat(ssl_canvas *c)
{
    char err[SSL_ERR_LEN];
    CHECK(ssl_cmap_rgb(SSL_CMAP_VIRIDIS, 0) == 0x440154 && ssl_cmap_rgb(SSL_CMAP_VIRIDIS, 1) == 0xFDE725 &&
              ssl_cmap_rgb(SSL_CMAP_VIRIDIS, 5.0f) == 0xFDE725 &&
              ssl_cmap_rgb(SSL_CMAP_VIRIDIS, NAN) == 0x440154,
          "viridis ends, clamped");
    CHECK(ssl_cmap_rgb(SSL_CMAP_BLUERED, 0) == SSL_RGB(59, 76, 192) &&
              ssl_cmap_rgb(SSL_CMAP_BLUERED, 0.5f) == SSL_RGB(221, 221, 221) &&
              ssl_cmap_rgb(SSL_CMAP_BLUERED, 1) == SSL_RGB(180, 4, 38),
          "blue-red");
    CHECK(ssl_cmap_rgb(SSL_CMAP_GRAY, 0.25f) == gray(64), "gray 0.25: %06x",
          ssl_cmap_rgb(SSL_CMAP_GRAY, 0.25f));
    /* Bilinear 1x2 -> 1x4 (align_corners=False): sources -0.25 (clamped to 0),
     * 0.25, 0.75, 1.25 (clamped) -> 0, 0.25, 0.75, 1 -> 0, 64, 191, 255. */
    const float m[2] = {10.0f, 20.0f};
    CHECK(ssl_canvas_heat(c, 80, 60, 4, 1, m, 1, 2, 10.0f, 20.0f, SSL_CMAP_GRAY, 1.0f, err) == SSL_OK,
          "heat: %s", err);
    CHECK(ssl_canvas_get(c, 80, 60) == gray(0) && ssl_canvas_get(c, 81, 60) == gray(64) &&
              ssl_canvas_get(c, 82, 60) == gray(191) && ssl_canvas_get(c, 83, 60) == gray(255) &&
              ssl_canvas_get(c, 84, 60) == BG && ssl_canvas_get(c, 80, 61) == BG,
          "bilinear: %06x %06x %06x %06x", ssl_canvas_get(c, 80, 60), ssl_canvas_get(c, 81, 60),
          ssl_canvas_get(c, 82, 60), ssl_canvas_get(c, 83, 60));
    /* Vertical 2x1 -> 6x1 in auto range: sources (r+0.5)/3-0.5 -> 0, 0, 1/3, 2/3, 1, 1. */
    CHECK(ssl_canvas_heat(c, 86, 60, 1, 6, m, 2, 1, 0, 0, SSL_CMAP_GRAY, 1.0f, err) == SSL_OK,
          "heat auto: %s", err);
    CHECK(ssl_canvas_get(c, 86, 60) == gray(0) && ssl_canvas_get(c, 86, 61) == gray(0) &&
              ssl_canvas_get(c, 86, 62) == gray(85) && ssl_canvas_get(c, 86, 63) == gray(170) &&
              ssl_canvas_get(c, 86, 65) == gray(255),
          "vertical bilinear: %06x %06x", ssl_canvas_get(c, 86, 62), ssl_canvas_get(c, 86, 63));
    /* alpha 0.5 of viridis(1) over white. */
    ssl_canvas_fill(c, 90, 60, 3, 3, SSL_COLOR_WHITE);
    const float one = 1.0f;
    CHECK(ssl_canvas_heat(c, 90, 60, 3, 3, &one, 1, 1, 0, 1, SSL_CMAP_VIRIDIS, 0.5f, err) == SSL_OK,
          "heat blend: %s", err);
    /* (255 + 0xFD) / 2 = 254, (255 + 0xE7) / 2 = 243, (255 + 0x25) / 2 = 146 */
    CHECK(ssl_canvas_get(c, 91, 61) == SSL_RGB(254, 243, 146), "heat alpha: %06x",
          ssl_canvas_get(c, 91, 61));
    CHECK(ssl_canvas_heat(c, 0, 0, 3, 3, &one, 1, 1, 0, 1, SSL_CMAP_VIRIDIS, 1.5f, err) == SSL_EINVAL,
          "alpha > 1 refused");
    CHECK(ssl_canvas_heat(c, 0, 0, 0, 3, &one, 1, 1, 0, 1, SSL_CMAP_VIRIDIS, 1, err) == SSL_EINVAL,
          "empty box refused");
    CHECK(ssl_canvas_heat(c, 0, 0, 3, 3, &one, 1, 1, 0, 1, (ssl_cmap)7, 1, err) == SSL_EINVAL,
          "unknown cmap refused");
}

/* ------------------------------------------------------------------ PNG */

static void test_png(const ssl_canvas *c)
{
    char err[SSL_ERR_LEN], path[512];
    int rc;
    snprintf(path, sizeof path, "%s/canvas.png", tdir);
#ifndef SSL_HAVE_PNG
    CHECK(ssl_canvas_write_png(c, path, err) == SSL_EDEVICE && file_size(path) < 0,
          "without libpng: a clear error, no file: %s", err);
#else
    rc = ssl_canvas_write_png(c, path, err);
    CHECK(rc == SSL_OK, "write png: %s", err);
    if (rc) return;
    CHECK(count_tmp_files(tdir) == 0, "no temporary file left");
    uint8_t *pix = NULL;
    int h = 0, w = 0;
    rc = ssl_image_decode(path, 3, &pix, &h, &w, err);
    CHECK(rc == SSL_OK, "decode our PNG: %s", err);
    if (rc) return;
    CHECK(h == c->h && w == c->w, "size %dx%d read back as %dx%d", c->w, c->h, w, h);
    if (h == c->h && w == c->w) {
        long bad = 0, plane = (long)h * w;
        for (long i = 0; i < plane; i++)
            for (int k = 0; k < 3; k++) bad += pix[k * plane + i] != c->data[i * 3 + k];
        CHECK(bad == 0, "%ld bytes differ after the round trip", bad);
        /* Known spots straight from the file: gradient, RGB tile, frame, text, background. */
#define FILE_PX(x, y) SSL_RGB(pix[(long)(y) * w + (x)], pix[plane + (long)(y) * w + (x)], \
                              pix[2 * plane + (long)(y) * w + (x)])
        CHECK(FILE_PX(4 + 4, 20) == gray(64) && FILE_PX(4 + 11, 23) == gray(128) &&
                  FILE_PX(4 + 19, 27) == gray(0) && FILE_PX(60, 4) == SSL_RGB(0, 255, 191) &&
                  FILE_PX(4, 40) == SSL_COLOR_RED && FILE_PX(42, 34) == SSL_COLOR_RED &&
                  FILE_PX(40, 34) == BG && FILE_PX(c->w - 1, c->h - 1) == BG,
              "spots in the file");
#undef FILE_PX
    }
    free(pix);
#endif
    /* A missing folder: an error naming the path, and nothing written. */
    char bad[600];
    snprintf(bad, sizeof bad, "%s/no_such_dir/out.png", tdir);
    rc = ssl_canvas_write_png(c, bad, err);
    CHECK(rc != SSL_OK && strstr(err, bad) != NULL, "missing folder: rc %d, err '%s'", rc, err);
    CHECK(file_size(bad) < 0 && count_tmp_files(tdir) == 0, "nothing left after the failed write");
    /* A folder given as the file: rename over a directory fails, the temp file goes. */
    char sub[600];
    snprintf(sub, sizeof sub, "%s/a_dir.png", tdir);
    mkdir(sub, 0700);
    rc = ssl_canvas_write_png(c, sub, err);
    CHECK(rc != SSL_OK && strstr(err, sub) != NULL && count_tmp_files(tdir) == 0,
          "directory as target: rc %d, err '%s'", rc, err);
    rmdir(sub);
    if (geteuid() != 0) { /* root writes anywhere */
        char ro[600], in_ro[700];
        snprintf(ro, sizeof ro, "%s/readonly", tdir);
        mkdir(ro, 0500);
        snprintf(in_ro, sizeof in_ro, "%s/x.png", ro);
        rc = ssl_canvas_write_png(c, in_ro, err);
        CHECK(rc != SSL_OK && strstr(err, in_ro) && file_size(in_ro) < 0,
              "unwritable folder: rc %d, err '%s'", rc, err);
        rmdir(ro);
    }
    ssl_canvas empty = {0};
    CHECK(ssl_canvas_write_png(&empty, path, err) == SSL_EINVAL, "empty canvas refused");
    unlink(path);
}

/* ------------------------------------------------------------------ PCA */

/* n rows in d dims: mean + sum_j sd[j] z_j q_j + noise, with q (3, d)
 * orthonormal from a seeded Gram-Schmidt; n >= 5. */
static void make_data(float *x, float *q, int n, int d, const float sd[3], float noise, uint64_t seed)
{
    ssl_rng r;
    ssl_rng_seed(&r, seed);
    for (int j = 0; j < 3; j++) {
        float *qj = q + (long)j * d;
        for (int e = 0; e < d; e++) qj[e] = ssl_rng_normal(&r);
        for (int i = 0; i < j; i++) {
            double s = 0;
            for (int e = 0; e < d; e++) s += (double)qj[e] * q[(long)i * d + e];
            for (int e = 0; e < d; e++) qj[e] -= (float)s * q[(long)i * d + e];
        }
        double s = 0;
        for (int e = 0; e < d; e++) s += (double)qj[e] * qj[e];
        for (int e = 0; e < d; e++) qj[e] /= (float)sqrt(s);
    }
    for (int i = 0; i < n; i++) {
        /* Latent factors uncorrelated in the sample itself (orthogonal
         * sinusoids over whole periods), so the sample's principal
         * directions are q up to the small noise. */
        const double t = 2 * 3.14159265358979323846 * i / n, s2 = sqrt(2.0);
        float z[3] = {(float)(s2 * cos(t)), (float)(s2 * sin(t)), (float)(s2 * cos(2 * t))};
        for (int e = 0; e < d; e++) {
            float v = 3.0f + 0.1f * e + noise * ssl_rng_normal(&r); /* a non-zero mean */
            for (int j = 0; j < 3; j++) v += sd[j] * z[j] * q[(long)j * d + e];
            x[(long)i * d + e] = v;
        }
    }
}

static double fdot(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Sample variance of x (n, d) along the unit direction v (d). */
static double var_along(const float *x, int n, int d, const float *v)
{
    double m = 0, s = 0;
    for (int i = 0; i < n; i++) m += fdot(x + (long)i * d, v, d);
    m /= n;
    for (int i = 0; i < n; i++) {
        double p = fdot(x + (long)i * d, v, d) - m;
        s += p * p;
    }
    return s / (n - 1);
}

static void check_pca_case(int n, int d, const char *what)
{
    char err[SSL_ERR_LEN];
    /* Standard deviations out of order: the components must come back as q1, q2, q0. */
    const float sd[3] = {1.0f, 3.0f, 2.0f};
    const int order[3] = {1, 2, 0};
    float *x = malloc(sizeof(float) * (size_t)n * d), *q = malloc(sizeof(float) * 3 * (size_t)d);
    float *comp = malloc(sizeof(float) * 3 * (size_t)d), *comp2 = malloc(sizeof(float) * 3 * (size_t)d);
    float var[3], var2[3];
    make_data(x, q, n, d, sd, 0.01f, 42 + (uint64_t)d);
    int rc = ssl_pca(x, n, d, 3, comp, var, err);
    CHECK(rc == SSL_OK, "%s: pca: %s", what, err);
    if (rc) goto done;
    for (int j = 0; j < 3; j++) {
        const float *cj = comp + (long)j * d;
        double align = fabs(fdot(cj, q + (long)order[j] * d, d));
        CHECK(align > 0.9995, "%s: component %d vs true direction %d: |cos| %.6f", what, j,
              order[j], align);
        CHECK(fabs(fdot(cj, cj, d) - 1) < 1e-5, "%s: component %d not unit", what, j);
        for (int i = 0; i < j; i++)
            CHECK(fabs(fdot(cj, comp + (long)i * d, d)) < 1e-5, "%s: components %d, %d not orthogonal",
                  what, i, j);
        /* The reported variance is the data's variance along the component
         * itself, and no direction of the data has more than the first. */
        double v = var_along(x, n, d, cj);
        CHECK(fabs(var[j] - v) < 1e-4 * v, "%s: variance %d: %g vs %g along it", what, j,
              (double)var[j], v);
        int big = 0;
        for (int e = 1; e < d; e++)
            if (fabsf(cj[e]) > fabsf(cj[big])) big = e;
        CHECK(cj[big] > 0, "%s: component %d's largest entry is positive", what, j);
    }
    CHECK(var[0] > var[1] && var[1] > var[2], "%s: variances descending %g %g %g", what,
          (double)var[0], (double)var[1], (double)var[2]);
    CHECK(var[0] >= var_along(x, n, d, q + (long)order[0] * d) * (1 - 1e-6),
          "%s: the first component maximizes the variance", what);
    rc = ssl_pca(x, n, d, 3, comp2, var2, err);
    CHECK(rc == SSL_OK && !memcmp(comp, comp2, sizeof(float) * 3 * (size_t)d) &&
              !memcmp(var, var2, sizeof var),
          "%s: deterministic", what);

    /* RGB: min..max -> exactly 0..1 per channel, channel j follows component j. */
    float *rgb = malloc(sizeof(float) * 3 * (size_t)n);
    rc = ssl_pca_rgb(x, n, d, 0, rgb, err);
    CHECK(rc == SSL_OK, "%s: pca rgb: %s", what, err);
    if (!rc) {
        for (int j = 0; j < 3; j++) {
            float lo = 2, hi = -2;
            double sxy = 0, sx = 0, sy = 0, sxx = 0, syy = 0;
            for (int i = 0; i < n; i++) {
                float v = rgb[i * 3 + j];
                lo = v < lo ? v : lo;
                hi = v > hi ? v : hi;
                double p = fdot(x + (long)i * d, comp + (long)j * d, d);
                sx += v;
                sy += p;
                sxy += v * p;
                sxx += (double)v * v;
                syy += p * p;
            }
            double corr = (sxy - sx * sy / n) / sqrt((sxx - sx * sx / n) * (syy - sy * sy / n));
            CHECK(lo == 0.0f && hi == 1.0f, "%s: rgb channel %d spans %g..%g", what, j, lo, hi);
            CHECK(corr > 0.99999, "%s: rgb channel %d vs projection: corr %.7f", what, j, corr);
        }
        /* 1st..99th percentiles: about 1% of rows clamped at each end. */
        rc = ssl_pca_rgb(x, n, d, 1.0f, rgb, err);
        int zeros = 0, ones = 0, outside = 0;
        for (int i = 0; i < n; i++) {
            zeros += rgb[i * 3] == 0.0f;
            ones += rgb[i * 3] == 1.0f;
            outside += !(rgb[i * 3] >= 0 && rgb[i * 3] <= 1);
        }
        int want = (int)ceil(0.01 * (n - 1)); /* ranks strictly below position 0.01 (n - 1), plus it */
        CHECK(rc == SSL_OK && outside == 0 && abs(zeros - want) <= 1 && abs(ones - want) <= 1,
              "%s: percentile clamp: %d zeros, %d ones (want ~%d)", what, zeros, ones, want);
    }
    free(rgb);
done:
    free(x);
    free(q);
    free(comp);
    free(comp2);
}

/* Reference: all eigenpairs of the symmetric a (m, m) (destroyed) by cyclic
 * Jacobi to convergence; vectors in the columns of u (m, m). */
static void ref_eigen(double *a, int m, double *ev, double *u)
{
    for (int i = 0; i < m * m; i++) u[i] = i % (m + 1) == 0;
    for (int sweep = 0; sweep < 100; sweep++) {
        double off = 0;
        for (int i = 0; i < m; i++)
            for (int j = i + 1; j < m; j++) off += a[i * m + j] * a[i * m + j];
        if (off < 1e-26) break;
        for (int p = 0; p < m; p++)
            for (int q = p + 1; q < m; q++) {
                double apq = a[p * m + q];
                if (apq == 0) continue;
                double th = (a[q * m + q] - a[p * m + p]) / (2 * apq);
                double t = (th >= 0 ? 1 : -1) / (fabs(th) + sqrt(th * th + 1));
                double cs = 1 / sqrt(t * t + 1), sn = t * cs;
                for (int k = 0; k < m; k++) {
                    double kp = a[k * m + p], kq = a[k * m + q];
                    a[k * m + p] = cs * kp - sn * kq;
                    a[k * m + q] = sn * kp + cs * kq;
                }
                for (int k = 0; k < m; k++) {
                    double pk = a[p * m + k], qk = a[q * m + k];
                    a[p * m + k] = cs * pk - sn * qk;
                    a[q * m + k] = sn * pk + cs * qk;
                }
                for (int k = 0; k < m; k++) {
                    double kp = u[k * m + p], kq = u[k * m + q];
                    u[k * m + p] = cs * kp - sn * kq;
                    u[k * m + q] = sn * kp + cs * kq;
                }
            }
    }
    for (int i = 0; i < m; i++) ev[i] = a[i * m + i];
}

/* A slowly decaying spectrum (no clean gap after the third value), where a
 * few subspace iterations are not enough: ssl_pca against a dense Jacobi
 * solve of the covariance. */
static void test_pca_vs_dense(void)
{
    enum { N = 300, D = 48 };
    char err[SSL_ERR_LEN];
    float *x = malloc(sizeof(float) * N * D), comp[3 * D], var[3];
    double *cov = calloc(D * D, sizeof(double)), *u = malloc(sizeof(double) * D * D), ev[D], mean[D] = {0};
    ssl_rng r;
    ssl_rng_seed(&r, 7);
    for (int i = 0; i < N; i++) {
        float z = ssl_rng_normal(&r);
        for (int e = 0; e < D; e++) /* correlated columns with decaying scales */
            x[i * D + e] = (ssl_rng_normal(&r) + 0.3f * z) / (1.0f + 0.04f * e) + 0.5f;
    }
    for (int i = 0; i < N; i++)
        for (int e = 0; e < D; e++) mean[e] += x[i * D + e] / (double)N;
    for (int i = 0; i < N; i++)
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++)
                cov[a * D + b] += (x[i * D + a] - mean[a]) * (x[i * D + b] - mean[b]) / (N - 1);
    ref_eigen(cov, D, ev, u);
    int idx[3];
    for (int j = 0; j < 3; j++) { /* the three largest, in order */
        idx[j] = -1;
        for (int e = 0; e < D; e++) {
            int used = 0;
            for (int i = 0; i < j; i++) used |= idx[i] == e;
            if (!used && (idx[j] < 0 || ev[e] > ev[idx[j]])) idx[j] = e;
        }
    }
    int rc = ssl_pca(x, N, D, 3, comp, var, err);
    CHECK(rc == SSL_OK, "pca: %s", err);
    for (int j = 0; j < 3 && !rc; j++) {
        double c = 0;
        for (int e = 0; e < D; e++) c += comp[j * D + e] * u[e * D + idx[j]];
        CHECK(fabs(fabs(c) - 1) < 1e-5, "vs dense solver: component %d |cos| %.9f", j, fabs(c));
        CHECK(fabs(var[j] - ev[idx[j]]) < 1e-5 * ev[idx[j]], "vs dense solver: variance %d %g vs %g",
              j, (double)var[j], ev[idx[j]]);
    }
    CHECK(ev[idx[2]] / ev[idx[1]] > 0.8, "the test spectrum has small gaps (%g)", ev[idx[2]] / ev[idx[1]]);
    free(x);
    free(cov);
    free(u);
}

static void test_pca(void)
{
    char err[SSL_ERR_LEN];
    test_pca_vs_dense();
    check_pca_case(400, 24, "covariance path (n > d)");
    check_pca_case(60, 200, "Gram path (n < d)");
    check_pca_case(300, 300, "n = d");

    /* Rank-deficient: 3 rows in 5 dims have 2 directions with variance; all 5
     * components still come back orthonormal, the last three with variance 0. */
    const float x[15] = {1, 2, 3, 4, 5, 2, 2, 2, 2, 2, 0, 1, 0, 1, 0};
    float comp[25], var[5];
    int rc = ssl_pca(x, 3, 5, 5, comp, var, err);
    CHECK(rc == SSL_OK, "rank-deficient pca: %s", err);
    if (!rc) {
        double worst = 0;
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 5; j++)
                worst = fmax(worst, fabs(fdot(comp + i * 5, comp + j * 5, 5) - (i == j)));
        CHECK(worst < 1e-5, "rank-deficient components orthonormal (worst %g)", worst);
        CHECK(var[0] > 0 && var[1] > 0 && var[2] == 0 && var[3] == 0 && var[4] == 0,
              "rank-deficient variances %g %g %g %g %g", (double)var[0], (double)var[1],
              (double)var[2], (double)var[3], (double)var[4]);
    }
    /* All rows equal: every channel 0.5. d = 2: the third channel 0.5. */
    const float same[6] = {1, 2, 1, 2, 1, 2};
    float rgb[9];
    rc = ssl_pca_rgb(same, 3, 2, 0, rgb, err);
    CHECK(rc == SSL_OK && rgb[0] == 0.5f && rgb[4] == 0.5f && rgb[8] == 0.5f, "constant rows: %s", err);
    const float two[6] = {0, 0, 1, 0.5f, 2, -0.5f};
    rc = ssl_pca_rgb(two, 3, 2, 0, rgb, err);
    CHECK(rc == SSL_OK && rgb[2] == 0.5f && rgb[5] == 0.5f && rgb[8] == 0.5f &&
              fminf(rgb[1], fminf(rgb[4], rgb[7])) == 0.0f && fmaxf(rgb[1], fmaxf(rgb[4], rgb[7])) == 1.0f,
          "d = 2: rgb %g %g %g / %g %g %g", rgb[0], rgb[1], rgb[2], rgb[3], rgb[4], rgb[5]);

    /* Rows in a 2-D plane of 5 dims: the third projection is rounding noise
     * and must come out flat, not stretched to 0..1. */
    float plane[8 * 5], prgb[8 * 3];
    for (int i = 0; i < 8; i++)
        for (int e = 0; e < 5; e++)
            plane[i * 5 + e] = 0.37f * (float)(i % 3) * (e + 1) + 0.11f * (float)(i * i % 5) * (5 - e) + 1.7f;
    rc = ssl_pca_rgb(plane, 8, 5, 0, prgb, err);
    int flat = rc == SSL_OK;
    for (int i = 0; i < 8; i++) flat &= prgb[i * 3 + 2] == 0.5f;
    CHECK(flat, "rank 2: third channel flat (%g %g ...): %s", prgb[2], prgb[5], rc ? err : "");

    /* d = 1, rows 0..50: the 1st percentile lies halfway between the first
     * two rows (numpy's linear rule), 0.5, and the 99th at 49.5. */
    float line[51], lrgb[51 * 3];
    for (int i = 0; i < 51; i++) line[i] = (float)i;
    rc = ssl_pca_rgb(line, 51, 1, 1.0f, lrgb, err);
    CHECK(rc == SSL_OK && lrgb[0] == 0.0f && fabsf(lrgb[3] - 0.5f / 49) < 1e-6f &&
              fabsf(lrgb[25 * 3] - 0.5f) < 1e-6f && lrgb[50 * 3] == 1.0f && lrgb[4] == 0.5f &&
              lrgb[5] == 0.5f,
          "d = 1 percentiles: %g %g %g (%s)", lrgb[0], lrgb[3], lrgb[75], rc ? err : "");

    CHECK(ssl_pca(x, 1, 5, 1, comp, var, err) == SSL_EINVAL, "one row refused");
    CHECK(ssl_pca(x, 3, 5, 6, comp, var, err) == SSL_EINVAL, "k > d refused");
    const float nan_x[4] = {1, NAN, 2, 3};
    CHECK(ssl_pca(nan_x, 2, 2, 1, comp, var, err) == SSL_EINVAL && strstr(err, "not finite"),
          "NaN feature refused: %s", err);
    CHECK(ssl_pca_rgb(x, 3, 5, 50, rgb, err) == SSL_EINVAL, "percentile 50 refused");
}

int main(void)
{
    snprintf(tdir, sizeof tdir, "/tmp/selfsup_picture_XXXXXX");
    if (!mkdtemp(tdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_canvas_basics();
    char err[SSL_ERR_LEN];
    ssl_canvas c;
    if (ssl_canvas_init(&c, 128, 72, BG, err)) {
        fprintf(stderr, "canvas: %s\n", err);
        return 1;
    }
    test_paste_gray(&c);
    test_paste_rgb(&c);
    test_shapes(&c);
    test_text(&c);
    test_heat(&c);
    test_png(&c);
    ssl_canvas_free(&c);
    test_pca();
    rmdir(tdir);
    return check_report("test_picture");
}
