/* Transformer graph ops (selfsup/graph_tf.h): layer norm, fused multi-head
 * self-attention, patch embedding and token-sequence ops.
 *
 * Plain C on every backend; matrix products go through ssl_sgemm, one call
 * per (sample, head) or per row chunk, one OpenMP thread each. Sums that
 * threads share (parameter gradients of layer norm, position embeddings,
 * tokens) are split by columns or rows the same way whatever the thread
 * count, so results do not depend on scheduling. Checked against PyTorch and
 * finite differences by tests/test_vit.c. */
#include "selfsup/graph_tf.h"

#include "graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Columns per task of a column sum (parameter gradients). */
#define COL_BLOCK 16

static int will_record(const ssl_graph *g, const ssl_tensor *a, const ssl_tensor *b,
                       const ssl_tensor *c)
{
    return g->record && ssl_graph_needs_grad(a, b, c);
}

static ssl_tensor *new_2d(ssl_graph *g, long rows, int cols)
{
    int shape[2] = {(int)rows, cols};
    return ssl_tensor_new(g, 2, shape, SSL_LAYOUT_NCHW);
}

/* A token sequence x (N*T, D): sets T and D; 0 when x is not one. */
static int token_dims(const ssl_tensor *x, int N, int *T, int *D)
{
    if (x->ndim != 2 || N < 1 || x->shape[0] % N || x->shape[1] < 1) return 0;
    *T = x->shape[0] / N;
    *D = x->shape[1];
    return 1;
}

/* dst[j] += sum of src[r * D + j] over rows r < rows that are taken:
 * map[r] < 0 when map is given, mask[r] != 0 when mask is given (neither:
 * every row). Threads split the columns; each sums its rows in order. */
