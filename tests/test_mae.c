/* MAE (src/methods/mae.c):
 *   1. len_keep = int(L * (1 - ratio)) as the official code computes it in
 *      Python, for ratios where the float32 value alone gives another count;
 *   2. random masking: K distinct in-range patches per image, images
 *      differ, the same (seed, step) repeats, another step differs, a batch
 *      split gives the same masks, every patch is kept about K/L of the time;
 *   3. PyTorch parity with tests/torch/gen_mae.py (models_mae.py in float64
 *      on the same weights, inputs and masks): 8x8 images, encoder 16 wide,
 *      2 blocks; gray with patch 2 and learned positions, RGB with patch 4
 *      and sin-cos positions (mask ratio 0.5), RGB with patch 2, no class
 *      token, no qkv bias and a 2-block decoder; decoder 8 wide. State loaded
 *      by name (both ways), then loss, prediction, mask, every encoder and
 *      decoder gradient (mask_token included) and the reconstructed images,
 *      with norm_pix_loss 0 and 1; our decoder_pos_embed against MAE's table;
 *      tolerances as tests/test_vit.c's models (loss relative 1e-5);
 *   4. central differences of the loss for entries of decoder parameters,
 *      the mask token and the class token;
 *   5. the method: defaults and bad options, views, a ResNet refused,
 *      parameter names, init as models_mae's, masks that follow the step
 *      (and the image index in a held-out evaluation), the counts for the
 *      evaluation, the arena stops growing, reconstruction for `show`. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "graph_test.h"
#include "methods/mae.h"
#include "selfsup/io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tolerances {
    double out_atol, out_rtol, loss_rtol, grad_atol_of_max, grad_rtol;
} tolerances;

static const tolerances TOL = {1e-4, 1e-3, 1e-5, 1e-4, 1e-3};

/* ------------------------------------------------------------ helpers */

static const ssl_st_entry *entry(const ssl_st_file *f, const char *name, ssl_dtype dt, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    long m = 1;
    if (e)
        for (int d = 0; d < e->ndim; d++) m *= (long)e->shape[d];
    int ok = e && e->dtype == dt && (n < 0 || m == n);
    CHECK(ok, "golden '%s' missing, of another dtype or not %ld values", name, n);
    return ok ? e : NULL;
}

static const float *gold(const ssl_st_file *f, const char *name, long n)
{
    const ssl_st_entry *e = entry(f, name, SSL_DT_F32, n);
    return e ? e->data : NULL;
}

static int meta_int(const ssl_st_file *f, const char *key)
{
    const char *v = ssl_st_meta(f, key);
    CHECK(v != NULL, "golden metadata '%s' missing", key);
    return v ? atoi(v) : 0;
}

static float meta_float(const ssl_st_file *f, const char *key)
{
    const char *v = ssl_st_meta(f, key);
    CHECK(v != NULL, "golden metadata '%s' missing", key);
    return v ? strtof(v, NULL) : 0.0f;
}

/* Copies every parameter and buffer of r from f by name (same shape);
 * returns the number missing or different. */
static int copy_state(ssl_registry *r, const ssl_st_file *f, const char *what)
{
    int bad = 0;
    for (int i = 0; i < r->n_params + r->n_buffers; i++) {
        int is_p = i < r->n_params;
        const ssl_param *p = is_p ? &r->params[i] : NULL;
        const ssl_buffer *b = is_p ? NULL : &r->buffers[i - r->n_params];
        const char *name = is_p ? p->name : b->name;
        const int64_t *shape = is_p ? p->shape : b->shape;
        const int ndim = is_p ? p->ndim : b->ndim;
        const ssl_st_entry *e = ssl_st_find(f, name);
        int ok = e && e->dtype == SSL_DT_F32 && e->ndim == ndim;
        for (int d = 0; ok && d < ndim; d++) ok = e->shape[d] == shape[d];
        if (!ok) fprintf(stderr, "%s: '%s' missing in the golden file or of another shape\n", what, name);
        else memcpy(is_p ? p->data : b->data, e->data, e->nbytes);
        bad += !ok;
    }
    return bad;
}

static const ssl_param *find_param(const ssl_registry *r, const char *name)
{
    for (int i = 0; i < r->n_params; i++)
        if (!strcmp(r->params[i].name, name)) return &r->params[i];
    return NULL;
}

/* ----------------------------------------------------------- masking */

