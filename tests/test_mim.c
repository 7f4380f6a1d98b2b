/* Masked image modeling (src/methods/simmim.c, beit.c, vq_tokenizer.c):
 *   1. PyTorch parity (tests/torch/gen_simmim.py, gen_beit.py; float64
 *      autograd on the same float32 inputs, weights loaded by name both
 *      ways): SimMIM's official forward and L1 formula (3 channels patch 2,
 *      1 channel patch 4), BEiT's masked-token cross-entropy (2 configs),
 *      the VQ tokenizer's loss, its three parts, its codes and the
 *      straight-through gradients (2 configs); loss and every parameter
 *      gradient, mask_token included, at test_vit.c's tolerances (loss
 *      1e-5 relative; gradients atol 1e-6 + 1e-4 max|grad|, rtol 1e-3);
 *   2. SimMIM's L1 against central differences, and its value in double;
 *   3. the mask generators: SimMIM's count is ceil(ratio * units) with
 *      whole units, BEiT's blocks are rectangles inside the grid whose
 *      union is the mask, never more than the budget and close to it on
 *      average, both reproducible from the seed and different across seeds;
 *   4. the tokenizer learns (recon error falls, codes stay in use thanks to
 *      dead-code restarts), tokenization matches the loss's codes and the
 *      thread count, and its file round-trips and rejects a foreign one;
 *   5. the methods (ssl_method_simmim, ssl_method_beit) on a tiny ViT:
 *      defaults, head names, masks from (seed, step), the mask token's
 *      gradient, pretext metrics, BEiT's fit_data training the tokenizer
 *      kept as "tokenizer." state, and configuration errors. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "graph_test.h"
#include "methods/mim.h"
#include "selfsup/io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct tolerances {
    double loss_rel, grad_atol_of_max, grad_rtol;
} tolerances;
static const tolerances TOL = {1e-5, 1e-4, 1e-3}; /* as tests/test_vit.c */

/* ------------------------------------------------------------ helpers */