static void col_sum_rows(const ssl_graph *g, float *dst, const float *src, long rows, int D,
                         const int32_t *map, const uint8_t *mask)
{
    int nb = (D + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (rows * D >= SSL_PAR_MIN)
    for (int b = 0; b < nb; b++) {
        int j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < D ? j0 + COL_BLOCK : D;
        double s[COL_BLOCK] = {0};
        for (long r = 0; r < rows; r++) {
            if ((map && map[r] >= 0) || (mask && !mask[r])) continue;
            const float *row = src + r * D;
            for (int j = j0; j < j1; j++) s[j - j0] += row[j];
        }
        for (int j = j0; j < j1; j++) dst[j] += (float)s[j - j0];
    }
}

/* dst[j] += sum over n < count of src[n * stride + j], j < D. */
static void col_sum_strided(float *dst, const float *src, int count, long stride, int D)
{
    for (int j = 0; j < D; j++) {
        double s = 0;
        for (int n = 0; n < count; n++) s += src[n * stride + j];
        dst[j] += (float)s;
    }
}

/* ================================================================ layer norm */

/* Saved: mean (M), rstd (M). */
static void layernorm_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *gm = n->in[1], *bt = n->in[2];
    const int M = x->shape[0], D = x->shape[1];
    const float *mean = n->saved, *rstd = mean + M;
    const float *dy = n->out->grad, *xd = x->data, *gw = gm ? gm->data : NULL;
    const long work = (long)M * D;
    if (x->requires_grad) {
        float *dx = x->grad;
        /* dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy * gamma */
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (work >= SSL_PAR_MIN)
        for (int i = 0; i < M; i++) {
            const float *xr = xd + (long)i * D, *gr = dy + (long)i * D;
            float *dr = dx + (long)i * D;
            const float mu = mean[i], rs = rstd[i];
            float a = 0, b = 0;
            for (int j = 0; j < D; j++) {
                float gj = gw ? gr[j] * gw[j] : gr[j];
                a += gj;
                b += gj * ((xr[j] - mu) * rs);
            }
            a /= (float)D;
            b /= (float)D;
            for (int j = 0; j < D; j++) {
                float gj = gw ? gr[j] * gw[j] : gr[j];
                dr[j] += rs * (gj - a - (xr[j] - mu) * rs * b);
            }
        }
    }
    float *dg = gm && gm->requires_grad ? gm->grad : NULL;
    float *db = bt && bt->requires_grad ? bt->grad : NULL;
    if (!dg && !db) return;
    int nb = (D + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (work >= SSL_PAR_MIN)
    for (int b = 0; b < nb; b++) {
        int j0 = b * COL_BLOCK, j1 = j0 + COL_BLOCK < D ? j0 + COL_BLOCK : D;
        double sg[COL_BLOCK] = {0}, sb[COL_BLOCK] = {0};
        for (int i = 0; i < M; i++) {
            const float *xr = xd + (long)i * D, *gr = dy + (long)i * D;
            const float mu = mean[i], rs = rstd[i];
            for (int j = j0; j < j1; j++) {
                sg[j - j0] += gr[j] * ((xr[j] - mu) * rs);
                sb[j - j0] += gr[j];
            }
        }
        for (int j = j0; j < j1; j++) {
            if (dg) dg[j] += (float)sg[j - j0];
            if (db) db[j] += (float)sb[j - j0];
        }
    }
}

ssl_tensor *ssl_op_layernorm(ssl_graph *g, ssl_tensor *x, ssl_tensor *gamma, ssl_tensor *beta,
                             float eps)
{
    if (!x) return NULL;
    if (x->ndim != 2 || x->shape[1] < 1)
        return ssl_graph_shape_error(g, "layernorm", "needs a 2-D (M, D) tensor");
    const int M = x->shape[0], D = x->shape[1];
    if ((gamma && ssl_tensor_numel(gamma) != D) || (beta && ssl_tensor_numel(beta) != D))
        return ssl_graph_shape_error(g, "layernorm", "gamma or beta is not (D)");
    if (!(eps >= 0)) return ssl_graph_arg_error(g, "layernorm", "eps must be >= 0");
    ssl_tensor *y = ssl_tensor_new(g, 2, x->shape, SSL_LAYOUT_NCHW);
    /* the row statistics are kept only for a backward */
    const int rec = will_record(g, x, gamma, beta);
    float *stats = rec ? ssl_graph_saved(g, sizeof(float) * 2 * (size_t)(M > 0 ? M : 1)) : NULL;
    if (!y || (rec && !stats)) return NULL;
    float *mean = stats, *rstd = stats ? stats + M : NULL;
    const float *xd = x->data, *gw = gamma ? gamma->data : NULL, *bw = beta ? beta->data : NULL;
    float *yd = y->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)M * D >= SSL_PAR_MIN)
    for (int i = 0; i < M; i++) {
        const float *xr = xd + (long)i * D;
        float *yr = yd + (long)i * D;
        float s = 0;
        for (int j = 0; j < D; j++) s += xr[j];
        const float mu = s / (float)D;
        float v = 0;
        for (int j = 0; j < D; j++) v += (xr[j] - mu) * (xr[j] - mu);
        const float rs = 1.0f / sqrtf(v / (float)D + eps);
        if (stats) {
            mean[i] = mu;
            rstd[i] = rs;
        }
        for (int j = 0; j < D; j++) {
            float h = (xr[j] - mu) * rs;
            if (gw) h *= gw[j];
            yr[j] = bw ? h + bw[j] : h;
        }
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, layernorm_bwd, y, x, gamma, beta, &fail);
    if (fail) return NULL;
    if (n) n->saved = stats;
    return y;
}

/* ================================================================ attention */

/* A row of scores -> probabilities in place; *lse (when given) gets
 * log(sum(exp(row))) for recomputing them. */
static void softmax_row(float *r, int T, float *lse)
{
    float mx = r[0];
    for (int j = 1; j < T; j++) mx = r[j] > mx ? r[j] : mx;
    float s = 0;
    for (int j = 0; j < T; j++) {
        r[j] = expf(r[j] - mx);
        s += r[j];
    }
    const float inv = 1.0f / s;
    for (int j = 0; j < T; j++) r[j] *= inv;
    if (lse) *lse = mx + logf(s);
}

/* iattr: B, T, heads, recompute. Saved: P (B*heads, T, T) when saving,
 * else the row log-sum-exp (B*heads, T). */
