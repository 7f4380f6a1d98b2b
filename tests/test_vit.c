/* Transformer ops (src/nn/graph_tf.c) and the ViT backbone (src/nn/vit.c):
 *   1. every op's backward against central differences of its float forward
 *      (4-point stencil, step ~1/128): layer norm, attention (B=2, T=5, D=12,
 *      3 heads; saved and recomputed probabilities), patch embedding,
 *      patchify, class token, position embeddings, gather / scatter / mask
 *      tokens, slicing and pooling, and a whole ViT block;
 *   2. PyTorch parity of the ops with tests/torch/gen_vit.py (float64
 *      autograd on the same float32 inputs): outputs and gradients within
 *      1e-5 of the largest torch value; MAE's patchify and sin-cos table;
 *   3. whole ViTs (12x12 images, patch 4, depth 2, width 24, 3 heads; 1
 *      channel with learned positions, 3 channels with sin-cos, 3 channels
 *      with average pooling and no qkv bias): torch's state_dict loaded by
 *      name (both ways), then tokens, features, MAE's visible-patch encoder
 *      and every parameter gradient of three losses compared, tolerances as
 *      tests/test_resnet.c's ResNet-18 (outputs atol 1e-4, rtol 1e-3;
 *      gradients atol 1e-6 + 1e-4 max|grad|, rtol 1e-3; loss 1e-5 of
 *      sum |r y|, a sum with cancellation);
 *   4. presets (timm's parameter counts), results independent of the
 *      thread count, the arena stops growing, and bad shapes fail with a
 *      message. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "graph_test.h" /* zero_grad, max_abs, the test-only loss wsum */
#include "selfsup/graph_tf.h"
#include "selfsup/io.h"
#include "selfsup/vit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FD_STEP (1.0 / 128)
#define FD_TOL 1e-3
#define OPS_REL 1e-5 /* op parity: max |diff| / max |torch| */

/* ------------------------------------------------------------------ helpers */

/* A persistent tensor of N(0, scale^2) draws, with a zeroed gradient when grad. */
static ssl_tensor mk(ssl_rng *r, int ndim, const int *shape, float scale, int grad)
{
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *x = malloc(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) x[i] = scale * ssl_rng_normal(r);
    return ssl_tensor_wrap(x, grad ? calloc((size_t)n, sizeof(float)) : NULL, ndim, shape,
                           SSL_LAYOUT_NCHW);
}

static ssl_tensor mk2(ssl_rng *r, int rows, int cols, float scale, int grad)
{
    int s[2] = {rows, cols};
    return mk(r, 2, s, scale, grad);
}

/* A persistent copy of golden data, with a gradient buffer. */
static ssl_tensor copy_in(const float *src, int ndim, const int *shape)
{
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    float *x = malloc(sizeof(float) * (size_t)n);
    memcpy(x, src, sizeof(float) * (size_t)n);
    return ssl_tensor_wrap(x, calloc((size_t)n, sizeof(float)), ndim, shape, SSL_LAYOUT_NCHW);
}

static void unmk(ssl_tensor *t)
{
    free(t->data);
    free(t->grad);
    t->data = t->grad = NULL;
}

/* -------------------------------------------------- finite differences */

typedef struct fcase fcase;
struct fcase {
    const char *name;
    ssl_tensor *(*op)(ssl_graph *g, const fcase *c); /* the op's output */
    ssl_tensor *in[3];
    int ia[4];
    const int32_t *idx;
    const uint8_t *mask;
    void *obj;
    ssl_tensor *vars[4]; /* gradients checked, NULL-terminated */
};

static ssl_tensor *op_layernorm(ssl_graph *g, const fcase *c)
{
    return ssl_op_layernorm(g, c->in[0], c->in[1], c->in[2], 1e-5f);
}
static ssl_tensor *op_attention(ssl_graph *g, const fcase *c)
{
    return ssl_op_attention_mode(g, c->in[0], c->ia[0], c->ia[1], c->ia[2],
                                 (ssl_attn_mode)c->ia[3]);
}
static ssl_tensor *op_patch_embed(ssl_graph *g, const fcase *c)
{
    return ssl_op_patch_embed(g, c->in[0], c->in[1], c->in[2]);
}
static ssl_tensor *op_patchify(ssl_graph *g, const fcase *c)
{
    return ssl_op_patchify(g, c->in[0], c->ia[0], (ssl_patch_order)c->ia[1]);
}
static ssl_tensor *op_prepend(ssl_graph *g, const fcase *c)
{
    return ssl_op_prepend_token(g, c->in[0], c->ia[0], c->in[1], c->in[2]);
}
static ssl_tensor *op_add_pos(ssl_graph *g, const fcase *c)
{
    return ssl_op_add_pos(g, c->in[0], c->ia[0], c->in[1]);
}
static ssl_tensor *op_gather(ssl_graph *g, const fcase *c)
{
    return ssl_op_gather_tokens(g, c->in[0], c->ia[0], c->idx, c->ia[1]);
}
static ssl_tensor *op_scatter(ssl_graph *g, const fcase *c)
{
    return ssl_op_scatter_tokens(g, c->in[0], c->ia[0], c->idx, c->ia[1], c->in[1]);
}
static ssl_tensor *op_mask(ssl_graph *g, const fcase *c)
{
    return ssl_op_mask_tokens(g, c->in[0], c->ia[0], c->mask, c->in[1]);
}
static ssl_tensor *op_slice(ssl_graph *g, const fcase *c)
{
    return ssl_op_token_slice(g, c->in[0], c->ia[0], c->ia[1], c->ia[2]);
}
static ssl_tensor *op_mean(ssl_graph *g, const fcase *c)
{
    return ssl_op_token_mean(g, c->in[0], c->ia[0], c->ia[1]);
}
static ssl_tensor *op_block(ssl_graph *g, const fcase *c)
{
    return ssl_vit_block_forward(g, c->obj, c->in[0], c->ia[0]);
}
/* obj: the N per-sample scales */
static ssl_tensor *op_add_scaled(ssl_graph *g, const fcase *c)
{
    return ssl_op_add_sample_scaled(g, c->in[0], c->in[1], c->ia[0], c->obj);
}
typedef struct block_dp {
    ssl_vit_block *b;
    const float *scale; /* 2N */
} block_dp;
static ssl_tensor *op_block_dp(ssl_graph *g, const fcase *c)
{
    const block_dp *d = c->obj;
    return ssl_vit_block_forward_dp(g, d->b, c->in[0], c->ia[0], d->scale);
}

static double eval_loss(ssl_graph *g, const fcase *c, const float *R)
{
    ssl_graph_reset(g);
    g->record = 0;
    ssl_tensor *y = wsum(g, c->op(g, c), R);
    g->record = 1;
    return y ? y->data[0] : NAN;
}