static void test_len_keep(void)
{
    ssl_st_file f;
    if (!golden_load(&f, "mae_len_keep.safetensors", "gen_mae.py")) return;
    const ssl_st_entry *c = entry(&f, "cases", SSL_DT_F32, -1);
    const ssl_st_entry *k = c ? entry(&f, "len_keep", SSL_DT_I32, (long)c->shape[0]) : NULL;
    if (c && k) {
        const float *cs = c->data;
        const int32_t *want = k->data;
        int bad = 0, naive_differs = 0;
        for (long i = 0; i < (long)c->shape[0]; i++) {
            int L = (int)cs[2 * i];
            float r = cs[2 * i + 1];
            int got = ssl_mae_len_keep(L, r);
            if (got != want[i]) {
                if (bad++ < 5) fprintf(stderr, "len_keep(%d, %g) = %d, Python %d\n", L, r, got, want[i]);
            }
            naive_differs += (int)((double)L * (1.0 - (double)r)) != want[i];
        }
        CHECK(bad == 0, "len_keep differs from Python's in %d of %ld cases", bad, (long)c->shape[0]);
        /* the cases must include some the float32 value alone gets wrong */
        CHECK(naive_differs > 0, "no case tells the typed ratio from its float32 value");
        printf("len_keep: %ld cases as Python (%d where float32 arithmetic would differ)\n",
               (long)c->shape[0], naive_differs);
    }
    ssl_st_free(&f);
    CHECK(ssl_mae_len_keep(49, 0.75f) == 12 && ssl_mae_len_keep(16, 0.75f) == 4 &&
              ssl_mae_len_keep(196, 0.75f) == 49,
          "len_keep at the default ratio");
}

static void test_masks(void)
{
    enum { N = 8, L = 49, K = 12 };
    int32_t a[N * K], b[N * K], c[N * K], d[N * K];
    ssl_mae_masks(1234, 7, 0, N, L, K, a);
    ssl_mae_masks(1234, 7, 0, N, L, K, b);
    ssl_mae_masks(1234, 8, 0, N, L, K, c);
    ssl_mae_masks(1234, 7, 3, N - 3, L, K, d);
    int valid = 1, same_rows = 0;
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++) {
            int32_t t = a[n * K + k];
            valid &= t >= 0 && t < L && (k == 0 || t > a[n * K + k - 1]); /* increasing: distinct */
        }
        for (int m = 0; m < n; m++) same_rows += !memcmp(a + n * K, a + m * K, sizeof(int32_t) * K);
    }
    CHECK(valid, "masks: indices out of range, repeated or not increasing");
    CHECK(same_rows == 0, "masks: %d pairs of images got the same mask", same_rows);
    CHECK(!memcmp(a, b, sizeof a), "masks: the same (seed, step) gave other masks");
    CHECK(memcmp(a, c, sizeof a) != 0, "masks: another step gave the same masks");
    CHECK(!memcmp(a + 3 * K, d, sizeof(int32_t) * (N - 3) * K),
          "masks: image 3 of a batch differs from image 0 of a batch starting at 3");
    /* uniform: each of 16 patches kept ~ 4/16 of 4000 times (sd ~ 27) */
    enum { M = 4000, L2 = 16, K2 = 4 };
    int32_t *many = malloc(sizeof(int32_t) * M * K2);
    int count[L2] = {0}, lo = M, hi = 0;
    ssl_mae_masks(99, 0, 0, M, L2, K2, many);
    for (int i = 0; i < M * K2; i++) count[many[i]]++;
    for (int t = 0; t < L2; t++) {
        lo = count[t] < lo ? count[t] : lo;
        hi = count[t] > hi ? count[t] : hi;
    }
    CHECK(lo > 880 && hi < 1120, "masks: patch keep counts %d..%d, expected ~1000", lo, hi);
    free(many);
}

/* ------------------------------------------------------ PyTorch parity */

typedef struct model {
    ssl_vit enc;
    ssl_registry heads;
    ssl_mae_decoder dec;
    int N, K, L, E, C, S;
} model;

/* The golden model: encoder and decoder from the file's config, the C
 * decoder table compared with MAE's before the state is loaded. */
