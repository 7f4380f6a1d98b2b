/* Patch-level contrast ("dense", src/methods/dense.c) and the crop geometry
 * it reads:
 *  - ssl_crop_geo_to_feature against hand-computed points (flips included);
 *  - ssl_aug_apply_geo records the box and flip the pixels came from (a
 *    linear ramp image predicts every output pixel), with the same pixels
 *    and rng draws as ssl_aug_apply, and each view pixel's source point maps
 *    back onto that pixel;
 *  - the loader hands out each view's geometry next to its pixels;
 *  - two training steps with crop geometries against PyTorch 1.13
 *    (tests/torch/gen_method_dense.py: method_dense_geo.safetensors; the
 *    geometry-free golden is replayed by test_methods);
 *  - two identical crops give a lower patch loss than the same pixels with
 *    a mismatched geometry, and the same loss as no geometry;
 *  - dense-weight 0 is SimCLR exactly, 1 builds no image projector, and
 *    out-of-range weights are refused. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "selfsup/io.h"
#include "selfsup/optim.h"
#include "selfsup/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_geo_to_feature(void)
{
    /* box x in [4, 20), y in [2, 10) seen by a 4 x 4 map: cells of 4 x 2 px */
    ssl_crop_geo g = {4, 2, 16, 8, 0};
    float u, v;
    ssl_crop_geo_to_feature(&g, 6, 3, 4, 4, &u, &v); /* centre of cell (0, 0) */
    CHECK(fabsf(u - 0.0f) < 1e-6f && fabsf(v - 0.0f) < 1e-6f, "cell (0,0) centre: (%g, %g)", u, v);
    ssl_crop_geo_to_feature(&g, 4, 2, 4, 4, &u, &v); /* the box's corner: the map's edge */
    CHECK(fabsf(u + 0.5f) < 1e-6f && fabsf(v + 0.5f) < 1e-6f, "corner: (%g, %g)", u, v);
    ssl_crop_geo_to_feature(&g, 17, 9, 4, 4, &u, &v); /* (17-4)/4 - .5, (9-2)/2 - .5 */
    CHECK(fabsf(u - 2.75f) < 1e-6f && fabsf(v - 3.0f) < 1e-6f, "inside: (%g, %g)", u, v);
    g.flipped = 1; /* x mirrored about the box centre 12: 6 -> column 3, 17 -> 0.25 */
    ssl_crop_geo_to_feature(&g, 6, 3, 4, 4, &u, &v);
    CHECK(fabsf(u - 3.0f) < 1e-6f && fabsf(v - 0.0f) < 1e-6f, "flipped cell centre: (%g, %g)", u, v);
    ssl_crop_geo_to_feature(&g, 17, 9, 4, 4, &u, &v);
    CHECK(fabsf(u - 0.25f) < 1e-6f && fabsf(v - 3.0f) < 1e-6f, "flipped inside: (%g, %g)", u, v);
    ssl_crop_geo_to_feature(&g, 4, 2, 4, 4, &u, &v);
    CHECK(fabsf(u - 3.5f) < 1e-6f, "flipped corner: u %g", u);
    /* a 2 x 3 map of a non-square box */
    ssl_crop_geo r = {0, 10, 30, 20, 0};
    ssl_crop_geo_to_feature(&r, 25, 25, 2, 3, &u, &v); /* 25*3/30 - .5, 15*2/20 - .5 */
    CHECK(fabsf(u - 2.0f) < 1e-6f && fabsf(v - 1.0f) < 1e-6f, "2x3 map: (%g, %g)", u, v);
}

/* An image whose pixel (y, x) is 10 x + y: bilinear resampling of a linear
 * ramp is exact, so the recorded box and flip predict every output pixel. */
