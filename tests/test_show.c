/* `selfsup show`'s pictures (src/eval/pictures.h) show what the methods
 * compute: each hook writes a PNG that decodes to the layout's size; the
 * images in it are the stored pixels moved as the task moves them (a
 * rotation column is the image rotated by k * 90 degrees, restored jigsaw
 * tiles are crops of the view, relloc's patches come from where it says);
 * the printed predictions are the argmax of the logits the method's
 * predict function returns (the caption is compared with the text drawn
 * by the font), and those logits and labels give the held-out
 * evaluation's loss (ssl_eval_pretext), so they are the task's own. The
 * ViT attention maps sum to 1 and match a direct float64 computation from
 * the parameters on a depth-1 ViT. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "eval/pictures.h"
#include "methods/mae.h"
#include "methods/pretext.h"
#include "selfsup/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

/* ---- helpers ---- */

/* n smooth-ish random images (c, s, s): blobs on noise, so that every
 * rotation and crop differs. */
static void make_data(ssl_dataset *ds, int n, int c, int s, uint64_t seed)
{
    memset(ds, 0, sizeof *ds);
    ds->n = n, ds->c = c, ds->h = s, ds->w = s;
    ds->images = malloc((size_t)n * c * s * s);
    ds->labels = calloc((size_t)n, sizeof(int32_t));
    snprintf(ds->source, sizeof ds->source, "test data");
    ssl_rng r;
    ssl_rng_seed(&r, seed);
    for (int i = 0; i < n; i++)
        for (int ch = 0; ch < c; ch++) {
            int cy = (int)ssl_rng_below(&r, (uint32_t)s), cx = (int)ssl_rng_below(&r, (uint32_t)s);
            for (int y = 0; y < s; y++)
                for (int x = 0; x < s; x++) {
                    int d2 = (y - cy) * (y - cy) + (x - cx) * (x - cx);
                    int v = (d2 < s * s / 8 ? 200 : 30) + (int)ssl_rng_below(&r, 50);
                    ds->images[(((long)i * c + ch) * s + y) * s + x] = (uint8_t)v;
                }
        }
}

/* The decoded picture (3, h, w) of dir/name; NULL (and a failed check) when unreadable. */
static uint8_t *load_png(const char *name, int want_w, int want_h, int *h, int *w)
{
    char path[256], err[SSL_ERR_LEN];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    uint8_t *px = NULL;
    int rc = ssl_image_decode(path, 3, &px, h, w, err);
    CHECK(rc == SSL_OK, "%s does not decode: %s", name, err);
    if (rc) return NULL;
    CHECK(*w == want_w && *h == want_h, "%s is %dx%d, want %dx%d", name, *w, *h, want_w, want_h);
    if (*w != want_w || *h != want_h) {
        free(px);
        return NULL;
    }
    return px;
}

static uint32_t png_at(const uint8_t *p, int h, int w, int x, int y)
{
    long o = (long)y * w + x, n = (long)h * w;
    return SSL_RGB(p[o], p[n + o], p[2 * n + o]);
}

/* Pixels of the box (x, y, bw, bh) where the picture and the canvas
 * differ by more than tol in a channel. */
static long diff_box(const uint8_t *p, int h, int w, const ssl_canvas *c, int x, int y, int bw, int bh,
                     int tol)
{
    long bad = 0;
    for (int j = y; j < y + bh; j++)
        for (int i = x; i < x + bw; i++) {
            uint32_t a = png_at(p, h, w, i, j), b = ssl_canvas_get(c, i, j);
            for (int k = 0; k < 3; k++) {
                int d = (int)((a >> (8 * k)) & 255) - (int)((b >> (8 * k)) & 255);
                if (d > tol || d < -tol) {
                    bad++;
                    break;
                }
            }
        }
    return bad;
}

/* The picture's pixels of the gray image img (s, s) uint8 shown at (x, y),
 * scale x scale blocks: how many differ by more than 1 (float rounding of
 * the normalization's round trip). */
static long diff_gray(const uint8_t *p, int h, int w, int x, int y, int scale, const uint8_t *img, int s)
{
    long bad = 0;
    for (int r = 0; r < s; r++)
        for (int c = 0; c < s; c++) {
            uint32_t v = png_at(p, h, w, x + c * scale + scale / 2, y + r * scale + scale / 2);
            int d = (int)(v & 255) - img[r * s + c];
            bad += d > 1 || d < -1 || ((v >> 8) & 255) != (v & 255) || (v >> 16) != (v & 255);
        }
    return bad;
}

/* The caption cell (row, col) line 0 of the picture reads s: compared with
 * s drawn by the font on white. */
