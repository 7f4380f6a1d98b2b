/* Graph ops for the self-supervised objectives: stop-gradient, scaling and
 * GELU for the heads, and the losses of BYOL / SimSiam (cosine), SwAV / DINO
 * (soft cross-entropy), MoCo (InfoNCE against a queue), Barlow Twins and
 * VICReg. Every loss returns a (1) tensor; its backward scales by the
 * incoming d(loss) and accumulates (+=) into the inputs that require a
 * gradient. Reductions run in double (soft_ce's: float blocks added in
 * double), matrix products through ssl_sgemm.
 *
 * Buffers the backward needs are taken from the arena during the forward, so
 * a backward never allocates and cannot fail. */
#include "graph_internal.h"
#include "ops/fastexp.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NORM_EPS 1e-12f /* F.normalize's default */
#define BN_EPS 1e-5     /* BatchNorm1d's default, as Barlow Twins uses it */

/* Whether ssl_graph_record() will record a node for these inputs: the
 * forward then also prepares what the backward needs. */
static int will_record(ssl_graph *g, ssl_tensor *a, ssl_tensor *b)
{
    return g->record && ssl_graph_needs_grad(a, b, NULL);
}


/* Two 2-D tensors of the same (N, D) with N >= min_rows. */
static int same_2d(const ssl_tensor *a, const ssl_tensor *b, int min_rows)
{
    return a->ndim == 2 && b->ndim == 2 && a->shape[0] == b->shape[0] &&
           a->shape[1] == b->shape[1] && a->shape[0] >= min_rows && a->shape[1] >= 1;
}

static ssl_tensor *new_scalar(ssl_graph *g)
{
    int one = 1;
    return ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
}

/* ---- stop-gradient ---- */
ssl_tensor *ssl_op_detach(ssl_graph *g, ssl_tensor *x)
{
    if (!x) return NULL;
    /* A new header over the same data: no node, so nothing flows back. */
    ssl_tensor *y = ssl_graph_saved(g, sizeof *y);
    if (!y) return NULL;
    *y = *x;
    y->grad = NULL;
    y->requires_grad = 0;
    return y;
}

/* ---- scale ---- */
static void scale_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    long m = ssl_tensor_numel(x);
    const float *dy = n->out->grad;
    float *dx = x->grad, s = n->fattr[0];
#pragma omp parallel for simd schedule(static) num_threads(g->ctx->n_threads) if (m >= SSL_PAR_MIN)
    for (long i = 0; i < m; i++) dx[i] += s * dy[i];
}

ssl_tensor *ssl_op_scale(ssl_graph *g, ssl_tensor *x, float s)
{
    if (!x) return NULL;
    ssl_tensor *y = ssl_tensor_new(g, x->ndim, x->shape, x->layout);
    if (!y) return NULL;
    long m = ssl_tensor_numel(x);
    const float *px = x->data;
    float *py = y->data;
#pragma omp parallel for simd schedule(static) num_threads(g->ctx->n_threads) if (m >= SSL_PAR_MIN)
    for (long i = 0; i < m; i++) py[i] = s * px[i];
    int fail;
    ssl_node *n = ssl_graph_record(g, scale_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->fattr[0] = s;
    return y;
}

/* ---- GELU (erf form), vectorised (ops/fastexp.c) ---- */
#define GELU_CHUNK 4096 /* elements per loop iteration split over threads */

static void gelu_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    long m = ssl_tensor_numel(x);
    const float *px = x->data, *dy = n->out->grad;
    float *dx = x->grad;
    /* d/dx x Phi(x) = Phi(x) + x phi(x); elementwise: any split gives the same dx */
#pragma omp parallel for schedule(static) num_threads(g->ctx->n_threads) if (m >= SSL_PAR_MIN)
    for (long c = 0; c < m; c += GELU_CHUNK)
        ssl_fast_gelu_grad(dx + c, px + c, dy + c, m - c < GELU_CHUNK ? m - c : GELU_CHUNK);
}