static void attention_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *qkv = n->in[0];
    if (!qkv->requires_grad) return;
    const int B = n->iattr[0], T = n->iattr[1], H = n->iattr[2], recompute = n->iattr[3];
    const int D3 = qkv->shape[1], D = D3 / 3, dh = D / H;
    const float scale = n->fattr[0];
    const int nt = ssl_graph_threads(g);
    const long tt = (long)T * T;
    float *scr = ssl_ctx_scratch(g->ctx, sizeof(float) * (size_t)tt * (recompute ? 2 : 1) * nt);
    if (!scr) return; /* ctx->failed is set: the backward pass stops */
    const float *saved = n->saved, *dout = n->out->grad, *xd = qkv->data;
    float *dxd = qkv->grad;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        float *dP = scr + (long)ssl_thread_id() * tt * (recompute ? 2 : 1);
        const long r0 = (long)b * T;
        const float *q = xd + r0 * D3 + (long)h * dh, *k = q + D, *v = q + 2 * D;
        float *dq = dxd + r0 * D3 + (long)h * dh, *dk = dq + D, *dv = dq + 2 * D;
        const float *dO = dout + r0 * D + (long)h * dh;
        const float *P;
        if (recompute) {
            float *Pw = dP + tt;
            const float *lse = saved + (long)bh * T;
            ssl_sgemm(0, 1, T, T, dh, scale, q, D3, k, D3, 0.0f, Pw, T);
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++) {
                    float *pij = Pw + (long)i * T + j;
                    *pij = expf(*pij - lse[i]);
                }
            P = Pw;
        } else {
            P = saved + (long)bh * tt;
        }
        /* O = P V: dP = dO V^T, dV += P^T dO */
        ssl_sgemm(0, 1, T, T, dh, 1.0f, dO, D, v, D3, 0.0f, dP, T);
        ssl_sgemm(1, 0, T, dh, T, 1.0f, P, T, dO, D, 1.0f, dv, D3);
        /* softmax: dS = P (dP - rowsum(P dP)) */
        for (int i = 0; i < T; i++) {
            const float *pr = P + (long)i * T;
            float *gr = dP + (long)i * T;
            float s = 0;
            for (int j = 0; j < T; j++) s += pr[j] * gr[j];
            for (int j = 0; j < T; j++) gr[j] = pr[j] * (gr[j] - s);
        }
        /* S = scale q k^T: dq += scale dS k, dk += scale dS^T q */
        ssl_sgemm(0, 0, T, dh, T, scale, dP, T, k, D3, 1.0f, dq, D3);
        ssl_sgemm(1, 0, T, dh, T, scale, dP, T, q, D3, 1.0f, dk, D3);
    }
}

ssl_tensor *ssl_op_attention_mode(ssl_graph *g, ssl_tensor *qkv, int B, int T, int heads,
                                  ssl_attn_mode mode)
{
    if (!qkv) return NULL;
    if (B < 1 || T < 1 || heads < 1 || qkv->ndim != 2 || (long)qkv->shape[0] != (long)B * T ||
        qkv->shape[1] % 3 || (qkv->shape[1] / 3) % heads || qkv->shape[1] < 3)
        return ssl_graph_shape_error(g, "attention",
                                     "needs qkv (B*T, 3*D) with D a multiple of heads");
    if (mode != SSL_ATTN_AUTO && mode != SSL_ATTN_SAVE && mode != SSL_ATTN_RECOMPUTE)
        return ssl_graph_arg_error(g, "attention", "unknown mode");
    const int D3 = qkv->shape[1], D = D3 / 3, H = heads, dh = D / H;
    const float scale = 1.0f / sqrtf((float)dh);
    const int recompute =
        mode == SSL_ATTN_RECOMPUTE || (mode == SSL_ATTN_AUTO && T > SSL_ATTN_SAVE_MAX_T);
    const int rec = will_record(g, qkv, NULL, NULL);
    const long tt = (long)T * T;
    const int nt = ssl_graph_threads(g);
    ssl_tensor *y = new_2d(g, (long)B * T, D);
    if (!y) return NULL;
    float *saved = NULL, *scr = NULL;
    if (rec) {
        saved = ssl_graph_saved(g, sizeof(float) * (size_t)B * H * (recompute ? T : tt));
        if (!saved) return NULL;
    }
    if (!rec || recompute) {
        scr = ssl_ctx_scratch(g->ctx, sizeof(float) * (size_t)tt * nt);
        if (!scr) return NULL;
    }
    const float *xd = qkv->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const long r0 = (long)b * T;
        const float *q = xd + r0 * D3 + (long)h * dh, *k = q + D, *v = q + 2 * D;
        float *P = rec && !recompute ? saved + (long)bh * tt : scr + (long)ssl_thread_id() * tt;
        float *lse = rec && recompute ? saved + (long)bh * T : NULL;
        ssl_sgemm(0, 1, T, T, dh, scale, q, D3, k, D3, 0.0f, P, T);
        for (int i = 0; i < T; i++) softmax_row(P + (long)i * T, T, lse ? lse + i : NULL);
        ssl_sgemm(0, 0, T, dh, T, 1.0f, P, T, v, D3, 0.0f, yd + r0 * D + (long)h * dh, D);
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, attention_bwd, y, qkv, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = saved;
        n->iattr[0] = B;
        n->iattr[1] = T;
        n->iattr[2] = H;
        n->iattr[3] = recompute;
        n->fattr[0] = scale;
    }
    return y;
}