static void fd_check(ssl_ctx *ctx, const fcase *c, const float *R)
{
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    for (int v = 0; v < 4 && c->vars[v]; v++) zero_grad(c->vars[v]);
    ctx->err[0] = 0;
    ssl_tensor *y = wsum(&g, c->op(&g, c), R);
    CHECK(y != NULL, "fd %s: forward failed: %s", c->name, ctx->err);
    if (!y) {
        ssl_graph_free(&g);
        return;
    }
    float L = y->data[0];
    CHECK(ssl_graph_backward(&g, y) == SSL_OK, "fd %s: backward failed: %s", c->name, ctx->err);
    double L0 = eval_loss(&g, c, R);
    CHECK(L0 == L, "fd %s: record = 0 gives %.9g, not %.9g", c->name, L0, L);
    double worst = 0;
    for (int v = 0; v < 4 && c->vars[v]; v++) {
        ssl_tensor *t = c->vars[v];
        long n = ssl_tensor_numel(t);
        double err = 0, scale = 0;
        for (long i = 0; i < n; i++) {
            float x0 = t->data[i];
            double h = ldexp(FD_STEP, ilogb(fmax(1.0, fabs(x0)))), f[4];
            static const double mul[4] = {-2, -1, 1, 2};
            for (int k = 0; k < 4; k++) {
                t->data[i] = (float)(x0 + mul[k] * h);
                f[k] = eval_loss(&g, c, R);
            }
            t->data[i] = x0;
            double num = (8 * (f[2] - f[1]) - (f[3] - f[0])) / (12 * h), ana = t->grad[i];
            err = fmax(err, fabs(num - ana));
            scale = fmax(scale, fmax(fabs(num), fabs(ana)));
            if (!isfinite(num) || !isfinite(ana)) err = INFINITY;
        }
        double rel = err / fmax(scale, 1e-6);
        CHECK(rel <= FD_TOL && scale > 1e-6,
              "fd %s input %d: max |numeric - analytic| %.3g, relative %.3g (scale %.3g)",
              c->name, v, err, rel, scale);
        worst = fmax(worst, rel);
    }
    printf("  %-36s max rel err %.2e\n", c->name, worst);
    ssl_graph_free(&g);
}

static void test_finite_differences(ssl_ctx *ctx)
{
    ssl_rng r;
    ssl_rng_seed(&r, 77);
    printf("finite differences (step %g * max(1, |x|)):\n", FD_STEP);
    static float R[4096];
    for (int i = 0; i < 4096; i++) R[i] = ssl_rng_normal(&r);

    /* layer norm: a row mean far from zero, as in a residual stream */
    ssl_tensor x = mk2(&r, 5, 7, 1.0f, 1), gm = mk2(&r, 1, 7, 0.3f, 1), bt = mk2(&r, 1, 7, 0.3f, 1);
    for (int i = 0; i < 35; i++) x.data[i] += 2.0f;
    for (int i = 0; i < 7; i++) gm.data[i] += 1.0f;
    fd_check(ctx, &(fcase){.name = "layernorm (5, 7)", .op = op_layernorm, .in = {&x, &gm, &bt},
                           .vars = {&x, &gm, &bt}}, R);
    fd_check(ctx, &(fcase){.name = "layernorm, no affine", .op = op_layernorm, .in = {&x},
                           .vars = {&x}}, R);

    /* attention B=2, T=5, D=12, 3 heads, both ways of getting P back */
    ssl_tensor qkv = mk2(&r, 10, 36, 1.0f, 1);
    fd_check(ctx, &(fcase){.name = "attention B2 T5 D12 h3, saved P", .op = op_attention,
                           .in = {&qkv}, .ia = {2, 5, 3, SSL_ATTN_SAVE}, .vars = {&qkv}}, R);
    fd_check(ctx, &(fcase){.name = "attention B2 T5 D12 h3, recomputed", .op = op_attention,
                           .in = {&qkv}, .ia = {2, 5, 3, SSL_ATTN_RECOMPUTE}, .vars = {&qkv}}, R);
    ssl_tensor qkv1 = mk2(&r, 3, 6, 1.5f, 1);
    fd_check(ctx, &(fcase){.name = "attention B1 T3 D2 h1", .op = op_attention, .in = {&qkv1},
                           .ia = {1, 3, 1, SSL_ATTN_AUTO}, .vars = {&qkv1}}, R);

    /* patches on a non-square image, in NCHW and CNHW */
    int xs[4] = {2, 3, 4, 6}, ws[4] = {5, 3, 2, 2};
    ssl_tensor img = mk(&r, 4, xs, 1.0f, 1), w = mk(&r, 4, ws, 0.3f, 1), b = mk2(&r, 1, 5, 0.3f, 1);
    fd_check(ctx, &(fcase){.name = "patch_embed p2 on 4x6", .op = op_patch_embed,
                           .in = {&img, &w, &b}, .vars = {&img, &w, &b}}, R);
    fd_check(ctx, &(fcase){.name = "patchify HWC", .op = op_patchify, .in = {&img},
                           .ia = {2, SSL_PATCH_HWC}, .vars = {&img}}, R);
    img.layout = SSL_LAYOUT_CNHW;
    fd_check(ctx, &(fcase){.name = "patchify CHW, CNHW input", .op = op_patchify, .in = {&img},
                           .ia = {2, SSL_PATCH_CHW}, .vars = {&img}}, R);
    img.layout = SSL_LAYOUT_NCHW;

    /* token ops on N = 3 samples of T = 4 tokens of D = 5 */
    ssl_tensor tk = mk2(&r, 12, 5, 1.0f, 1), tok = mk2(&r, 1, 5, 1.0f, 1),
               pos1 = mk2(&r, 1, 5, 1.0f, 1), pos = mk2(&r, 4, 5, 1.0f, 1);
    fd_check(ctx, &(fcase){.name = "prepend_token with position", .op = op_prepend,
                           .in = {&tk, &tok, &pos1}, .ia = {3}, .vars = {&tk, &tok, &pos1}}, R);
    fd_check(ctx, &(fcase){.name = "add_pos", .op = op_add_pos, .in = {&tk, &pos}, .ia = {3},
                           .vars = {&tk, &pos}}, R);
    static const int32_t gidx[6] = {3, 1, 0, 0, 2, 2}; /* K = 2, repeats in samples 1, 2 */
    fd_check(ctx, &(fcase){.name = "gather_tokens K2 with repeats", .op = op_gather, .in = {&tk},
                           .ia = {3, 2}, .idx = gidx, .vars = {&tk}}, R);
    ssl_tensor vis = mk2(&r, 6, 5, 1.0f, 1);
    static const int32_t sidx[6] = {3, 1, 0, 2, 1, 3};
    fd_check(ctx, &(fcase){.name = "scatter_tokens with a fill token", .op = op_scatter,
                           .in = {&vis, &tok}, .ia = {3, 4}, .idx = sidx, .vars = {&vis, &tok}}, R);
    static const uint8_t msk[12] = {1, 0, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0};
    fd_check(ctx, &(fcase){.name = "mask_tokens", .op = op_mask, .in = {&tk, &tok}, .ia = {3},
                           .mask = msk, .vars = {&tk, &tok}}, R);
    fd_check(ctx, &(fcase){.name = "token_slice [1, 3)", .op = op_slice, .in = {&tk},
                           .ia = {3, 1, 2}, .vars = {&tk}}, R);
    fd_check(ctx, &(fcase){.name = "token_mean from 1", .op = op_mean, .in = {&tk}, .ia = {3, 1},
                           .vars = {&tk}}, R);
    ssl_tensor br = mk2(&r, 12, 5, 1.0f, 1);
    static float dps[3] = {1.25f, 0.0f, 1.25f}; /* sample 1's branch dropped */
    fd_check(ctx, &(fcase){.name = "add_sample_scaled (drop path)", .op = op_add_scaled,
                           .in = {&tk, &br}, .ia = {3}, .obj = dps, .vars = {&tk, &br}}, R);

    /* a whole block with non-trivial weights: x and two parameters */
    ssl_registry reg;
    ssl_registry_init(&reg);
    ssl_vit_block blk;
    CHECK(ssl_vit_block_init(&blk, &reg, "blocks.0", 12, 3, 20, 1, &r) == SSL_OK, "block init");
    for (int i = 0; i < reg.n_params; i++)
        for (long j = 0; j < reg.params[i].numel; j++)
            reg.params[i].data[j] += (reg.params[i].ndim == 2 ? 0.25f : 0.1f) * ssl_rng_normal(&r);
    ssl_tensor bx = mk2(&r, 8, 12, 1.0f, 1);
    fd_check(ctx, &(fcase){.name = "vit block N2 T4 D12 h3", .op = op_block, .in = {&bx},
                           .ia = {2}, .obj = &blk,
                           .vars = {&bx, &blk.qkv_w, &blk.norm1_w, &blk.fc1_b}},
             R);
    /* drop path: sample 0 keeps attention and drops the MLP, sample 1 the reverse */
    static const float bsc[4] = {2.0f, 0.0f, 0.0f, 2.0f};
    fd_check(ctx, &(fcase){.name = "vit block with drop path", .op = op_block_dp, .in = {&bx},
                           .ia = {2}, .obj = &(block_dp){&blk, bsc},
                           .vars = {&bx, &blk.qkv_w, &blk.fc1_b}},
             R);
    ssl_registry_free(&reg);
    ssl_tensor *all[] = {&x,  &gm,  &bt, &qkv, &qkv1, &img, &w,
                         &b,  &tk,  &tok, &pos1, &pos, &vis, &bx, &br};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) unmk(all[i]);
}

