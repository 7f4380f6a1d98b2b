/* Colorization's pieces against references computed in float64 by
 * tests/torch/gen_method_colorization.py from the published formulas
 * (colorization_extra.safetensors): sRGB -> Lab and back as
 * skimage.color, the in-gamut ab bins, nearest-bin labels, the
 * class-rebalancing prior and weights (from a histogram and end to end
 * from a uint8 dataset, gray images left out), the annealed mean, the
 * lightness images encoders are evaluated on; the regression objective
 * replayed against PyTorch (colorization_regression.safetensors; the
 * classification one is in test_methods); and the one-line errors of bad
 * configurations. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "methods/lab.h"
#include "selfsup/io.h"
#include "selfsup/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const ssl_st_entry *entry(const ssl_st_file *f, const char *name, ssl_dtype dt, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    int ok = e && e->dtype == dt && (long)(e->nbytes / ssl_dtype_size(dt)) == n;
    CHECK(ok, "golden '%s' missing or not %ld values of the expected type", name, n);
    return ok ? e : NULL;
}

static const float *f32(const ssl_st_file *f, const char *name, long n)
{
    const ssl_st_entry *e = entry(f, name, SSL_DT_F32, n);
    return e ? (const float *)e->data : NULL;
}

static long rows(const ssl_st_file *f, const char *name)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    CHECK(e != NULL, "golden '%s' missing", name);
    return e ? (long)e->shape[0] : 0;
}

/* A colorization method on a width-4 ResNet-18 (1 input channel). */
static int make_method(ssl_method *m, ssl_ctx *ctx, int regression)
{
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.color_regression = regression;
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    char err[SSL_ERR_LEN];
    int rc = ssl_method_create(m, &ssl_method_colorization, &cfg, &enc, &ctx->rng, err);
    CHECK(rc == SSL_OK, "create: %s", err);
    return rc;
}

static void test_lab(const ssl_st_file *f)
{
    long n = rows(f, "rgb");
    const float *rgb = f32(f, "rgb", 3 * n), *lab = f32(f, "lab", 3 * n);
    float got[3 * 64];
    for (long i = 0; rgb && lab && i < n && i < 64; i++) {
        double l[3], back[3];
        ssl_rgb_to_lab(rgb[3 * i], rgb[3 * i + 1], rgb[3 * i + 2], l);
        for (int k = 0; k < 3; k++) got[3 * i + k] = (float)l[k];
        ssl_lab_to_rgb(l[0], l[1], l[2], back); /* in gamut: a round trip */
        for (int k = 0; k < 3; k++)
            CHECK(fabs(back[k] - rgb[3 * i + k]) < 1e-6, "lab2rgb(rgb2lab(x)) != x at %ld: %g vs %g", i, back[k],
                  rgb[3 * i + k]);
    }
    if (rgb && lab) CHECK_CLOSE(got, lab, 3 * (n < 64 ? n : 64), 2e-5, 1e-6, "rgb2lab");
    n = rows(f, "lab_in");
    const float *lin = f32(f, "lab_in", 3 * n), *lrgb = f32(f, "lab_rgb", 3 * n);
    for (long i = 0; lin && lrgb && i < n && i < 64; i++) {
        double r[3];
        ssl_lab_to_rgb(lin[3 * i], lin[3 * i + 1], lin[3 * i + 2], r);
        for (int k = 0; k < 3; k++) got[3 * i + k] = (float)r[k];
    }
    if (lin && lrgb) CHECK_CLOSE(got, lrgb, 3 * (n < 64 ? n : 64), 1e-6, 1e-6, "lab2rgb (clipped)");
    /* the lightness of linear RGB is ssl_rgb_to_lab's L */
    double l[3];
    ssl_rgb_to_lab(0.3, 0.6, 0.9, l);
    CHECK(fabs(ssl_lab_lightness_linear(ssl_srgb_linear(0.3), ssl_srgb_linear(0.6), ssl_srgb_linear(0.9)) -
               l[0]) < 1e-12, "lightness of linear RGB differs from rgb2lab's");
}