static int load_model(model *m, const ssl_st_file *f, const char *what, ssl_rng *rng)
{
    char err[SSL_ERR_LEN] = "";
    const char *pos = ssl_st_meta(f, "pos");
    ssl_vit_config cfg = {.img_size = meta_int(f, "img_size"), .patch = meta_int(f, "patch"),
                          .in_chans = meta_int(f, "in_chans"), .embed_dim = meta_int(f, "embed_dim"),
                          .depth = meta_int(f, "depth"), .heads = meta_int(f, "heads"),
                          .mlp_ratio = meta_float(f, "mlp_ratio"),
                          .qkv_bias = meta_int(f, "qkv_bias"),
                          .class_token = meta_int(f, "class_token")};
    CHECK(pos && ssl_vit_pos_from_name(pos, &cfg.pos) == SSL_OK, "%s: bad pos", what);
    memset(m, 0, sizeof *m);
    ssl_registry_init(&m->heads);
    if (ssl_vit_init(&m->enc, &cfg, rng, err) != SSL_OK) {
        CHECK(0, "%s: %s", what, err);
        return 0;
    }
    if (ssl_mae_decoder_init(&m->dec, &m->heads, &m->enc, meta_int(f, "decoder_dim"),
                             meta_int(f, "decoder_depth"), meta_int(f, "decoder_heads"), rng,
                             err) != SSL_OK) {
        CHECK(0, "%s: %s", what, err);
        return 0;
    }
    const float *table = gold(f, "decoder_pos_embed", ssl_tensor_numel(&m->dec.pos_embed));
    if (table)
        CHECK_CLOSE(m->dec.pos_embed.data, table, ssl_tensor_numel(&m->dec.pos_embed), 1e-7, 1e-6,
                    "decoder_pos_embed vs MAE's get_2d_sincos_pos_embed");
    CHECK(copy_state(&m->enc.reg, f, what) == 0, "%s: encoder state", what);
    CHECK(copy_state(&m->heads, f, what) == 0, "%s: decoder state", what);
    int n_state = 0;
    for (int i = 0; i < f->n; i++) {
        const char *name = f->entries[i].name;
        if (!strncmp(name, "res.", 4)) continue;
        n_state++;
        CHECK(ssl_registry_find(&m->enc.reg, name, NULL) || ssl_registry_find(&m->heads, name, NULL),
              "%s: torch's '%s' has no counterpart", what, name);
    }
    CHECK(n_state == m->enc.reg.n_params + m->enc.reg.n_buffers + m->heads.n_params + m->heads.n_buffers,
          "%s: %d state_dict tensors in torch", what, n_state);
    m->L = m->enc.n_patches;
    m->E = m->dec.patch_dim;
    m->C = cfg.in_chans;
    m->S = cfg.img_size;
    return 1;
}

static void free_model(model *m)
{
    ssl_mae_decoder_free(&m->dec);
    ssl_registry_free(&m->heads);
    ssl_vit_free(&m->enc);
}

static void zero_all(model *m)
{
    ssl_registry_zero_grad(&m->enc.reg);
    ssl_registry_zero_grad(&m->heads);
}

/* Every gradient of r against res.np<k>.grad.<name>; the largest share of
 * the tolerance used. */