/* ----------------------------------------------------- op parity */

/* The F32 entry name with n values (n < 0: any), or NULL and a failed CHECK. */
static const float *gold(const ssl_st_file *f, const char *name, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    long m = 1;
    if (e)
        for (int d = 0; d < e->ndim; d++) m *= (long)e->shape[d];
    int ok = e && e->dtype == SSL_DT_F32 && (n < 0 || m == n);
    CHECK(ok, "golden '%s' missing, not F32 or not %ld values", name, n);
    return ok ? e->data : NULL;
}

static void rel_check(const float *a, const float *ref, long n, double tol, const char *what)
{
    if (!ref) return;
    double e = check_rel_err(a, ref, n);
    CHECK(e <= tol, "%s: max |diff| / max |torch| = %.3g > %g", what, e, tol);
    printf("  %-28s rel err %.2e\n", what, e);
}

static void parity_layernorm(ssl_ctx *ctx, const ssl_st_file *f, const char *c, int M, int D)
{
    char k[64];
#define KEY(s) (snprintf(k, sizeof k, "%s.%s", c, s), k)
    const float *x0 = gold(f, KEY("x"), (long)M * D), *g0 = gold(f, KEY("gamma"), D),
                *b0 = gold(f, KEY("beta"), D), *R = gold(f, KEY("r"), (long)M * D),
                *eps = gold(f, KEY("eps"), 1), *out = gold(f, KEY("out"), (long)M * D);
    if (!x0 || !g0 || !b0 || !R || !eps || !out) return;
    int xs[2] = {M, D}, ds[1] = {D};
    ssl_tensor x = copy_in(x0, 2, xs), gm = copy_in(g0, 1, ds), bt = copy_in(b0, 1, ds);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    ssl_tensor *y = ssl_op_layernorm(&g, &x, &gm, &bt, eps[0]);
    CHECK(y && ssl_graph_backward(&g, wsum(&g, y, R)) == SSL_OK, "%s: %s", c, ctx->err);
    if (y) {
        char w[64];
        snprintf(w, sizeof w, "%s out", c);
        rel_check(y->data, out, (long)M * D, OPS_REL, w);
        snprintf(w, sizeof w, "%s grad x", c);
        rel_check(x.grad, gold(f, KEY("grad_x"), (long)M * D), (long)M * D, OPS_REL, w);
        snprintf(w, sizeof w, "%s grad gamma", c);
        rel_check(gm.grad, gold(f, KEY("grad_gamma"), D), D, OPS_REL, w);
        snprintf(w, sizeof w, "%s grad beta", c);
        rel_check(bt.grad, gold(f, KEY("grad_beta"), D), D, OPS_REL, w);
    }
#undef KEY
    ssl_graph_free(&g);
    unmk(&x);
    unmk(&gm);
    unmk(&bt);
}

static void parity_attention(ssl_ctx *ctx, const ssl_st_file *f, const char *c)
{
    char k[64];
    snprintf(k, sizeof k, "%s.dims", c);
    const ssl_st_entry *de = ssl_st_find(f, k);
    CHECK(de && de->dtype == SSL_DT_I32 && de->shape[0] == 3, "%s missing", k);
    if (!de || de->dtype != SSL_DT_I32 || de->shape[0] != 3) return;
    const int32_t *dims = de->data;
    const int B = dims[0], T = dims[1], H = dims[2];
    snprintf(k, sizeof k, "%s.qkv", c);
    const float *q0 = gold(f, k, -1);
    const ssl_st_entry *qe = ssl_st_find(f, k);
    if (!q0) return;
    const int D = (int)qe->shape[1] / 3;
    const long n = (long)B * T * D;
    snprintf(k, sizeof k, "%s.r", c);
    const float *R = gold(f, k, n);
    snprintf(k, sizeof k, "%s.out", c);
    const float *out = gold(f, k, n);
    snprintf(k, sizeof k, "%s.grad_qkv", c);
    const float *gq = gold(f, k, 3 * n);
    if (!R || !out || !gq) return;
    static const char *const mode_name[3] = {"auto", "saved", "recomputed"};
    for (int mode = 0; mode < 3; mode++) {
        int s[2] = {B * T, 3 * D};
        ssl_tensor qkv = copy_in(q0, 2, s);
        ssl_graph g;
        ssl_graph_init(&g, ctx);
        ssl_tensor *y = ssl_op_attention_mode(&g, &qkv, B, T, H, (ssl_attn_mode)mode);
        CHECK(y && ssl_graph_backward(&g, wsum(&g, y, R)) == SSL_OK, "%s: %s", c, ctx->err);
        if (y) {
            char w[64];
            snprintf(w, sizeof w, "%s out (%s)", c, mode_name[mode]);
            rel_check(y->data, out, n, OPS_REL, w);
            snprintf(w, sizeof w, "%s grad qkv (%s)", c, mode_name[mode]);
            rel_check(qkv.grad, gq, 3 * n, OPS_REL, w);
        }
        ssl_graph_free(&g);
        unmk(&qkv);
    }
}