static int caption_is(const uint8_t *p, int h, int w, const ssl_show_layout *l, int row, int col, const char *s)
{
    ssl_canvas c;
    char err[SSL_ERR_LEN];
    if (ssl_canvas_init(&c, w, h, SSL_COLOR_WHITE, err)) return 0;
    int x, y;
    ssl_show_caption_at(l, row, col, 0, &x, &y);
    ssl_canvas_text(&c, x, y, 1, SSL_COLOR_BLACK, s);
    long bad = diff_box(p, h, w, &c, x, y, l->grid.cell_w, SSL_FONT_H, 0);
    ssl_canvas_free(&c);
    return bad == 0;
}

static int argmax(const float *z, int n)
{
    int b = 0;
    for (int j = 1; j < n; j++)
        if (z[j] > z[b]) b = j;
    return b;
}

/* mean_i -log softmax(z_i)[label_i] */
static double mean_ce(const float *z, const int32_t *labels, int n, int k)
{
    double s = 0;
    for (int i = 0; i < n; i++) {
        const float *r = z + (long)i * k;
        double mx = r[0], sum = 0;
        for (int j = 1; j < k; j++) mx = r[j] > mx ? r[j] : mx;
        for (int j = 0; j < k; j++) sum += exp(r[j] - mx);
        s += log(sum) + mx - r[labels[i]];
    }
    return s / n;
}

/* The held-out evaluation of m on images first .. first + n - 1 of ds, as
 * a split of their own (its choices then are those of indices 0 .. n - 1). */
static double eval_loss(ssl_ctx *ctx, ssl_method *m, const ssl_dataset *ds, int first, int n)
{
    ssl_dataset sub = *ds;
    sub.n = n;
    sub.images = ds->images + (long)first * ds->c * ds->h * ds->w;
    sub.labels = ds->labels + first;
    ssl_eval_row row;
    memset(&row, 0, sizeof row);
    int rc = ssl_eval_pretext(ctx, m, &sub, n, &row);
    CHECK(rc == SSL_OK, "%s: held-out evaluation: %s", m->ops->name, ctx->err);
    return rc ? NAN : row.pretext_loss;
}

static int create(ssl_method *m, ssl_ctx *ctx, const char *name, ssl_method_config *cfg,
                  const ssl_encoder_config *enc)
{
    char err[SSL_ERR_LEN];
    int rc = ssl_method_create(m, ssl_method_find(name), cfg, enc, &ctx->rng, err);
    CHECK(rc == SSL_OK, "%s: create: %s", name, err);
    return rc == SSL_OK;
}

