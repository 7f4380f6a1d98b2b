/* The pretext tasks' labels are right, checked on the data they are made
 * from: a rotated image's label against where its content went, a puzzle's
 * permutation index against where each tile came from, a patch pair's label
 * against the patches' geometry; the jigsaw permutation set against the
 * PyTorch generator's (tests/torch/gen_method_jigsaw.py writes
 * jigsaw_perms.safetensors) and its Hamming distances; colour dropping; the
 * held-out evaluation (same figure for any batch size). The losses and their
 * gradients are checked against PyTorch by test_methods (method goldens). */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "methods/pretext.h"
#include "selfsup/io.h"
#include "selfsup/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- rotation ---- */
static void test_rotation(void)
{
    enum { S = 5 };
    /* a marker at the top-left corner: counter-clockwise rotations take it
     * to the bottom-left (90), bottom-right (180), top-right (270) */
    const int where[4][2] = {{0, 0}, {S - 1, 0}, {S - 1, S - 1}, {0, S - 1}};
    float img[2 * S * S], rot[2 * S * S], back[2 * S * S];
    for (int i = 0; i < 2 * S * S; i++) img[i] = 0;
    img[0] = 1;              /* channel 0: the marker */
    img[S * S + 1] = 2;      /* channel 1: a marker one step right of it */
    for (int k = 0; k < 4; k++) {
        ssl_rotate90(img, 2, S, k, rot);
        int at = -1, n = 0;
        for (int i = 0; i < S * S; i++)
            if (rot[i] != 0) at = i, n++;
        CHECK(n == 1 && at == where[k][0] * S + where[k][1], "rotation label %d: marker at %d, want (%d, %d)",
              k, at, where[k][0], where[k][1]);
        /* channel 1's marker, at (0, 1): turning counter-clockwise moves
         * "right of the corner" to "above the corner" for 90 degrees */
        const int next[4][2] = {{0, 1}, {S - 2, 0}, {S - 1, S - 2}, {1, S - 1}};
        CHECK(rot[S * S + next[k][0] * S + next[k][1]] == 2, "rotation %d: channel 1 rotated wrong", k);
        ssl_rotate90(rot, 2, S, (4 - k) % 4, back);
        CHECK(!memcmp(back, img, sizeof img), "rotation %d then %d is not the identity", k, (4 - k) % 4);
    }
}

/* ---- jigsaw ---- */
static int is_permutation(const uint8_t *p)
{
    int seen = 0;
    for (int t = 0; t < 9; t++) {
        if (p[t] > 8 || seen & (1 << p[t])) return 0;
        seen |= 1 << p[t];
    }
    return 1;
}

static void test_permutation_set(void)
{
    uint8_t perms[100 * 9];
    double t0 = ssl_time();
    CHECK(ssl_jigsaw_permutations(100, SSL_JIGSAW_PERM_SEED, perms) == SSL_OK, "permutation set");
    double secs = ssl_time() - t0;
    int ok = 1;
    for (int i = 0; i < 100; i++) ok &= is_permutation(perms + 9 * i);
    CHECK(ok, "a row of the set is not a permutation of 0..8");
    int mn;
    double mean;
    ssl_jigsaw_hamming_stats(perms, 100, &mn, &mean);
    printf("jigsaw: 100 permutations in %.2f s, Hamming distance min %d, mean %.4f\n", secs, mn, mean);
    CHECK(mn >= 2, "two permutations of the set are equal");
    CHECK(mn == 6, "min Hamming distance %d, want 6 (max-min greedy; the paper's max-sum gives 2)", mn);
    uint8_t again[100 * 9];
    ssl_jigsaw_permutations(100, SSL_JIGSAW_PERM_SEED, again);
    CHECK(!memcmp(perms, again, sizeof perms), "the set is not deterministic");
    /* the first rows of the set of 100 are the set of 10 (greedy) */
    uint8_t ten[10 * 9];
    ssl_jigsaw_permutations(10, SSL_JIGSAW_PERM_SEED, ten);
    CHECK(!memcmp(perms, ten, sizeof ten), "the set of 10 is not the start of the set of 100");

    /* the same algorithm written in NumPy */
    const char *dir = getenv("SSL_GOLDEN_DIR");
    char path[1024], err[SSL_ERR_LEN];
    snprintf(path, sizeof path, "%s/jigsaw_perms.safetensors", dir && dir[0] ? dir : "build/golden");
    ssl_st_file f;
    if (ssl_st_load(&f, path, err) != SSL_OK) {
        CHECK(0, "no permutation golden: %s", err);
        return;
    }
    const ssl_st_entry *e = ssl_st_find(&f, "perms100");
    int shape_ok = e && e->dtype == SSL_DT_I64 && e->nbytes == 900 * sizeof(int64_t);
    CHECK(shape_ok, "perms100 missing or not I64 (100, 9)");
    if (shape_ok) {
        const int64_t *ref = (const int64_t *)e->data;
        int same = 1;
        for (int i = 0; i < 900; i++) same &= ref[i] == perms[i];
        CHECK(same, "the permutation set differs from PyTorch's generator");
    }
    const char *ms = ssl_st_meta(&f, "min_hamming"), *as = ssl_st_meta(&f, "mean_hamming");
    CHECK(ms && as && atoi(ms) == mn && fabs(atof(as) - mean) < 1e-5, "Hamming stats differ from the generator's");
    ssl_st_free(&f);
}