static void parity_patches(ssl_ctx *ctx, const ssl_st_file *f)
{
    const ssl_st_entry *xe = ssl_st_find(f, "pe.x"), *we = ssl_st_find(f, "pe.w");
    CHECK(xe && we && xe->ndim == 4 && we->ndim == 4, "pe.x / pe.w missing");
    if (!xe || !we || xe->ndim != 4 || we->ndim != 4) return;
    int xs[4], ws[4];
    for (int d = 0; d < 4; d++) {
        xs[d] = (int)xe->shape[d];
        ws[d] = (int)we->shape[d];
    }
    const int D = ws[0], p = ws[2], T = (xs[2] / p) * (xs[3] / p);
    const long no = (long)xs[0] * T * D, nx = (long)xs[0] * xs[1] * xs[2] * xs[3];
    const float *b0 = gold(f, "pe.b", D), *R = gold(f, "pe.r", no), *out = gold(f, "pe.out", no);
    if (!b0 || !R || !out) return;
    ssl_tensor x = copy_in(xe->data, 4, xs), w = copy_in(we->data, 4, ws), b = copy_in(b0, 1, &D);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    ssl_tensor *y = ssl_op_patch_embed(&g, &x, &w, &b);
    CHECK(y && ssl_graph_backward(&g, wsum(&g, y, R)) == SSL_OK, "patch_embed: %s", ctx->err);
    if (y) {
        rel_check(y->data, out, no, OPS_REL, "patch_embed out");
        rel_check(x.grad, gold(f, "pe.grad_x", nx), nx, OPS_REL, "patch_embed grad x");
        rel_check(w.grad, gold(f, "pe.grad_w", ssl_tensor_numel(&w)), ssl_tensor_numel(&w),
                  OPS_REL, "patch_embed grad w");
        rel_check(b.grad, gold(f, "pe.grad_b", D), D, OPS_REL, "patch_embed grad b");
    }
    ssl_graph_free(&g);
    unmk(&x);
    unmk(&w);
    unmk(&b);

    /* MAE's patchify: a pure copy, so exact */
    const ssl_st_entry *pe = ssl_st_find(f, "patchify.x");
    CHECK(pe && pe->ndim == 4, "patchify.x missing");
    if (!pe || pe->ndim != 4) return;
    for (int d = 0; d < 4; d++) xs[d] = (int)pe->shape[d];
    const float *pout = gold(f, "patchify.out", nx);
    ssl_graph_init(&g, ctx);
    ssl_tensor px = ssl_tensor_wrap(pe->data, NULL, 4, xs, SSL_LAYOUT_NCHW);
    y = ssl_op_patchify(&g, &px, 4, SSL_PATCH_HWC);
    CHECK(y && pout && !memcmp(y->data, pout, sizeof(float) * nx),
          "patchify HWC differs from MAE's patchify");
    ssl_graph_free(&g);
}

/* MAE's table against ours, through a ViT's pos_embed buffer (its zero
 * class-token row included). */
static void parity_sincos(const ssl_st_file *f)
{
    const float *ref = gold(f, "sincos.out", 17 * 24);
    ssl_vit_config cfg;
    char err[SSL_ERR_LEN];
    ssl_vit_preset(&cfg, "tiny", 16, 4, 1, err);
    cfg.embed_dim = 24;
    cfg.heads = 3;
    cfg.depth = 1;
    cfg.pos = SSL_VIT_POS_SINCOS;
    ssl_rng rng;
    ssl_rng_seed(&rng, 1);
    ssl_vit m;
    CHECK(ssl_vit_init(&m, &cfg, &rng, err) == SSL_OK, "sincos vit: %s", err);
    if (ref) CHECK_CLOSE(m.pos_embed.data, ref, 17 * 24, 1e-7, 1e-6, "sin-cos table vs MAE");
    CHECK(!m.pos_embed.requires_grad && ssl_registry_find(&m.reg, "pos_embed", NULL) &&
              m.reg.n_buffers == 1,
          "sin-cos pos_embed must be a fixed buffer named pos_embed");
    ssl_vit_free(&m);
    float t[4 * 6];
    CHECK(ssl_pos_embed_sincos_2d(t, 6, 2, 2) == SSL_EINVAL, "sin-cos with D %% 4 != 0 accepted");
}

static void test_op_parity(ssl_ctx *ctx)
{
    ssl_st_file f;
    if (!golden_load(&f, "vit_ops.safetensors", "gen_vit.py")) return;
    printf("PyTorch parity of the ops (max |diff| / max |torch| <= %g):\n", OPS_REL);
    parity_layernorm(ctx, &f, "ln", 7, 12);
    parity_layernorm(ctx, &f, "ln_big", 40, 96);
    parity_attention(ctx, &f, "attn");
    parity_attention(ctx, &f, "attn_big");
    parity_patches(ctx, &f);
    parity_sincos(&f);
    ssl_st_free(&f);
}

/* ----------------------------------------------------- model parity */

static int meta_int(const ssl_st_file *f, const char *key)
{
    const char *v = ssl_st_meta(f, key);
    CHECK(v != NULL, "golden metadata '%s' missing", key);
    return v ? atoi(v) : 0;
}

static int same_shape(const ssl_st_entry *e, int ndim, const int64_t *shape)
{
    if (e->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++)
        if (e->shape[d] != shape[d]) return 0;
    return 1;
}

/* Every parameter and buffer of r from f by name, same dtype and shape;
 * returns the number of problems. */