/* ---- rotation ---- */
static void test_rotation(ssl_ctx *ctx)
{
    enum { N = 3, FIRST = 1, S = 20 };
    ssl_dataset ds;
    make_data(&ds, 5, 1, S, 1);
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.head_hidden = 8;
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_method m;
    if (!create(&m, ctx, "rotation", &cfg, &enc)) return;
    char err[SSL_ERR_LEN];
    int rc = m.ops->show(&m, ctx, &ds, FIRST, N, dir, err);
    CHECK(rc == SSL_OK, "rotation show: %s", err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    int h, w;
    uint8_t *p = load_png("rotation.png", ssl_grid_width(&l.grid, 4), ssl_grid_height(&l.grid, N), &h, &w);
    ssl_aug a;
    float *x = ssl_show_views(&m, &ds, FIRST, N, &a, err);
    float x4[4 * N * S * S], logits[16 * N], rot[S * S];
    CHECK(x && ssl_rotation_predict(&m, ctx, x, N, 1, S, x4, logits, err) == SSL_OK, "rotation predict: %s", err);
    int32_t labels[4 * N];
    for (int i = 0; i < 4 * N; i++) labels[i] = i % 4;
    double want = eval_loss(ctx, &m, &ds, FIRST, N);
    CHECK(fabs(mean_ce(logits, labels, 4 * N, 4) - want) < 1e-5 * fabs(want),
          "rotation: the picture's logits give CE %g, the held-out evaluation %g", mean_ce(logits, labels, 4 * N, 4),
          want);
    for (int i = 0; p && x && i < N; i++)
        for (int k = 0; k < 4; k++) {
            /* the stored pixels rotated here, against the picture */
            uint8_t dst[S * S];
            float f[S * S];
            for (int j = 0; j < S * S; j++) f[j] = ds.images[(long)(FIRST + i) * S * S + j];
            ssl_rotate90(f, 1, S, k, rot);
            for (int j = 0; j < S * S; j++) dst[j] = (uint8_t)rot[j];
            int x0, y0;
            ssl_show_cell(&l, i, k, &x0, &y0);
            CHECK(diff_gray(p, h, w, x0, y0, l.scale, dst, S) == 0, "rotation: image %d column %d is not the image rotated by %d",
                  i, k, 90 * k);
            int pred = argmax(logits + 4 * (4 * i + k), 4);
            uint32_t fr = png_at(p, h, w, x0 - 1, y0 - 1);
            CHECK(fr == (pred == k ? SSL_COLOR_GREEN : SSL_COLOR_RED), "rotation: image %d column %d frame %06x", i, k,
                  (unsigned)fr);
            char cap[40];
            snprintf(cap, sizeof cap, "pred %d true %d", 90 * pred, 90 * k);
            CHECK(caption_is(p, h, w, &l, i, k, cap), "rotation: image %d column %d caption is not '%s'", i, k, cap);
        }
    free(p);
    ssl_free(x);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
}

/* ---- jigsaw ---- */
static void test_jigsaw(ssl_ctx *ctx)
{
    enum { N = 3, FIRST = 2, S = 28, T = 9 };
    ssl_dataset ds;
    make_data(&ds, 6, 1, S, 2);
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.head_hidden = 8;
    cfg.permutations = 12;
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_method m;
    if (!create(&m, ctx, "jigsaw", &cfg, &enc)) return;
    char err[SSL_ERR_LEN];
    int rc = m.ops->show(&m, ctx, &ds, FIRST, N, dir, err);
    CHECK(rc == SSL_OK, "jigsaw show: %s", err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    int h, w;
    uint8_t *p = load_png("jigsaw.png", ssl_grid_width(&l.grid, 3), ssl_grid_height(&l.grid, N), &h, &w);
    ssl_pretext_grid g;
    ssl_pretext_grid_jigsaw(S, &g);
    const int tp = g.patch, tile = tp * tp;
    ssl_aug a;
    float *x = ssl_show_views(&m, &ds, FIRST, N, &a, err);
    int32_t labels[N];
    int cells[N * T * 2];
    float *tiles = malloc(sizeof(float) * N * T * tile), logits[N * 12];
    CHECK(x && ssl_jigsaw_predict(&m, ctx, x, N, 1, S, FIRST, labels, tiles, cells, logits, err) == SSL_OK,
          "jigsaw predict: %s", err);
    /* as a split of their own, the images' puzzles are those of indices 0.. */
    int32_t l0[N];
    int c0[N * T * 2];
    float *t0 = malloc(sizeof(float) * N * T * tile), z0[N * 12];
    ssl_jigsaw_predict(&m, ctx, x, N, 1, S, 0, l0, t0, c0, z0, err);
    double want = eval_loss(ctx, &m, &ds, FIRST, N);
    CHECK(fabs(mean_ce(z0, l0, N, 12) - want) < 1e-5 * fabs(want),
          "jigsaw: the picture's logits give CE %g, the held-out evaluation %g", mean_ce(z0, l0, N, 12), want);
    uint8_t perms[12 * T];
    ssl_jigsaw_permutations(12, SSL_JIGSAW_PERM_SEED, perms);
    const int ts = tp * l.scale, gap = (l.img - 3 * ts) / 2;
    ssl_canvas ref;
    ssl_canvas_init(&ref, w > 0 ? w : 1, h > 0 ? h : 1, SSL_COLOR_WHITE, err);
    for (int i = 0; p && x && i < N; i++) {
        const int pred = argmax(logits + 12 * i, 12);
        int ok_cells = 1, shuffled = 1, restored = 1;
        for (int t = 0; t < T; t++) {
            const int *ct = cells + 2 * (i * T + t);
            /* tile t comes from the cell its permutation names */
            int k = perms[labels[i] * T + t];
            ok_cells &= ct[0] >= g.origin + (k / 3) * g.cell && ct[0] + tp <= g.origin + (k / 3 + 1) * g.cell &&
                        ct[1] >= g.origin + (k % 3) * g.cell && ct[1] + tp <= g.origin + (k % 3 + 1) * g.cell;
            /* the shuffled tiles as the encoder sees them, at position t */
            int x0, y0;
            ssl_show_cell(&l, i, 1, &x0, &y0);
            int tx = x0 + (t % 3) * (ts + gap), ty = y0 + (t / 3) * (ts + gap);
            ssl_canvas_paste(&ref, tx, ty, l.scale, tiles + (long)(i * T + t) * tile, 1, tp, tp, 0, 0, err);
            shuffled &= diff_box(p, h, w, &ref, tx, ty, ts, ts, 0) == 0;
            /* put back at the cell the prediction names: the stored pixels there */
            int kp = perms[pred * T + t];
            uint8_t crop[64 * 64];
            for (int r = 0; r < tp; r++)
                for (int c = 0; c < tp; c++)
                    crop[r * tp + c] = ds.images[(long)(FIRST + i) * S * S + (ct[0] + r) * S + ct[1] + c];
            ssl_show_cell(&l, i, 2, &x0, &y0);
            restored &= diff_gray(p, h, w, x0 + (kp % 3) * (ts + gap), y0 + (kp / 3) * (ts + gap), l.scale, crop, tp) == 0;
        }
        CHECK(ok_cells, "jigsaw: image %d: a tile lies outside the cell its permutation names", i);
        CHECK(shuffled, "jigsaw: image %d: the shuffled tiles differ from the encoder's input", i);
        CHECK(restored, "jigsaw: image %d: the tiles are not put back in the predicted order", i);
        int x0, y0;
        ssl_show_cell(&l, i, 2, &x0, &y0);
        uint32_t fr = png_at(p, h, w, x0 - 1, y0 - 1);
        CHECK(fr == (pred == labels[i] ? SSL_COLOR_GREEN : SSL_COLOR_RED), "jigsaw: image %d frame %06x", i,
              (unsigned)fr);
        char cap[40];
        snprintf(cap, sizeof cap, "pred %d true %d", pred, labels[i]);
        CHECK(caption_is(p, h, w, &l, i, 1, cap), "jigsaw: image %d caption is not '%s'", i, cap);
    }
    ssl_canvas_free(&ref);
    free(p);
    free(tiles);
    free(t0);
    ssl_free(x);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
}

/* ---- relloc ---- */
static void test_relloc(ssl_ctx *ctx)
{
    enum { N = 4, FIRST = 0, S = 28 };
    static const char *const names[8] = {"NW", "N", "NE", "W", "E", "SW", "S", "SE"};
    ssl_dataset ds;
    make_data(&ds, 5, 1, S, 3);
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.head_hidden = 8;
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_method m;
    if (!create(&m, ctx, "relloc", &cfg, &enc)) return;
    char err[SSL_ERR_LEN];
    int rc = m.ops->show(&m, ctx, &ds, FIRST, N, dir, err);
    CHECK(rc == SSL_OK, "relloc show: %s", err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    int h, w;
    uint8_t *p = load_png("relloc.png", ssl_grid_width(&l.grid, 4), ssl_grid_height(&l.grid, N), &h, &w);
    ssl_pretext_grid g;
    ssl_pretext_grid_relloc(S, &g);
    const int pp = g.patch;
    ssl_aug a;
    float *x = ssl_show_views(&m, &ds, FIRST, N, &a, err);
    int32_t labels[N];
    int pos[N * 4];
    float *pairs = malloc(sizeof(float) * N * 2 * pp * pp), logits[N * 8];
    CHECK(x && ssl_relloc_predict(&m, ctx, x, N, 1, S, FIRST, labels, pairs, pos, logits, err) == SSL_OK,
          "relloc predict: %s", err);
    double want = eval_loss(ctx, &m, &ds, FIRST, N);
    CHECK(fabs(mean_ce(logits, labels, N, 8) - want) < 1e-5 * fabs(want),
          "relloc: the picture's logits give CE %g, the held-out evaluation %g", mean_ce(logits, labels, N, 8), want);
    const int box = l.img / 3;
    for (int i = 0; p && x && i < N; i++) {
        const int *ps = pos + 4 * i, pred = argmax(logits + 8 * i, 8);
        /* the neighbour lies where the label says */
        int dy = (ps[2] - ps[0]), dx = (ps[3] - ps[1]);
        int ry = dy > g.cell / 2 ? 1 : dy < -g.cell / 2 ? -1 : 0, rx = dx > g.cell / 2 ? 1 : dx < -g.cell / 2 ? -1 : 0;
        CHECK(ry == ssl_relloc_offsets[labels[i]][0] && rx == ssl_relloc_offsets[labels[i]][1],
              "relloc: image %d: label %d but the neighbour is at (%d, %d)", i, labels[i], dy, dx);
        /* centre and neighbour columns: the stored pixels at those places */
        for (int q = 0; q < 2; q++) {
            uint8_t crop[64 * 64];
            for (int r = 0; r < pp; r++)
                for (int c = 0; c < pp; c++)
                    crop[r * pp + c] = ds.images[(long)(FIRST + i) * S * S + (ps[2 * q] + r) * S + ps[2 * q + 1] + c];
            int x0, y0;
            ssl_show_cell(&l, i, 1 + q, &x0, &y0);
            CHECK(diff_gray(p, h, w, x0, y0, l.img / pp, crop, pp) == 0, "relloc: image %d: %s patch differs", i,
                  q ? "neighbour" : "centre");
        }
        int x0, y0;
        ssl_show_cell(&l, i, 3, &x0, &y0);
        int pr = 1 + ssl_relloc_offsets[pred][0], pc = 1 + ssl_relloc_offsets[pred][1];
        uint32_t fr = png_at(p, h, w, x0 + pc * box, y0 + pr * box);
        CHECK(fr == (pred == labels[i] ? SSL_COLOR_GREEN : SSL_COLOR_RED), "relloc: image %d: predicted cell frame %06x",
              i, (unsigned)fr);
        char cap[40];
        snprintf(cap, sizeof cap, "pred %s true %s", names[pred], names[labels[i]]);
        CHECK(caption_is(p, h, w, &l, i, 3, cap), "relloc: image %d caption is not '%s'", i, cap);
    }
    free(p);
    free(pairs);
    ssl_free(x);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
}

/* ---- inpainting ---- */
static void test_inpainting(ssl_ctx *ctx)
{
    enum { N = 3, FIRST = 0, S = 20 };
    ssl_dataset ds;
    make_data(&ds, 4, 1, S, 4);
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.mask_blocks = 2; /* random holes: the held-out evaluation's choices */
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_method m;
    if (!create(&m, ctx, "inpainting", &cfg, &enc)) return;
    char err[SSL_ERR_LEN];
    int rc = m.ops->show(&m, ctx, &ds, FIRST, N, dir, err);
    CHECK(rc == SSL_OK, "inpainting show: %s", err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    int h, w;
    uint8_t *p = load_png("inpainting.png", ssl_grid_width(&l.grid, 3), ssl_grid_height(&l.grid, N), &h, &w);
    ssl_aug a;
    float *x = ssl_show_views(&m, &ds, FIRST, N, &a, err);
    float mask[N * S * S], input[N * S * S], out[N * S * S];
    CHECK(x && ssl_inpainting_predict(&m, ctx, x, N, S, FIRST, mask, input, out, err) == SSL_OK,
          "inpainting predict: %s", err);
    double se = 0;
    long holes = 0;
    for (int i = 0; i < N * S * S; i++)
        if (mask[i] > 0) se += ((double)out[i] - x[i]) * ((double)out[i] - x[i]), holes++;
    double want = eval_loss(ctx, &m, &ds, FIRST, N);
    CHECK(holes > 0 && fabs(se / holes - want) < 1e-5 * fabs(want),
          "inpainting: the picture's hole error %g, the held-out evaluation %g", se / holes, want);
    ssl_canvas ref;
    ssl_canvas_init(&ref, w > 0 ? w : 1, h > 0 ? h : 1, SSL_COLOR_WHITE, err);
    for (int i = 0; p && x && i < N; i++) {
        float fill[S * S], in[S * S];
        int hole_ok = 1;
        for (int k = 0; k < S * S; k++) {
            const int o = i * S * S + k;
            fill[k] = mask[o] > 0 ? out[o] : x[o];
            in[k] = mask[o] > 0 ? 0.0f : x[o];
            hole_ok &= input[o] == in[k];
        }
        CHECK(hole_ok, "inpainting: image %d: the encoder's input is not the view with the hole at 0", i);
        int x0, y0;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        ssl_show_paste(&ref, x0, y0, l.scale, in, 1, S, S, &a, err);
        CHECK(diff_box(p, h, w, &ref, x0, y0, l.img, l.img, 0) == 0, "inpainting: image %d: masked input differs", i);
        ssl_show_cell(&l, i, 1, &x0, &y0);
        ssl_show_paste(&ref, x0, y0, l.scale, fill, 1, S, S, &a, err);
        CHECK(diff_box(p, h, w, &ref, x0, y0, l.img, l.img, 0) == 0, "inpainting: image %d: the filled hole differs", i);
        ssl_show_cell(&l, i, 2, &x0, &y0);
        CHECK(diff_gray(p, h, w, x0, y0, l.scale, ds.images + (long)(FIRST + i) * S * S, S) == 0,
              "inpainting: image %d: the original differs from the stored pixels", i);
    }
    ssl_canvas_free(&ref);
    free(p);
    ssl_free(x);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
}

/* ---- MAE (a ViT: also the encoder pictures) ---- */
static void test_mae(ssl_ctx *ctx)
{
    enum { N = 3, FIRST = 1, S = 12 };
    ssl_dataset ds;
    make_data(&ds, 5, 1, S, 5);
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.decoder_dim = 16;
    cfg.decoder_heads = 2;
    ssl_encoder_config enc;
    memset(&enc, 0, sizeof enc);
    enc.kind = SSL_ENC_VIT;
    char err[SSL_ERR_LEN];
    ssl_vit_preset(&enc.vit, "tiny", S, 4, 1, err);
    enc.vit.embed_dim = 24;
    enc.vit.heads = 3;
    enc.vit.depth = 2;
    ssl_method m;
    if (!create(&m, ctx, "mae", &cfg, &enc)) return;
    int rc = ssl_show_all(&m, ctx, &ds, FIRST, N, 7, dir, err);
    CHECK(rc == SSL_OK, "mae show: %s", err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 0);
    int h, w;
    uint8_t *p = load_png("mae.png", ssl_grid_width(&l.grid, 4), ssl_grid_height(&l.grid, N), &h, &w);
    ssl_aug a;
    float *x = ssl_show_views(&m, &ds, FIRST, N, &a, err);
    float mask[N * S * S], recon[N * S * S], loss = 0;
    CHECK(x && ssl_mae_method_reconstruct(&m, ctx, x, N, FIRST, mask, recon, &loss, err) == SSL_OK,
          "mae reconstruct: %s", err);
    float m0[N * S * S], r0[N * S * S], loss0 = 0;
    ssl_mae_method_reconstruct(&m, ctx, x, N, 0, m0, r0, &loss0, err);
    double want = eval_loss(ctx, &m, &ds, FIRST, N);
    CHECK(fabs(loss0 - want) < 1e-5 * fabs(want), "mae: reconstruction loss %g, held-out evaluation %g", loss0, want);
    ssl_canvas ref;
    ssl_canvas_init(&ref, w > 0 ? w : 1, h > 0 ? h : 1, SSL_COLOR_WHITE, err);
    for (int i = 0; p && x && i < N; i++) {
        const uint8_t *img = ds.images + (long)(FIRST + i) * S * S;
        int x0, y0, gray_ok = 1, n_masked = 0;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        CHECK(diff_gray(p, h, w, x0, y0, l.scale, img, S) == 0, "mae: image %d: original differs", i);
        /* masked: removed patches gray, visible ones the stored pixels */
        ssl_show_cell(&l, i, 1, &x0, &y0);
        uint8_t vis[S * S];
        for (int k = 0; k < S * S; k++) {
            int masked = mask[i * S * S + k] > 0;
            n_masked += masked;
            vis[k] = masked ? 128 : img[k];
        }
        gray_ok = diff_gray(p, h, w, x0, y0, l.scale, vis, S) == 0;
        const int want_masked = (9 - ssl_mae_len_keep(9, m.cfg.mask_ratio)) * 16;
        CHECK(gray_ok && n_masked == want_masked, "mae: image %d: masked column wrong (%d masked pixels, want %d)", i,
              n_masked, want_masked);
        /* reconstruction, and with the visible patches pasted */
        float d[S * S], e[S * S];
        for (int k = 0; k < S * S; k++) {
            d[k] = recon[i * S * S + k];
            e[k] = mask[i * S * S + k] > 0 ? d[k] : x[i * S * S + k];
        }
        ssl_show_cell(&l, i, 2, &x0, &y0);
        ssl_show_paste(&ref, x0, y0, l.scale, d, 1, S, S, &a, err);
        CHECK(diff_box(p, h, w, &ref, x0, y0, l.img, l.img, 0) == 0, "mae: image %d: reconstruction differs", i);
        ssl_show_cell(&l, i, 3, &x0, &y0);
        ssl_show_paste(&ref, x0, y0, l.scale, e, 1, S, S, &a, err);
        CHECK(diff_box(p, h, w, &ref, x0, y0, l.img, l.img, 0) == 0, "mae: image %d: reconstruction + visible differs", i);
    }
    ssl_canvas_free(&ref);
    free(p);
    /* the encoder's pictures: 3 heads, and the PCA */
    p = load_png("attention.png", ssl_grid_width(&l.grid, 4), ssl_grid_height(&l.grid, N), &h, &w);
    free(p);
    p = load_png("pca.png", ssl_grid_width(&l.grid, 2), ssl_grid_height(&l.grid, N), &h, &w);
    free(p);
    ssl_free(x);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
}

/* ---- [CLS] attention against a direct computation ---- */

/* LayerNorm (eps 1e-6) of t (D) with gamma, beta, in double. */
static void layernorm(const double *t, int D, const float *gw, const float *gb, double *y)
{
    double mean = 0, var = 0;
    for (int d = 0; d < D; d++) mean += t[d];
    mean /= D;
    for (int d = 0; d < D; d++) var += (t[d] - mean) * (t[d] - mean);
    var /= D;
    for (int d = 0; d < D; d++) y[d] = (t[d] - mean) / sqrt(var + 1e-6) * gw[d] + gb[d];
}

static void test_attention(ssl_ctx *ctx, int class_token)
{
    enum { N = 2, S = 12, P = 4, C = 2, D = 8, H = 2, G = S / P, L = G * G };
    ssl_vit_config vc = {.img_size = S, .patch = P, .in_chans = C, .embed_dim = D, .depth = 1, .heads = H,
                         .mlp_ratio = 2, .qkv_bias = 1, .pos = SSL_VIT_POS_LEARNED, .class_token = class_token};
    ssl_vit v;
    char err[SSL_ERR_LEN];
    ssl_rng r;
    ssl_rng_seed(&r, 11);
    if (ssl_vit_init(&v, &vc, &r, err)) {
        CHECK(0, "vit init: %s", err);
        return;
    }
    /* larger qkv weights than the init's, so the maps are far from uniform */
    for (long i = 0; i < ssl_tensor_numel(&v.blocks[0].qkv_w); i++) v.blocks[0].qkv_w.data[i] = ssl_rng_normal(&r);
    float x[N * C * S * S], attn[N * H * L];
    for (int i = 0; i < N * C * S * S; i++) x[i] = ssl_rng_normal(&r);
    int rc = ssl_show_vit_attention(ctx, &v, x, N, S, attn, err);
    CHECK(rc == SSL_OK, "attention: %s", err);
    const int ct = class_token, T = L + ct, dh = D / H;
    double worst_sum = 0, spread = 0;
    float ref[N * H * L];
    for (int n = 0; n < N; n++) {
        /* tokens: patch embedding + position embedding (+ class token) */
        double tok[T][D], y[T][D], qkv[T][3 * D];
        for (int t = 0; t < T; t++) {
            const float *pos = v.pos_embed.data + (long)t * D;
            for (int d = 0; d < D; d++) {
                double s;
                if (ct && t == 0) {
                    s = v.cls_token.data[d];
                } else {
                    int pi = (t - ct) / G, pj = (t - ct) % G;
                    s = v.patch_b.data[d];
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < P; ky++)
                            for (int kx = 0; kx < P; kx++)
                                s += (double)v.patch_w.data[((d * C + c) * P + ky) * P + kx] *
                                     x[((n * C + c) * S + pi * P + ky) * S + pj * P + kx];
                }
                tok[t][d] = s + pos[d];
            }
            layernorm(tok[t], D, v.blocks[0].norm1_w.data, v.blocks[0].norm1_b.data, y[t]);
            for (int o = 0; o < 3 * D; o++) {
                double s = v.blocks[0].qkv_b.data[o];
                for (int d = 0; d < D; d++) s += (double)v.blocks[0].qkv_w.data[o * D + d] * y[t][d];
                qkv[t][o] = s;
            }
        }
        for (int hd = 0; hd < H; hd++) {
            double acc[L] = {0};
            for (int q = 0; q < (ct ? 1 : T); q++) {
                double z[T], mx = -INFINITY, sum = 0;
                for (int j = 0; j < T; j++) {
                    double s = 0;
                    for (int e = 0; e < dh; e++) s += qkv[q][hd * dh + e] * qkv[j][D + hd * dh + e];
                    z[j] = s / sqrt((double)dh);
                    mx = z[j] > mx ? z[j] : mx;
                }
                /* the full softmax row (class token included), then the patches renormalized */
                for (int j = 0; j < T; j++) sum += z[j] = exp(z[j] - mx);
                double patches = 0;
                for (int j = ct; j < T; j++) patches += z[j] / sum;
                for (int j = ct; j < T; j++) acc[j - ct] += z[j] / sum / patches / (ct ? 1 : T);
            }
            double s = 0, mn = 1, mxv = 0;
            for (int j = 0; j < L; j++) {
                ref[(n * H + hd) * L + j] = (float)acc[j];
                s += attn[(n * H + hd) * L + j];
                mn = fmin(mn, acc[j]);
                mxv = fmax(mxv, acc[j]);
            }
            worst_sum = fmax(worst_sum, fabs(s - 1));
            spread = fmax(spread, mxv - mn);
        }
    }
    CHECK(worst_sum < 1e-5, "attention (class token %d): a head's map sums to 1 %+g", class_token, worst_sum);
    CHECK(spread > 0.05, "attention (class token %d): maps nearly uniform (spread %g): a weak test", class_token, spread);
    CHECK_CLOSE(attn, ref, N * H * L, 1e-6, 1e-4, class_token ? "[CLS] attention vs direct" : "mean attention vs direct");
    ssl_vit_free(&v);

    /* deeper: the earlier blocks run first; still one distribution per head */
    vc.depth = 3;
    ssl_vit_init(&v, &vc, &r, err);
    rc = ssl_show_vit_attention(ctx, &v, x, N, S, attn, err);
    double worst = 0;
    for (int k = 0; k < N * H; k++) {
        double s = 0;
        for (int j = 0; j < L; j++) s += attn[k * L + j];
        worst = fmax(worst, fabs(s - 1));
    }
    CHECK(rc == SSL_OK && worst < 1e-5, "depth-3 attention: %s, sums off by %g", err, worst);
    ssl_vit_free(&v);
}

/* ---- methods without a picture: their augmented views ---- */
static void test_augmented(ssl_ctx *ctx)
{
    enum { N = 2, FIRST = 1, S = 16 };
    ssl_dataset ds;
    make_data(&ds, 4, 1, S, 6);
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_method m;
    if (!create(&m, ctx, "simclr", &cfg, &enc)) return;
    char err[SSL_ERR_LEN];
    int rc = ssl_show_all(&m, ctx, &ds, FIRST, N, 99, dir, err);
    CHECK(rc == SSL_OK, "simclr show: %s", err);
    ssl_aug augs[SSL_MAX_VIEWS];
    int nv = m.ops->views(&m.cfg, 1, S, S, augs);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    int h, w;
    uint8_t *p = load_png("views.png", ssl_grid_width(&l.grid, nv + 1), ssl_grid_height(&l.grid, N), &h, &w);
    ssl_canvas ref;
    ssl_canvas_init(&ref, w > 0 ? w : 1, h > 0 ? h : 1, SSL_COLOR_WHITE, err);
    float view[S * S], scratch[4 * S * S];
    for (int i = 0; p && i < N; i++) {
        int x0, y0;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        CHECK(diff_gray(p, h, w, x0, y0, l.scale, ds.images + (long)(FIRST + i) * S * S, S) == 0,
              "views: image %d differs", i);
        for (int v = 0; v < nv; v++) {
            ssl_rng r; /* the loader's stream: (seed, epoch 0 * n + index, view) */
            ssl_rng_derive(&r, 99, FIRST + i, v);
            ssl_aug_apply(&augs[v], ds.images + (long)(FIRST + i) * S * S, 1, S, S, view, scratch, &r);
            ssl_show_cell(&l, i, v + 1, &x0, &y0);
            ssl_show_paste(&ref, x0, y0, l.scale, view, 1, S, S, &augs[v], err);
            CHECK(diff_box(p, h, w, &ref, x0, y0, l.img, l.img, 0) == 0, "views: image %d view %d differs", i, v);
        }
    }
    ssl_canvas_free(&ref);
    free(p);
    /* errors: images beyond the split, a folder that does not exist */
    CHECK(ssl_show_all(&m, ctx, &ds, 3, 2, 99, dir, err) != SSL_OK && strstr(err, "images 3..4"),
          "images beyond the split: '%s'", err);
    char missing[128];
    snprintf(missing, sizeof missing, "%s/no/such", dir);
    CHECK(ssl_show_all(&m, ctx, &ds, 0, 2, 99, missing, err) != SSL_OK && strstr(err, missing),
          "a missing folder: '%s'", err);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
}

/* ---- colorization (RGB) ---- */
static void test_colorization(ssl_ctx *ctx)
{
    enum { N = 2, S = 16 };
    ssl_dataset ds;
    make_data(&ds, 3, 3, S, 7);
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_method m;
    if (!create(&m, ctx, "colorization", &cfg, &enc)) return;
    char err[SSL_ERR_LEN];
    int rc = ssl_show_all(&m, ctx, &ds, 0, N, 1, dir, err);
    CHECK(rc == SSL_OK, "colorization show: %s", err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 0);
    int h, w;
    uint8_t *p = load_png("colorization.png", ssl_grid_width(&l.grid, 3), ssl_grid_height(&l.grid, N), &h, &w);
    ssl_aug a;
    float *x = ssl_show_views(&m, &ds, 0, N, &a, err);
    float light[N * S * S], rgb[N * 3 * S * S];
    CHECK(x && ssl_colorization_predict(&m, ctx, x, N, S, light, rgb, err) == SSL_OK, "colorization predict: %s", err);
    int in_range = 1;
    for (int i = 0; i < N * 3 * S * S; i++) in_range &= rgb[i] >= 0 && rgb[i] <= 1;
    CHECK(in_range, "colorization: predicted colours outside [0, 1]");
    ssl_canvas ref;
    ssl_canvas_init(&ref, w > 0 ? w : 1, h > 0 ? h : 1, SSL_COLOR_WHITE, err);
    for (int i = 0; p && x && i < N; i++) {
        int x0, y0;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        ssl_canvas_paste(&ref, x0, y0, l.scale, light + i * S * S, 1, S, S, 0, 1, err);
        CHECK(diff_box(p, h, w, &ref, x0, y0, l.img, l.img, 0) == 0, "colorization: image %d: lightness differs", i);
        ssl_show_cell(&l, i, 1, &x0, &y0);
        ssl_canvas_paste(&ref, x0, y0, l.scale, rgb + i * 3 * S * S, 3, S, S, 0, 1, err);
        CHECK(diff_box(p, h, w, &ref, x0, y0, l.img, l.img, 0) == 0, "colorization: image %d: colour differs", i);
    }
    ssl_canvas_free(&ref);
    free(p);
    /* gray data has no colour to show */
    ssl_dataset gray;
    make_data(&gray, 2, 1, S, 8);
    CHECK(m.ops->show(&m, ctx, &gray, 0, 2, dir, err) != SSL_OK && strstr(err, "RGB"), "colorization on gray: '%s'",
          err);
    ssl_dataset_free(&gray);
    ssl_free(x);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_show.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 5, 2);
    test_rotation(&ctx);
    test_jigsaw(&ctx);
    test_relloc(&ctx);
    test_inpainting(&ctx);
    test_mae(&ctx);
    test_attention(&ctx, 1);
    test_attention(&ctx, 0);
    test_augmented(&ctx);
    test_colorization(&ctx);
    ssl_ctx_free(&ctx);
    /* the pictures go with the folder */
    static const char *const files[] = {"rotation.png", "jigsaw.png", "relloc.png", "inpainting.png", "mae.png",
                                        "attention.png", "pca.png", "views.png", "colorization.png"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
    return check_report("test_show");
}