/* An image whose pixel (ch, y, x) holds ch * 10000 + y * 100 + x, so a
 * crop tells where it came from. */
static void coord_image(float *img, int c, int s)
{
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < s; y++)
            for (int x = 0; x < s; x++) img[(ch * s + y) * s + x] = (float)(ch * 10000 + y * 100 + x);
}

/* The crop (c, p, p) is the image's region at (y, x). */
static int crop_is(const float *crop, int c, int p, int y, int x)
{
    for (int ch = 0; ch < c; ch++)
        for (int i = 0; i < p; i++)
            for (int j = 0; j < p; j++)
                if (crop[(ch * p + i) * p + j] != (float)(ch * 10000 + (y + i) * 100 + x + j)) return 0;
    return 1;
}

static void test_jigsaw_geometry(void)
{
    ssl_pretext_grid g;
    ssl_pretext_grid_jigsaw(225, &g); /* the paper: 225-px crop, 75-px cells, 64-px tiles */
    CHECK(g.cell == 75 && g.patch == 64 && g.jitter == 11 && g.origin == 0 && g.base == 0,
          "jigsaw grid of 225 px: cell %d tile %d jitter %d", g.cell, g.patch, g.jitter);
    ssl_pretext_grid_jigsaw(28, &g);
    CHECK(g.cell == 9 && g.patch == 7 && g.jitter == 2 && g.origin == 0, "jigsaw grid of 28 px");
    ssl_pretext_grid_jigsaw(8, &g);
    char err[SSL_ERR_LEN];
    CHECK(ssl_pretext_grid_check(&g, "jigsaw", err) != SSL_OK && strstr(err, "--view-size"),
          "an 8-px view is accepted");

    enum { S = 30, C = 2, P = 10, N = 3000 };
    ssl_pretext_grid_jigsaw(S, &g); /* cells of 10, tiles of 8, offsets 0..2 */
    uint8_t perms[P * 9];
    ssl_jigsaw_permutations(P, SSL_JIGSAW_PERM_SEED, perms);
    float *img = malloc(sizeof(float) * C * S * S);
    float *tiles = malloc(sizeof(float) * 9 * C * g.patch * g.patch);
    coord_image(img, C, S);
    int count[P] = {0}, offs[3] = {0}, bad_tile = 0, bad_cell = 0;
    for (int n = 0; n < N; n++) {
        ssl_rng r;
        ssl_rng_derive(&r, 5, 1, (uint64_t)n);
        int cells[18];
        int32_t label = ssl_jigsaw_sample(&g, perms, P, &r, img, C, 0, tiles, cells);
        if (label < 0 || label >= P) { bad_cell++; continue; }
        count[label]++;
        for (int t = 0; t < 9; t++) {
            int k = perms[label * 9 + t]; /* position t shows cell k */
            int y = cells[2 * t], x = cells[2 * t + 1];
            int cy = g.origin + (k / 3) * g.cell, cx = g.origin + (k % 3) * g.cell;
            /* the tile lies inside its cell, so its content says which cell */
            if (y < cy || x < cx || y + g.patch > cy + g.cell || x + g.patch > cx + g.cell) bad_cell++;
            else offs[y - cy]++;
            if (!crop_is(tiles + t * C * g.patch * g.patch, C, g.patch, y, x)) bad_tile++;
        }
    }
    CHECK(!bad_cell, "%d tiles outside the cell their permutation says", bad_cell);
    CHECK(!bad_tile, "%d tiles do not hold their region of the image", bad_tile);
    int lo = N, hi = 0;
    for (int i = 0; i < P; i++) lo = count[i] < lo ? count[i] : lo, hi = count[i] > hi ? count[i] : hi;
    CHECK(lo > N / P * 0.8 && hi < N / P * 1.2, "permutation labels not uniform: %d..%d of %d", lo, hi, N / P);
    CHECK(offs[0] > 0 && offs[1] > 0 && offs[2] > 0, "jitter does not reach every offset");

    /* per-tile normalization: mean 0, unbiased std 1 per channel */
    ssl_rng r;
    ssl_rng_derive(&r, 5, 2, 0);
    for (int i = 0; i < C * S * S; i++) img[i] = ssl_rng_normal(&r) * 3 + 7;
    for (int i = 0; i < S * S; i++) img[i] = 0.5f; /* channel 0 flat: stays finite, mean 0 */
    ssl_jigsaw_sample(&g, perms, P, &r, img, C, 1, tiles, NULL);
    int pp = g.patch * g.patch, norm_ok = 1;
    for (int t = 0; t < 9 * C; t++) {
        double m = 0, v = 0;
        for (int i = 0; i < pp; i++) m += tiles[t * pp + i];
        m /= pp;
        for (int i = 0; i < pp; i++) v += (tiles[t * pp + i] - m) * (tiles[t * pp + i] - m);
        v /= pp - 1;
        int flat = t % C == 0;
        norm_ok &= fabs(m) < 1e-5 && (flat ? v == 0 : fabs(v - 1) < 1e-4);
    }
    CHECK(norm_ok, "tiles are not normalized to mean 0 and std 1 per channel");
    free(img);
    free(tiles);
}