static int copy_state(ssl_registry *r, const ssl_st_file *f, const char *what)
{
    int bad = 0;
    for (int i = 0; i < r->n_params + r->n_buffers; i++) {
        int is_p = i < r->n_params;
        const ssl_param *p = is_p ? &r->params[i] : NULL;
        const ssl_buffer *b = is_p ? NULL : &r->buffers[i - r->n_params];
        const char *name = is_p ? p->name : b->name;
        const ssl_st_entry *e = ssl_st_find(f, name);
        int ok = e && e->dtype == SSL_DT_F32 &&
                 same_shape(e, is_p ? p->ndim : b->ndim, is_p ? p->shape : b->shape);
        if (!ok && what)
            fprintf(stderr, "%s: '%s' missing in the golden file or of another dtype/shape\n",
                    what, name);
        if (ok) memcpy(is_p ? p->data : b->data, e->data, e->nbytes);
        bad += !ok;
    }
    return bad;
}

typedef struct tolerances {
    double out_atol, out_rtol, loss_rel, grad_atol_of_max, grad_rtol;
} tolerances;

static const tolerances TOL = {1e-4, 1e-3, 1e-5, 1e-4, 1e-3};

/* Output, loss and every parameter gradient of loss = sum(r * y) against
 * res.<out_key>, res.loss_<loss>, res.grad_<loss>.<param>; runs the backward. */
static void compare_loss(ssl_graph *g, ssl_vit *m, const ssl_st_file *f, ssl_tensor *y,
                         const char *out_key, const char *loss, const char *what)
{
    char key[300], msg[400];
    CHECK(y != NULL, "%s %s: forward failed: %s", what, out_key, g->ctx->err);
    if (!y) return;
    const long n = ssl_tensor_numel(y);
    snprintf(key, sizeof key, "res.%s", out_key);
    const float *ref = gold(f, key, n);
    snprintf(key, sizeof key, "res.r_%s", loss);
    const float *R = gold(f, key, n);
    snprintf(key, sizeof key, "res.loss_%s", loss);
    const float *lref = gold(f, key, 1);
    if (!ref || !R || !lref) return;
    snprintf(msg, sizeof msg, "%s %s", what, out_key);
    CHECK_CLOSE(y->data, ref, n, TOL.out_atol, TOL.out_rtol, msg);
    ssl_tensor *l = wsum(g, y, R);
    double scale = 0;
    for (long i = 0; i < n; i++) scale += fabs((double)ref[i] * R[i]);
    snprintf(msg, sizeof msg, "%s loss_%s", what, loss);
    if (l) CHECK_CLOSE(l->data, lref, 1, TOL.loss_rel * scale, 0.0, msg);
    ssl_registry_zero_grad(&m->reg);
    CHECK(l && ssl_graph_backward(g, l) == SSL_OK, "%s: backward: %s", what, g->ctx->err);
    double worst = 0;
    for (int i = 0; i < m->reg.n_params; i++) {
        const ssl_param *p = &m->reg.params[i];
        snprintf(key, sizeof key, "res.grad_%s.%s", loss, p->name);
        const float *gr = gold(f, key, p->numel);
        if (!gr) continue;
        snprintf(msg, sizeof msg, "%s %s", what, key);
        double atol = 1e-6 + TOL.grad_atol_of_max * max_abs(gr, p->numel);
        CHECK_CLOSE(p->grad, gr, p->numel, atol, TOL.grad_rtol, msg);
        double d = check_close_ratio(p->grad, gr, p->numel, atol, TOL.grad_rtol, NULL);
        if (!(d <= worst)) worst = d;
    }
    printf("  %-22s %-10s loss %11.6f vs torch %11.6f, gradients use %.3f of their tolerance\n",
           what, loss, l ? (double)l->data[0] : NAN, (double)lref[0], worst);
}