static void test_bins(const ssl_st_file *f)
{
    static ssl_ab_bins q;
    ssl_ab_bins_gamut(&q);
    const char *qs = ssl_st_meta(f, "q");
    CHECK(qs && q.n == atoi(qs), "in-gamut bins: %d, the reference %s", q.n, qs ? qs : "?");
    const float *ref = f32(f, "ab_bins", 2L * q.n);
    if (ref) CHECK(!memcmp(ref, q.center, sizeof(float) * 2 * q.n), "the in-gamut bin centres differ");
    CHECK(q.n == 261, "Q = %d, expected 261", q.n);
    long n = rows(f, "ab_points");
    const float *ab = f32(f, "ab_points", 2 * n);
    const ssl_st_entry *le = entry(f, "ab_labels", SSL_DT_I32, n);
    int bad = 0, outside = 0;
    for (long i = 0; ab && le && i < n; i++) {
        int k = ssl_ab_bin(&q, ab[2 * i], ab[2 * i + 1]);
        bad += k != ((const int32_t *)le->data)[i];
        outside += fabsf(ab[2 * i] - q.center[k][0]) > 5 || fabsf(ab[2 * i + 1] - q.center[k][1]) > 5;
    }
    CHECK(bad == 0, "%d of %ld nearest-bin labels differ", bad, n);
    CHECK(outside > 20, "the label test has only %d points out of gamut", outside);
    /* a checkpoint's centres: accepted as they are, rejected off the grid */
    static ssl_ab_bins q2;
    CHECK(ssl_ab_bins_set(&q2, &q.center[0][0], q.n) && q2.n == q.n && !memcmp(q2.cell, q.cell, sizeof q.cell),
          "bins from their own centres differ");
    float off[4] = {10, 20, 10, 25};
    CHECK(!ssl_ab_bins_set(&q2, off, 2), "a centre off the grid was accepted");
    float dup[4] = {10, 20, 10, 20};
    CHECK(!ssl_ab_bins_set(&q2, dup, 2), "a repeated centre was accepted");
}

static void test_weights(const ssl_st_file *f)
{
    static ssl_ab_bins q;
    ssl_ab_bins_gamut(&q);
    const float *h = f32(f, "hist", 256 * 256);
    const float *rp = f32(f, "hist_prior", q.n), *rw = f32(f, "hist_weights", q.n);
    if (!h || !rp || !rw) return;
    double *hist = malloc(sizeof(double) * 256 * 256);
    for (int i = 0; i < 256 * 256; i++) hist[i] = h[i];
    float prior[SSL_AB_MAX_BINS], w[SSL_AB_MAX_BINS];
    CHECK(ssl_colorization_class_weights(hist, &q, prior, w) == SSL_OK, "class weights failed");
    free(hist);
    CHECK_CLOSE(prior, rp, q.n, 1e-12, 1e-5, "smoothed prior p~");
    CHECK_CLOSE(w, rw, q.n, 0, 1e-5, "class weights");
    double ew = 0;
    for (int t = 0; t < q.n; t++) ew += (double)prior[t] * w[t];
    CHECK(fabs(ew - 1) < 1e-5, "E_p~[w] = %g, not 1", ew);
}

/* fit_data on a uint8 dataset: prior and weights, the gray image left out;
 * encoder_data: its lightness images; bad data gets one-line errors. */