ssl_tensor *ssl_op_gelu(ssl_graph *g, ssl_tensor *x)
{
    if (!x) return NULL;
    ssl_tensor *y = ssl_tensor_new(g, x->ndim, x->shape, x->layout);
    if (!y) return NULL;
    long m = ssl_tensor_numel(x);
    const float *px = x->data;
    float *py = y->data;
#pragma omp parallel for schedule(static) num_threads(g->ctx->n_threads) if (m >= SSL_PAR_MIN)
    for (long c = 0; c < m; c += GELU_CHUNK)
        ssl_fast_gelu(py + c, px + c, m - c < GELU_CHUNK ? m - c : GELU_CHUNK);
    int fail;
    ssl_graph_record(g, gelu_bwd, y, x, NULL, NULL, &fail);
    return fail ? NULL : y;
}

/* ---- cosine loss (BYOL, SimSiam) ---- */
/* du (N, D) += s * d cos(u_i, v_i) / du_i for u, v (N, D) with row norms
 * nu, nv (N) and cosines cs (N). Norms are clamped at NORM_EPS as in
 * F.normalize: a clamped row is divided by eps and its norm takes no gradient. */
static void cosine_grad_rows(float *du, const float *u, const float *v, const float *nu,
                             const float *nv, const float *cs, float s, int N, int D)
{
    for (int i = 0; i < N; i++) {
        const float *ur = u + (long)i * D, *vr = v + (long)i * D;
        float *dr = du + (long)i * D;
        double inv_u = 1.0 / nu[i], inv_v = 1.0 / nv[i];
        double c = nu[i] > NORM_EPS ? cs[i] : 0.0;
        for (int j = 0; j < D; j++)
            dr[j] += (float)(s * (vr[j] * inv_v - ur[j] * inv_u * c) * inv_u);
    }
}

static void cosine_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *p = n->in[0], *z = n->in[1];
    int N = p->shape[0], D = p->shape[1];
    const float *np = n->saved, *nz = np + N, *cs = nz + N;
    float s = n->out->grad[0] * n->fattr[0] / (float)N;
    if (p->requires_grad) cosine_grad_rows(p->grad, p->data, z->data, np, nz, cs, s, N, D);
    if (z->requires_grad) cosine_grad_rows(z->grad, z->data, p->data, nz, np, cs, s, N, D);
}

ssl_tensor *ssl_op_cosine_loss(ssl_graph *g, ssl_tensor *p, ssl_tensor *z, float a, float b)
{
    if (!p || !z) return NULL;
    if (!same_2d(p, z, 1)) return ssl_graph_shape_error(g, "cosine_loss", "p and z must both be (N, D)");
    int N = p->shape[0], D = p->shape[1];
    ssl_tensor *y = new_scalar(g);
    /* row norms of p and z (clamped), then cos(p_i, z_i) */
    float *saved = ssl_graph_saved(g, sizeof(float) * 3 * (size_t)N);
    if (!y || !saved) return NULL;
    float *np = saved, *nz = saved + N, *cs = saved + 2 * N;
    double total = 0;
    for (int i = 0; i < N; i++) {
        const float *pr = p->data + (long)i * D, *zr = z->data + (long)i * D;
        double pp = 0, zz = 0, pz = 0;
        for (int j = 0; j < D; j++) {
            pp += (double)pr[j] * pr[j];
            zz += (double)zr[j] * zr[j];
            pz += (double)pr[j] * zr[j];
        }
        double a_n = fmax(sqrt(pp), NORM_EPS), z_n = fmax(sqrt(zz), NORM_EPS);
        np[i] = (float)a_n;
        nz[i] = (float)z_n;
        double c = pz / (a_n * z_n);
        cs[i] = (float)c;
        total += c;
    }
    y->data[0] = (float)(a + b * (total / N));
    int fail;
    ssl_node *n = ssl_graph_record(g, cosine_bwd, y, p, z, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = saved;
        n->fattr[0] = b;
    }
    return y;
}