static void test_model(const char *file, int n_threads)
{
    ssl_st_file f;
    if (!golden_load(&f, file, "gen_vit.py")) return;
    char what[96], err[SSL_ERR_LEN] = "";
    snprintf(what, sizeof what, "%.*s/%dt", (int)(strlen(file) - 12), file, n_threads);
    const char *pos = ssl_st_meta(&f, "pos"), *ratio = ssl_st_meta(&f, "mlp_ratio");
    ssl_vit_config cfg = {.img_size = meta_int(&f, "img_size"), .patch = meta_int(&f, "patch"),
                          .in_chans = meta_int(&f, "in_chans"),
                          .embed_dim = meta_int(&f, "embed_dim"),
                          .depth = meta_int(&f, "depth"), .heads = meta_int(&f, "heads"),
                          .mlp_ratio = ratio ? strtof(ratio, NULL) : 0,
                          .qkv_bias = meta_int(&f, "qkv_bias"),
                          .class_token = meta_int(&f, "class_token")};
    CHECK(pos && ssl_vit_pos_from_name(pos, &cfg.pos) == SSL_OK, "%s: bad pos '%s'", what, pos);
    const char *dpm = ssl_st_meta(&f, "drop_path");
    cfg.drop_path = dpm ? strtof(dpm, NULL) : 0.0f;
    /* with drop path every training pass below drops with the masks of the
     * first pass after this key, as the golden's */
    const uint64_t dp_seed = cfg.drop_path > 0 ? (uint64_t)meta_int(&f, "dp_seed") : 0;
    const int64_t dp_step = cfg.drop_path > 0 ? meta_int(&f, "dp_step") : 0;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, n_threads);
    ssl_vit m;
    if (ssl_vit_init(&m, &cfg, &ctx.rng, err) != SSL_OK) {
        CHECK(0, "%s: %s", what, err);
        ssl_ctx_free(&ctx);
        ssl_st_free(&f);
        return;
    }
    /* names both ways */
    CHECK(copy_state(&m.reg, &f, what) == 0, "%s: state does not match torch's", what);
    int n_state = 0;
    for (int i = 0; i < f.n; i++) {
        const char *name = f.entries[i].name;
        if (!strncmp(name, "res.", 4)) continue;
        n_state++;
        CHECK(ssl_registry_find(&m.reg, name, NULL) != NULL, "%s: torch's '%s' has no counterpart",
              what, name);
    }
    CHECK(n_state == m.reg.n_params + m.reg.n_buffers,
          "%s: %d state_dict tensors in torch, %d here", what, n_state,
          m.reg.n_params + m.reg.n_buffers);
    /* the draws themselves: block i's scales of that pass */
    for (int i = 1; cfg.drop_path > 0 && i < cfg.depth; i++) {
        char key[64];
        snprintf(key, sizeof key, "res.dp_scales.%d", i);
        const ssl_st_entry *se = ssl_st_find(&f, key);
        CHECK(se && se->dtype == SSL_DT_F32 && se->ndim == 1, "%s: golden %s", what, key);
        if (!se || se->dtype != SSL_DT_F32 || se->ndim != 1 || se->shape[0] > 64) continue;
        float sc[64];
        const int n2 = (int)se->shape[0];
        ssl_vit_drop_path_scales(dp_seed, dp_step, 0, i, ssl_vit_drop_rate(&cfg, i), n2 / 2, sc);
        CHECK(memcmp(sc, se->data, sizeof(float) * (size_t)n2) == 0,
              "%s: block %d's drop-path draws differ from the golden's", what, i);
    }

    const ssl_st_entry *xe = ssl_st_find(&f, "res.input");
    CHECK(xe && xe->dtype == SSL_DT_F32 && xe->ndim == 4, "%s: golden input", what);
    if (xe && xe->dtype == SSL_DT_F32 && xe->ndim == 4) {
        int xs[4] = {(int)xe->shape[0], (int)xe->shape[1], (int)xe->shape[2], (int)xe->shape[3]};
        ssl_tensor x = ssl_tensor_wrap(xe->data, NULL, 4, xs, SSL_LAYOUT_NCHW);
        const int N = xs[0];
        ssl_graph g;
        ssl_graph_init(&g, &ctx);
        ssl_vit_drop_path_key(&m, dp_seed, dp_step);
        compare_loss(&g, &m, &f, ssl_vit_forward_tokens(&g, &m, &x), "tokens", "tokens", what);
        ssl_graph_reset(&g);
        ssl_vit_drop_path_key(&m, dp_seed, dp_step);
        compare_loss(&g, &m, &f, ssl_vit_forward(&g, &m, &x), "features", "features", what);
        /* other image sizes: position embeddings resampled bicubically */
        static const char *const sizes[2] = {"small", "large"};
        for (int s = 0; s < 2; s++) {
            char key[64], out[64];
            snprintf(key, sizeof key, "res.input_%s", sizes[s]);
            snprintf(out, sizeof out, "%s_features", sizes[s]);
            const ssl_st_entry *se = ssl_st_find(&f, key);
            CHECK(se && se->dtype == SSL_DT_F32 && se->ndim == 4, "%s: golden %s", what, key);
            if (!se || se->dtype != SSL_DT_F32 || se->ndim != 4) continue;
            int ss[4] = {(int)se->shape[0], (int)se->shape[1], (int)se->shape[2], (int)se->shape[3]};
            ssl_tensor xs = ssl_tensor_wrap(se->data, NULL, 4, ss, SSL_LAYOUT_NCHW);
            ssl_graph_reset(&g);
            ssl_vit_drop_path_key(&m, dp_seed, dp_step);
            compare_loss(&g, &m, &f, ssl_vit_forward(&g, &m, &xs), out, sizes[s], what);
        }
        const ssl_st_entry *ke = ssl_st_find(&f, "res.keep");
        if (cfg.class_token) {
            CHECK(ke && ke->dtype == SSL_DT_I32 && ke->ndim == 2 && ke->shape[0] == N,
                  "%s: res.keep missing", what);
            if (ke && ke->dtype == SSL_DT_I32 && ke->ndim == 2 && ke->shape[0] == N) {
                ssl_graph_reset(&g);
                ssl_vit_drop_path_key(&m, dp_seed, dp_step);
                ssl_tensor *t = ssl_vit_embed(&g, &m, &x);
                compare_loss(&g, &m, &f, ssl_vit_encode(&g, &m, t, N, ke->data, (int)ke->shape[1]),
                             "vis_tokens", "vis", what);
            }
        }
        /* inference: the same features (without drop path), no node */
        const char *plain = cfg.drop_path > 0 ? "res.features_nodrop" : "res.features";
        ssl_graph_reset(&g);
        g.record = 0;
        ssl_tensor *y = ssl_vit_forward(&g, &m, &x);
        const float *ref = gold(&f, plain, (long)N * m.feat_dim);
        char msg[128];
        snprintf(msg, sizeof msg, "%s features, record = 0", what);
        if (y && ref)
            CHECK_CLOSE(y->data, ref, (long)N * m.feat_dim, TOL.out_atol, TOL.out_rtol, msg);
        CHECK(y && g.n_nodes == 0, "%s: inference recorded %d nodes (%s)", what, g.n_nodes,
              ctx.err);
        if (cfg.drop_path > 0) {
            /* a recorded pass in eval mode (fine-tuning's evaluation) drops nothing either */
            ssl_graph_reset(&g);
            g.record = 1;
            g.training = 0;
            y = ssl_vit_forward(&g, &m, &x);
            snprintf(msg, sizeof msg, "%s features, training = 0", what);
            if (y && ref)
                CHECK_CLOSE(y->data, ref, (long)N * m.feat_dim, TOL.out_atol, TOL.out_rtol, msg);
            /* the second training pass after a key draws anew */
            ssl_graph_reset(&g);
            g.training = 1;
            ssl_vit_drop_path_key(&m, dp_seed, dp_step);
            float first[2 * 64], second[2 * 64];
            const int n = N <= 64 ? N : 64;
            ssl_vit_drop_path_scales(dp_seed, dp_step, 0, cfg.depth - 1,
                                     ssl_vit_drop_rate(&cfg, cfg.depth - 1), n, first);
            ssl_vit_drop_path_scales(dp_seed, dp_step, 1, cfg.depth - 1,
                                     ssl_vit_drop_rate(&cfg, cfg.depth - 1), n, second);
            ssl_vit_forward(&g, &m, &x);
            CHECK(m.dp_pass == 1, "%s: a training pass counts itself (%u)", what, m.dp_pass);
            CHECK(memcmp(first, second, sizeof(float) * 2 * (size_t)n) != 0,
                  "%s: passes 0 and 1 draw the same masks", what);
        }
        ssl_graph_free(&g);
    }
    ssl_vit_free(&m);
    ssl_ctx_free(&ctx);
    ssl_st_free(&f);
}

/* ----------------------------------------------------------- the rest */