static void test_data(const ssl_st_file *f, ssl_ctx *ctx)
{
    const ssl_st_entry *e = entry(f, "data_images", SSL_DT_U8, 5L * 3 * 20 * 20);
    if (!e) return;
    ssl_dataset ds;
    memset(&ds, 0, sizeof ds);
    ds.n = 5, ds.c = 3, ds.h = ds.w = 20;
    ds.images = (uint8_t *)e->data;
    snprintf(ds.source, sizeof ds.source, "test data");
    ssl_method m;
    if (make_method(&m, ctx, 0)) return;
    char err[SSL_ERR_LEN];
    CHECK(m.ops->fit_data(&m, &ds, err) == SSL_OK, "fit_data: %s", err);
    int64_t n = 0;
    float *prior = ssl_registry_find(&m.extra, "color_prior", &n);
    float *w = ssl_registry_find(&m.extra, "color_weights", &n);
    const float *rp = f32(f, "data_prior", n), *rw = f32(f, "data_weights", n);
    if (prior && rp) CHECK_CLOSE(prior, rp, n, 1e-12, 1e-5, "prior of the dataset");
    if (w && rw) CHECK_CLOSE(w, rw, n, 0, 1e-5, "class weights of the dataset");

    ssl_dataset l;
    CHECK(m.ops->encoder_data(&ds, &l, err) == SSL_OK && l.c == 1 && l.n == 5, "encoder_data: %s", err);
    const ssl_st_entry *le = entry(f, "data_lightness", SSL_DT_U8, 5L * 400);
    if (le && l.images) CHECK(!memcmp(le->data, l.images, 5 * 400), "lightness images of RGB data differ");
    ssl_dataset_free(&l);
    const ssl_st_entry *ge = entry(f, "gray_images", SSL_DT_U8, 18), *gl = entry(f, "gray_lightness", SSL_DT_U8, 18);
    ssl_dataset gray = ds;
    gray.n = 2, gray.c = 1, gray.h = gray.w = 3;
    gray.images = ge ? (uint8_t *)ge->data : NULL;
    if (ge && gl) {
        CHECK(m.ops->encoder_data(&gray, &l, err) == SSL_OK, "encoder_data (gray): %s", err);
        CHECK(l.images && !memcmp(gl->data, l.images, 18), "lightness images of gray data differ");
        ssl_dataset_free(&l);
        CHECK(m.ops->fit_data(&m, &gray, err) != SSL_OK && strstr(err, "needs RGB images"),
              "fit_data on gray data: '%s'", err);
    }
    CHECK(m.ops->encoder_channels(&m.cfg, 1, err) < 0 && strstr(err, "needs RGB images (3 channels), the data has 1"),
          "training on gray data: '%s'", err);
    CHECK(m.ops->encoder_channels(&m.cfg, 3, err) == 1, "RGB data: the encoder takes 1 channel");
    /* all images gray: nothing to learn */
    uint8_t *flat = malloc(5 * 3 * 400);
    for (int i = 0; i < 5 * 3 * 400; i++) flat[i] = (uint8_t)(i / 1200 * 50 + (i % 400) / 20);
    for (int i = 0; i < 5; i++) /* r = g = b */
        for (int c = 1; c < 3; c++) memcpy(flat + (i * 3 + c) * 400, flat + i * 3 * 400, 400);
    ssl_dataset all_gray = ds;
    all_gray.images = flat;
    CHECK(m.ops->fit_data(&m, &all_gray, err) != SSL_OK && strstr(err, "no training image has colour"),
          "all-gray data: '%s'", err);
    free(flat);
    ssl_method_free(&m);
}

static void test_annealed(const ssl_st_file *f)
{
    static ssl_ab_bins q;
    ssl_ab_bins_gamut(&q);
    const float *logits = f32(f, "logits", 3L * q.n), *ref = f32(f, "annealed_ab", 6);
    if (!logits || !ref) return;
    float ab[6], want[6];
    ssl_colorization_annealed_mean(logits, q.n, 3, &q, 0.38f, ab);
    for (int i = 0; i < 3; i++) want[i] = ref[2 * i], want[3 + i] = ref[2 * i + 1]; /* (3, 2) -> (2, 3) */
    CHECK_CLOSE(ab, want, 6, 1e-4, 1e-5, "annealed mean T = 0.38");
}

static void test_config(ssl_ctx *ctx)
{
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.color_regression = 2;
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_method m;
    char err[SSL_ERR_LEN];
    CHECK(ssl_method_create(&m, &ssl_method_colorization, &cfg, &enc, &ctx->rng, err) != SSL_OK &&
              strstr(err, "--color-regression must be 0 or 1 (got 2)"), "bad --color-regression: '%s'", err);
    ssl_method_config_unset(&cfg);
    cfg.mask_size = 0.3f;
    CHECK(ssl_method_create(&m, &ssl_method_colorization, &cfg, &enc, &ctx->rng, err) != SSL_OK &&
              strstr(err, "--mask-size does not apply to colorization"), "foreign option: '%s'", err);
}

