/* Inpainting (context encoder): the mask geometry (central square, random
 * blocks: sizes, bounds, determinism, spread), the default L2-only
 * objective replayed against PyTorch (inpainting_center.safetensors from
 * tests/torch/gen_method_inpainting.py; the random-block + adversarial one
 * is in test_methods), the held-out behaviour (the loss is the masked MSE
 * alone, a regression task for pretext_metrics), and the one-line errors of
 * bad configurations. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "methods/lab.h"
#include "selfsup/io.h"
#include "selfsup/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int count(const float *m, int n)
{
    int c = 0;
    for (int i = 0; i < n; i++) c += m[i] != 0;
    return c;
}

static void test_center(void)
{
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.mask_size = 0.5f;
    cfg.mask_blocks = 0;
    float m[28 * 28];
    ssl_rng r;
    ssl_rng_seed(&r, 1);
    ssl_inpainting_mask(&cfg, 28, 28, &r, m);
    int ok = 1; /* Pathak's 64 of 128: rows and columns 7..20 of 28 */
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) ok &= m[y * 28 + x] == (y >= 7 && y < 21 && x >= 7 && x < 21);
    CHECK(ok && count(m, 28 * 28) == 196, "28-px central mask: %d pixels, want rows/cols 7..20", count(m, 784));
    cfg.mask_size = 0.25f; /* 12 x 20: round(3) x round(5), centred */
    ssl_inpainting_mask(&cfg, 12, 20, &r, m);
    ok = 1;
    for (int y = 0; y < 12; y++)
        for (int x = 0; x < 20; x++) ok &= m[y * 20 + x] == (y >= 4 && y < 7 && x >= 7 && x < 12);
    CHECK(ok, "12x20 central mask of 0.25 is not rows 4..6, columns 7..11");
}

static void test_blocks(void)
{
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.mask_size = 0.5f;
    cfg.mask_blocks = 4; /* 4 squares of round(0.25 * 28) = 7 px */
    float m[28 * 28], m2[28 * 28];
    int min_y = 28, max_y = -1, min_area = 1 << 30, max_area = 0, differ = 0, all_squares = 1;
    for (int t = 0; t < 300; t++) {
        ssl_rng r, r2;
        ssl_rng_derive(&r, 7, (uint64_t)t, 0);
        ssl_rng_derive(&r2, 7, (uint64_t)t, 0);
        ssl_inpainting_mask(&cfg, 28, 28, &r, m);
        ssl_inpainting_mask(&cfg, 28, 28, &r2, m2);
        CHECK(!memcmp(m, m2, sizeof m), "the same stream gave another mask");
        int a = count(m, 784);
        min_area = a < min_area ? a : min_area;
        max_area = a > max_area ? a : max_area;
        /* replay the draws: each block is a full 7x7 square inside the view */
        ssl_rng_derive(&r, 7, (uint64_t)t, 0);
        for (int k = 0; k < 4; k++) {
            int y = (int)ssl_rng_below(&r, 22), x = (int)ssl_rng_below(&r, 22);
            min_y = y < min_y ? y : min_y;
            max_y = y > max_y ? y : max_y;
            for (int i = 0; i < 7; i++)
                for (int j = 0; j < 7; j++) all_squares &= m[(y + i) * 28 + x + j] == 1;
        }
        if (t) {
            ssl_rng_derive(&r, 7, (uint64_t)t - 1, 0);
            ssl_inpainting_mask(&cfg, 28, 28, &r, m2);
            differ += memcmp(m, m2, sizeof m) != 0;
        }
    }
    CHECK(all_squares, "a block is not where its draws put it");
    CHECK(min_area >= 49 && max_area <= 196 && max_area == 196 && min_area < 196,
          "block areas %d..%d, want 49..196 with overlaps", min_area, max_area);
    CHECK(min_y == 0 && max_y == 21, "block rows %d..%d, want the full range 0..21", min_y, max_y);
    CHECK(differ > 290, "masks of other steps repeat (%d of 299 differ)", differ);
}