ssl_tensor *ssl_op_attention(ssl_graph *g, ssl_tensor *qkv, int B, int T, int heads)
{
    return ssl_op_attention_mode(g, qkv, B, T, heads, SSL_ATTN_AUTO);
}

/* ================================================================ patches */

/* Copies between image x (N, C, H, W) in layout l and patch rows
 * (N*T, C*p*p) in `order`; to_rows: image -> rows (overwrite), else rows
 * -> image (accumulate). Patches do not overlap, so rows are independent. */
static void patch_copy(const ssl_graph *g, float *rows, float *img, const ssl_tensor *x, int p,
                       ssl_patch_order order, int to_rows)
{
    const int N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int gh = H / p, gw = W / p, T = gh * gw, K = C * p * p;
    const ssl_layout l = x->layout;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * T * K >= SSL_PAR_MIN)
    for (long r = 0; r < (long)N * T; r++) {
        const int n = (int)(r / T), t = (int)(r % T), pi = t / gw, pj = t % gw;
        float *row = rows + r * K;
        for (int c = 0; c < C; c++)
            for (int ky = 0; ky < p; ky++) {
                float *px = img + ssl_act_index(l, N, C, H * W, n, c, (pi * p + ky) * W + pj * p);
                for (int kx = 0; kx < p; kx++) {
                    long o = order == SSL_PATCH_CHW ? ((long)c * p + ky) * p + kx
                                                    : ((long)ky * p + kx) * C + c;
                    if (to_rows)
                        row[o] = px[kx];
                    else
                        px[kx] += row[o];
                }
            }
    }
}

/* iattr: p, order */
static void patchify_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (x->requires_grad)
        patch_copy(g, n->out->grad, x->grad, x, n->iattr[0], (ssl_patch_order)n->iattr[1], 0);
}

ssl_tensor *ssl_op_patchify(ssl_graph *g, ssl_tensor *x, int p, ssl_patch_order order)
{
    if (!x) return NULL;
    if (x->ndim != 4 || p < 1 || x->shape[2] % p || x->shape[3] % p || x->shape[2] < p ||
        x->shape[3] < p)
        return ssl_graph_shape_error(g, "patchify",
                                     "needs (N, C, H, W) with H and W multiples of the patch");
    if (order != SSL_PATCH_CHW && order != SSL_PATCH_HWC)
        return ssl_graph_arg_error(g, "patchify", "unknown patch order");
    const int N = x->shape[0], C = x->shape[1], T = (x->shape[2] / p) * (x->shape[3] / p);
    ssl_tensor *y = new_2d(g, (long)N * T, C * p * p);
    if (!y) return NULL;
    patch_copy(g, y->data, x->data, x, p, order, 1);
    int fail;
    ssl_node *n = ssl_graph_record(g, patchify_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->iattr[0] = p;
        n->iattr[1] = order;
    }
    return y;
}