/* ---- soft-target cross-entropy (SwAV, DINO) ---- */
/* Of one row: st = sum_k t_k and sum_k t_k (l_k - mx), for t, l (K): float
 * simd partial sums over blocks of SCE_BLOCK, the blocks added in double in
 * order (rounding set by the build's vector width, not by threads). */
#define SCE_BLOCK 256
static void target_sums(double *st, double *stl, const float *t, const float *l, float mx, int K)
{
    double s0 = 0, s1 = 0;
    for (int k = 0; k < K; k += SCE_BLOCK) {
        int e = K - k < SCE_BLOCK ? K : k + SCE_BLOCK;
        float a0 = 0, a1 = 0;
#pragma omp simd reduction(+ : a0, a1)
        for (int j = k; j < e; j++) {
            a0 += t[j];
            a1 += t[j] * (l[j] - mx);
        }
        s0 += a0;
        s1 += a1;
    }
    *st = s0;
    *stl = s1;
}

ssl_tensor *ssl_op_soft_ce(ssl_graph *g, ssl_tensor *logits, const float *targets, float T)
{
    if (!logits) return NULL;
    if (logits->ndim != 2 || logits->shape[0] < 1 || logits->shape[1] < 1)
        return ssl_graph_shape_error(g, "soft_ce", "logits must be (N, K)");
    if (!targets) return ssl_graph_arg_error(g, "soft_ce", "targets missing");
    if (!(T > 0) || !isfinite(T)) return ssl_graph_arg_error(g, "soft_ce", "temperature must be > 0");
    int N = logits->shape[0], K = logits->shape[1];
    ssl_tensor *y = new_scalar(g);
    if (!y) return NULL;
    /* The gradient is computed here, while the targets are at hand, so they
     * need not outlive the call (DINO's teacher output is often scratch). */
    float *gl = NULL;
    if (will_record(g, logits, NULL) && !(gl = ssl_graph_saved(g, sizeof(float) * (size_t)N * K)))
        return NULL;
    double *row_loss = ssl_ctx_scratch(g->ctx, sizeof(double) * (size_t)N);
    if (!row_loss) return NULL;
    /* Float with a vectorised exp (a DINO step makes 10 of these on 256 x
     * 4096 logits; in double with libm's exp they took an eighth of the
     * step): u = l / T shifted by its max, d_k = u_k - max u,
     *   loss_i = sum_k t_k (lse - u_k) = st log z - sum_k t_k d_k,
     * z = sum_k e^{d_k} (no cancellation against the max), and
     *   dL/dl_k = (e^{d_k} st / z - t_k) / (N T)
     * from the e^{d_k} kept in gl. Rows are independent and their losses
     * are added in row order, so the result does not depend on threads. */
    const float inv_t = 1.0f / T;
    const float *ld = logits->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)N * K >= SSL_PAR_MIN)
    for (int i = 0; i < N; i++) {
        const float *l = ld + (long)i * K, *t = targets + (long)i * K;
        float *gr = gl ? gl + (long)i * K : NULL;
        float mx = ssl_fast_maxf(l, K);
        double z = ssl_fast_exp_sum(gr, l, mx, inv_t, K), st, stl;
        target_sums(&st, &stl, t, l, mx, K);
        row_loss[i] = st * log(z) - stl * inv_t;
        if (gr) {
            float a = (float)(st / (z * N * T)), b = (float)(1.0 / ((double)N * T));
            for (int k = 0; k < K; k++) gr[k] = gr[k] * a - t[k] * b;
        }
    }
    double loss = 0;
    for (int i = 0; i < N; i++) loss += row_loss[i];
    y->data[0] = (float)(loss / N);
    int fail;
    ssl_node *n = ssl_graph_record(g, ssl_graph_saved_grad_bwd, y, logits, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = gl;
    return y;
}