static double compare_grads(const ssl_registry *r, const ssl_st_file *f, int np, const char *what)
{
    double worst = 0;
    char key[300], msg[400];
    for (int i = 0; i < r->n_params; i++) {
        const ssl_param *p = &r->params[i];
        snprintf(key, sizeof key, "res.np%d.grad.%s", np, p->name);
        const float *gr = gold(f, key, p->numel);
        if (!gr) continue;
        double atol = 1e-6 + TOL.grad_atol_of_max * max_abs(gr, p->numel);
        snprintf(msg, sizeof msg, "%s %s", what, key);
        CHECK_CLOSE(p->grad, gr, p->numel, atol, TOL.grad_rtol, msg);
        double d = check_close_ratio(p->grad, gr, p->numel, atol, TOL.grad_rtol, NULL);
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

static void parity(const char *file, int n_threads)
{
    ssl_st_file f;
    if (!golden_load(&f, file, "gen_mae.py")) return;
    char what[96];
    snprintf(what, sizeof what, "%.*s/%dt", (int)(strlen(file) - 12), file, n_threads);
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 5, n_threads);
    model m;
    const ssl_st_entry *xe = entry(&f, "res.input", SSL_DT_F32, -1);
    if (!load_model(&m, &f, what, &ctx.rng) || !xe || xe->ndim != 4) goto out;
    const int N = (int)xe->shape[0], L = m.L, E = m.E, S = m.S, C = m.C;
    const ssl_st_entry *ke = entry(&f, "res.ids_keep", SSL_DT_I32, -1);
    if (!ke || ke->ndim != 2 || ke->shape[0] != N) goto out;
    const int K = (int)ke->shape[1];
    CHECK(K == meta_int(&f, "len_keep") && K == ssl_mae_len_keep(L, meta_float(&f, "mask_ratio")),
          "%s: %d visible patches in torch, len_keep %d here", what, K,
          ssl_mae_len_keep(L, meta_float(&f, "mask_ratio")));
    const int32_t *keep = ke->data;
    const float *mask_ref = gold(&f, "res.mask", (long)N * L),
                *mimg_ref = gold(&f, "res.mask_img", (long)N * S * S);
    int xs[4] = {N, C, S, S};
    ssl_tensor x = ssl_tensor_wrap(xe->data, NULL, 4, xs, SSL_LAYOUT_NCHW);
    float *mimg = malloc(sizeof(float) * N * S * S), *recon = malloc(sizeof(float) * N * C * S * S);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    for (int np = 0; np < 2; np++) {
        char key[64], msg[160];
        ssl_graph_reset(&g);
        zero_all(&m);
        ssl_mae_out o;
        ssl_tensor *loss = ssl_mae_forward(&g, &m.enc, &m.dec, &x, keep, K, np, &o);
        CHECK(loss != NULL, "%s np%d: forward failed: %s", what, np, ctx.err);
        if (!loss) continue;
        snprintf(key, sizeof key, "res.np%d.loss", np);
        const float *lref = gold(&f, key, 1);
        snprintf(key, sizeof key, "res.np%d.pred", np);
        const float *pref = gold(&f, key, (long)N * L * E);
        snprintf(msg, sizeof msg, "%s np%d loss", what, np);
        if (lref) CHECK_CLOSE(loss->data, lref, 1, 0.0, TOL.loss_rtol, msg);
        snprintf(msg, sizeof msg, "%s np%d pred", what, np);
        if (pref) CHECK_CLOSE(o.pred->data, pref, (long)N * L * E, TOL.out_atol, TOL.out_rtol, msg);
        if (mask_ref)
            CHECK(!memcmp(o.mask, mask_ref, sizeof(float) * N * L), "%s: mask differs from MAE's", what);
        float lv = loss->data[0];
        CHECK(ssl_graph_backward(&g, loss) == SSL_OK, "%s np%d: backward: %s", what, np, ctx.err);
        snprintf(msg, sizeof msg, "%s np%d", what, np);
        double we = compare_grads(&m.enc.reg, &f, np, msg), wd = compare_grads(&m.heads, &f, np, msg);
        const ssl_param *mt = find_param(&m.heads, "mask_token");
        CHECK(mt && max_abs(mt->grad, mt->numel) > 0, "%s: mask_token got no gradient", msg);

        /* the same batch as pictures */
        ssl_graph_reset(&g);
        float lr = NAN;
        int rc = ssl_mae_reconstruct(&g, &m.enc, &m.dec, &x, keep, K, np, mimg, recon, &lr);
        CHECK(rc == SSL_OK && g.n_nodes == 0, "%s: reconstruct: %s (%d nodes)", msg, ctx.err, g.n_nodes);
        snprintf(key, sizeof key, "res.np%d.recon", np);
        const float *rref = gold(&f, key, (long)N * C * S * S);
        snprintf(msg, sizeof msg, "%s np%d recon", what, np);
        if (rc == SSL_OK && rref) CHECK_CLOSE(recon, rref, (long)N * C * S * S, TOL.out_atol, TOL.out_rtol, msg);
        if (rc == SSL_OK && mimg_ref)
            CHECK(!memcmp(mimg, mimg_ref, sizeof(float) * N * S * S), "%s: mask image differs", what);
        CHECK(lr == lv, "%s: reconstruct's loss %.9g, forward's %.9g", msg, lr, lv);
        printf("  %-16s norm_pix %d: loss %.6f vs torch %.6f; gradients use %.3f (encoder), "
               "%.3f (decoder) of their tolerance\n",
               what, np, lv, lref ? lref[0] : NAN, we, wd);
    }
    ssl_graph_free(&g);
    free(mimg);
    free(recon);
out:
    free_model(&m);
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

/* ------------------------------------------------ finite differences */

static double loss_at(ssl_graph *g, model *m, ssl_tensor *x, const int32_t *keep, int np)
{
    ssl_graph_reset(g);
    g->record = 0;
    ssl_tensor *l = ssl_mae_forward(g, &m->enc, &m->dec, x, keep, m->K, np, NULL);
    g->record = 1;
    return l ? l->data[0] : NAN;
}

static void fd(const char *file)
{
    ssl_st_file f;
    if (!golden_load(&f, file, "gen_mae.py")) return;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 6, 1);
    model m;
    const ssl_st_entry *xe = entry(&f, "res.input", SSL_DT_F32, -1),
                       *ke = entry(&f, "res.ids_keep", SSL_DT_I32, -1);
    if (load_model(&m, &f, file, &ctx.rng) && xe && ke) {
        int xs[4] = {(int)xe->shape[0], (int)xe->shape[1], (int)xe->shape[2], (int)xe->shape[3]};
        ssl_tensor x = ssl_tensor_wrap(xe->data, NULL, 4, xs, SSL_LAYOUT_NCHW);
        m.K = (int)ke->shape[1];
        static const char *const names[] = {"mask_token", "decoder_embed.weight",
                                            "decoder_blocks.0.attn.qkv.weight",
                                            "decoder_norm.weight", "decoder_pred.bias", "cls_token"};
        ssl_graph g;
        ssl_graph_init(&g, &ctx);
        for (int np = 0; np < 2; np++) {
            ssl_graph_reset(&g);
            zero_all(&m);
            ssl_tensor *l = ssl_mae_forward(&g, &m.enc, &m.dec, &x, ke->data, m.K, np, NULL);
            CHECK(l && ssl_graph_backward(&g, l) == SSL_OK, "fd: %s", ctx.err);
            for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
                const ssl_param *p = find_param(&m.heads, names[i]);
                if (!p) p = find_param(&m.enc.reg, names[i]);
                CHECK(p != NULL, "fd: no parameter %s", names[i]);
                if (!p) continue;
                double err = 0, scale = 0;
                for (long j = 0; j < p->numel && j < 8; j++) {
                    const long at = j * (p->numel / 8 > 1 ? p->numel / 8 : 1) % p->numel;
                    const float x0 = p->data[at];
                    const double h = ldexp(1.0 / 128, ilogb(fmax(1.0, fabs(x0))));
                    double fv[4];
                    static const double mul[4] = {-2, -1, 1, 2};
                    for (int k = 0; k < 4; k++) {
                        p->data[at] = (float)(x0 + mul[k] * h);
                        fv[k] = loss_at(&g, &m, &x, ke->data, np);
                    }
                    p->data[at] = x0;
                    double num = (8 * (fv[2] - fv[1]) - (fv[3] - fv[0])) / (12 * h), ana = p->grad[at];
                    err = fmax(err, fabs(num - ana));
                    scale = fmax(scale, fmax(fabs(num), fabs(ana)));
                }
                double rel = err / fmax(scale, 1e-6);
                CHECK(rel <= 1e-3 && scale > 1e-6, "fd norm_pix %d %s: relative error %.3g (scale %.3g)",
                      np, names[i], rel, scale);
                printf("  fd norm_pix %d %-34s rel err %.2e\n", np, names[i], rel);
            }
        }
        ssl_graph_free(&g);
    }
    free_model(&m);
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

/* ----------------------------------------------------------- method */

static void unset(ssl_method_config *c)
{
    /* every field SSL_UNSET, without the library's table (not this file's) */
    memset(c, 0, sizeof *c);
    c->mask_ratio = SSL_UNSET;
    c->decoder_dim = c->decoder_depth = c->decoder_heads = c->norm_pix_loss = SSL_UNSET;
}

static void test_validate(void)
{
    const ssl_method_ops *ops = &ssl_method_mae;
    ssl_method_config c;
    char err[SSL_ERR_LEN];
    unset(&c);
    CHECK(ops->validate(&c, err) == SSL_OK && c.mask_ratio == 0.75f && c.decoder_dim == 128 &&
              c.decoder_depth == 2 && c.decoder_heads == 4 && c.norm_pix_loss == 1,
          "mae defaults: %s", err);
    static const struct {
        int field;
        double v;
        const char *word;
    } bad[] = {{0, 1.0, "mask-ratio"}, {0, 0.0, "mask-ratio"}, {1, 10, "decoder-dim"},
               {1, 0, "decoder-dim"}, {2, 0, "decoder-depth"}, {3, 3, "decoder-heads"},
               {4, 2, "norm-pix-loss"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        unset(&c);
        if (bad[i].field == 0) c.mask_ratio = (float)bad[i].v;
        if (bad[i].field == 1) c.decoder_dim = (int)bad[i].v;
        if (bad[i].field == 2) c.decoder_depth = (int)bad[i].v;
        if (bad[i].field == 3) c.decoder_heads = (int)bad[i].v;
        if (bad[i].field == 4) c.norm_pix_loss = (int)bad[i].v;
        err[0] = 0;
        CHECK(ops->validate(&c, err) != SSL_OK && strstr(err, bad[i].word),
              "bad --%s %g accepted or unclear: '%s'", bad[i].word, bad[i].v, err);
    }
    ssl_aug a[SSL_MAX_VIEWS];
    unset(&c);
    ops->validate(&c, err);
    CHECK(ops->views(&c, 1, 28, 28, a) == 1 && a[0].out_h == 28 && a[0].crop_scale_min == 0.2f &&
              a[0].crop_scale_max == 1.0f && a[0].flip_p == 0.5f && a[0].jitter_p == 0 &&
              a[0].gray_p == 0 && a[0].blur_p == 0 && a[0].solarize_p == 0,
          "mae views: one crop 20-100%% + flip, no colour");
    CHECK(!strcmp(ops->optim.optimizer, "adamw") && ops->optim.lr == 1.5e-4f &&
              !strcmp(ops->optim.lr_scale, "linear") && ops->optim.weight_decay == 0.05f,
          "mae recipe");
}

/* A method as ssl_method_create would leave it, built here field by field. */
static int make_method(ssl_method *m, ssl_ctx *ctx, int class_token, char *err)
{
    memset(m, 0, sizeof *m);
    m->ops = &ssl_method_mae;
    unset(&m->cfg);
    m->cfg.decoder_dim = 16;
    m->cfg.decoder_heads = 2;
    if (m->ops->validate(&m->cfg, err)) return 0;
    ssl_registry_init(&m->heads);
    ssl_registry_init(&m->extra);
    ssl_encoder_config ec;
    memset(&ec, 0, sizeof ec);
    ec.kind = SSL_ENC_VIT;
    ssl_vit_preset(&ec.vit, "tiny", 12, 4, 1, err);
    ec.vit.embed_dim = 24;
    ec.vit.heads = 3;
    ec.vit.depth = 2;
    ec.vit.class_token = class_token;
    m->encoder.cfg = ec;
    if (ssl_vit_init(&m->encoder.vit, &ec.vit, &ctx->rng, err)) return 0;
    m->encoder.reg = &m->encoder.vit.reg;
    m->encoder.in_channels = 1;
    m->encoder.feat_dim = 24;
    return m->ops->init(m, &ctx->rng, err) == SSL_OK;
}

static void free_method(ssl_method *m)
{
    m->ops->free(m);
    ssl_vit_free(&m->encoder.vit);
    ssl_registry_free(&m->heads);
    ssl_registry_free(&m->extra);
}

static double loss_of(ssl_method *m, ssl_graph *g, ssl_tensor *x)
{
    ssl_graph_reset(g);
    ssl_tensor *l = m->ops->loss(m, g, &x);
    CHECK(l != NULL, "mae loss: %s", g->ctx->err);
    return l ? l->data[0] : NAN;
}

static void test_method(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 21, 2);
    char err[SSL_ERR_LEN] = "";
    ssl_method m;

    /* a ResNet is refused before anything is built */
    memset(&m, 0, sizeof m);
    m.ops = &ssl_method_mae;
    unset(&m.cfg);
    m.ops->validate(&m.cfg, err);
    m.encoder.cfg.kind = SSL_ENC_RESNET;
    CHECK(m.ops->init(&m, &ctx.rng, err) != SSL_OK && strstr(err, "ViT"), "mae on a ResNet: '%s'", err);
    m.ops->free(&m);

    int ok = make_method(&m, &ctx, 1, err);
    CHECK(ok, "mae method: %s", err);
    if (!ok) {
        ssl_ctx_free(&ctx);
        return;
    }
    /* names (models_mae's), weight decay groups, init */
    static const char *const want[] = {"decoder_embed.weight", "decoder_embed.bias", "mask_token",
                                       "decoder_blocks.0.norm1.weight", "decoder_blocks.1.mlp.fc2.bias",
                                       "decoder_norm.weight", "decoder_pred.weight", "decoder_pred.bias"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        CHECK(find_param(&m.heads, want[i]) != NULL, "heads: no %s", want[i]);
    CHECK(!strcmp(m.heads.params[0].name, "decoder_embed.weight") &&
              !strcmp(m.heads.params[m.heads.n_params - 1].name, "decoder_pred.bias") &&
              m.heads.n_buffers == 1 && !strcmp(m.heads.buffers[0].name, "decoder_pos_embed"),
          "heads: models_mae's order, decoder_pos_embed a buffer");
    int64_t n;
    CHECK(ssl_registry_find(&m.heads, "decoder_pos_embed", &n) && n == 10 * 16, "decoder_pos_embed (1, 10, 16)");
    CHECK(m.extra.n_counters == 1 && !strcmp(m.extra.counters[0].name, "mask_seed"), "mask_seed counter");
    const ssl_param *pw = find_param(&m.heads, "decoder_pred.weight"),
                    *pb = find_param(&m.heads, "decoder_pred.bias"),
                    *mt = find_param(&m.heads, "mask_token"),
                    *nw = find_param(&m.heads, "decoder_norm.weight"),
                    *qkv = find_param(m.encoder.reg, "blocks.1.attn.qkv.weight");
    if (pw && pb && mt && nw && qkv) {
        CHECK(!pw->no_decay && pb->no_decay && !mt->no_decay && nw->no_decay,
              "weight decay as MAE's groups: on weights and mask_token, not biases and norms");
        /* xavier-uniform: within +-sqrt(6 / (fan_in + fan_out)), using most of it */
        double bq = sqrt(6.0 / (24 + 72)), bp = sqrt(6.0 / (16 + 16)), mq = max_abs(qkv->data, qkv->numel),
               mp = max_abs(pw->data, pw->numel);
        CHECK(mq <= bq && mq > 0.9 * bq && mp <= bp && mp > 0.8 * bp,
              "xavier init: max |w| %.3f of bound %.3f, %.3f of %.3f", mq, bq, mp, bp);
        CHECK(max_abs(pb->data, pb->numel) == 0 && nw->data[3] == 1.0f && max_abs(mt->data, 16) < 0.1 &&
                  max_abs(mt->data, 16) > 0.005,
              "decoder biases 0, norm 1, mask token ~ N(0, 0.02)");
    }

    /* masks follow the step; a held-out evaluation's follow the image */
    const int N = 6, S = 12, L = 9, K = ssl_mae_len_keep(L, 0.75f);
    int xs[4] = {N, 1, S, S};
    float *xd = malloc(sizeof(float) * N * S * S);
    for (int i = 0; i < N * S * S; i++) xd[i] = ssl_rng_normal(&ctx.rng);
    ssl_tensor x = ssl_tensor_wrap(xd, NULL, 4, xs, SSL_LAYOUT_NCHW);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    m.step = 3;
    double l3 = loss_of(&m, &g, &x), l3b = loss_of(&m, &g, &x);
    m.step = 4;
    double l4 = loss_of(&m, &g, &x);
    CHECK(l3 == l3b && l3 != l4, "loss of step 3 twice %.9g %.9g, step 4 %.9g", l3, l3b, l4);
    int64_t correct = -1, total = -1;
    CHECK(m.ops->pretext_metrics(&m, &correct, &total) == 0 && correct == 0 && total == N * (L - K),
          "metrics: a regression over %d removed patches (got %lld)", N * (L - K), (long long)total);
    m.pretext_eval = 1;
    m.pretext_eval_first = 100;
    double e1 = loss_of(&m, &g, &x);
    m.step = 9;
    double e2 = loss_of(&m, &g, &x);
    CHECK(e1 == e2, "held-out masks depend on the step: %.9g %.9g", e1, e2);
    m.pretext_eval = 0;

    /* `show`: the held-out masks of images 100.., the evaluation's loss */
    float *mk = malloc(sizeof(float) * N * S * S), *rc = malloc(sizeof(float) * N * S * S);
    float loss_show = NAN;
    CHECK(ssl_mae_method_reconstruct(&m, &ctx, xd, N, 100, mk, rc, &loss_show, err) == SSL_OK,
          "show: %s", err);
    CHECK(loss_show == (float)e1, "show's loss %.9g, the held-out evaluation's %.9g", loss_show, e1);
    int32_t keep[6 * 2];
    CHECK(K == 2, "len_keep(9, 0.75) = %d, want 2", K);
    ssl_mae_masks((uint64_t)*m.extra.counters[0].value, UINT64_MAX, 100, N, L, K, keep);
    long removed = 0, wrong = 0;
    for (int i = 0; i < N; i++)
        for (int y = 0; y < S; y++)
            for (int xx = 0; xx < S; xx++) {
                int t = (y / 4) * 3 + xx / 4, vis = keep[i * K] == t || keep[i * K + 1] == t;
                float v = mk[(i * S + y) * S + xx];
                removed += v == 1.0f;
                wrong += v != (vis ? 0.0f : 1.0f);
            }
    CHECK(wrong == 0 && removed == (long)N * (L - K) * 16,
          "show: %ld pixels off the held-out masks, %ld removed", wrong, removed);
    double rmax = max_abs(rc, N * S * S);
    CHECK(rmax > 0 && isfinite(rmax), "show: reconstruction max |x| %g", rmax);

    /* training steps: the arena stops growing */
    int grows = 0;
    for (int s = 0; s < 3; s++) {
        m.step = 10 + s;
        ssl_graph_reset(&g);
        int before = g.arena.n_grows;
        ssl_registry_zero_grad(m.encoder.reg);
        ssl_registry_zero_grad(&m.heads);
        ssl_tensor *l = m.ops->loss(&m, &g, (ssl_tensor *[]){&x});
        CHECK(l && ssl_graph_backward(&g, l) == SSL_OK, "step %d: %s", s, ctx.err);
        if (s > 0) grows += g.arena.n_grows - before;
    }
    CHECK(grows == 0, "the arena grew %d times after the first step", grows);

    /* wrong inputs fail with a message */
    int bs[4] = {N, 1, 8, 8};
    ssl_tensor small = ssl_tensor_wrap(xd, NULL, 4, bs, SSL_LAYOUT_NCHW);
    ssl_graph_reset(&g);
    CHECK(!m.ops->loss(&m, &g, (ssl_tensor *[]){&small}) && strstr(ctx.err, "mae"),
          "8x8 views for a 12x12 encoder: '%s'", ctx.err);
    ssl_graph_free(&g);
    free(xd);
    free(mk);
    free(rc);
    free_method(&m);

    ssl_method m2;

    /* no class token; a ratio that leaves nothing visible */
    ok = make_method(&m2, &ctx, 0, err);
    CHECK(ok, "mae without a class token: %s", err);
    if (ok) {
        CHECK(ssl_registry_find(&m2.heads, "decoder_pos_embed", &n) && n == 9 * 16,
              "no class token: no class row in decoder_pos_embed");
        free_method(&m2);
    }
    memset(&m2, 0, sizeof m2);
    m2.ops = &ssl_method_mae;
    unset(&m2.cfg);
    m2.ops->validate(&m2.cfg, err);
    m2.cfg.mask_ratio = 0.9f;
    m2.encoder.cfg.kind = SSL_ENC_VIT;
    ssl_vit_config vc;
    ssl_vit_preset(&vc, "tiny", 12, 4, 1, err);
    vc.embed_dim = 24;
    vc.heads = 3;
    vc.depth = 1;
    ssl_vit_init(&m2.encoder.vit, &vc, &ctx.rng, err);
    ssl_registry_init(&m2.heads);
    ssl_registry_init(&m2.extra);
    CHECK(m2.ops->init(&m2, &ctx.rng, err) != SSL_OK && strstr(err, "mask-ratio"),
          "--mask-ratio 0.9 on 9 patches: '%s'", err);
    free_method(&m2);
    ssl_ctx_free(&ctx);
}

int main(void)
{
    test_len_keep();
    test_masks();
    printf("PyTorch parity (models_mae.py, float64):\n");
    parity("mae_c1_p2.safetensors", 1);
    parity("mae_c3_p4.safetensors", 1);
    parity("mae_c3_avg.safetensors", 1);
    parity("mae_c1_p2.safetensors", 2);
    printf("finite differences of the loss:\n");
    fd("mae_c1_p2.safetensors");
    test_validate();
    test_method();
    return check_report("test_mae");
}