static const ssl_st_entry *entry(const ssl_st_file *f, const char *name, ssl_dtype dt, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    long m = 1;
    if (e)
        for (int d = 0; d < e->ndim; d++) m *= (long)e->shape[d];
    int ok = e && e->dtype == dt && (n < 0 || m == n);
    CHECK(ok, "golden '%s' missing, not %s or not %ld values", name, ssl_dtype_name(dt), n);
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

/* Every parameter of the registries from f by name (dtype and shape);
 * returns the number of problems. */
static int copy_params(ssl_registry *const *regs, int n_regs, const ssl_st_file *f,
                       const char *what)
{
    int bad = 0, n_params = 0;
    for (int k = 0; k < n_regs; k++)
        for (int i = 0; i < regs[k]->n_params; i++, n_params++) {
            ssl_param *p = &regs[k]->params[i];
            const ssl_st_entry *e = ssl_st_find(f, p->name);
            int ok = e && e->dtype == SSL_DT_F32 && e->ndim == p->ndim;
            for (int d = 0; ok && d < p->ndim; d++) ok = e->shape[d] == p->shape[d];
            if (ok) memcpy(p->data, e->data, e->nbytes);
            else fprintf(stderr, "%s: '%s' missing in the golden file or of another shape\n", what, p->name);
            bad += !ok;
        }
    /* and the other way: every torch tensor that is not a result is ours */
    int n_torch = 0;
    for (int i = 0; i < f->n; i++) n_torch += strncmp(f->entries[i].name, "res.", 4) != 0;
    CHECK(n_torch == n_params, "%s: %d parameters in torch, %d here", what, n_torch, n_params);
    return bad;
}

/* Loss and every parameter gradient against res.loss and res.grad.<name>;
 * runs the backward. */
static void compare(ssl_graph *g, ssl_registry *const *regs, int n_regs, const ssl_st_file *f,
                    ssl_tensor *loss, const char *what)
{
    CHECK(loss != NULL, "%s: forward failed: %s", what, g->ctx->err);
    const float *lref = gold(f, "res.loss", 1);
    if (!loss || !lref) return;
    char key[300], msg[400];
    snprintf(msg, sizeof msg, "%s loss", what);
    CHECK_CLOSE(loss->data, lref, 1, TOL.loss_rel * fabs(lref[0]), 0.0, msg);
    for (int k = 0; k < n_regs; k++) ssl_registry_zero_grad(regs[k]);
    CHECK(ssl_graph_backward(g, loss) == SSL_OK, "%s: backward: %s", what, g->ctx->err);
    double worst = 0;
    for (int k = 0; k < n_regs; k++)
        for (int i = 0; i < regs[k]->n_params; i++) {
            const ssl_param *p = &regs[k]->params[i];
            snprintf(key, sizeof key, "res.grad.%s", p->name);
            const float *gr = gold(f, key, p->numel);
            if (!gr) continue;
            snprintf(msg, sizeof msg, "%s %s", what, key);
            double atol = 1e-6 + TOL.grad_atol_of_max * max_abs(gr, p->numel);
            CHECK_CLOSE(p->grad, gr, p->numel, atol, TOL.grad_rtol, msg);
            double d = check_close_ratio(p->grad, gr, p->numel, atol, TOL.grad_rtol, NULL);
            if (!(d <= worst)) worst = d;
        }
    printf("  %-16s loss %11.6f vs torch %11.6f, gradients use %.3f of their tolerance\n", what,
           (double)loss->data[0], (double)lref[0], worst);
}

/* The ViT of a golden file's metadata. */
static int vit_from_meta(ssl_vit *m, const ssl_st_file *f, ssl_rng *rng, const char *what)
{
    const char *ratio = ssl_st_meta(f, "mlp_ratio");
    ssl_vit_config cfg = {.img_size = meta_int(f, "img_size"), .patch = meta_int(f, "patch"),
                          .in_chans = meta_int(f, "in_chans"), .embed_dim = meta_int(f, "embed_dim"),
                          .depth = meta_int(f, "depth"), .heads = meta_int(f, "heads"),
                          .mlp_ratio = ratio ? strtof(ratio, NULL) : 0,
                          .qkv_bias = meta_int(f, "qkv_bias"), .pos = SSL_VIT_POS_LEARNED,
                          .class_token = meta_int(f, "class_token")};
    char err[SSL_ERR_LEN];
    int rc = ssl_vit_init(m, &cfg, rng, err);
    CHECK(rc == SSL_OK, "%s: %s", what, err);
    return rc;
}

static ssl_tensor input_of(const ssl_st_file *f)
{
    const ssl_st_entry *e = entry(f, "res.input", SSL_DT_F32, -1);
    int s[4] = {0, 0, 0, 0};
    if (e && e->ndim == 4)
        for (int d = 0; d < 4; d++) s[d] = (int)e->shape[d];
    return ssl_tensor_wrap(e ? e->data : NULL, NULL, 4, s, SSL_LAYOUT_NCHW);
}

/* ----------------------------------------------------------- parity */

static void parity_simmim(const char *file)
{
    ssl_st_file f;
    if (!golden_load(&f, file, "gen_simmim.py")) return;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    ssl_vit vit;
    if (vit_from_meta(&vit, &f, &ctx.rng, file)) goto out;
    ssl_registry heads;
    ssl_registry_init(&heads);
    ssl_tensor tok;
    ssl_simmim_head h;
    CHECK(ssl_mim_mask_token_init(&tok, &heads, vit.feat_dim, &ctx.rng) == SSL_OK &&
              ssl_simmim_head_init(&h, &heads, vit.feat_dim, vit.cfg.patch, vit.cfg.in_chans, &ctx.rng) == SSL_OK,
          "simmim head init");
    ssl_registry *regs[2] = {&vit.reg, &heads};
    CHECK(copy_params(regs, 2, &f, file) == 0, "%s: parameters do not match torch's", file);
    ssl_tensor x = input_of(&f);
    const ssl_st_entry *me = entry(&f, "res.mask", SSL_DT_U8, (long)x.shape[0] * vit.n_patches);
    if (x.data && me) {
        ssl_graph g;
        ssl_graph_init(&g, &ctx);
        char what[64];
        snprintf(what, sizeof what, "simmim %.*s", (int)(strlen(file) - 19), file + 7);
        compare(&g, regs, 2, &f, ssl_simmim_loss(&g, &vit, &tok, &h, &x, me->data), what);
        /* without recording: the same value, no node */
        ssl_graph_reset(&g);
        g.record = 0;
        ssl_tensor *l = ssl_simmim_loss(&g, &vit, &tok, &h, &x, me->data);
        const float *lref = gold(&f, "res.loss", 1);
        CHECK(l && lref && fabs(l->data[0] - lref[0]) <= TOL.loss_rel * fabs(lref[0]) && g.n_nodes == 0,
              "%s: unrecorded loss differs or recorded %d nodes", what, g.n_nodes);
        ssl_graph_free(&g);
    }
    ssl_registry_free(&heads);
    ssl_vit_free(&vit);
out:
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

static void parity_beit(const char *file)
{
    ssl_st_file f;
    if (!golden_load(&f, file, "gen_beit.py")) return;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    ssl_vit vit;
    if (vit_from_meta(&vit, &f, &ctx.rng, file)) goto out;
    ssl_registry heads;
    ssl_registry_init(&heads);
    ssl_tensor tok;
    ssl_beit_head h;
    CHECK(ssl_mim_mask_token_init(&tok, &heads, vit.feat_dim, &ctx.rng) == SSL_OK &&
              ssl_beit_head_init(&h, &heads, vit.feat_dim, meta_int(&f, "vocab"), &ctx.rng) == SSL_OK,
          "beit head init");
    ssl_registry *regs[2] = {&vit.reg, &heads};
    CHECK(copy_params(regs, 2, &f, file) == 0, "%s: parameters do not match torch's", file);
    ssl_tensor x = input_of(&f);
    const long NT = (long)x.shape[0] * vit.n_patches;
    const ssl_st_entry *me = entry(&f, "res.mask", SSL_DT_U8, NT);
    const ssl_st_entry *te = entry(&f, "res.tokens", SSL_DT_I32, NT);
    if (x.data && me && te) {
        ssl_graph g;
        ssl_graph_init(&g, &ctx);
        char what[64];
        snprintf(what, sizeof what, "beit %.*s", (int)(strlen(file) - 17), file + 5);
        int64_t correct = -1;
        compare(&g, regs, 2, &f, ssl_beit_loss(&g, &vit, &tok, &h, &x, me->data, te->data, &correct),
                what);
        long masked = 0;
        for (long i = 0; i < NT; i++) masked += ((const uint8_t *)me->data)[i];
        CHECK(correct >= 0 && correct <= masked, "%s: %lld correct of %ld", what, (long long)correct, masked);
        /* errors: nothing masked, a token out of range */
        ssl_graph_reset(&g);
        uint8_t *none = calloc((size_t)NT, 1);
        CHECK(ssl_beit_loss(&g, &vit, &tok, &h, &x, none, te->data, NULL) == NULL &&
                  strstr(ctx.err, "masked"), "%s: an empty mask must fail (%s)", what, ctx.err);
        int32_t *bad = malloc(sizeof(int32_t) * NT);
        memcpy(bad, te->data, sizeof(int32_t) * NT);
        for (long i = 0; i < NT; i++) bad[i] = ((const uint8_t *)me->data)[i] ? h.vocab : bad[i];
        ssl_graph_reset(&g);
        CHECK(ssl_beit_loss(&g, &vit, &tok, &h, &x, me->data, bad, NULL) == NULL &&
                  strstr(ctx.err, "out of range"), "%s: a bad token must fail (%s)", what, ctx.err);
        free(none);
        free(bad);
        ssl_graph_free(&g);
    }
    ssl_registry_free(&heads);
    ssl_vit_free(&vit);
out:
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

static int vq_from_meta(ssl_vq_tokenizer *t, const ssl_st_file *f, ssl_rng *rng)
{
    const char *beta = ssl_st_meta(f, "beta");
    ssl_vq_config c = {meta_int(f, "patch"), meta_int(f, "in_chans"), meta_int(f, "hidden"),
                       meta_int(f, "code_dim"), meta_int(f, "codes"), beta ? strtof(beta, NULL) : -1};
    char err[SSL_ERR_LEN];
    int rc = ssl_vq_tokenizer_init(t, &c, rng, err);
    CHECK(rc == SSL_OK, "vq init: %s", err);
    return rc;
}

static void parity_vq(const char *file)
{
    ssl_st_file f;
    if (!golden_load(&f, file, "gen_beit.py")) return;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 2);
    ssl_vq_tokenizer t;
    if (vq_from_meta(&t, &f, &ctx.rng)) goto out;
    ssl_registry *regs[1] = {&t.reg};
    CHECK(copy_params(regs, 1, &f, file) == 0, "%s: parameters do not match torch's", file);
    ssl_tensor x = input_of(&f);
    const int p = t.cfg.patch;
    const long M = (long)x.shape[0] * (x.shape[2] / p) * (x.shape[3] / p);
    const ssl_st_entry *ce = entry(&f, "res.codes", SSL_DT_I32, M);
    const float *pref = gold(&f, "res.parts", 3);
    if (x.data && ce && pref) {
        char what[64];
        snprintf(what, sizeof what, "vq %.*s", (int)(strlen(file) - 15), file + 3);
        int32_t *codes = calloc((size_t)M, sizeof(int32_t)), *codes2 = calloc((size_t)M, sizeof(int32_t));
        float parts[3];
        ssl_graph g;
        ssl_graph_init(&g, &ctx);
        ssl_tensor *loss = ssl_vq_loss(&g, &t, &x, codes, parts);
        CHECK(loss && !memcmp(codes, ce->data, sizeof(int32_t) * M), "%s: codes differ from torch's", what);
        for (int k = 0; k < 3; k++)
            CHECK(fabs(parts[k] - pref[k]) <= TOL.loss_rel * fabs(pref[k]), "%s: loss part %d %g vs %g",
                  what, k, (double)parts[k], (double)pref[k]);
        compare(&g, regs, 1, &f, loss, what);
        ssl_graph_reset(&g);
        CHECK(ssl_vq_tokenize(&g, &t, &x, codes2) == SSL_OK && !memcmp(codes2, ce->data, sizeof(int32_t) * M) &&
                  g.n_nodes == 0, "%s: tokenize differs from the loss's codes or recorded", what);
        /* a wrong channel count fails with a message */
        ssl_graph_reset(&g);
        ssl_tensor xb = x;
        xb.shape[1] = x.shape[1] + 1;
        CHECK(ssl_vq_tokenize(&g, &t, &xb, codes2) != SSL_OK && strstr(ctx.err, "vq tokenizer"),
              "%s: wrong channels must fail (%s)", what, ctx.err);
        ssl_graph_free(&g);
        free(codes);
        free(codes2);
    }
    ssl_vq_tokenizer_free(&t);
out:
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

/* -------------------------------------------------- L1 by differences */

static double l1_value(ssl_graph *g, ssl_tensor *pred, const float *target, const uint8_t *mask, int C)
{
    ssl_graph_reset(g);
    int r = g->record;
    g->record = 0;
    ssl_tensor *l = ssl_simmim_l1(g, pred, target, mask, C);
    g->record = r;
    return l ? l->data[0] : NAN;
}

static void test_l1(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 3, 1);
    ssl_rng r;
    ssl_rng_seed(&r, 11);
    enum { ROWS = 6, C = 3, PP = 4, K = C * PP };
    static float pd[ROWS * K], gd[ROWS * K], target[ROWS * K];
    static const uint8_t mask[ROWS] = {1, 0, 1, 1, 0, 1};
    /* |pred - target| >= 0.05 everywhere: no kink within the step */
    for (int i = 0; i < ROWS * K; i++) {
        target[i] = ssl_rng_normal(&r);
        float d = 0.05f + ssl_rng_uniform(&r);
        pd[i] = target[i] + (ssl_rng_uniform(&r) < 0.5f ? -d : d);
    }
    int s[2] = {ROWS, K};
    ssl_tensor pred = ssl_tensor_wrap(pd, gd, 2, s, SSL_LAYOUT_NCHW);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    ssl_tensor *l = ssl_simmim_l1(&g, &pred, target, mask, C);
    double ref = 0;
    for (int i = 0; i < ROWS; i++)
        for (int k = 0; mask[i] && k < K; k++) ref += fabs((double)pd[i * K + k] - target[i * K + k]);
    ref /= (4.0 * PP + 1e-5) * C; /* 4 masked patches of p*p = 4 pixels, C channels */
    const double lv = l ? l->data[0] : NAN; /* the graph is reset below */
    CHECK(fabs(lv - ref) <= 1e-6 * ref, "simmim l1: %g vs %g", lv, ref);
    memset(gd, 0, sizeof gd);
    CHECK(l && ssl_graph_backward(&g, l) == SSL_OK, "simmim l1 backward");
    double worst = 0;
    const float h = 1.0f / 128;
    for (int i = 0; i < ROWS * K; i++) {
        float keep = pd[i];
        pd[i] = keep + h;
        double lp = l1_value(&g, &pred, target, mask, C);
        pd[i] = keep - h;
        double lm = l1_value(&g, &pred, target, mask, C);
        pd[i] = keep;
        double fd = (lp - lm) / (2.0 * h);
        worst = fmax(worst, fabs(fd - gd[i]));
    }
    CHECK(worst <= 1e-4, "simmim l1: gradient vs central differences off by %g", worst);
    printf("  simmim l1: value vs double %.1e, gradient vs differences %.1e\n",
           fabs(lv - ref) / ref, worst);
    /* a prediction equal to its target: gradient 0 there (torch's sign(0)) */
    ssl_graph_reset(&g);
    pd[0] = target[0];
    memset(gd, 0, sizeof gd);
    l = ssl_simmim_l1(&g, &pred, target, mask, C);
    CHECK(l && ssl_graph_backward(&g, l) == SSL_OK && gd[0] == 0.0f && gd[1] != 0.0f,
          "simmim l1: gradient at a zero difference must be 0");
    /* shape errors */
    ssl_graph_reset(&g);
    CHECK(ssl_simmim_l1(&g, &pred, target, mask, 5) == NULL && strstr(ctx.err, "simmim_l1"),
          "simmim l1: columns not a multiple of the channels must fail");
    ssl_graph_free(&g);
    ssl_ctx_free(&ctx);
}

/* ----------------------------------------------------- mask generators */

static void test_simmim_masks(void)
{
    static const struct { int grid, scale; double ratio; } cases[] = {
        {7, 1, 0.6}, {6, 2, 0.6}, {12, 3, 0.75}, {4, 1, 0.5}, {5, 5, 0.3}, {5, 1, 0.2}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int G = cases[c].grid, S = cases[c].scale, U = (G / S) * (G / S);
        const int want = (int)ceil(U * cases[c].ratio); /* 0.2 x 25: 5 as in Python, not 6 as 0.2f */
        uint8_t m1[256], m2[256];
        int counts[256] = {0}, bad_count = 0, bad_unit = 0, differ = 0;
        const int draws = 400;
        for (int d = 0; d < draws; d++) {
            ssl_rng r1, r2;
            ssl_rng_derive(&r1, 5, (uint64_t)d, 0);
            ssl_rng_derive(&r2, 5, (uint64_t)d, 0);
            ssl_simmim_mask(G, S, (float)cases[c].ratio, &r1, m1);
            ssl_simmim_mask(G, S, (float)cases[c].ratio, &r2, m2);
            CHECK(!memcmp(m1, m2, (size_t)G * G), "simmim mask not reproducible");
            int n = 0;
            for (int i = 0; i < G * G; i++) n += m1[i], counts[i] += m1[i];
            bad_count += n != want * S * S;
            for (int i = 0; i < G; i++) /* each unit all or nothing */
                for (int j = 0; j < G; j++)
                    bad_unit += m1[i * G + j] != m1[(i / S * S) * G + j / S * S];
            ssl_rng_derive(&r2, 6, (uint64_t)d, 0);
            ssl_simmim_mask(G, S, (float)cases[c].ratio, &r2, m2);
            differ += memcmp(m1, m2, (size_t)G * G) != 0;
        }
        CHECK(!bad_count && !bad_unit, "simmim mask grid %d scale %d: %d wrong counts, %d split units",
              G, S, bad_count, bad_unit);
        CHECK(U < 2 || want == U || differ > draws / 2, "simmim masks do not depend on the seed");
        /* every position masked about ratio of the time (binomial, 5 sigma) */
        double p = (double)want / U, sd = sqrt(draws * p * (1 - p));
        int off = 0;
        for (int i = 0; i < G * G; i++) off += fabs(counts[i] - draws * p) > 5 * sd + 1;
        CHECK(!off, "simmim mask grid %d: %d positions off their frequency", G, off);
    }
    uint8_t m[16];
    ssl_rng r;
    ssl_rng_seed(&r, 1);
    CHECK(ssl_simmim_mask(7, 2, 0.5f, &r, m) == SSL_EINVAL, "simmim mask: scale must divide the grid");
}

static void test_beit_masks(void)
{
    static const struct { int grid; float ratio; } cases[] = {{7, 0.4f}, {14, 75.0f / 196}, {4, 0.4f}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int G = cases[c].grid;
        ssl_beit_mask_config mc = ssl_beit_mask_config_default(G, cases[c].ratio);
        const int draws = 500;
        uint8_t m[256], m2[256], u[256];
        int blocks[4 * 64], blocks2[4 * 64];
        long total = 0;
        int over = 0, empty = 0, not_union = 0, outside = 0, irreproducible = 0, differ = 0;
        for (int d = 0; d < draws; d++) {
            ssl_rng r;
            int nb = 0, nb2 = 0;
            ssl_rng_derive(&r, 9, (uint64_t)d, 0);
            int n = ssl_beit_mask(&mc, &r, m, blocks, 64, &nb);
            ssl_rng_derive(&r, 9, (uint64_t)d, 0);
            int n2 = ssl_beit_mask(&mc, &r, m2, blocks2, 64, &nb2);
            irreproducible += n != n2 || nb != nb2 || memcmp(m, m2, (size_t)G * G) ||
                              memcmp(blocks, blocks2, sizeof(int) * 4 * (nb < 64 ? nb : 64));
            ssl_rng_derive(&r, 10, (uint64_t)d, 0);
            ssl_beit_mask(&mc, &r, m2, NULL, 0, NULL);
            differ += memcmp(m, m2, (size_t)G * G) != 0;
            int cnt = 0;
            for (int i = 0; i < G * G; i++) cnt += m[i];
            over += n > mc.num_masking || cnt != n;
            empty += n == 0;
            total += n;
            /* the mask is exactly the union of its blocks: contiguous rectangles */
            memset(u, 0, sizeof u);
            for (int b = 0; b < nb && b < 64; b++) {
                int t = blocks[4 * b], l = blocks[4 * b + 1], h = blocks[4 * b + 2], w = blocks[4 * b + 3];
                if (h < 1 || w < 1 || h >= G || w >= G || t < 0 || l < 0 || t + h > G || l + w > G) {
                    outside++;
                    continue;
                }
                for (int i = t; i < t + h; i++)
                    for (int j = l; j < l + w; j++) u[i * G + j] = 1;
            }
            not_union += nb > 64 || memcmp(u, m, (size_t)G * G) != 0;
        }
        double mean = (double)total / draws;
        printf("  beit mask %2dx%-2d ratio %.3f: target %d, mean %.2f masked\n", G, G,
               (double)cases[c].ratio, mc.num_masking, mean);
        CHECK(!over && !empty, "beit mask %d: %d over budget or miscounted, %d empty", G, over, empty);
        CHECK(!not_union && !outside, "beit mask %d: %d masks not the union of their blocks, %d blocks outside",
              G, not_union, outside);
        CHECK(!irreproducible && differ > draws / 2, "beit mask %d: %d irreproducible, %d of %d differ by seed",
              G, irreproducible, differ, draws);
        CHECK(mean >= 0.9 * mc.num_masking, "beit mask %d: mean %.2f of a %d target", G, mean, mc.num_masking);
    }
    /* the default: round(0.4 * 49) = 20, blocks >= 2, aspect 0.3 .. 1/0.3 */
    ssl_beit_mask_config mc = ssl_beit_mask_config_default(7, 0.4f);
    CHECK(mc.num_masking == 20 && mc.min_patches == 2 && mc.max_patches == 20 &&
              fabsf(mc.min_aspect - 0.3f) < 1e-7f && fabsf(mc.max_aspect - 1 / 0.3f) < 1e-6f,
          "beit default mask config");
}

/* ------------------------------------------------------- tokenizer */

/* 8x8 gray images tiled with 4x4 patches from 6 prototypes plus noise. */
static void synth_dataset(ssl_dataset *ds, int n)
{
    memset(ds, 0, sizeof *ds);
    ds->n = n, ds->c = 1, ds->h = 8, ds->w = 8;
    ds->images = malloc((size_t)n * 64);
    snprintf(ds->source, sizeof ds->source, "synthetic");
    ssl_rng r;
    ssl_rng_seed(&r, 77);
    uint8_t proto[6][16];
    for (int k = 0; k < 6; k++)
        for (int i = 0; i < 16; i++) proto[k][i] = (uint8_t)(k == 0 ? 0 : ssl_rng_below(&r, 256));
    for (int im = 0; im < n; im++)
        for (int pi = 0; pi < 2; pi++)
            for (int pj = 0; pj < 2; pj++) {
                int k = (int)ssl_rng_below(&r, 6);
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 4; x++) {
                        int v = proto[k][y * 4 + x] + (int)ssl_rng_below(&r, 9) - 4;
                        ds->images[im * 64 + (pi * 4 + y) * 8 + pj * 4 + x] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                    }
            }
}

static void test_tokenizer_training(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 4, 2);
    ssl_dataset ds;
    synth_dataset(&ds, 200);
    ssl_aug aug;
    ssl_aug_eval(&aug, 1, 8, 8);
    ssl_vq_config vc = ssl_vq_config_default(4, 1, 16);
    vc.hidden = 32;
    vc.code_dim = 8;
    ssl_vq_tokenizer t;
    char err[SSL_ERR_LEN] = "";
    CHECK(ssl_vq_tokenizer_init(&t, &vc, &ctx.rng, err) == SSL_OK, "vq init: %s", err);
    ssl_vq_train_config tc = ssl_vq_train_config_default(123);
    tc.steps = 300;
    tc.batch = 16;
    tc.restart_every = 50;
    tc.log_every = 100;
    /* the recon error before training, on a fixed batch */
    int shape[4] = {16, 1, 8, 8};
    float *xb = malloc(sizeof(float) * 16 * 64);
    ssl_dataset sub = ds;
    sub.n = 16;
    ssl_dataset_to_float(&sub, &aug, xb);
    ssl_tensor x = ssl_tensor_wrap(xb, NULL, 4, shape, SSL_LAYOUT_NCHW);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    float before[3], after[3];
    ssl_tensor *l = ssl_vq_loss(&g, &t, &x, NULL, before);
    CHECK(l != NULL, "vq loss before training: %s", ctx.err);
    ssl_vq_stats st;
    int rc = ssl_vq_tokenizer_train(&t, &ds, &aug, &tc, &ctx, stdout, "test", &st, err);
    CHECK(rc == SSL_OK, "vq training: %s", err);
    ssl_graph_reset(&g);
    int32_t codes[64], codes1[64];
    l = ssl_vq_loss(&g, &t, &x, codes, after);
    printf("  vq training: recon MSE %.4f -> %.4f (window %.4f), %d of 16 codes used, perplexity %.2f, "
           "%d restarts\n", (double)before[0], (double)after[0], st.recon_mse, st.used, st.perplexity,
           st.restarted);
    CHECK(l && after[0] < 0.2 * before[0], "vq training: recon MSE %g -> %g", (double)before[0],
          (double)after[0]);
    /* 6 prototypes: at least 6 codes stay in use, spread well */
    CHECK(st.used >= 6 && st.perplexity >= 4.0, "vq training: %d codes used, perplexity %g", st.used,
          st.perplexity);
    CHECK(st.restarted > 0 && st.window == 100 && isfinite(st.loss) && st.recon_mse > 0,
          "vq training: stats (restarts %d, window %d)", st.restarted, st.window);
    /* tokens: the loss's, the same with 1 thread */
    ssl_graph_reset(&g);
    CHECK(ssl_vq_tokenize(&g, &t, &x, codes1) == SSL_OK && !memcmp(codes, codes1, sizeof codes),
          "vq tokenize differs from the loss's codes");
    ssl_ctx ctx1;
    ssl_ctx_init(&ctx1, 4, 1);
    ssl_graph g1;
    ssl_graph_init(&g1, &ctx1);
    CHECK(ssl_vq_tokenize(&g1, &t, &x, codes1) == SSL_OK && !memcmp(codes, codes1, sizeof codes),
          "vq tokenize depends on the thread count");

    /* the file: the same weights and tokens back; a foreign file fails */
    char path[256], bad[256];
    snprintf(path, sizeof path, "/tmp/test_mim_%ld.safetensors", (long)getpid());
    snprintf(bad, sizeof bad, "/tmp/test_mim_%ld_bad.safetensors", (long)getpid());
    CHECK(ssl_vq_tokenizer_save(&t, path, err) == SSL_OK, "vq save: %s", err);
    ssl_vq_tokenizer t2;
    CHECK(ssl_vq_tokenizer_load(&t2, path, err) == SSL_OK, "vq load: %s", err);
    int same = t2.reg.n_params == t.reg.n_params && !memcmp(&t2.cfg, &t.cfg, sizeof t.cfg);
    for (int i = 0; same && i < t.reg.n_params; i++)
        same = !strcmp(t.reg.params[i].name, t2.reg.params[i].name) &&
               !memcmp(t.reg.params[i].data, t2.reg.params[i].data, sizeof(float) * t.reg.params[i].numel);
    CHECK(same, "vq file round trip changed the tokenizer");
    ssl_graph_reset(&g1);
    CHECK(same && ssl_vq_tokenize(&g1, &t2, &x, codes1) == SSL_OK && !memcmp(codes, codes1, sizeof codes),
          "vq tokens after the round trip");
    if (same) ssl_vq_tokenizer_free(&t2);
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    int64_t one = 1;
    float v = 0;
    ssl_st_add(&w, "codebook.weight", SSL_DT_F32, 1, &one, &v, err);
    ssl_st_add_meta(&w, "format", "something-else", err);
    ssl_st_write(&w, bad, err);
    ssl_st_writer_free(&w);
    CHECK(ssl_vq_tokenizer_load(&t2, bad, err) == SSL_EFORMAT && strstr(err, "not a selfsup VQ"),
          "vq load of a foreign file: %s", err);
    /* a tokenizer file with a tensor of the wrong shape */
    ssl_st_writer_init(&w);
    ssl_st_add_meta(&w, "format", "selfsup-vq-tokenizer", err);
    const char *keys[] = {"version", "patch", "in_chans", "hidden", "code_dim", "codes", "beta"};
    const char *vals[] = {"1", "4", "1", "32", "8", "16", "0.25"};
    for (int i = 0; i < 7; i++) ssl_st_add_meta(&w, keys[i], vals[i], err);
    ssl_st_add(&w, "codebook.weight", SSL_DT_F32, 1, &one, &v, err);
    ssl_st_write(&w, bad, err);
    ssl_st_writer_free(&w);
    CHECK(ssl_vq_tokenizer_load(&t2, bad, err) == SSL_EFORMAT && strstr(err, "encoder.0.weight"),
          "vq load of a file missing tensors: %s", err);
    remove(path);
    remove(bad);

    /* bad training input: channels */
    ssl_dataset rgb = ds;
    rgb.c = 3;
    CHECK(ssl_vq_tokenizer_train(&t, &rgb, &aug, &tc, &ctx, NULL, "test", &st, err) == SSL_EINVAL &&
              strstr(err, "channels"), "vq training on 3-channel data must fail: %s", err);
    ssl_graph_free(&g1);
    ssl_ctx_free(&ctx1);
    ssl_graph_free(&g);
    free(xb);
    ssl_vq_tokenizer_free(&t);
    free(ds.images);
    ssl_ctx_free(&ctx);
}