/* ---- InfoNCE against a queue (MoCo) ---- */
ssl_tensor *ssl_op_infonce_queue(ssl_graph *g, ssl_tensor *q, ssl_tensor *k, const float *queue,
                                 int K, float T)
{
    if (!q || !k) return NULL;
    if (!same_2d(q, k, 1)) return ssl_graph_shape_error(g, "infonce_queue", "q and k must both be (N, D)");
    if (K < 0) return ssl_graph_shape_error(g, "infonce_queue", "queue length K must be >= 0");
    if (K > 0 && !queue) return ssl_graph_arg_error(g, "infonce_queue", "queue missing");
    if (!(T > 0) || !isfinite(T)) return ssl_graph_arg_error(g, "infonce_queue", "temperature must be > 0");
    int N = q->shape[0], D = q->shape[1], L = K + 1;
    ssl_tensor *y = new_scalar(g);
    if (!y) return NULL;
    /* Logits (N, 1 + K), positive first; only this call uses them, so they
     * live in the context's scratch rather than for the whole step. */
    float *lg = ssl_ctx_scratch(g->ctx, sizeof(float) * (size_t)N * L);
    if (!lg) return NULL;
    float *gq = NULL;
    int rec = g->record && q->requires_grad; /* k and the queue take no gradient */
    if (rec && !(gq = ssl_graph_saved(g, sizeof(float) * (size_t)N * D))) return NULL;
    for (int i = 0; i < N; i++) {
        const float *qr = q->data + (long)i * D, *kr = k->data + (long)i * D;
        double s = 0;
        for (int j = 0; j < D; j++) s += (double)qr[j] * kr[j];
        lg[(long)i * L] = (float)(s / T);
    }
    if (K > 0) ssl_sgemm(0, 1, N, K, D, 1.0f / T, q->data, D, queue, D, 0.0f, lg + 1, L);
    double loss = 0;
    for (int i = 0; i < N; i++) {
        float *row = lg + (long)i * L;
        float mx = row[0];
        for (int j = 1; j < L; j++) mx = row[j] > mx ? row[j] : mx;
        double z = 0;
        for (int j = 0; j < L; j++) z += exp((double)row[j] - mx);
        loss += log(z) + mx - row[0];
        /* dL/dlogits for d(loss) = 1, in place: (softmax - onehot(0)) / N */
        if (gq)
            for (int j = 0; j < L; j++)
                row[j] = (float)((exp((double)row[j] - mx) / z - (j == 0)) / N);
    }
    y->data[0] = (float)(loss / N);
    if (gq) {
        /* logits = [q.k, q queue^T] / T: dq = (dl_0 k + dl_{1..K} queue) / T,
         * computed now so the backward needs neither k nor the queue */
        if (K > 0)
            ssl_sgemm(0, 0, N, D, K, 1.0f / T, lg + 1, L, queue, D, 0.0f, gq, D);
        for (int i = 0; i < N; i++) {
            const float *kr = k->data + (long)i * D;
            float *gr = gq + (long)i * D, c = lg[(long)i * L] / T;
            for (int j = 0; j < D; j++) gr[j] = (K > 0 ? gr[j] : 0.0f) + c * kr[j];
        }
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, ssl_graph_saved_grad_bwd, y, q, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = gq;
    return y;
}

/* ---- Barlow Twins ---- */
typedef struct barlow_saved {
    float *a, *b;     /* (N, D) z1, z2 standardized per column */
    float *is1, *is2; /* (D) 1 / sqrt(biased var + eps) */
    float *c;         /* (D, D) cross-correlation, turned into dL/dc in place */
    float *tmp;       /* (N, D) dL/da or dL/db */
    double *acc;      /* (2D) column sums of the backward */
    float lambda;
} barlow_saved;

/* BatchNorm1d(affine=False) in training: out (N, D) = (z - mean) * invstd
 * for z (N, D), invstd (D) = 1 / sqrt(biased var + eps); acc: 2D doubles. */
static void standardize(float *out, float *invstd, double *acc, const float *z, int N, int D)
{
    double *sum = acc, *ssq = acc + D;
    memset(acc, 0, sizeof(double) * 2 * D);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) sum[d] += z[(long)i * D + d];
    for (int d = 0; d < D; d++) sum[d] /= N;
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) {
            double v = z[(long)i * D + d] - sum[d];
            ssq[d] += v * v;
        }
    for (int d = 0; d < D; d++) invstd[d] = (float)(1.0 / sqrt(ssq[d] / N + BN_EPS));
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++)
            out[(long)i * D + d] = (float)((z[(long)i * D + d] - sum[d]) * invstd[d]);
}