static int make(ssl_method *m, ssl_ctx *ctx, const ssl_method_config *cfg, int c, char *err)
{
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, c, SSL_STEM_SMALL);
    return ssl_method_create(m, &ssl_method_inpainting, cfg, &enc, &ctx->rng, err);
}

static void test_config(ssl_ctx *ctx)
{
    ssl_method m;
    ssl_method_config cfg;
    char err[SSL_ERR_LEN];
    ssl_method_config_unset(&cfg);
    cfg.mask_size = 1.0f;
    CHECK(make(&m, ctx, &cfg, 1, err) != SSL_OK && strstr(err, "--mask-size must be in (0, 1)"),
          "mask as large as the view: '%s'", err);
    ssl_method_config_unset(&cfg);
    cfg.adv_weight = 1.0f;
    CHECK(make(&m, ctx, &cfg, 1, err) != SSL_OK && strstr(err, "--adv-weight must be in [0, 1)"),
          "adv weight 1: '%s'", err);
    ssl_method_config_unset(&cfg);
    cfg.color_regression = 1;
    CHECK(make(&m, ctx, &cfg, 1, err) != SSL_OK && strstr(err, "--color-regression does not apply to inpainting"),
          "foreign option: '%s'", err);
    ssl_method_config_unset(&cfg);
    cfg.mask_size = 0.99f; /* 28 of 28 px */
    CHECK(make(&m, ctx, &cfg, 1, err) == SSL_OK, "create: %s", err);
    CHECK(ssl_method_setup_run(&m, 28, 28, 8, err) != SSL_OK && strstr(err, "masks the whole 28-px view"),
          "mask covering the view: '%s'", err);
    ssl_method_free(&m);
    cfg.mask_size = 0.01f;
    CHECK(make(&m, ctx, &cfg, 1, err) == SSL_OK, "create: %s", err);
    CHECK(ssl_method_setup_run(&m, 28, 28, 8, err) != SSL_OK && strstr(err, "masks no pixel"),
          "empty mask: '%s'", err);
    ssl_method_free(&m);
    cfg.mask_blocks = 9; /* tiny blocks are clamped to 1 px: fine */
    CHECK(make(&m, ctx, &cfg, 3, err) == SSL_OK && ssl_method_setup_run(&m, 28, 28, 8, err) == SSL_OK,
          "RGB, 9 blocks of 1 px: %s", err);
    /* RGB: the decoder ends in 3 channels, the discriminator appears with the term */
    int64_t n = 0;
    CHECK(ssl_registry_find(&m.heads, "decoder.6.bias", &n) && n == 3, "RGB decoder output: %lld", (long long)n);
    CHECK(!ssl_registry_find(&m.heads, "discriminator.0.weight", &n), "a discriminator without --adv-weight");
    ssl_method_free(&m);
}

/* The default objective (central mask, L2 only) against PyTorch, then the
 * held-out loss with the adversarial term on: the masked MSE alone. */
