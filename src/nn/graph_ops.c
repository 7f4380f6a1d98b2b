/* Graph ops: each forward dispatches to the backend and records a node whose
 * backward accumulates into its inputs' gradients. */
#include "graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- layout change ---- */
static void copy_layout(float *dst, ssl_layout dl, const float *src, ssl_layout sl, int N,
                        int C, int HW, int accumulate)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            long so = ssl_act_index(sl, N, C, HW, n, c, 0);
            long d0 = ssl_act_index(dl, N, C, HW, n, c, 0);
            if (accumulate)
                for (int i = 0; i < HW; i++) dst[d0 + i] += src[so + i];
            else
                memcpy(dst + d0, src + so, sizeof(float) * HW);
        }
}

static void to_layout_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *y = n->out;
    if (!x->requires_grad) return;
    copy_layout(x->grad, x->layout, y->grad, y->layout, x->shape[0], x->shape[1],
                x->shape[2] * x->shape[3], 1);
}

ssl_tensor *ssl_op_to_layout(ssl_graph *g, ssl_tensor *x, ssl_layout layout)
{
    if (!x) return NULL;
    if (x->ndim != 4) return ssl_graph_shape_error(g, "to_layout", "needs a 4-D tensor");
    if (x->layout == layout) return x;
    ssl_tensor *y = ssl_tensor_new(g, 4, x->shape, layout);
    if (!y) return NULL;
    copy_layout(y->data, layout, x->data, x->layout, x->shape[0], x->shape[1],
                x->shape[2] * x->shape[3], 0);
    int fail;
    ssl_graph_record(g, to_layout_bwd, y, x, NULL, NULL, &fail);
    return fail ? NULL : y;
}

/* ---- convolution ---- */
static ssl_conv_desc conv_desc(const ssl_tensor *x, const ssl_tensor *w, int stride, int pad)
{
    ssl_conv_desc d;
    d.N = x->shape[0];
    d.C = x->shape[1];
    d.H = x->shape[2];
    d.W = x->shape[3];
    d.K = w->shape[0];
    d.R = w->shape[2];
    d.S = w->shape[3];
    d.stride = stride;
    d.pad = pad;
    d.OH = ssl_conv_out_size(d.H, d.R, stride, pad);
    d.OW = ssl_conv_out_size(d.W, d.S, stride, pad);
    d.layout = x->layout;
    return d;
}

static void conv2d_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *w = n->in[1];
    ssl_conv_desc d = conv_desc(x, w, n->iattr[0], n->iattr[1]);
    float *dw = w->grad;
    if (!w->requires_grad) { /* frozen weights still pass the gradient on */
        size_t bytes = sizeof(float) * (size_t)ssl_tensor_numel(w);
        dw = ssl_arena_alloc(&g->arena, bytes);
        if (!dw) return;
        memset(dw, 0, bytes);
    }
    g->be->conv2d_bwd(g->ctx, x->requires_grad ? x->grad : NULL, dw, n->out->grad, x->data,
                      w->data, &d);
}

ssl_tensor *ssl_op_conv2d(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, int stride, int pad)
{
    if (!x || !w) return NULL;
    if (x->ndim != 4 || w->ndim != 4 || w->shape[1] != x->shape[1])
        return ssl_graph_shape_error(g, "conv2d", "input channels do not match the weight");
    if (stride < 1 || pad < 0) return ssl_graph_shape_error(g, "conv2d", "bad stride or padding");
    ssl_conv_desc d = conv_desc(x, w, stride, pad);
    if (d.OH < 1 || d.OW < 1) return ssl_graph_shape_error(g, "conv2d", "input smaller than the kernel");
    int shape[4] = {d.N, d.K, d.OH, d.OW};
    ssl_tensor *y = ssl_tensor_new(g, 4, shape, x->layout);
    if (!y) return NULL;
    g->be->conv2d_fwd(g->ctx, y->data, x->data, w->data, &d);
    if (g->ctx->failed) return NULL;
    int fail;
    ssl_node *n = ssl_graph_record(g, conv2d_bwd, y, x, w, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->iattr[0] = stride;
        n->iattr[1] = pad;
    }
    return y;
}