/* Backward of standardize: dz (N, D) += invstd (g - mean(g) - a mean(g a))
 * per column, for gr = dL/da and a the standardized z, both (N, D). */
static void standardize_bwd(float *dz, const float *gr, const float *a, const float *invstd,
                            double *acc, int N, int D)
{
    double *mg = acc, *mga = acc + D;
    memset(acc, 0, sizeof(double) * 2 * D);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) {
            long o = (long)i * D + d;
            mg[d] += gr[o];
            mga[d] += (double)gr[o] * a[o];
        }
    for (int d = 0; d < D; d++) {
        mg[d] /= N;
        mga[d] /= N;
    }
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) {
            long o = (long)i * D + d;
            dz[o] += (float)(invstd[d] * (gr[o] - mg[d] - a[o] * mga[d]));
        }
}

static void barlow_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *z1 = n->in[0], *z2 = n->in[1];
    barlow_saved *s = n->saved;
    int N = z1->shape[0], D = z1->shape[1];
    float go = n->out->grad[0];
    /* dL/dc: 2 (c_ii - 1) on the diagonal, 2 lambda c_ij off it; c = a^T b / N */
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            float *c = &s->c[(long)i * D + j];
            *c = i == j ? 2.0f * go * (*c - 1.0f) : 2.0f * go * s->lambda * *c;
        }
    if (z1->requires_grad) { /* dL/da = b G^T / N */
        ssl_sgemm(0, 1, N, D, D, 1.0f / N, s->b, D, s->c, D, 0.0f, s->tmp, D);
        standardize_bwd(z1->grad, s->tmp, s->a, s->is1, s->acc, N, D);
    }
    if (z2->requires_grad) { /* dL/db = a G / N */
        ssl_sgemm(0, 0, N, D, D, 1.0f / N, s->a, D, s->c, D, 0.0f, s->tmp, D);
        standardize_bwd(z2->grad, s->tmp, s->b, s->is2, s->acc, N, D);
    }
}