ssl_tensor *ssl_op_patch_embed(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b)
{
    if (!x || !w) return NULL;
    if (x->ndim != 4 || w->ndim != 4 || w->shape[1] != x->shape[1] || w->shape[2] != w->shape[3])
        return ssl_graph_shape_error(g, "patch_embed", "needs x (N, C, H, W) and w (D, C, p, p)");
    if (w->node || (w->requires_grad && !w->grad))
        return ssl_graph_arg_error(g, "patch_embed", "the weight must be a parameter (own gradient buffer)");
    ssl_tensor *cols = ssl_op_patchify(g, x, w->shape[2], SSL_PATCH_CHW);
    if (!cols) return NULL;
    cols->transient = 1; /* only the product below reads it */
    /* The same weight as a (D, C*p*p) matrix: data and gradient shared. */
    ssl_tensor *w2 = ssl_graph_saved(g, sizeof *w2);
    if (!w2) return NULL;
    *w2 = *w;
    w2->ndim = 2;
    w2->shape[1] = w->shape[1] * w->shape[2] * w->shape[3];
    w2->shape[2] = w2->shape[3] = 0;
    return ssl_op_linear(g, cols, w2, b);
}

/* ================================================================ tokens */

static void prepend_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *tok = n->in[1], *pos = n->in[2];
    const int N = n->iattr[0], T = x->shape[0] / N, D = x->shape[1];
    const float *dy = n->out->grad;
    if (x->requires_grad) {
        float *dx = x->grad;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * T * D >= SSL_PAR_MIN)
        for (int s = 0; s < N; s++) {
            const float *src = dy + ((long)s * (T + 1) + 1) * D;
            float *dst = dx + (long)s * T * D;
            for (long i = 0; i < (long)T * D; i++) dst[i] += src[i];
        }
    }
    if (tok->requires_grad) col_sum_strided(tok->grad, dy, N, (long)(T + 1) * D, D);
    if (pos && pos->requires_grad) col_sum_strided(pos->grad, dy, N, (long)(T + 1) * D, D);
}

ssl_tensor *ssl_op_prepend_token(ssl_graph *g, ssl_tensor *x, int N, ssl_tensor *tok,
                                 ssl_tensor *pos)
{
    if (!x || !tok) return NULL;
    int T, D;
    if (!token_dims(x, N, &T, &D) || ssl_tensor_numel(tok) != D ||
        (pos && ssl_tensor_numel(pos) != D))
        return ssl_graph_shape_error(g, "prepend_token",
                                     "needs x (N*T, D) and a token of D values");
    ssl_tensor *y = new_2d(g, (long)N * (T + 1), D);
    if (!y) return NULL;
    const float *xd = x->data, *td = tok->data, *pd = pos ? pos->data : NULL;
    float *yd = y->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * T * D >= SSL_PAR_MIN)
    for (int s = 0; s < N; s++) {
        float *dst = yd + (long)s * (T + 1) * D;
        for (int j = 0; j < D; j++) dst[j] = pd ? td[j] + pd[j] : td[j];
        memcpy(dst + D, xd + (long)s * T * D, sizeof(float) * (size_t)T * D);
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, prepend_bwd, y, x, tok, pos, &fail);
    if (fail) return NULL;
    if (n) n->iattr[0] = N;
    return y;
}

static void add_pos_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *pos = n->in[1];
    const int N = n->iattr[0], T = x->shape[0] / N, D = x->shape[1];
    const float *dy = n->out->grad;
    const long m = (long)N * T * D;
    if (x->requires_grad) {
        float *dx = x->grad;
#pragma omp parallel for simd schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
        for (long i = 0; i < m; i++) dx[i] += dy[i];
    }
    if (pos->requires_grad) {
        float *dp = pos->grad;
        /* each thread owns position rows and sums the samples in order */
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
        for (int t = 0; t < T; t++) {
            float *dr = dp + (long)t * D;
            for (int j = 0; j < D; j++) {
                double s = 0;
                for (int k = 0; k < N; k++) s += dy[((long)k * T + t) * D + j];
                dr[j] += (float)s;
            }
        }
    }
}

ssl_tensor *ssl_op_add_pos(ssl_graph *g, ssl_tensor *x, int N, ssl_tensor *pos)
{
    if (!x || !pos) return NULL;
    int T, D;
    if (!token_dims(x, N, &T, &D) || ssl_tensor_numel(pos) != (long)T * D)
        return ssl_graph_shape_error(g, "add_pos", "needs x (N*T, D) and pos of T*D values");
    ssl_tensor *y = new_2d(g, (long)N * T, D);
    if (!y) return NULL;
    const float *xd = x->data, *pd = pos->data;
    float *yd = y->data;
    const long td = (long)T * D;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (N * td >= SSL_PAR_MIN)
    for (int s = 0; s < N; s++)
        for (long i = 0; i < td; i++) yd[s * td + i] = xd[s * td + i] + pd[i];
    int fail;
    ssl_node *n = ssl_graph_record(g, add_pos_bwd, y, x, pos, NULL, &fail);
    if (fail) return NULL;
    if (n) n->iattr[0] = N;
    return y;
}