static void test_aug_geometry(void)
{
    enum { H = 20, W = 24, O = 12 };
    uint8_t src[H * W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) src[y * W + x] = (uint8_t)(10 * x + y);
    ssl_aug a;
    ssl_aug_eval(&a, 1, O, O);
    a.crop_scale_min = 0.2f;
    a.crop_scale_max = 0.7f;
    a.crop_ratio_min = 0.75f;
    a.crop_ratio_max = 4.0f / 3.0f;
    a.flip_p = 0.5f;
    a.mean[0] = 0;
    a.std[0] = 1;
    float *scratch = malloc(sizeof(float) * ssl_aug_scratch_floats(&a, 1, H, W));
    float out[O * O], out2[O * O];
    int flips = 0, bad_pix = 0, bad_map = 0, bad_same = 0;
    for (int t = 0; t < 60; t++) {
        ssl_rng r, r2;
        ssl_rng_seed(&r, 100 + t);
        r2 = r;
        ssl_crop_geo g;
        ssl_aug_apply_geo(&a, src, 1, H, W, out, scratch, &r, &g);
        ssl_aug_apply(&a, src, 1, H, W, out2, scratch, &r2);
        bad_same += memcmp(out, out2, sizeof out) != 0 || ssl_rng_u64(&r) != ssl_rng_u64(&r2);
        flips += g.flipped;
        CHECK(g.x0 >= 0 && g.y0 >= 0 && g.x0 + g.w <= W && g.y0 + g.h <= H && g.w >= 1 && g.h >= 1,
              "box (%g, %g, %g, %g) outside the image", g.x0, g.y0, g.w, g.h);
        for (int y = 0; y < O; y++)
            for (int x = 0; x < O; x++) {
                int xs = g.flipped ? O - 1 - x : x; /* column before the flip */
                /* source point of the view pixel's centre, continuous coordinates */
                float X = g.x0 + ((float)xs + 0.5f) * g.w / O, Y = g.y0 + ((float)y + 0.5f) * g.h / O;
                /* as a pixel index, clamped to the box as the resize clamps */
                float cx = fminf(fmaxf(X - 0.5f, g.x0), g.x0 + g.w - 1);
                float cy = fminf(fmaxf(Y - 0.5f, g.y0), g.y0 + g.h - 1);
                float want = (10 * cx + cy) / 255.0f;
                bad_pix += fabsf(out[y * O + x] - want) > 1e-4f;
                float u, v;
                ssl_crop_geo_to_feature(&g, X, Y, O, O, &u, &v);
                bad_map += fabsf(u - (float)x) > 1e-4f || fabsf(v - (float)y) > 1e-4f;
            }
    }
    CHECK(flips > 5 && flips < 55, "%d flips in 60 draws", flips);
    CHECK(bad_pix == 0, "%d view pixels not where the recorded geometry puts them", bad_pix);
    CHECK(bad_map == 0, "%d view pixels whose source point maps elsewhere", bad_map);
    CHECK(bad_same == 0, "ssl_aug_apply_geo differs from ssl_aug_apply in %d draws", bad_same);
    free(scratch);
}

/* The loader's geometries are those of the pixels it returns (recomputed
 * from its documented per-sample stream; labels carry the image index). */
static void test_loader_geometry(void)
{
    enum { N = 12, S = 16, BATCH = 4 };
    ssl_dataset ds = {.n = N, .c = 1, .h = S, .w = S, .n_classes = N};
    ds.images = malloc(N * S * S);
    ds.labels = malloc(sizeof(int32_t) * N);
    ssl_rng r;
    ssl_rng_seed(&r, 3);
    for (int i = 0; i < N * S * S; i++) ds.images[i] = (uint8_t)ssl_rng_below(&r, 256);
    for (int i = 0; i < N; i++) ds.labels[i] = i;
    ssl_aug augs[2];
    ssl_aug_simclr(&augs[0], 1, S, S);
    augs[1] = augs[0];
    augs[1].out_h = augs[1].out_w = 10;
    float *scratch = malloc(sizeof(float) * ssl_aug_scratch_floats(&augs[0], 1, S, S));
    float view[S * S];
    for (int workers = 0; workers <= 2; workers += 2) {
        ssl_loader *l;
        char err[SSL_ERR_LEN];
        CHECK(ssl_loader_create(&l, &ds, augs, 2, BATCH, 77, workers, err) == SSL_OK, "loader: %s", err);
        CHECK(ssl_loader_geo(l) == NULL, "geometry before the first batch");
        int bad_geo = 0, bad_pix = 0, n = 0;
        for (int b = 0; b < 5; b++) {
            float *const *views;
            const int32_t *labels;
            int epoch, step;
            CHECK(ssl_loader_next(l, &views, &labels, &epoch, &step, err) == SSL_OK, "next: %s", err);
            const ssl_crop_geo *const *geo = ssl_loader_geo(l);
            CHECK(geo != NULL, "no geometry for batch %d", b);
            if (!geo) break;
            for (int i = 0; i < BATCH; i++)
                for (int v = 0; v < 2; v++) {
                    ssl_rng rv;
                    ssl_crop_geo g;
                    ssl_rng_derive(&rv, 77, (uint64_t)epoch * N + (uint64_t)labels[i], (uint64_t)v);
                    ssl_aug_apply_geo(&augs[v], ds.images + (size_t)labels[i] * S * S, 1, S, S, view,
                                      scratch, &rv, &g);
                    size_t vs = (size_t)augs[v].out_h * augs[v].out_w;
                    bad_pix += memcmp(view, views[v] + i * vs, vs * sizeof(float)) != 0;
                    bad_geo += memcmp(&g, &geo[v][i], sizeof g) != 0;
                    n++;
                }
        }
        CHECK(n == 40 && bad_pix == 0 && bad_geo == 0,
              "%d workers: %d of %d views with other pixels, %d with another geometry", workers,
              bad_pix, n, bad_geo);
        ssl_loader_free(l);
    }
    free(scratch);
    free(ds.images);
    free(ds.labels);
}