static void test_golden(const char *dir, ssl_ctx *ctx)
{
    char path[1024], err[SSL_ERR_LEN], key[256];
    snprintf(path, sizeof path, "%s/inpainting_center.safetensors", dir);
    ssl_st_file f;
    if (ssl_st_load(&f, path, err) != SSL_OK) {
        CHECK(0, "no golden: %s", err);
        return;
    }
    ssl_method m;
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg); /* the defaults: 0.5, center, no adversary */
    if (make(&m, ctx, &cfg, 1, err)) {
        CHECK(0, "create: %s", err);
        ssl_st_free(&f);
        return;
    }
    CHECK(ssl_checkpoint_load_tensors(&f, path, &m, err) == SSL_OK, "initial state: %s", err);
    const float lr = (float)atof(ssl_st_meta(&f, "lr"));
    m.step = atoi(ssl_st_meta(&f, "start_step"));
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    for (int k = 0; k < atoi(ssl_st_meta(&f, "steps")); k++, m.step++) {
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
        const ssl_st_entry *le = ssl_st_find(&f, key);
        if (le) CHECK_CLOSE(loss->data, (const float *)le->data, 1, 0.0, 1e-4, key);
        int64_t c, t;
        CHECK(m.ops->pretext_metrics(&m, &c, &t) == 0 && c == 0 && t == (int64_t)shape[0] * (shape[2] / 2) * (shape[2] / 2),
              "metrics: a regression task over the %d masked pixels", shape[0] * (shape[2] / 2) * (shape[2] / 2));
        ssl_registry_zero_grad(m.encoder.reg);
        ssl_registry_zero_grad(&m.heads);
        CHECK(ssl_graph_backward(&g, loss) == SSL_OK, "backward: %s", ctx->err);
        ssl_registry *regs[2] = {m.encoder.reg, &m.heads};
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < regs[r]->n_params; i++) {
                ssl_param *p = &regs[r]->params[i];
                snprintf(key, sizeof key, "step%d.grad.%s", k, p->name);
                const ssl_st_entry *ge = ssl_st_find(&f, key);
                CHECK(ge && (long)(ge->nbytes / 4) == p->numel, "%s missing", key);
                if (!ge) continue;
                const float *ref = (const float *)ge->data;
                double mx = 0;
                for (long j = 0; j < p->numel; j++) mx = fmax(mx, fabs(ref[j]));
                CHECK_CLOSE(p->grad, ref, p->numel, 1e-6 + 1e-4 * mx, 1e-3, key);
                for (long j = 0; j < p->numel; j++) p->data[j] -= lr * p->grad[j];
            }
        snprintf(key, sizeof key, "step%d.after.decoder.1.running_mean", k);
        const ssl_st_entry *ae = ssl_st_find(&f, key);
        int64_t n = 0;
        float *rm = ssl_registry_find(&m.heads, "decoder.1.running_mean", &n);
        CHECK(ae && rm && (long)(ae->nbytes / 4) == n, "%s missing", key);
        if (ae && rm) CHECK_CLOSE(rm, (const float *)ae->data, n, 1e-7, 1e-4, key);
    }
    ssl_graph_free(&g);
    ssl_method_free(&m);

    /* held out, adversarial term on: eval-mode networks, the loss is the
     * masked MSE of the reconstruction, the same as without the term */
    const ssl_st_entry *e = ssl_st_find(&f, "step0.view0");
    float vals[2];
    for (int adv = 0; adv < 2 && e; adv++) {
        ssl_method_config_unset(&cfg);
        cfg.adv_weight = adv ? 0.001f : 0;
        ssl_rng_seed(&ctx->rng, 11); /* the same encoder and decoder either way */
        if (make(&m, ctx, &cfg, 1, err)) break;
        int shape[4] = {(int)e->shape[0], (int)e->shape[1], (int)e->shape[2], (int)e->shape[3]};
        ssl_tensor in = ssl_tensor_wrap((float *)e->data, NULL, 4, shape, SSL_LAYOUT_NCHW), *vp = &in;
        ssl_graph_init(&g, ctx);
        g.training = 0;
        g.record = 0;
        m.pretext_eval = 1;
        ssl_tensor *loss = m.ops->loss(&m, &g, &vp);
        vals[adv] = loss ? loss->data[0] : NAN;
        ssl_graph_free(&g);
        ssl_method_free(&m);
    }
    CHECK(vals[0] == vals[1] && vals[0] > 0, "held-out loss with the adversary %g, without %g", vals[1], vals[0]);
    ssl_st_free(&f);
}

int main(void)
{
    const char *dir = getenv("SSL_GOLDEN_DIR");
    if (!dir || !dir[0]) dir = "build/golden";
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    test_center();
    test_blocks();
    test_config(&ctx);
    test_golden(dir, &ctx);
    ssl_ctx_free(&ctx);
    return check_report("test_inpainting");
}