/* ---- relative patch location ---- */
static void test_relloc(void)
{
    /* 0 1 2 / 3 . 4 / 5 6 7 */
    int k = 0, order_ok = 1;
    for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++) {
            if (!dy && !dx) continue;
            order_ok &= ssl_relloc_offsets[k][0] == dy && ssl_relloc_offsets[k][1] == dx;
            k++;
        }
    CHECK(order_ok, "neighbour labels are not in row-major order around the centre");

    ssl_pretext_grid g;
    ssl_pretext_grid_relloc(432, &g); /* the paper: 96-px patches, 48-px gap, jitter +-7 */
    CHECK(g.cell == 144 && g.patch == 96 && g.jitter == 14 && g.base == 17,
          "relloc grid of 432 px: cell %d patch %d jitter %d base %d", g.cell, g.patch, g.jitter, g.base);
    ssl_pretext_grid_relloc(28, &g);
    CHECK(g.cell == 9 && g.patch == 6 && g.jitter == 1 && g.base == 1, "relloc grid of 28 px");

    enum { S = 28, N = 2000 };
    float img[3 * S * S], pair[2 * 3 * 6 * 6];
    coord_image(img, 1, S);
    int count[8] = {0}, bad = 0, min_gap = 1000, max_gap = 0;
    for (int n = 0; n < N; n++) {
        ssl_rng r;
        ssl_rng_derive(&r, 9, 3, (uint64_t)n);
        int pos[4];
        int32_t label = ssl_relloc_sample(&g, &r, img, 1, 1, pair, pos);
        if (label < 0 || label > 7) { bad++; continue; }
        count[label]++;
        int dy = ssl_relloc_offsets[label][0], dx = ssl_relloc_offsets[label][1];
        /* the centre in the centre cell, the neighbour in the cell the label names */
        int cyc = g.origin + g.cell, cyn = g.origin + (1 + dy) * g.cell, cxn = g.origin + (1 + dx) * g.cell;
        if (pos[0] < cyc || pos[1] < cyc || pos[0] + g.patch > cyc + g.cell || pos[1] + g.patch > cyc + g.cell) bad++;
        if (pos[2] < cyn || pos[3] < cxn || pos[2] + g.patch > cyn + g.cell || pos[3] + g.patch > cxn + g.cell) bad++;
        if (!crop_is(pair, 1, g.patch, pos[0], pos[1]) || !crop_is(pair + 36, 1, g.patch, pos[2], pos[3])) bad++;
        /* the gap between the two along the direction they differ in */
        int gap = dy ? (dy > 0 ? pos[2] - pos[0] - g.patch : pos[0] - pos[2] - g.patch)
                     : (dx > 0 ? pos[3] - pos[1] - g.patch : pos[1] - pos[3] - g.patch);
        min_gap = gap < min_gap ? gap : min_gap;
        max_gap = gap > max_gap ? gap : max_gap;
    }
    CHECK(!bad, "%d patch pairs with the wrong geometry or content", bad);
    CHECK(min_gap == 2 && max_gap == 4, "gaps %d..%d px, want 2..4 (edges never touch)", min_gap, max_gap);
    int lo = N, hi = 0;
    for (int i = 0; i < 8; i++) lo = count[i] < lo ? count[i] : lo, hi = count[i] > hi ? count[i] : hi;
    CHECK(lo > N / 8 * 0.8 && hi < N / 8 * 1.2, "neighbour labels not uniform: %d..%d", lo, hi);

    /* colour dropping on RGB: one channel kept, two become noise of std 0.01 */
    coord_image(img, 3, S);
    int kept[3] = {0}, drop_bad = 0;
    double s2 = 0;
    long ns = 0;
    for (int n = 0; n < 300; n++) {
        ssl_rng r;
        ssl_rng_derive(&r, 9, 4, (uint64_t)n);
        int pos[4];
        ssl_relloc_sample(&g, &r, img, 3, 1, pair, pos);
        for (int q = 0; q < 2; q++) {
            int n_kept = 0;
            for (int ch = 0; ch < 3; ch++) {
                const float *p = pair + (q * 3 + ch) * 36;
                int same = 1;
                for (int i = 0; i < 36; i++)
                    same &= p[i] == img[(ch * S + pos[2 * q] + i / 6) * S + pos[2 * q + 1] + i % 6];
                if (same) n_kept++, kept[ch]++;
                else
                    for (int i = 0; i < 36; i++) s2 += (double)p[i] * p[i], ns++;
            }
            drop_bad += n_kept != 1;
        }
    }
    double sd = sqrt(s2 / ns);
    CHECK(!drop_bad, "%d patches do not keep exactly one channel", drop_bad);
    CHECK(kept[0] > 150 && kept[1] > 150 && kept[2] > 150, "kept channels %d/%d/%d not random", kept[0], kept[1], kept[2]);
    CHECK(fabs(sd - 0.01) < 0.001, "dropped channels have std %g, want 0.01", sd);
    ssl_rng r;
    ssl_rng_derive(&r, 9, 4, 0);
    int pos[4];
    ssl_relloc_sample(&g, &r, img, 3, 0, pair, pos);
    CHECK(crop_is(pair, 3, 6, pos[0], pos[1]) && crop_is(pair + 3 * 36, 3, 6, pos[2], pos[3]),
          "--color-drop 0 changed the patches");
}