/* ---- batch norm ---- */
static void act_dims(const ssl_tensor *x, int *N, int *C, int *HW)
{
    *N = x->shape[0];
    *C = x->ndim > 1 ? x->shape[1] : 1;
    *HW = x->ndim == 4 ? x->shape[2] * x->shape[3] : 1;
}

/* Node inputs: x, skip (or NULL), the BN weight (its bias goes with it,
 * through attr). Saved: mean and invstd; iattr: training, relu. */
static void batchnorm_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *skip = n->in[1];
    ssl_bn_layer *bn = n->attr;
    const float *mean = n->saved, *invstd = mean + bn->C;
    int N, C, HW;
    act_dims(x, &N, &C, &HW);
    g->be->bn_bwd(g->ctx, x->requires_grad ? x->grad : NULL,
                  skip && skip->requires_grad ? skip->grad : NULL,
                  bn->weight.requires_grad ? bn->weight.grad : NULL,
                  bn->bias.requires_grad ? bn->bias.grad : NULL, n->out->grad, n->out->data,
                  x->data, mean, invstd, bn->weight.data, n->iattr[0], n->iattr[1], N, C, HW,
                  x->layout);
}

/* Rebuilds the output of a bn_act node without a residual from its input
 * and the saved statistics, with the forward's own float expressions
 * (cpu and ref backends alike), so the rebuilt values are the forward's. */
static void bn_act_remat(ssl_graph *g, ssl_node *n)
{
    const ssl_tensor *x = n->in[0];
    ssl_tensor *y = n->out;
    const ssl_bn_layer *bn = n->attr;
    const float *mean = n->saved, *invstd = mean + bn->C;
    const float *gamma = bn->weight.data, *beta = bn->bias.data;
    const int relu = n->iattr[1];
    int N, C, HW;
    act_dims(x, &N, &C, &HW);
    const ssl_layout l = x->layout;
#pragma omp parallel for schedule(static) num_threads(g->ctx->n_threads)
    for (int c = 0; c < C; c++) {
        float a = (gamma ? gamma[c] : 1.0f) * invstd[c];
        float b = (beta ? beta[c] : 0.0f) - mean[c] * a;
        for (int i = 0; i < N; i++) {
            long o = ssl_act_index(l, N, C, HW, i, c, 0);
            const float *xo = x->data + o;
            float *yo = y->data + o;
            for (int j = 0; j < HW; j++) {
                float v = xo[j] * a + b;
                yo[j] = !relu || v > 0.0f || v != v ? v : 0.0f;
            }
        }
    }
}

ssl_tensor *ssl_op_bn_act(ssl_graph *g, ssl_tensor *x, ssl_bn_layer *bn, ssl_tensor *skip,
                          int relu)
{
    if (!x) return NULL;
    int N, C, HW;
    act_dims(x, &N, &C, &HW);
    if ((x->ndim != 2 && x->ndim != 4) || C != bn->C)
        return ssl_graph_shape_error(g, "batchnorm", "channels do not match the layer");
    if (skip && (skip->ndim != x->ndim || skip->layout != x->layout ||
                 memcmp(skip->shape, x->shape, sizeof(int) * x->ndim)))
        return ssl_graph_shape_error(g, "batchnorm", "the residual's shape or layout differs");
    if (g->training && (long)N * HW < 2)
        return ssl_graph_shape_error(g, "batchnorm", "training needs more than one value per channel");
    ssl_tensor *y = ssl_tensor_new(g, x->ndim, x->shape, x->layout);
    float *saved = ssl_graph_saved(g, sizeof(float) * 2 * C);
    if (!y || !saved) return NULL;
    g->be->bn_fwd(g->ctx, y->data, saved, saved + C, x->data, skip ? skip->data : NULL,
                  bn->weight.data, bn->bias.data, bn->running_mean, bn->running_var,
                  g->training, bn->momentum, bn->eps, relu, N, C, HW, x->layout);
    if (g->training) bn->num_batches_tracked++;
    int fail;
    ssl_node *n = ssl_graph_record(g, batchnorm_bwd, y, x, skip, &bn->weight, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = saved;
        n->attr = bn;
        n->iattr[0] = g->training;
        n->iattr[1] = relu;
        if (!skip && x->ndim == 4) n->remat = bn_act_remat;
    }
    return y;
}