/* Saved: idx (N*K). iattr: N, K. */
static void gather_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    const int N = n->iattr[0], K = n->iattr[1], T = x->shape[0] / N, D = x->shape[1];
    const int32_t *idx = n->saved;
    const float *dy = n->out->grad;
    float *dx = x->grad;
    /* per sample, in k order: repeated indices add up the same way always */
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * K * D >= SSL_PAR_MIN)
    for (int s = 0; s < N; s++)
        for (int k = 0; k < K; k++) {
            float *dr = dx + ((long)s * T + idx[(long)s * K + k]) * D;
            const float *gr = dy + ((long)s * K + k) * D;
            for (int j = 0; j < D; j++) dr[j] += gr[j];
        }
}

ssl_tensor *ssl_op_gather_tokens(ssl_graph *g, ssl_tensor *x, int N, const int32_t *idx, int K)
{
    if (!x) return NULL;
    int T, D;
    if (!token_dims(x, N, &T, &D) || K < 1 || !idx)
        return ssl_graph_shape_error(g, "gather_tokens",
                                     "needs x (N*T, D) and K >= 1 indices per sample");
    for (long i = 0; i < (long)N * K; i++)
        if (idx[i] < 0 || idx[i] >= T) return ssl_graph_arg_error(g, "gather_tokens", "index out of range");
    ssl_tensor *y = new_2d(g, (long)N * K, D);
    if (!y) return NULL;
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * K * D >= SSL_PAR_MIN)
    for (int s = 0; s < N; s++)
        for (int k = 0; k < K; k++)
            memcpy(yd + ((long)s * K + k) * D, xd + ((long)s * T + idx[(long)s * K + k]) * D,
                   sizeof(float) * D);
    int32_t *saved = NULL;
    if (will_record(g, x, NULL, NULL)) {
        saved = ssl_graph_saved(g, sizeof(int32_t) * (size_t)N * K);
        if (!saved) return NULL;
        memcpy(saved, idx, sizeof(int32_t) * (size_t)N * K);
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, gather_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = saved;
        n->iattr[0] = N;
        n->iattr[1] = K;
    }
    return y;
}

/* Saved: map (N*T): the source row n*K + k of output row n*T + t, or -1
 * for a fill row. iattr: N, T. */
static void scatter_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *fill = n->in[1];
    const int N = n->iattr[0], T = n->iattr[1], D = x->shape[1];
    const int32_t *map = n->saved;
    const float *dy = n->out->grad;
    if (x->requires_grad) {
        float *dx = x->grad;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * T * D >= SSL_PAR_MIN)
        for (long r = 0; r < (long)N * T; r++) {
            if (map[r] < 0) continue;
            float *dr = dx + (long)map[r] * D;
            const float *gr = dy + r * D;
            for (int j = 0; j < D; j++) dr[j] += gr[j];
        }
    }
    if (fill && fill->requires_grad) col_sum_rows(g, fill->grad, dy, (long)N * T, D, map, NULL);
}