/* The regression golden: loss, every gradient and the state after each
 * plain SGD step. */
static void test_regression(const char *dir, ssl_ctx *ctx)
{
    char path[1024], err[SSL_ERR_LEN], key[256];
    snprintf(path, sizeof path, "%s/colorization_regression.safetensors", dir);
    ssl_st_file f;
    if (ssl_st_load(&f, path, err) != SSL_OK) {
        CHECK(0, "no regression golden: %s", err);
        return;
    }
    ssl_method m;
    if (make_method(&m, ctx, 1)) goto out;
    CHECK(ssl_checkpoint_load_tensors(&f, path, &m, err) == SSL_OK, "initial state: %s", err);
    const float lr = (float)atof(ssl_st_meta(&f, "lr"));
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    for (int k = 0; k < atoi(ssl_st_meta(&f, "steps")); k++) {
        snprintf(key, sizeof key, "step%d.view0", k);
        const ssl_st_entry *e = ssl_st_find(&f, key);
        CHECK(e != NULL, "%s missing", key);
        if (!e) break;
        int shape[4] = {(int)e->shape[0], (int)e->shape[1], (int)e->shape[2], (int)e->shape[3]};
        ssl_tensor in = ssl_tensor_wrap((float *)e->data, NULL, 4, shape, SSL_LAYOUT_NCHW), *vp = &in;
        ssl_graph_reset(&g);
        ssl_tensor *loss = m.ops->loss(&m, &g, &vp);
        CHECK(loss != NULL, "loss: %s", ctx->err);
        if (!loss) break;
        snprintf(key, sizeof key, "step%d.loss", k);
        const float *lref = f32(&f, key, 1);
        if (lref) CHECK_CLOSE(loss->data, lref, 1, 0.0, 1e-4, key);
        ssl_registry_zero_grad(m.encoder.reg);
        ssl_registry_zero_grad(&m.heads);
        CHECK(ssl_graph_backward(&g, loss) == SSL_OK, "backward: %s", ctx->err);
        ssl_registry *regs[2] = {m.encoder.reg, &m.heads};
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < regs[r]->n_params; i++) {
                ssl_param *p = &regs[r]->params[i];
                snprintf(key, sizeof key, "step%d.grad.%s", k, p->name);
                const float *ref = f32(&f, key, p->numel);
                if (!ref) continue;
                double mx = 0;
                for (long j = 0; j < p->numel; j++) mx = fmax(mx, fabs(ref[j]));
                CHECK_CLOSE(p->grad, ref, p->numel, 1e-6 + 1e-4 * mx, 1e-3, key);
                for (long j = 0; j < p->numel; j++) p->data[j] -= lr * p->grad[j];
            }
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < regs[r]->n_params; i++) {
                ssl_param *p = &regs[r]->params[i];
                snprintf(key, sizeof key, "step%d.after.%s", k, p->name);
                const float *ref = f32(&f, key, p->numel);
                if (ref) CHECK_CLOSE(p->data, ref, p->numel, 1e-6, 1e-4, key);
            }
    }
    ssl_graph_free(&g);
    ssl_method_free(&m);
out:
    ssl_st_free(&f);
}

int main(void)
{
    const char *dir = getenv("SSL_GOLDEN_DIR");
    if (!dir || !dir[0]) dir = "build/golden";
    char path[1024], err[SSL_ERR_LEN];
    snprintf(path, sizeof path, "%s/colorization_extra.safetensors", dir);
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    ssl_st_file f;
    if (ssl_st_load(&f, path, err) != SSL_OK) {
        CHECK(0, "no golden: %s", err);
    } else {
        test_lab(&f);
        test_bins(&f);
        test_weights(&f);
        test_data(&f, &ctx);
        test_annealed(&f);
        ssl_st_free(&f);
    }
    test_config(&ctx);
    test_regression(dir, &ctx);
    ssl_ctx_free(&ctx);
    return check_report("test_colorization");
}