/* ----------------------------------------------------- the methods */

static ssl_encoder_config tiny_vit(int channels)
{
    ssl_encoder_config e;
    memset(&e, 0, sizeof e);
    e.kind = SSL_ENC_VIT;
    e.vit = (ssl_vit_config){.img_size = 8, .patch = 2, .in_chans = channels, .embed_dim = 16,
                             .depth = 1, .heads = 2, .mlp_ratio = 2.0f, .qkv_bias = 1,
                             .pos = SSL_VIT_POS_LEARNED, .class_token = 1};
    return e;
}

/* One loss + backward at step `step`: the loss value (NAN on failure). */
static double method_step(ssl_method *m, ssl_graph *g, ssl_tensor *x, int64_t step)
{
    ssl_graph_reset(g);
    m->step = step;
    ssl_tensor *v[1] = {x};
    ssl_tensor *l = m->ops->loss(m, g, v);
    CHECK(l != NULL, "%s loss: %s", m->ops->name, g->ctx->err);
    if (!l) return NAN;
    double lv = l->data[0];
    ssl_registry_zero_grad(m->encoder.reg);
    ssl_registry_zero_grad(&m->heads);
    CHECK(ssl_graph_backward(g, l) == SSL_OK, "%s backward: %s", m->ops->name, g->ctx->err);
    return lv;
}