ssl_tensor *ssl_op_scatter_tokens(ssl_graph *g, ssl_tensor *x, int N, const int32_t *idx, int T,
                                  ssl_tensor *fill)
{
    if (!x) return NULL;
    int K, D;
    if (!token_dims(x, N, &K, &D) || T < K || !idx || (fill && ssl_tensor_numel(fill) != D))
        return ssl_graph_shape_error(g, "scatter_tokens",
                                     "needs x (N*K, D), T >= K and a fill token of D values");
    int32_t *map = ssl_graph_saved(g, sizeof(int32_t) * (size_t)N * T);
    if (!map) return NULL;
    for (long r = 0; r < (long)N * T; r++) map[r] = -1;
    for (int s = 0; s < N; s++)
        for (int k = 0; k < K; k++) {
            int32_t t = idx[(long)s * K + k];
            if (t < 0 || t >= T) return ssl_graph_arg_error(g, "scatter_tokens", "index out of range");
            if (map[(long)s * T + t] >= 0)
                return ssl_graph_arg_error(g, "scatter_tokens", "an index repeats within a sample");
            map[(long)s * T + t] = s * K + k;
        }
    ssl_tensor *y = new_2d(g, (long)N * T, D);
    if (!y) return NULL;
    const float *xd = x->data, *fd = fill ? fill->data : NULL;
    float *yd = y->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * T * D >= SSL_PAR_MIN)
    for (long r = 0; r < (long)N * T; r++) {
        float *dst = yd + r * D;
        if (map[r] >= 0)
            memcpy(dst, xd + (long)map[r] * D, sizeof(float) * D);
        else if (fd)
            memcpy(dst, fd, sizeof(float) * D);
        else
            memset(dst, 0, sizeof(float) * D);
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, scatter_bwd, y, x, fill, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = map;
        n->iattr[0] = N;
        n->iattr[1] = T;
    }
    return y;
}

/* Saved: mask (N*T). */
static void mask_tokens_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *tok = n->in[1];
    const long rows = x->shape[0];
    const int D = x->shape[1];
    const uint8_t *mask = n->saved;
    const float *dy = n->out->grad;
    if (x->requires_grad) {
        float *dx = x->grad;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (rows * D >= SSL_PAR_MIN)
        for (long r = 0; r < rows; r++) {
            if (mask[r]) continue;
            for (int j = 0; j < D; j++) dx[r * D + j] += dy[r * D + j];
        }
    }
    if (tok->requires_grad) col_sum_rows(g, tok->grad, dy, rows, D, NULL, mask);
}

ssl_tensor *ssl_op_mask_tokens(ssl_graph *g, ssl_tensor *x, int N, const uint8_t *mask,
                               ssl_tensor *tok)
{
    if (!x || !tok) return NULL;
    int T, D;
    if (!token_dims(x, N, &T, &D) || !mask || ssl_tensor_numel(tok) != D)
        return ssl_graph_shape_error(g, "mask_tokens",
                                     "needs x (N*T, D), a mask and a token of D values");
    const long rows = (long)N * T;
    ssl_tensor *y = new_2d(g, rows, D);
    uint8_t *m = ssl_graph_saved(g, (size_t)rows);
    if (!y || !m) return NULL;
    for (long r = 0; r < rows; r++) m[r] = mask[r] != 0;
    const float *xd = x->data, *td = tok->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (rows * D >= SSL_PAR_MIN)
    for (long r = 0; r < rows; r++)
        memcpy(yd + r * D, m[r] ? td : xd + r * D, sizeof(float) * D);
    int fail;
    ssl_node *n = ssl_graph_record(g, mask_tokens_bwd, y, x, tok, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = m;
    return y;
}

/* saved: the N scales */
static void add_sample_scaled_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *h = n->in[1];
    const int N = n->iattr[0];
    const long rows = x->shape[0], D = x->shape[1], per = rows / N * D;
    const float *scale = n->saved, *dy = n->out->grad;
    if (x->requires_grad) {
        float *dx = x->grad;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (rows * D >= SSL_PAR_MIN)
        for (long i = 0; i < rows * D; i++) dx[i] += dy[i];
    }
    if (h->requires_grad) {
        float *dh = h->grad;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (rows * D >= SSL_PAR_MIN)
        for (int s = 0; s < N; s++) {
            const float c = scale[s];
            if (c == 0.0f) continue;
            for (long i = (long)s * per; i < (long)(s + 1) * per; i++) dh[i] += c * dy[i];
        }
    }
}

ssl_tensor *ssl_op_add_sample_scaled(ssl_graph *g, ssl_tensor *x, ssl_tensor *h, int N,
                                     const float *scale)
{
    if (!x || !h) return NULL;
    int T, D;
    if (!token_dims(x, N, &T, &D) || h->ndim != 2 || h->shape[0] != x->shape[0] ||
        h->shape[1] != D || !scale)
        return ssl_graph_shape_error(g, "add_sample_scaled",
                                     "needs x and h (N*T, D) of one shape and N scales");
    ssl_tensor *y = new_2d(g, (long)N * T, D);
    float *sc = ssl_graph_saved(g, sizeof(float) * (size_t)N);
    if (!y || !sc) return NULL;
    memcpy(sc, scale, sizeof(float) * (size_t)N);
    const long per = (long)T * D;
    const float *xd = x->data, *hd = h->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (N * per >= SSL_PAR_MIN)
    for (int s = 0; s < N; s++) {
        const float c = sc[s];
        for (long i = (long)s * per; i < (long)(s + 1) * per; i++) yd[i] = xd[i] + c * hd[i];
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, add_sample_scaled_bwd, y, x, h, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = sc;
        n->iattr[0] = N;
    }
    return y;
}