/* ---- the shared pieces ---- */
static void test_common(void)
{
    const float logits[3 * 4] = {0, 1, 2, 3, 5, 5, 0, 0, 0, 0, 0, 1};
    const int32_t labels[3] = {3, 1, 0};
    /* row 1 ties: the first maximum (0) is the prediction, as torch.argmax */
    CHECK(ssl_pretext_count_correct(logits, labels, 3, 4) == 1, "count_correct");

    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    int shape[2] = {6, 2};
    float xd[12];
    for (int i = 0; i < 12; i++) xd[i] = (float)i;
    ssl_tensor x = ssl_tensor_wrap(xd, NULL, 2, shape, SSL_LAYOUT_NCHW);
    ssl_tensor *y = ssl_pretext_group_rows(&g, &x, 3);
    CHECK(y && y->shape[0] == 2 && y->shape[1] == 6 && y->data[7] == 7.0f, "group_rows layout");
    CHECK(ssl_pretext_group_rows(&g, &x, 4) == NULL, "group_rows accepts 6 rows in groups of 4");
    ssl_graph_free(&g);
    ssl_ctx_free(&ctx);

    /* options: defaults, ranges, which methods read them */
    ssl_method_config c;
    char err[SSL_ERR_LEN];
    ssl_method_config_unset(&c);
    CHECK(ssl_method_find("jigsaw")->validate(&c, err) == SSL_OK && c.permutations == 100 && c.head_hidden == 1024 &&
              c.view_size == 0, "jigsaw defaults");
    ssl_method_config_unset(&c);
    CHECK(ssl_method_find("relloc")->validate(&c, err) == SSL_OK && c.color_drop == 1 && c.head_hidden == 128,
          "relloc defaults");
    ssl_method_config_unset(&c);
    CHECK(ssl_method_find("rotation")->validate(&c, err) == SSL_OK && c.head_hidden == 0, "rotation defaults");
    ssl_method_config_unset(&c);
    c.permutations = 1;
    CHECK(ssl_method_find("jigsaw")->validate(&c, err) != SSL_OK && strstr(err, "--permutations"), "1 permutation");
    ssl_method_config_unset(&c);
    c.color_drop = 2;
    CHECK(ssl_method_find("relloc")->validate(&c, err) != SSL_OK && strstr(err, "--color-drop"), "color-drop 2");
}