ssl_tensor *ssl_op_batchnorm(ssl_graph *g, ssl_tensor *x, ssl_bn_layer *bn)
{
    return ssl_op_bn_act(g, x, bn, NULL, 0);
}

/* ---- ReLU ---- */
static void relu_bwd(ssl_graph *g, ssl_node *n)
{
    if (n->in[0]->requires_grad)
        g->be->relu_bwd(g->ctx, n->in[0]->grad, n->out->grad, n->out->data,
                        ssl_tensor_numel(n->out));
}

ssl_tensor *ssl_op_relu(ssl_graph *g, ssl_tensor *x)
{
    if (!x) return NULL;
    ssl_tensor *y = ssl_tensor_new(g, x->ndim, x->shape, x->layout);
    if (!y) return NULL;
    g->be->relu_fwd(g->ctx, y->data, x->data, ssl_tensor_numel(x));
    int fail;
    ssl_graph_record(g, relu_bwd, y, x, NULL, NULL, &fail);
    return fail ? NULL : y;
}

/* ---- pooling ---- */
static ssl_pool_desc pool_desc(const ssl_tensor *x, int k, int stride, int pad)
{
    ssl_pool_desc d;
    d.N = x->shape[0];
    d.C = x->shape[1];
    d.H = x->shape[2];
    d.W = x->shape[3];
    d.k = k;
    d.stride = stride;
    d.pad = pad;
    d.OH = ssl_conv_out_size(d.H, k, stride, pad);
    d.OW = ssl_conv_out_size(d.W, k, stride, pad);
    d.layout = x->layout;
    return d;
}

static void maxpool_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    ssl_pool_desc d = pool_desc(x, n->iattr[0], n->iattr[1], n->iattr[2]);
    g->be->maxpool_bwd(g->ctx, x->grad, n->out->grad, n->saved, &d);
}

static void avgpool_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    ssl_pool_desc d = pool_desc(x, n->iattr[0], n->iattr[1], n->iattr[2]);
    g->be->avgpool_bwd(g->ctx, x->grad, n->out->grad, &d);
}

static ssl_tensor *pool(ssl_graph *g, ssl_tensor *x, int k, int stride, int pad, int is_max)
{
    if (!x) return NULL;
    if (x->ndim != 4 || k < 1 || stride < 1 || pad < 0 || 2 * pad > k)
        return ssl_graph_shape_error(g, is_max ? "maxpool" : "avgpool", "bad shape, kernel or padding");
    ssl_pool_desc d = pool_desc(x, k, stride, pad);
    if (d.OH < 1 || d.OW < 1) return ssl_graph_shape_error(g, "pool", "input smaller than the kernel");
    int shape[4] = {d.N, d.C, d.OH, d.OW};
    ssl_tensor *y = ssl_tensor_new(g, 4, shape, x->layout);
    if (!y) return NULL;
    int32_t *arg = NULL;
    if (is_max) {
        arg = ssl_graph_saved(g, sizeof(int32_t) * (size_t)ssl_tensor_numel(y));
        if (!arg) return NULL;
        g->be->maxpool_fwd(g->ctx, y->data, arg, x->data, &d);
    } else {
        g->be->avgpool_fwd(g->ctx, y->data, x->data, &d);
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, is_max ? maxpool_bwd : avgpool_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = arg;
        n->iattr[0] = k;
        n->iattr[1] = stride;
        n->iattr[2] = pad;
    }
    return y;
}