ssl_tensor *ssl_op_barlow(ssl_graph *g, ssl_tensor *z1, ssl_tensor *z2, float lambda)
{
    if (!z1 || !z2) return NULL;
    if (!same_2d(z1, z2, 2))
        return ssl_graph_shape_error(g, "barlow", "z1 and z2 must both be (N, D) with N >= 2");
    int N = z1->shape[0], D = z1->shape[1];
    size_t nd = (size_t)N * D;
    int rec = will_record(g, z1, z2);
    ssl_tensor *y = new_scalar(g);
    barlow_saved *s = ssl_graph_saved(g, sizeof *s);
    if (!y || !s) return NULL;
    s->a = ssl_graph_saved(g, sizeof(float) * nd);
    s->b = ssl_graph_saved(g, sizeof(float) * nd);
    s->is1 = ssl_graph_saved(g, sizeof(float) * D);
    s->is2 = ssl_graph_saved(g, sizeof(float) * D);
    s->c = ssl_graph_saved(g, sizeof(float) * (size_t)D * D);
    s->acc = ssl_graph_saved(g, sizeof(double) * 2 * D);
    s->tmp = rec ? ssl_graph_saved(g, sizeof(float) * nd) : NULL;
    if (!s->a || !s->b || !s->is1 || !s->is2 || !s->c || !s->acc || (rec && !s->tmp))
        return NULL;
    s->lambda = lambda;
    standardize(s->a, s->is1, s->acc, z1->data, N, D);
    standardize(s->b, s->is2, s->acc, z2->data, N, D);
    ssl_sgemm(1, 0, D, D, N, 1.0f / N, s->a, D, s->b, D, 0.0f, s->c, D);
    double on = 0, off = 0;
    for (int i = 0; i < D; i++)
        for (int j = 0; j < D; j++) {
            double c = s->c[(long)i * D + j];
            if (i == j)
                on += (1.0 - c) * (1.0 - c);
            else
                off += c * c;
        }
    y->data[0] = (float)(on + lambda * off);
    int fail;
    ssl_node *n = ssl_graph_record(g, barlow_bwd, y, z1, z2, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = s;
    return y;
}

/* ---- VICReg ---- */
typedef struct vicreg_saved {
    float *x[2];   /* (N, D) each view centered per column */
    float *std[2]; /* (D) sqrt(unbiased var + eps) */
    float *cov[2]; /* (D, D) covariance with its diagonal zeroed */
    float *tmp;    /* (N, D) dL/dx of one view */
    double *acc;   /* (2D) column sums */
    float sim, var, cov_w;
} vicreg_saved;

/* Centers z (N, D) into x (N, D), sets std (D) and C (D, D) = x^T x / (N - 1)
 * with its diagonal zeroed (the backward needs only the off-diagonal);
 * returns the view's variance term mean_d relu(1 - std_d) and, in *cov_term,
 * sum_{i!=j} C_ij^2 / D. acc: 2D doubles of work space. */
static double vicreg_view(float *x, float *std, float *C, double *acc, const float *z, int N,
                          int D, float eps, double *cov_term)
{
    double *mean = acc, *ssq = acc + D;
    memset(acc, 0, sizeof(double) * 2 * D);
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) mean[d] += z[(long)i * D + d];
    for (int d = 0; d < D; d++) mean[d] /= N;
    for (int i = 0; i < N; i++)
        for (int d = 0; d < D; d++) {
            double v = z[(long)i * D + d] - mean[d];
            x[(long)i * D + d] = (float)v;
            ssq[d] += v * v;
        }
    double hinge = 0;
    for (int d = 0; d < D; d++) {
        double sd = sqrt(ssq[d] / (N - 1) + eps);
        std[d] = (float)sd;
        hinge += fmax(0.0, 1.0 - sd);
    }
    ssl_sgemm(1, 0, D, D, N, 1.0f / (N - 1), x, D, x, D, 0.0f, C, D);
    double off = 0;
    for (int i = 0; i < D; i++) {
        for (int j = 0; j < D; j++)
            if (i != j) off += (double)C[(long)i * D + j] * C[(long)i * D + j];
        C[(long)i * D + i] = 0.0f;
    }
    *cov_term = off / D;
    return hinge / D;
}