/* iattr: N, start, count */
static void token_slice_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    const int N = n->iattr[0], start = n->iattr[1], cnt = n->iattr[2];
    const int T = x->shape[0] / N, D = x->shape[1];
    const long len = (long)cnt * D;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (N * len >= SSL_PAR_MIN)
    for (int s = 0; s < N; s++) {
        float *dst = x->grad + ((long)s * T + start) * D;
        const float *src = n->out->grad + s * len;
        for (long i = 0; i < len; i++) dst[i] += src[i];
    }
}

ssl_tensor *ssl_op_token_slice(ssl_graph *g, ssl_tensor *x, int N, int start, int count)
{
    if (!x) return NULL;
    int T, D;
    if (!token_dims(x, N, &T, &D) || start < 0 || count < 1 || start + count > T)
        return ssl_graph_shape_error(g, "token_slice", "needs x (N*T, D) and a range inside T");
    ssl_tensor *y = new_2d(g, (long)N * count, D);
    if (!y) return NULL;
    const long len = (long)count * D;
    for (int s = 0; s < N; s++)
        memcpy(y->data + s * len, x->data + ((long)s * T + start) * D, sizeof(float) * len);
    int fail;
    ssl_node *n = ssl_graph_record(g, token_slice_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->iattr[0] = N;
        n->iattr[1] = start;
        n->iattr[2] = count;
    }
    return y;
}

/* iattr: N, start */
static void token_mean_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    const int N = n->iattr[0], start = n->iattr[1];
    const int T = x->shape[0] / N, D = x->shape[1];
    const float inv = 1.0f / (float)(T - start);
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * T * D >= SSL_PAR_MIN)
    for (int s = 0; s < N; s++) {
        const float *gr = n->out->grad + (long)s * D;
        for (int t = start; t < T; t++) {
            float *dr = x->grad + ((long)s * T + t) * D;
            for (int j = 0; j < D; j++) dr[j] += gr[j] * inv;
        }
    }
}

ssl_tensor *ssl_op_token_mean(ssl_graph *g, ssl_tensor *x, int N, int start)
{
    if (!x) return NULL;
    int T, D;
    if (!token_dims(x, N, &T, &D) || start < 0 || start >= T)
        return ssl_graph_shape_error(g, "token_mean", "needs x (N*T, D) and start < T");
    ssl_tensor *y = new_2d(g, N, D);
    if (!y) return NULL;
    for (int s = 0; s < N; s++) {
        const float *xs = x->data + ((long)s * T + start) * D;
        for (int j = 0; j < D; j++) {
            double a = 0;
            for (int t = 0; t < T - start; t++) a += xs[(long)t * D + j];
            y->data[(long)s * D + j] = (float)(a / (T - start));
        }
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, token_mean_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->iattr[0] = N;
        n->iattr[1] = start;
    }
    return y;
}

int ssl_pos_embed_sincos_2d(float *out, int D, int gh, int gw)
{
    if (D < 4 || D % 4 || gh < 1 || gw < 1) return SSL_EINVAL;
    const int q = D / 4; /* frequencies per coordinate */
    for (int i = 0; i < gh; i++)
        for (int j = 0; j < gw; j++) {
            float *row = out + ((long)i * gw + j) * D;
            for (int half = 0; half < 2; half++) {
                /* MAE's meshgrid(grid_w, grid_h) puts the column first */
                double pos = half == 0 ? j : i;
                for (int k = 0; k < q; k++) {
                    double a = pos * (1.0 / pow(10000.0, (double)k / q));
                    row[half * 2 * q + k] = (float)sin(a);
                    row[half * 2 * q + q + k] = (float)cos(a);
                }
            }
        }
    return SSL_OK;
}