ssl_tensor *ssl_op_maxpool(ssl_graph *g, ssl_tensor *x, int k, int stride, int pad)
{
    return pool(g, x, k, stride, pad, 1);
}

ssl_tensor *ssl_op_avgpool(ssl_graph *g, ssl_tensor *x, int k, int stride, int pad)
{
    return pool(g, x, k, stride, pad, 0);
}

static void gap_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (x->requires_grad)
        g->be->gap_bwd(g->ctx, x->grad, n->out->grad, x->shape[0], x->shape[1],
                       x->shape[2] * x->shape[3], x->layout);
}

ssl_tensor *ssl_op_global_avgpool(ssl_graph *g, ssl_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim != 4) return ssl_graph_shape_error(g, "global_avgpool", "needs a 4-D tensor");
    int shape[2] = {x->shape[0], x->shape[1]};
    ssl_tensor *y = ssl_tensor_new(g, 2, shape, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    g->be->gap_fwd(g->ctx, y->data, x->data, x->shape[0], x->shape[1],
                   x->shape[2] * x->shape[3], x->layout);
    int fail;
    ssl_graph_record(g, gap_bwd, y, x, NULL, NULL, &fail);
    return fail ? NULL : y;
}

/* ---- linear ---- */
static void linear_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    float *dw = w->grad;
    if (!w->requires_grad) {
        size_t bytes = sizeof(float) * (size_t)ssl_tensor_numel(w);
        dw = ssl_arena_alloc(&g->arena, bytes);
        if (!dw) return;
        memset(dw, 0, bytes);
    }
    g->be->linear_bwd(g->ctx, x->requires_grad ? x->grad : NULL, dw,
                      b && b->requires_grad ? b->grad : NULL, n->out->grad, x->data, w->data,
                      x->shape[0], x->shape[1], w->shape[0]);
}

ssl_tensor *ssl_op_linear(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b)
{
    if (!x || !w) return NULL;
    if (x->ndim != 2 || w->ndim != 2 || w->shape[1] != x->shape[1] ||
        (b && ssl_tensor_numel(b) != w->shape[0]))
        return ssl_graph_shape_error(g, "linear", "input features do not match the weight");
    int shape[2] = {x->shape[0], w->shape[0]};
    ssl_tensor *y = ssl_tensor_new(g, 2, shape, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    g->be->linear_fwd(g->ctx, y->data, x->data, w->data, b ? b->data : NULL, x->shape[0],
                      x->shape[1], w->shape[0]);
    int fail;
    ssl_graph_record(g, linear_bwd, y, x, w, b, &fail);
    return fail ? NULL : y;
}

/* ---- add ---- */
static void add_bwd(ssl_graph *g, ssl_node *n)
{
    long m = ssl_tensor_numel(n->out);
    const float *dy = n->out->grad;
    for (int k = 0; k < 2; k++) {
        ssl_tensor *t = n->in[k];
        if (!t->requires_grad) continue;
        float *dx = t->grad;
#pragma omp parallel for simd schedule(static) num_threads(g->ctx->n_threads)
        for (long i = 0; i < m; i++) dx[i] += dy[i];
    }
}

ssl_tensor *ssl_op_add(ssl_graph *g, ssl_tensor *a, ssl_tensor *b)
{
    if (!a || !b) return NULL;
    if (a->ndim != b->ndim || ssl_tensor_numel(a) != ssl_tensor_numel(b) ||
        memcmp(a->shape, b->shape, sizeof(int) * a->ndim) || a->layout != b->layout)
        return ssl_graph_shape_error(g, "add", "shapes or layouts differ");
    ssl_tensor *y = ssl_tensor_new(g, a->ndim, a->shape, a->layout);
    if (!y) return NULL;
    long m = ssl_tensor_numel(a);
    const float *pa = a->data, *pb = b->data;
    float *py = y->data;
#pragma omp parallel for simd schedule(static) num_threads(g->ctx->n_threads)
    for (long i = 0; i < m; i++) py[i] = pa[i] + pb[i];
    int fail;
    ssl_graph_record(g, add_bwd, y, a, b, NULL, &fail);
    return fail ? NULL : y;
}

/* ---- concat / slice along the batch ---- */
/* Copies rows [n0, n0+cnt) of src (batch Ns) to rows [m0, ..) of dst (batch Nd),
 * for row-major tensors and either 4-D layout. */
static void batch_copy(float *dst, int Nd, int m0, const float *src, int Ns, int n0, int cnt,
                       const ssl_tensor *like, int accumulate)
{
    long inner = 1;
    for (int i = 1; i < like->ndim; i++) inner *= like->shape[i];
    int C = 1;
    long hw = inner;
    if (like->ndim == 4 && like->layout == SSL_LAYOUT_CNHW) {
        C = like->shape[1];
        hw = (long)like->shape[2] * like->shape[3];
    }
    for (int c = 0; c < C; c++) {
        float *d = dst + ((long)c * Nd + m0) * hw;
        const float *s = src + ((long)c * Ns + n0) * hw;
        long len = (long)cnt * hw;
        if (accumulate)
            for (long i = 0; i < len; i++) d[i] += s[i];
        else
            memcpy(d, s, sizeof(float) * len);
    }
}

static void concat_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *a = n->in[0], *b = n->in[1], *y = n->out;
    int Na = a->shape[0], Nb = b->shape[0], N = y->shape[0];
    if (a->requires_grad) batch_copy(a->grad, Na, 0, y->grad, N, 0, Na, a, 1);
    if (b->requires_grad) batch_copy(b->grad, Nb, 0, y->grad, N, Na, Nb, b, 1);
}