/* ---- the golden with geometry (test_methods' replay plus m.geo) ---- */

static double meta_num(const ssl_st_file *f, const char *key)
{
    const char *v = ssl_st_meta(f, key);
    CHECK(v != NULL, "golden metadata '%s' missing", key);
    return v ? atof(v) : 0;
}

static const float *golden(const ssl_st_file *f, const char *name, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    int ok = e && e->dtype == SSL_DT_F32 && (long)(e->nbytes / sizeof(float)) == n;
    CHECK(ok, "golden '%s' missing or not %ld F32 values", name, n);
    return ok ? (const float *)e->data : NULL;
}

static double max_abs(const float *x, long n)
{
    double m = 0;
    for (long i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

static void test_golden_geometry(void)
{
    const char *dir = getenv("SSL_GOLDEN_DIR");
    char path[1024], err[SSL_ERR_LEN];
    snprintf(path, sizeof path, "%s/method_dense_geo.safetensors", dir && dir[0] ? dir : "build/golden");
    ssl_st_file f;
    if (ssl_st_load(&f, path, err) != SSL_OK) {
        CHECK(0, "golden: %s", err);
        return;
    }
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    ssl_method m;
    memset(&m, 0, sizeof m);
    /* the golden's config: {"temperature": 0.2, "proj_hidden": 24, "proj_dim": 16, "dense_weight": 0.7} */
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.temperature = 0.2f;
    cfg.proj_hidden = 24;
    cfg.proj_dim = 16;
    cfg.dense_weight = 0.7f;
    CHECK(strstr(ssl_st_meta(&f, "config"), "\"dense_weight\": 0.7") != NULL, "golden config changed");
    ssl_encoder_config enc = ssl_encoder_config_resnet((int)meta_num(&f, "depth"), (int)meta_num(&f, "width"),
                             (int)meta_num(&f, "in_channels"), SSL_STEM_SMALL);
    int rc = ssl_method_create(&m, &ssl_method_dense, &cfg, &enc, &ctx.rng, err);
    CHECK(rc == SSL_OK, "create: %s", err);
    if (!rc) rc = ssl_checkpoint_load_tensors(&f, path, &m, err);
    CHECK(rc == SSL_OK, "initial state: %s", err);
    int np = m.encoder.reg->n_params + m.heads.n_params;
    ssl_param *params = malloc(sizeof(ssl_param) * np);
    memcpy(params, m.encoder.reg->params, sizeof(ssl_param) * m.encoder.reg->n_params);
    memcpy(params + m.encoder.reg->n_params, m.heads.params, sizeof(ssl_param) * m.heads.n_params);
    ssl_optim_config oc = {.kind = SSL_OPTIM_SGD, .lr = (float)meta_num(&f, "lr")};
    ssl_optim *opt = NULL;
    if (!rc) CHECK(ssl_optim_create(&opt, &oc, params, np, err) == SSL_OK, "optimizer: %s", err);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    for (int k = 0; opt && k < (int)meta_num(&f, "steps"); k++) {
        char key[600];
        ssl_tensor in[2], *vp[2];
        ssl_crop_geo geo[2][64];
        const ssl_crop_geo *gp[2] = {geo[0], geo[1]};
        int B = 0;
        for (int v = 0; v < 2; v++) {
            snprintf(key, sizeof key, "step%d.view%d", k, v);
            const ssl_st_entry *e = ssl_st_find(&f, key);
            CHECK(e != NULL, "%s missing", key);
            if (!e) goto out;
            int shape[4] = {(int)e->shape[0], (int)e->shape[1], (int)e->shape[2], (int)e->shape[3]};
            B = shape[0];
            in[v] = ssl_tensor_wrap((float *)e->data, NULL, 4, shape, SSL_LAYOUT_NCHW);
            vp[v] = &in[v];
            snprintf(key, sizeof key, "step%d.geo%d", k, v);
            const float *gr = B <= 64 ? golden(&f, key, 5L * B) : NULL;
            if (!gr) goto out;
            for (int i = 0; i < B; i++)
                geo[v][i] = (ssl_crop_geo){gr[5 * i], gr[5 * i + 1], gr[5 * i + 2], gr[5 * i + 3],
                                           gr[5 * i + 4] != 0};
        }
        m.geo = gp;
        m.step = k;
        ssl_graph_reset(&g);
        ssl_tensor *loss = m.ops->loss(&m, &g, vp);
        CHECK(loss != NULL, "loss: %s", ctx.err);
        if (!loss) break;
        snprintf(key, sizeof key, "step%d.loss", k);
        const float *lref = golden(&f, key, 1);
        if (lref) CHECK_CLOSE(loss->data, lref, 1, 0.0, 1e-4, key);
        ssl_registry_zero_grad(m.encoder.reg);
        ssl_registry_zero_grad(&m.heads);
        CHECK(ssl_graph_backward(&g, loss) == SSL_OK, "backward: %s", ctx.err);
        for (int i = 0; i < np; i++) {
            snprintf(key, sizeof key, "step%d.grad.%s", k, params[i].name);
            const float *ref = golden(&f, key, params[i].numel);
            if (ref)
                CHECK_CLOSE(params[i].grad, ref, params[i].numel,
                            1e-6 + 1e-4 * max_abs(ref, params[i].numel), 1e-3, key);
        }
        ssl_optim_step(opt, oc.lr);
        for (int i = 0; i < np; i++) {
            snprintf(key, sizeof key, "step%d.after.%s", k, params[i].name);
            const float *ref = golden(&f, key, params[i].numel);
            if (ref)
                CHECK_CLOSE(params[i].data, ref, params[i].numel,
                            1e-7 + 1e-5 * max_abs(ref, params[i].numel), 1e-4, key);
        }
    }
out:
    m.geo = NULL;
    ssl_graph_free(&g);
    ssl_optim_free(opt);
    free(params);
    ssl_method_free(&m);
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

/* ---- the loss's extremes and the weight's ends ---- */

static int make(ssl_method *m, ssl_ctx *ctx, const ssl_method_ops *ops, float weight, char *err)
{
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    cfg.proj_hidden = 32;
    cfg.proj_dim = 16;
    if (ops == &ssl_method_dense) cfg.dense_weight = weight;
    ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    ssl_rng_seed(&ctx->rng, 1234);
    return ssl_method_create(m, ops, &cfg, &enc, &ctx->rng, err);
}

/* Loss of m on views (x0, x1) (B, 1, S, S) with geometries g0, g1 (NULL:
 * none); *t (if not NULL) the loss tensor, for a backward. */
static float loss_of(ssl_method *m, ssl_graph *g, float *x0, float *x1, int B, int S,
                     const ssl_crop_geo *g0, const ssl_crop_geo *g1, ssl_tensor **t)
{
    int shape[4] = {B, 1, S, S};
    ssl_tensor in[2] = {ssl_tensor_wrap(x0, NULL, 4, shape, SSL_LAYOUT_NCHW),
                        ssl_tensor_wrap(x1, NULL, 4, shape, SSL_LAYOUT_NCHW)};
    ssl_tensor *vp[2] = {&in[0], &in[1]};
    const ssl_crop_geo *gp[2] = {g0, g1};
    m->geo = g0 ? gp : NULL;
    ssl_graph_reset(g);
    ssl_tensor *l = m->ops->loss(m, g, vp);
    m->geo = NULL;
    if (t) *t = l;
    CHECK(l != NULL, "loss failed: %s", g->ctx->err);
    return l ? l->data[0] : NAN;
}

static void test_loss_properties(void)
{
    enum { B = 6, S = 28 };
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    char err[SSL_ERR_LEN];
    float *x = malloc(sizeof(float) * B * S * S);
    ssl_rng r;
    ssl_rng_seed(&r, 9);
    for (int i = 0; i < B * S * S; i++) x[i] = ssl_rng_normal(&r);
    /* crops of a 40 x 40 source; view 1 the same crop, and mismatched ones */
    ssl_crop_geo same[B], flip[B], shift[B];
    for (int i = 0; i < B; i++) {
        same[i] = (ssl_crop_geo){(float)(2 * i), (float)(10 - i), (float)(20 + i), (float)(24 - i), i % 2};
        flip[i] = same[i];
        flip[i].flipped = !same[i].flipped;
        shift[i] = same[i];
        shift[i].x0 += 5;
        shift[i].y0 += 3;
    }
    ssl_method m;
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    if (make(&m, &ctx, &ssl_method_dense, 1.0f, err)) {
        CHECK(0, "create: %s", err);
    } else {
        CHECK(ssl_registry_find(&m.heads, "projector.0.weight", NULL) == NULL,
              "dense-weight 1 builds an image projector");
        float l_same = loss_of(&m, &g, x, x, B, S, same, same, NULL);
        float l_none = loss_of(&m, &g, x, x, B, S, NULL, NULL, NULL);
        float l_flip = loss_of(&m, &g, x, x, B, S, same, flip, NULL);
        float l_shift = loss_of(&m, &g, x, x, B, S, same, shift, NULL);
        CHECK(fabsf(l_same - l_none) < 1e-5f, "identical crops %g vs no geometry %g", l_same, l_none);
        CHECK(l_same < l_flip && l_same < l_shift,
              "identical crops %g not below mismatched ones (flip %g, shift %g)", l_same, l_flip, l_shift);
        /* every image's crops disjoint: no patch term, and no failure */
        ssl_crop_geo far[B];
        for (int i = 0; i < B; i++) far[i] = (ssl_crop_geo){100, 100, 5, 5, 0};
        ssl_tensor *lt = NULL;
        float l_far = loss_of(&m, &g, x, x, B, S, same, far, &lt);
        CHECK(l_far == 0.0f, "no overlap anywhere: loss %g, want 0", l_far);
        if (lt) {
            ssl_registry_zero_grad(m.encoder.reg);
            ssl_registry_zero_grad(&m.heads);
            CHECK(ssl_graph_backward(&g, lt) == SSL_OK, "backward: %s", ctx.err);
            CHECK(max_abs(m.encoder.reg->params[0].grad, m.encoder.reg->params[0].numel) == 0,
                  "no overlap anywhere, yet a gradient");
        }
        ssl_method_free(&m);
    }
    /* dense-weight 0: SimCLR's loss exactly (same init stream, same heads) */
    ssl_method d, s;
    int ok = make(&d, &ctx, &ssl_method_dense, 0.0f, err) == SSL_OK;
    ok = ok && make(&s, &ctx, &ssl_method_simclr, 0, err) == SSL_OK;
    CHECK(ok, "create: %s", err);
    if (ok) {
        CHECK(d.heads.n_params == s.heads.n_params, "dense-weight 0 has %d head tensors, simclr %d",
              d.heads.n_params, s.heads.n_params);
        float ld = loss_of(&d, &g, x, x + S * S, B - 1, S, NULL, NULL, NULL);
        float ls = loss_of(&s, &g, x, x + S * S, B - 1, S, NULL, NULL, NULL);
        CHECK(ld == ls, "dense-weight 0: %.7g, simclr %.7g", ld, ls);
        ssl_method_free(&d);
        ssl_method_free(&s);
    }
    /* out-of-range weights */
    float bad[2] = {1.5f, NAN};
    for (int i = 0; i < 2; i++) {
        ok = make(&d, &ctx, &ssl_method_dense, bad[i], err) == SSL_OK;
        CHECK(!ok && strstr(err, "--dense-weight must be in [0, 1]"), "dense-weight %g: %s", bad[i],
              ok ? "accepted" : err);
        if (ok) ssl_method_free(&d);
    }
    ssl_graph_free(&g);
    free(x);
    ssl_ctx_free(&ctx);
}

int main(void)
{
    test_geo_to_feature();
    test_aug_geometry();
    test_loader_geometry();
    test_golden_geometry();
    test_loss_properties();
    return check_report("test_dense_method");
}