static void test_methods(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 8, 2);
    char err[SSL_ERR_LEN] = "";
    ssl_method_config mc;
    ssl_method m;
    ssl_rng rng;
    ssl_rng_seed(&rng, 3);
    float xb[4 * 64];
    for (int i = 0; i < 4 * 64; i++) xb[i] = ssl_rng_normal(&rng);
    int shape[4] = {4, 1, 8, 8};
    ssl_tensor x = ssl_tensor_wrap(xb, NULL, 4, shape, SSL_LAYOUT_NCHW);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    const ssl_encoder_config vit = tiny_vit(1);

    /* SimMIM: defaults, one view, the loss, masks from (seed, step) */
    ssl_method_config_unset(&mc);
    int rc = ssl_method_create(&m, &ssl_method_simmim, &mc, &vit, &rng, err);
    CHECK(rc == SSL_OK, "simmim create: %s", err);
    if (rc == SSL_OK) {
        CHECK(fabsf(m.cfg.mask_ratio - 0.6f) < 1e-7f, "simmim default mask ratio %g", m.cfg.mask_ratio);
        CHECK(ssl_method_setup_run(&m, 8, 8, 4, err) == SSL_OK && m.n_views == 1, "simmim setup: %s", err);
        CHECK(m.heads.n_params == 3 && !strcmp(m.heads.params[0].name, "mask_token") &&
                  !strcmp(m.heads.params[1].name, "decoder.0.weight") &&
                  m.heads.params[1].ndim == 4 && m.heads.params[1].shape[0] == 4 &&
                  !strcmp(m.heads.params[2].name, "decoder.0.bias"), "simmim head names and shapes");
        double a = method_step(&m, &g, &x, 5);
        double mt = max_abs(m.heads.params[0].grad, 16);
        double b = method_step(&m, &g, &x, 5), c = method_step(&m, &g, &x, 6);
        int64_t cor, tot;
        int classes = m.ops->pretext_metrics(&m, &cor, &tot);
        CHECK(isfinite(a) && a == b && a != c, "simmim: masks must follow (seed, step): %g %g %g", a, b, c);
        CHECK(mt > 0, "simmim: the mask token gets no gradient");
        /* ceil(16 * 0.6) = 10 patches of 2 x 2 pixels per image */
        CHECK(classes == 0 && tot == 4 * 10 * 4 && cor == 0, "simmim metrics: %d classes, %lld values",
              classes, (long long)tot);
        CHECK(ssl_beit_tokenizer(&m) == NULL, "simmim has no tokenizer");
        ssl_method_free(&m);
    }
    /* errors: a ResNet, a bad ratio, an option SimMIM does not read */
    ssl_encoder_config rn = ssl_encoder_config_resnet(18, 8, 1, SSL_STEM_SMALL);
    CHECK(ssl_method_create(&m, &ssl_method_simmim, &mc, &rn, &rng, err) != SSL_OK &&
              strstr(err, "needs a ViT encoder"), "simmim on a ResNet: %s", err);
    mc.mask_ratio = 1.0f;
    CHECK(ssl_method_create(&m, &ssl_method_simmim, &mc, &vit, &rng, err) == SSL_EINVAL &&
              strstr(err, "--mask-ratio"), "simmim mask ratio 1: %s", err);
    ssl_method_config_unset(&mc);
    mc.vocab_size = 64;
    CHECK(ssl_method_create(&m, &ssl_method_simmim, &mc, &vit, &rng, err) == SSL_EINVAL &&
              strstr(err, "does not apply"), "simmim with --vocab-size: %s", err);

    /* BEiT: fit_data trains the tokenizer, saved as "tokenizer." state */
    ssl_method_config_unset(&mc);
    mc.vocab_size = 16;
    mc.tokenizer_steps = 40;
    rc = ssl_method_create(&m, &ssl_method_beit, &mc, &vit, &rng, err);
    CHECK(rc == SSL_OK, "beit create: %s", err);
    if (rc == SSL_OK) {
        CHECK(fabsf(m.cfg.mask_ratio - 0.4f) < 1e-7f, "beit default mask ratio %g", m.cfg.mask_ratio);
        CHECK(ssl_method_setup_run(&m, 8, 8, 4, err) == SSL_OK && m.n_views == 1, "beit setup: %s", err);
        ssl_vq_tokenizer *t = ssl_beit_tokenizer(&m);
        int has_state = 0;
        for (int i = 0; i < m.n_state; i++)
            has_state |= !strcmp(m.state[i].prefix, "tokenizer.") && t && m.state[i].reg == &t->reg;
        CHECK(t && has_state && t->cfg.codes == 16 && t->cfg.patch == 2, "beit tokenizer state");
        CHECK(m.heads.n_params == 3 && !strcmp(m.heads.params[0].name, "mask_token") &&
                  !strcmp(m.heads.params[1].name, "lm_head.weight") &&
                  m.heads.params[1].shape[0] == 16, "beit head names and shapes");
        ssl_dataset ds;
        synth_dataset(&ds, 64);
        float before = t ? t->codebook.data[0] : 0;
        CHECK(m.ops->fit_data(&m, &ds, err) == SSL_OK, "beit fit_data: %s", err);
        CHECK(t && t->codebook.data[0] != before, "beit fit_data left the tokenizer untrained");
        double a = method_step(&m, &g, &x, 2);
        int64_t cor, tot;
        int classes = m.ops->pretext_metrics(&m, &cor, &tot);
        /* round(0.4 * 16) = 6 masked patches per image, the generator nearly always gets there */
        CHECK(isfinite(a) && a > 0 && classes == 16 && tot >= 4 * 4 && tot <= 4 * 6 && cor >= 0 && cor <= tot,
              "beit: loss %g, %d classes, %lld of %lld", a, classes, (long long)cor, (long long)tot);
        CHECK(max_abs(m.heads.params[0].grad, 16) > 0, "beit: the mask token gets no gradient");
        ssl_dataset rgb = ds;
        rgb.c = 3;
        CHECK(m.ops->fit_data(&m, &rgb, err) == SSL_EINVAL && strstr(err, "channels"),
              "beit fit_data on RGB for a gray ViT: %s", err);
        free(ds.images);
        ssl_method_free(&m);
    }
    ssl_method_config_unset(&mc);
    mc.tokenizer_steps = 0;
    CHECK(ssl_method_create(&m, &ssl_method_beit, &mc, &vit, &rng, err) == SSL_EINVAL &&
              strstr(err, "--tokenizer-steps"), "beit tokenizer steps 0: %s", err);
    mc.tokenizer_steps = SSL_UNSET;
    mc.vocab_size = 1;
    CHECK(ssl_method_create(&m, &ssl_method_beit, &mc, &vit, &rng, err) == SSL_EINVAL &&
              strstr(err, "--vocab-size"), "beit vocab 1: %s", err);
    ssl_graph_free(&g);
    ssl_ctx_free(&ctx);
}

int main(void)
{
    printf("SimMIM parity:\n");
    parity_simmim("simmim_c3_p2.safetensors");
    parity_simmim("simmim_c1_p4.safetensors");
    printf("BEiT parity:\n");
    parity_beit("beit_c1_p2.safetensors");
    parity_beit("beit_c3_p4.safetensors");
    printf("VQ tokenizer parity:\n");
    parity_vq("vq_c3_p2.safetensors");
    parity_vq("vq_c1_p4.safetensors");
    printf("SimMIM L1:\n");
    test_l1();
    printf("masks:\n");
    test_simmim_masks();
    test_beit_masks();
    printf("tokenizer training:\n");
    test_tokenizer_training();
    printf("methods:\n");
    test_methods();
    return check_report("test_mim");
}