ssl_tensor *ssl_op_concat_batch(ssl_graph *g, ssl_tensor *a, ssl_tensor *b)
{
    if (!a || !b) return NULL;
    if (a->ndim != b->ndim || a->layout != b->layout ||
        memcmp(a->shape + 1, b->shape + 1, sizeof(int) * (a->ndim - 1)))
        return ssl_graph_shape_error(g, "concat", "shapes beyond the batch or layouts differ");
    int shape[4];
    memcpy(shape, a->shape, sizeof shape);
    shape[0] = a->shape[0] + b->shape[0];
    ssl_tensor *y = ssl_tensor_new(g, a->ndim, shape, a->layout);
    if (!y) return NULL;
    batch_copy(y->data, shape[0], 0, a->data, a->shape[0], 0, a->shape[0], a, 0);
    batch_copy(y->data, shape[0], a->shape[0], b->data, b->shape[0], 0, b->shape[0], b, 0);
    int fail;
    ssl_graph_record(g, concat_bwd, y, a, b, NULL, &fail);
    return fail ? NULL : y;
}

static void slice_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *y = n->out;
    if (x->requires_grad)
        batch_copy(x->grad, x->shape[0], n->iattr[0], y->grad, y->shape[0], 0, y->shape[0], x, 1);
}

ssl_tensor *ssl_op_slice_batch(ssl_graph *g, ssl_tensor *x, int start, int count)
{
    if (!x) return NULL;
    if (start < 0 || count < 1 || start + count > x->shape[0])
        return ssl_graph_shape_error(g, "slice", "range outside the batch");
    int shape[4];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = count;
    ssl_tensor *y = ssl_tensor_new(g, x->ndim, shape, x->layout);
    if (!y) return NULL;
    batch_copy(y->data, count, 0, x->data, x->shape[0], start, count, x, 0);
    int fail;
    ssl_node *n = ssl_graph_record(g, slice_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->iattr[0] = start;
    return y;
}

/* ---- L2 normalize rows ---- */
static void l2norm_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *y = n->out;
    if (!x->requires_grad) return;
    int N = x->shape[0], D = x->shape[1];
    const float *norm = n->saved;
    for (int i = 0; i < N; i++) {
        const float *yr = y->data + (long)i * D, *gr = y->grad + (long)i * D;
        float *dx = x->grad + (long)i * D;
        double dot = 0;
        for (int j = 0; j < D; j++) dot += (double)yr[j] * gr[j];
        /* y = x / max(|x|, eps): d/dx = (g - y (y.g)) / |x| when |x| > eps */
        float inv = 1.0f / norm[i];
        int clamped = n->fattr[0] >= norm[i];
        for (int j = 0; j < D; j++)
            dx[j] += clamped ? gr[j] * inv : (float)((gr[j] - yr[j] * dot) * inv);
    }
}