/* timm's parameter counts without the classifier head (224 px, patch 16). */
static void test_presets(void)
{
    static const struct {
        const char *name;
        long params;
    } want[] = {{"vit_tiny", 5524416}, {"small", 21665664}};
    char err[SSL_ERR_LEN];
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        ssl_vit_config cfg;
        CHECK(ssl_vit_preset(&cfg, want[i].name, 224, 16, 3, err) == SSL_OK, "%s", err);
        ssl_rng rng;
        ssl_rng_seed(&rng, 2);
        ssl_vit m;
        if (ssl_vit_init(&m, &cfg, &rng, err) != SSL_OK) {
            CHECK(0, "%s: %s", want[i].name, err);
            continue;
        }
        long n = ssl_registry_numel(&m.reg);
        CHECK(n == want[i].params, "%s: %ld parameters, timm has %ld", want[i].name, n,
              want[i].params);
        CHECK(!strcmp(m.reg.params[0].name, "cls_token") &&
                  !strcmp(m.reg.params[1].name, "pos_embed") &&
                  !strcmp(m.reg.params[2].name, "patch_embed.proj.weight") &&
                  !strcmp(m.reg.params[m.reg.n_params - 1].name, "norm.bias"),
              "%s: not timm's state_dict order", want[i].name);
        /* init: linear weights std 0.02, biases 0, LayerNorm 1 */
        const ssl_vit_block *b = &m.blocks[5];
        long nw = ssl_tensor_numel(&b->fc1_w);
        double s = 0;
        for (long j = 0; j < nw; j++) s += (double)b->fc1_w.data[j] * b->fc1_w.data[j];
        CHECK(fabs(sqrt(s / nw) - 0.02) < 0.001 && max_abs(b->fc1_b.data, b->hidden) == 0 &&
                  b->norm2_w.data[7] == 1.0f,
              "%s: init std %.4f", want[i].name, sqrt(s / nw));
        ssl_vit_free(&m);
    }
    ssl_vit_config cfg;
    CHECK(ssl_vit_preset(&cfg, "base", 224, 16, 3, err) == SSL_OK && cfg.embed_dim == 768 &&
              cfg.depth == 12 && cfg.heads == 12 && cfg.mlp_ratio == 4.0f,
          "vit_base preset");
    CHECK(ssl_vit_preset(&cfg, "huge", 224, 16, 3, err) != SSL_OK && strstr(err, "huge"),
          "an unknown preset must fail: %s", err);
}

/* Ops above the sizes where they go parallel: 1 and 3 threads agree bit
 * for bit (outputs and gradients). */
static void run_threaded(int nt, float *out, float *grads)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, nt);
    ssl_rng r;
    ssl_rng_seed(&r, 31);
    const int N = 8, T = 50, D = 48;
    ssl_tensor x = mk2(&r, N * T, 3 * D, 1.0f, 1), gm = mk2(&r, 1, 3 * D, 1.0f, 1),
               bt = mk2(&r, 1, 3 * D, 1.0f, 1), pos = mk2(&r, T, D, 1.0f, 1),
               tok = mk2(&r, 1, D, 1.0f, 1);
    static int32_t keep[8 * 20];
    for (int i = 0; i < N * 20; i++) keep[i] = (i * 7) % T;
    float *R = malloc(sizeof(float) * N * (T + 1) * D);
    for (int i = 0; i < N * (T + 1) * D; i++) R[i] = ssl_rng_normal(&r);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    ssl_tensor *h = ssl_op_layernorm(&g, &x, &gm, &bt, 1e-6f);
    h = ssl_op_attention(&g, h, N, T, 3);
    h = ssl_op_add_pos(&g, h, N, &pos);
    h = ssl_op_gather_tokens(&g, h, N, keep, 20);
    h = ssl_op_scatter_tokens(&g, h, N, keep, T, &tok); /* distinct per sample: 7 is prime to 50 */
    h = ssl_op_prepend_token(&g, h, N, &tok, NULL);
    CHECK(h && ssl_graph_backward(&g, wsum(&g, h, R)) == SSL_OK, "threaded ops: %s", ctx.err);
    if (h) memcpy(out, h->data, sizeof(float) * N * (T + 1) * D);
    float *gp = grads;
    ssl_tensor *ts[] = {&x, &gm, &bt, &pos, &tok};
    for (int i = 0; i < 5; i++) {
        memcpy(gp, ts[i]->grad, sizeof(float) * ssl_tensor_numel(ts[i]));
        gp += ssl_tensor_numel(ts[i]);
        unmk(ts[i]);
    }
    ssl_graph_free(&g);
    free(R);
    ssl_ctx_free(&ctx);
}

static void test_threads(void)
{
    const long no = 8 * 51 * 48, ng = 8 * 50 * 144 + 2 * 144 + 50 * 48 + 48;
    float *o1 = malloc(sizeof(float) * no), *o3 = malloc(sizeof(float) * no);
    float *g1 = malloc(sizeof(float) * ng), *g3 = malloc(sizeof(float) * ng);
    run_threaded(1, o1, g1);
    run_threaded(3, o3, g3);
    CHECK(!memcmp(o1, o3, sizeof(float) * no), "outputs differ between 1 and 3 threads");
    CHECK(!memcmp(g1, g3, sizeof(float) * ng), "gradients differ between 1 and 3 threads");
    free(o1);
    free(o3);
    free(g1);
    free(g3);
}

/* Training steps of a small ViT with MAE-style masking: the arena stops
 * growing after the first step. */
static void test_arena(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 3, 2);
    ssl_vit_config cfg;
    char err[SSL_ERR_LEN];
    ssl_vit_preset(&cfg, "tiny", 16, 4, 1, err);
    cfg.embed_dim = 32;
    cfg.heads = 4;
    cfg.depth = 2;
    ssl_vit m;
    CHECK(ssl_vit_init(&m, &cfg, &ctx.rng, err) == SSL_OK, "arena vit: %s", err);
    int xs[4] = {4, 1, 16, 16};
    ssl_tensor x = mk(&ctx.rng, 4, xs, 1.0f, 0);
    float R[4 * 5 * 32];
    for (int i = 0; i < 4 * 5 * 32; i++) R[i] = ssl_rng_normal(&ctx.rng);
    int32_t keep[16];
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    int grows = 0;
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < 16; i++) keep[i] = (i * 5 + s) % 16;
        ssl_graph_reset(&g);
        int before = g.arena.n_grows;
        ssl_tensor *t = ssl_vit_encode(&g, &m, ssl_vit_embed(&g, &m, &x), 4, keep, 4);
        ssl_tensor *l = wsum(&g, t, R);
        CHECK(l && ssl_graph_backward(&g, l) == SSL_OK, "arena step %d: %s", s, ctx.err);
        if (s > 0) grows += g.arena.n_grows - before;
    }
    CHECK(grows == 0, "the arena grew %d times after the first step", grows);
    ssl_graph_free(&g);
    unmk(&x);
    ssl_vit_free(&m);
    ssl_ctx_free(&ctx);
}

/* A pass that records nothing (a teacher, an evaluation) releases each
 * activation after its last use: its arena holds about one block's
 * activations whatever the depth, and it computes what a recorded pass
 * computes. Checked at a resampled size too (the position table's product). */