/* ---- the held-out evaluation ---- */
static void test_heldout(const char *name)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 3, 1);
    ssl_method m;
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.head_hidden = 8;
    if (!strcmp(name, "jigsaw")) cfg.permutations = 12;
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    char err[SSL_ERR_LEN];
    int rc = ssl_method_create(&m, ssl_method_find(name), &cfg, &enc, &ctx.rng, err);
    CHECK(rc == SSL_OK, "%s: create: %s", name, err);
    if (rc) return;
    ssl_dataset ds = {.n = 23, .c = 1, .h = 20, .w = 20};
    ds.images = malloc((size_t)ds.n * 400);
    ssl_rng r;
    ssl_rng_seed(&r, 4);
    for (long i = 0; i < (long)ds.n * 400; i++) ds.images[i] = (uint8_t)ssl_rng_below(&r, 256);
    m.step = 17;
    ssl_eval_row a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    int ra = ssl_eval_pretext(&ctx, &m, &ds, 5, &a);
    int rb = ssl_eval_pretext(&ctx, &m, &ds, 16, &b);
    CHECK(ra == SSL_OK && rb == SSL_OK, "%s: held-out evaluation: %s", name, ctx.err);
    int classes = !strcmp(name, "rotation") ? 4 : !strcmp(name, "jigsaw") ? 12 : 8;
    CHECK(a.pretext_classes == classes && a.pretext_acc >= 0 && a.pretext_acc <= 1 && isfinite(a.pretext_loss),
          "%s: accuracy %g loss %g classes %d", name, a.pretext_acc, a.pretext_loss, a.pretext_classes);
    /* choices depend on the image alone and BN runs on its running stats */
    CHECK(a.pretext_acc == b.pretext_acc && fabs(a.pretext_loss - b.pretext_loss) < 1e-5 * fabs(a.pretext_loss),
          "%s: batch 5 and 16 disagree: %g/%g vs %g/%g", name, a.pretext_acc, a.pretext_loss, b.pretext_acc,
          b.pretext_loss);
    int64_t c, t;
    m.ops->pretext_metrics(&m, &c, &t);
    CHECK(t == (classes == 4 ? 4 : 1) * (23 - 16) && c <= t, "%s: last batch counted %lld of %lld", name,
          (long long)c, (long long)t);
    CHECK(m.step == 17 && !m.pretext_eval, "%s: evaluation changed the method's step or mode", name);
    free(ds.images);
    ssl_method_free(&m);

    /* a method without a pretext task says so */
    ssl_method_config_unset(&cfg);
    rc = ssl_method_create(&m, ssl_method_find("simclr"), &cfg, &enc, &ctx.rng, err);
    ds.images = calloc((size_t)ds.n, 400);
    CHECK(!rc && ssl_eval_pretext(&ctx, &m, &ds, 8, &a) != SSL_OK && strstr(ctx.err, "no pretext task"),
          "simclr: evaluated as a pretext task");
    free(ds.images);
    ssl_method_free(&m);
    ssl_ctx_free(&ctx);
}

int main(void)
{
    test_rotation();
    test_permutation_set();
    test_jigsaw_geometry();
    test_relloc();
    test_common();
    test_heldout("rotation");
    test_heldout("jigsaw");
    test_heldout("relloc");
    return check_report("test_pretext");
}