ssl_tensor *ssl_op_l2normalize(ssl_graph *g, ssl_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim != 2) return ssl_graph_shape_error(g, "l2normalize", "needs a 2-D tensor");
    int N = x->shape[0], D = x->shape[1];
    const float eps = 1e-12f;
    ssl_tensor *y = ssl_tensor_new(g, 2, x->shape, SSL_LAYOUT_NCHW);
    float *norm = ssl_graph_saved(g, sizeof(float) * N);
    if (!y || !norm) return NULL;
    for (int i = 0; i < N; i++) {
        const float *xr = x->data + (long)i * D;
        double s = 0;
        for (int j = 0; j < D; j++) s += (double)xr[j] * xr[j];
        float nr = (float)sqrt(s);
        norm[i] = nr > eps ? nr : eps;
        for (int j = 0; j < D; j++) y->data[(long)i * D + j] = xr[j] / norm[i];
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, l2norm_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = norm;
        n->fattr[0] = eps;
    }
    return y;
}

/* ---- matmul ---- */
static void matmul_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *a = n->in[0], *b = n->in[1], *y = n->out;
    int tb = n->iattr[0];
    int M = a->shape[0], K = a->shape[1], N = y->shape[1];
    /* y = a op(b): da += dy op(b)^T; db += a^T dy (or dy^T a when b is transposed) */
    if (a->requires_grad)
        ssl_sgemm(0, !tb, M, K, N, 1.0f, y->grad, N, b->data, tb ? K : N, 1.0f, a->grad, K);
    if (b->requires_grad) {
        if (tb)
            ssl_sgemm(1, 0, N, K, M, 1.0f, y->grad, N, a->data, K, 1.0f, b->grad, K);
        else
            ssl_sgemm(1, 0, K, N, M, 1.0f, a->data, K, y->grad, N, 1.0f, b->grad, N);
    }
}

ssl_tensor *ssl_op_matmul(ssl_graph *g, ssl_tensor *a, ssl_tensor *b, int trans_b)
{
    if (!a || !b) return NULL;
    if (a->ndim != 2 || b->ndim != 2 || a->shape[1] != b->shape[trans_b ? 1 : 0])
        return ssl_graph_shape_error(g, "matmul", "inner dimensions differ");
    int M = a->shape[0], K = a->shape[1], N = b->shape[trans_b ? 0 : 1];
    int shape[2] = {M, N};
    ssl_tensor *y = ssl_tensor_new(g, 2, shape, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    ssl_sgemm(0, trans_b, M, N, K, 1.0f, a->data, K, b->data, trans_b ? K : N, 0.0f, y->data, N);
    int fail;
    ssl_node *n = ssl_graph_record(g, matmul_bwd, y, a, b, NULL, &fail);
    if (fail) return NULL;
    if (n) n->iattr[0] = trans_b;
    return y;
}

/* ---- softmax cross-entropy ---- */
static void softmax_ce_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    int N = x->shape[0], C = x->shape[1];
    const float *p = n->saved;
    const int32_t *lab = (const int32_t *)(p + (long)N * C);
    float s = n->out->grad[0] / (float)N;
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++)
            x->grad[(long)i * C + c] += s * (p[(long)i * C + c] - (c == lab[i] ? 1.0f : 0.0f));
}