static void vicreg_bwd(ssl_graph *g, ssl_node *n)
{
    vicreg_saved *s = n->saved;
    int N = n->in[0]->shape[0], D = n->in[0]->shape[1];
    float go = n->out->grad[0];
    const float *z1 = n->in[0]->data, *z2 = n->in[1]->data;
    double w_mse = 2.0 * s->sim * go / ((double)N * D);
    double w_var = -(double)s->var * go / (2.0 * D * (N - 1)); /* times x / std, where active */
    for (int v = 0; v < 2; v++) {
        ssl_tensor *z = n->in[v];
        if (!z->requires_grad) continue;
        const float *x = s->x[v], *sd = s->std[v];
        /* cov: d/dx sum_{i!=j} C_ij^2 / D = 4 x C_off / (D (N - 1)) */
        ssl_sgemm(0, 0, N, D, D, 4.0f * s->cov_w * go / ((float)D * (N - 1)), x, D, s->cov[v],
                  D, 0.0f, s->tmp, D);
        /* variance hinge: relu'(1 - s) (-1 / (2D)) x / ((N - 1) s), relu'(0) = 0
         * as in torch. A constant column at eps = 0 has s = 0 and x = 0: torch
         * gives NaN there, we give 0. */
        for (int i = 0; i < N; i++)
            for (int d = 0; d < D; d++)
                if (1.0 - sd[d] > 0 && sd[d] > 0)
                    s->tmp[(long)i * D + d] += (float)(w_var * x[(long)i * D + d] / sd[d]);
        /* through the centering x = z - mean(z) */
        double *mg = s->acc;
        memset(mg, 0, sizeof(double) * D);
        for (int i = 0; i < N; i++)
            for (int d = 0; d < D; d++) mg[d] += s->tmp[(long)i * D + d];
        for (int d = 0; d < D; d++) mg[d] /= N;
        /* invariance: mse(z1, z2) gives +-2 sim (z1 - z2) / (N D) */
        double sign = v == 0 ? 1.0 : -1.0;
        float *dz = z->grad;
        for (int i = 0; i < N; i++)
            for (int d = 0; d < D; d++) {
                long o = (long)i * D + d;
                double diff = (double)z1[o] - z2[o];
                dz[o] += (float)(s->tmp[o] - mg[d] + sign * w_mse * diff);
            }
    }
}

ssl_tensor *ssl_op_vicreg(ssl_graph *g, ssl_tensor *z1, ssl_tensor *z2, float sim, float var,
                          float cov, float eps, float parts[3])
{
    if (!z1 || !z2) return NULL;
    if (!same_2d(z1, z2, 2))
        return ssl_graph_shape_error(g, "vicreg", "z1 and z2 must both be (N, D) with N >= 2");
    if (!(eps >= 0) || !isfinite(eps)) return ssl_graph_arg_error(g, "vicreg", "eps must be >= 0");
    int N = z1->shape[0], D = z1->shape[1];
    size_t nd = (size_t)N * D, dd = (size_t)D * D;
    int rec = will_record(g, z1, z2);
    ssl_tensor *y = new_scalar(g);
    vicreg_saved *s = ssl_graph_saved(g, sizeof *s);
    if (!y || !s) return NULL;
    for (int v = 0; v < 2; v++) {
        s->x[v] = ssl_graph_saved(g, sizeof(float) * nd);
        s->std[v] = ssl_graph_saved(g, sizeof(float) * D);
        s->cov[v] = ssl_graph_saved(g, sizeof(float) * dd);
        if (!s->x[v] || !s->std[v] || !s->cov[v]) return NULL;
    }
    s->acc = ssl_graph_saved(g, sizeof(double) * 2 * D);
    s->tmp = rec ? ssl_graph_saved(g, sizeof(float) * nd) : NULL;
    if (!s->acc || (rec && !s->tmp)) return NULL;
    s->sim = sim;
    s->var = var;
    s->cov_w = cov;
    double mse = 0;
    for (size_t i = 0; i < nd; i++) {
        double d = (double)z1->data[i] - z2->data[i];
        mse += d * d;
    }
    mse /= (double)nd;
    double c1, c2;
    double h1 = vicreg_view(s->x[0], s->std[0], s->cov[0], s->acc, z1->data, N, D, eps, &c1);
    double h2 = vicreg_view(s->x[1], s->std[1], s->cov[1], s->acc, z2->data, N, D, eps, &c2);
    double std_loss = (h1 + h2) / 2, cov_loss = c1 + c2;
    y->data[0] = (float)(sim * mse + var * std_loss + cov * cov_loss);
    if (parts) {
        parts[0] = (float)mse;
        parts[1] = (float)std_loss;
        parts[2] = (float)cov_loss;
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, vicreg_bwd, y, z1, z2, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = s;
    return y;
}