static void test_inference_memory(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 5, 1);
    char err[SSL_ERR_LEN];
    size_t high[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        ssl_vit_config cfg;
        ssl_vit_preset(&cfg, "tiny", 16, 4, 1, err);
        cfg.embed_dim = 32;
        cfg.heads = 4;
        cfg.depth = k ? 8 : 1;
        ssl_vit m;
        ssl_rng rng;
        ssl_rng_seed(&rng, 11);
        CHECK(ssl_vit_init(&m, &cfg, &rng, err) == SSL_OK, "inference vit: %s", err);
        for (int side = 16; side >= 8; side -= 8) {
            int xs[4] = {32, 1, side, side};
            ssl_tensor x = mk(&rng, 4, xs, 1.0f, 0);
            ssl_graph g;
            ssl_graph_init(&g, &ctx);
            ssl_tensor *rec = ssl_vit_forward(&g, &m, &x);
            float ref[32 * 32];
            CHECK(rec && rec->shape[0] == 32 && rec->shape[1] == 32, "recorded pass: %s", ctx.err);
            if (rec) memcpy(ref, rec->data, sizeof ref);
            ssl_graph_reset(&g);
            size_t before = g.arena.high_water;
            g.record = 0;
            ssl_tensor *y = ssl_vit_forward(&g, &m, &x);
            CHECK(y && rec && !memcmp(y->data, ref, sizeof ref),
                  "depth %d, %d px: the pass without recording differs", cfg.depth, side);
            if (side == 16) high[k] = g.arena.used;
            CHECK(g.arena.high_water == before, "depth %d: a pass without recording grew the arena",
                  cfg.depth);
            ssl_graph_free(&g);
            unmk(&x);
        }
        ssl_vit_free(&m);
    }
    /* measured: 1.21 MB at depth 1 and at depth 8; with every activation
     * kept, depth 8 held 10.3 MB */
    printf("  inference arena: depth 1 %zu bytes, depth 8 %zu bytes\n", high[0], high[1]);
    CHECK(high[1] <= high[0] + high[0] / 4,
          "a pass without recording keeps %zu bytes at depth 8, %zu at depth 1", high[1], high[0]);
    ssl_ctx_free(&ctx);
}

static void test_errors(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    ssl_rng r;
    ssl_rng_seed(&r, 8);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    ssl_tensor a = mk2(&r, 6, 30, 1.0f, 1), t = mk2(&r, 6, 4, 1.0f, 1),
               tok = mk2(&r, 1, 4, 1.0f, 1);
    CHECK(!ssl_op_attention(&g, &a, 2, 3, 3) && strstr(ctx.err, "heads"),
          "attention with D = 10 and 3 heads: '%s'", ctx.err);
    CHECK(!ssl_op_attention(&g, &a, 2, 4, 2) && strstr(ctx.err, "attention"),
          "attention with B*T != rows: '%s'", ctx.err);
    CHECK(!ssl_op_layernorm(&g, &a, &tok, NULL, 1e-6f) && strstr(ctx.err, "gamma"),
          "layernorm with a short gamma: '%s'", ctx.err);
    int32_t bad[4] = {0, 3, 1, 0};
    CHECK(!ssl_op_gather_tokens(&g, &t, 2, bad, 2) && strstr(ctx.err, "range"),
          "gather with index 3 of T = 3: '%s'", ctx.err);
    int32_t dup[4] = {0, 0, 1, 2};
    ssl_tensor vis = mk2(&r, 4, 4, 1.0f, 1);
    CHECK(!ssl_op_scatter_tokens(&g, &vis, 2, dup, 3, &tok) && strstr(ctx.err, "repeats"),
          "scatter with a repeated index: '%s'", ctx.err);
    CHECK(!ssl_op_token_slice(&g, &t, 2, 2, 2) && strstr(ctx.err, "range"),
          "slice past T: '%s'", ctx.err);
    CHECK(!ssl_op_add_pos(&g, &t, 4, &tok), "add_pos with rows %% N != 0 accepted");
    int xs[4] = {1, 1, 6, 6};
    ssl_tensor img = mk(&r, 4, xs, 1.0f, 0);
    CHECK(!ssl_op_patchify(&g, &img, 4, SSL_PATCH_CHW) && strstr(ctx.err, "multiple"),
          "patchify 6x6 by 4: '%s'", ctx.err);
    CHECK(!ssl_op_layernorm(&g, NULL, NULL, NULL, 1e-6f), "NULL input must give NULL");

    ssl_vit_config cfg;
    char err[SSL_ERR_LEN];
    ssl_vit_preset(&cfg, "tiny", 12, 4, 1, err);
    cfg.depth = 1;
    ssl_vit m;
    cfg.img_size = 14;
    CHECK(ssl_vit_init(&m, &cfg, &r, err) == SSL_EINVAL && strstr(err, "multiple"),
          "image 14 with patch 4: '%s'", err);
    cfg.img_size = 12;
    cfg.heads = 5;
    CHECK(ssl_vit_init(&m, &cfg, &r, err) == SSL_EINVAL && strstr(err, "heads"),
          "192 wide with 5 heads: '%s'", err);
    cfg.heads = 3;
    cfg.embed_dim = 18;
    cfg.pos = SSL_VIT_POS_SINCOS;
    CHECK(ssl_vit_init(&m, &cfg, &r, err) == SSL_EINVAL && strstr(err, "sin-cos"),
          "sin-cos with 18 wide: '%s'", err);
    cfg.embed_dim = 24;
    CHECK(ssl_vit_init(&m, &cfg, &r, err) == SSL_OK, "vit init: %s", err);
    /* other sizes are fine when they tile into patches (parity above) */
    int ys[4] = {1, 1, 14, 14};
    ssl_tensor big = mk(&r, 4, ys, 1.0f, 0);
    ctx.err[0] = 0;
    CHECK(!ssl_vit_forward(&g, &m, &big) && strstr(ctx.err, "multiples of the patch 4"),
          "14 px into a patch-4 ViT: '%s'", ctx.err);
    int cs[4] = {1, 3, 12, 12};
    ssl_tensor rgb = mk(&r, 4, cs, 1.0f, 0);
    ctx.err[0] = 0;
    CHECK(!ssl_vit_forward(&g, &m, &rgb) && strstr(ctx.err, "(N, 1, H, W)"),
          "3 channels into a 1-channel ViT: '%s'", ctx.err);
    ssl_vit_free(&m);
    ssl_vit_pos p;
    CHECK(ssl_vit_pos_from_name("rope", &p) == SSL_EINVAL, "pos 'rope' accepted");
    ssl_graph_free(&g);
    ssl_tensor *all[] = {&a, &t, &tok, &vis, &img, &big, &rgb};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) unmk(all[i]);
    ssl_ctx_free(&ctx);
}

int main(void)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    test_finite_differences(&ctx);
    test_op_parity(&ctx);
    ssl_ctx_free(&ctx);
    printf("PyTorch parity of whole ViTs:\n");
    static const char *const models[] = {"vit_c1_learned.safetensors", "vit_c3_sincos.safetensors",
                                         "vit_c3_avg.safetensors", "vit_c1_droppath.safetensors"};
    for (int i = 0; i < 4; i++) test_model(models[i], 1);
    test_model(models[0], 2);
    test_model(models[3], 2);
    test_presets();
    test_threads();
    test_arena();
    test_inference_memory();
    test_errors();
    return check_report("test_vit");
}