ssl_tensor *ssl_op_softmax_ce(ssl_graph *g, ssl_tensor *logits, const int32_t *labels)
{
    if (!logits) return NULL;
    if (logits->ndim != 2) return ssl_graph_shape_error(g, "softmax_ce", "logits must be 2-D");
    int N = logits->shape[0], C = logits->shape[1];
    for (int i = 0; i < N; i++)
        if (labels[i] < 0 || labels[i] >= C)
            return ssl_graph_shape_error(g, "softmax_ce", "label out of range");
    int one = 1;
    ssl_tensor *y = ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
    float *p = ssl_graph_saved(g, sizeof(float) * ((size_t)N * C + N));
    if (!y || !p) return NULL;
    memcpy(p + (long)N * C, labels, sizeof(int32_t) * N);
    double loss = 0;
    for (int i = 0; i < N; i++) {
        const float *x = logits->data + (long)i * C;
        float mx = x[0];
        for (int c = 1; c < C; c++) mx = x[c] > mx ? x[c] : mx;
        double z = 0;
        for (int c = 0; c < C; c++) z += exp((double)x[c] - mx);
        for (int c = 0; c < C; c++) p[(long)i * C + c] = (float)(exp((double)x[c] - mx) / z);
        loss += log(z) + mx - x[labels[i]];
    }
    y->data[0] = (float)(loss / N);
    int fail;
    ssl_node *n = ssl_graph_record(g, softmax_ce_bwd, y, logits, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = p;
    return y;
}

/* ---- NT-Xent ---- */
static void ntxent_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *z = n->in[0];
    if (!z->requires_grad) return;
    int M = z->shape[0], D = z->shape[1], half = M / 2;
    float T = n->fattr[0];
    /* (M, M) softmax over j != i, turned into dL/dS in place: a recorded
     * graph is differentiated once (ssl_graph_backward), so this is safe. */
    float *p = n->saved;
    float s = n->out->grad[0] / (float)M;
    for (int i = 0; i < M; i++) {
        int pos = (i + half) % M;
        float *row = p + (long)i * M;
        for (int j = 0; j < M; j++) row[j] = s * (row[j] - (j == pos ? 1.0f : 0.0f));
    }
    /* S = z z^T / T: dz += (dS + dS^T) z / T */
    ssl_sgemm(0, 0, M, D, M, 1.0f / T, p, M, z->data, D, 1.0f, z->grad, D);
    ssl_sgemm(1, 0, M, D, M, 1.0f / T, p, M, z->data, D, 1.0f, z->grad, D);
}

ssl_tensor *ssl_op_ntxent(ssl_graph *g, ssl_tensor *z, float temperature)
{
    if (!z) return NULL;
    if (z->ndim != 2 || z->shape[0] < 2 || z->shape[0] % 2)
        return ssl_graph_shape_error(g, "ntxent", "needs (2N, D) embeddings");
    if (!(temperature > 0)) return ssl_graph_shape_error(g, "ntxent", "temperature must be > 0");
    int M = z->shape[0], D = z->shape[1], half = M / 2;
    int one = 1;
    ssl_tensor *y = ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
    float *p = ssl_graph_saved(g, sizeof(float) * (size_t)M * M);
    if (!y || !p) return NULL;
    ssl_sgemm(0, 1, M, M, D, 1.0f / temperature, z->data, D, z->data, D, 0.0f, p, M);
    double loss = 0;
    for (int i = 0; i < M; i++) {
        float *row = p + (long)i * M;
        int pos = (i + half) % M;
        float mx = -INFINITY;
        for (int j = 0; j < M; j++)
            if (j != i && row[j] > mx) mx = row[j];
        double sum = 0;
        for (int j = 0; j < M; j++)
            if (j != i) sum += exp((double)row[j] - mx);
        loss += log(sum) + mx - row[pos];
        for (int j = 0; j < M; j++)
            row[j] = j == i ? 0.0f : (float)(exp((double)row[j] - mx) / sum);
    }
    y->data[0] = (float)(loss / M);
    int fail;
    ssl_node *n = ssl_graph_record(g, ntxent_bwd, y, z, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = p;
        n->fattr[0] = temperature;
    }
    return y;
}
