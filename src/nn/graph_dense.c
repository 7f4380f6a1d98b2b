/* Graph ops for the dense pretext tasks (selfsup/graph_dense.h): transposed
 * convolution, upsampling, per-channel bias, sigmoid / tanh / leaky ReLU,
 * masked L2, per-pixel and binary cross-entropy, bilinear point sampling and
 * patch-level InfoNCE.
 *
 * Plain C on every backend: the heavy parts (transposed convolution,
 * InfoNCE) are matrix products through ssl_sgemm over chunks of images or
 * rows, one chunk per OpenMP thread; the rest are loops over (n, c) planes.
 * Sums run in double and, where threads share them, go through per-chunk
 * partials added in a fixed order, so results do not depend on scheduling.
 * Checked against PyTorch and finite differences by tests/test_dense_ops.c. */
#include "selfsup/graph_dense.h"

#include "graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif


static ssl_tensor *new_scalar(ssl_graph *g)
{
    int one = 1;
    return ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
}

/* Whether ssl_graph_record() will record a node for these inputs: the
 * forward then also prepares what the backward needs. */
static int will_record(const ssl_graph *g, const ssl_tensor *a, const ssl_tensor *b)
{
    return g->record && ssl_graph_needs_grad(a, b, NULL);
}

/* ================================================================ layout
 * The one place that knows how a 4-D activation is stored. Every op below
 * sees its (n, c) planes, H x W row-major, at strides sn (images) and sc
 * (channels): NCHW and CNHW are both of that form. A layout that is not
 * (a blocked one) is first copied to NCHW by ssl_op_to_layout, which
 * records its own backward, so the ops stay correct for it unchanged. */

static int is_planar(ssl_layout l)
{
    return l == SSL_LAYOUT_NCHW || l == SSL_LAYOUT_CNHW;
}

/* x itself when its planes are strided, else an NCHW copy. */
static ssl_tensor *planar(ssl_graph *g, ssl_tensor *x)
{
    if (!x || x->ndim != 4 || is_planar(x->layout)) return x;
    return ssl_op_to_layout(g, x, SSL_LAYOUT_NCHW);
}

/* An array a in like's memory order (no gradient), in planar() order: a
 * itself or an NCHW copy in the arena. NULL on OOM (ctx->err set). */
static const float *planar_array(ssl_graph *g, const ssl_tensor *like, const float *a)
{
    if (!a || is_planar(like->layout)) return a;
    ssl_tensor t = ssl_tensor_wrap((float *)a, NULL, 4, like->shape, like->layout);
    ssl_tensor *c = ssl_op_to_layout(g, &t, SSL_LAYOUT_NCHW);
    return c ? c->data : NULL;
}

typedef struct act_view {
    float *p; /* the tensor's data or grad */
    int N, C, H, W;
    long hw, sn, sc;
} act_view;

static act_view view(const ssl_tensor *t, float *p)
{
    act_view v;
    v.p = p;
    v.N = t->shape[0];
    v.C = t->shape[1];
    v.H = t->shape[2];
    v.W = t->shape[3];
    v.hw = (long)v.H * v.W;
    ssl_layout_strides(t->layout, v.N, v.C, v.H, v.W, &v.sn, &v.sc);
    return v;
}

/* Offset of plane (n, c). */
static inline long plane_off(const act_view *v, int n, int c)
{
    return n * v->sn + c * v->sc;
}

/* Whether images n0 .. n0+nb-1 of each channel lie next to each other, so a
 * chunk of images is one (C, nb*H*W) matrix with leading dimension sc. */
static int images_adjacent(const act_view *v)
{
    return v->sn == v->hw && v->sc >= (long)v->N * v->hw;
}

/* ==================================================== transposed convolution
 * y = conv_transpose(x, w) is the adjoint of the convolution that maps y's
 * shape to x's with the same kernel, stride and padding. Per chunk of images:
 *   forward   col (Co*R*S, cols) = W^T x,  y = col2im(col)
 *   backward  col = im2col(dy),  dx += W col,  dW += x col^T
 * with W the weight as a (Ci, Co*R*S) matrix and cols the chunk's x positions. */

typedef struct convt_geom {
    int N, Ci, Co, H, W, R, S, stride, pad, OH, OW;
} convt_geom;

static convt_geom convt_geom_of(const ssl_tensor *x, const ssl_tensor *w, int stride, int pad,
                                int output_pad)
{
    convt_geom d;
    d.N = x->shape[0];
    d.Ci = x->shape[1];
    d.H = x->shape[2];
    d.W = x->shape[3];
    d.Co = w->shape[1];
    d.R = w->shape[2];
    d.S = w->shape[3];
    d.stride = stride;
    d.pad = pad;
    d.OH = (d.H - 1) * stride - 2 * pad + d.R + output_pad;
    d.OW = (d.W - 1) * stride - 2 * pad + d.S + output_pad;
    return d;
}

/* Indices i in [0, n) with i*stride - pad + k inside [0, m): [*lo, *hi). */
static void valid_range(int n, int m, int stride, int pad, int k, int *lo, int *hi)
{
    int a = pad - k, b = m - 1 + pad - k;
    int l = a > 0 ? (a + stride - 1) / stride : 0;
    int h = b < 0 ? 0 : b / stride + 1;
    if (h > n) h = n;
    if (l > h) l = h;
    *lo = l;
    *hi = h;
}

/* col (Co*R*S, nb*H*W) <- col[(co, r, s)][j*H*W + i*W + c] =
 * y[n0 + j, co, i*stride - pad + r, c*stride - pad + s], 0 outside y. */
static void convt_im2col(float *col, const act_view *y, const convt_geom *d, int n0, int nb)
{
    const long hw = (long)d->H * d->W, cols = nb * hw;
    const int st = d->stride;
    for (int co = 0; co < d->Co; co++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                float *row = col + ((long)(co * d->R + r) * d->S + s) * cols;
                int lo, hi;
                valid_range(d->W, d->OW, st, d->pad, s, &lo, &hi);
                for (int j = 0; j < nb; j++) {
                    const float *yp = y->p + plane_off(y, n0 + j, co);
                    float *o = row + j * hw;
                    for (int i = 0; i < d->H; i++) {
                        int oh = i * st - d->pad + r;
                        float *orow = o + (long)i * d->W;
                        if (oh < 0 || oh >= d->OH) {
                            memset(orow, 0, sizeof(float) * d->W);
                            continue;
                        }
                        const long base = (long)oh * d->OW - d->pad + s;
                        for (int c = 0; c < lo; c++) orow[c] = 0.0f;
                        for (int c = lo; c < hi; c++) orow[c] = yp[base + (long)c * st];
                        for (int c = hi; c < d->W; c++) orow[c] = 0.0f;
                    }
                }
            }
}

/* The adjoint of convt_im2col: y of images n0 .. n0+nb-1 += col2im(col). */
static void convt_col2im_add(const act_view *y, const float *col, const convt_geom *d, int n0,
                             int nb)
{
    const long hw = (long)d->H * d->W, cols = nb * hw;
    const int st = d->stride;
    for (int co = 0; co < d->Co; co++)
        for (int r = 0; r < d->R; r++)
            for (int s = 0; s < d->S; s++) {
                const float *row = col + ((long)(co * d->R + r) * d->S + s) * cols;
                int lo, hi;
                valid_range(d->W, d->OW, st, d->pad, s, &lo, &hi);
                for (int j = 0; j < nb; j++) {
                    float *yp = y->p + plane_off(y, n0 + j, co);
                    const float *o = row + j * hw;
                    for (int i = 0; i < d->H; i++) {
                        int oh = i * st - d->pad + r;
                        if (oh < 0 || oh >= d->OH) continue;
                        const long base = (long)oh * d->OW - d->pad + s;
                        const float *orow = o + (long)i * d->W;
                        for (int c = lo; c < hi; c++) yp[base + (long)c * st] += orow[c];
                    }
                }
            }
}

/* Images per chunk: about 1 MiB of columns, at least two chunks per thread
 * when the batch allows; 1 unless images of a channel are adjacent. */
static int convt_chunk(int T, const act_view *xv, const act_view *yv, const convt_geom *d)
{
    if (!images_adjacent(xv) || !images_adjacent(yv)) return 1;
    long per_img = (long)d->Co * d->R * d->S * d->H * d->W;
    int nb = (int)((256L * 1024) / (per_img > 0 ? per_img : 1));
    int max_nb = d->N / (2 * T);
    if (nb > max_nb) nb = max_nb;
    return nb < 1 ? 1 : nb;
}

static void convt_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    convt_geom d = convt_geom_of(x, w, n->iattr[0], n->iattr[1], n->iattr[2]);
    const int need_dx = x->requires_grad, need_dw = w->requires_grad;
    act_view xv = view(x, x->data), dyv = view(y, y->grad);
    act_view dxv = view(x, need_dx ? x->grad : x->data); /* read only when need_dx */
    if (b && b->requires_grad) { /* db[co] += sum over images and positions of dy */
        float *db = b->grad;
        const long work = (long)d.N * d.Co * dyv.hw;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (work >= SSL_PAR_MIN)
        for (int co = 0; co < d.Co; co++) {
            double s = 0;
            for (int i = 0; i < d.N; i++) {
                const float *p = dyv.p + plane_off(&dyv, i, co);
                for (long k = 0; k < dyv.hw; k++) s += p[k];
            }
            db[co] += (float)s;
        }
    }
    if (!need_dx && !need_dw) return;
    const int T = ssl_graph_threads(g), nb = convt_chunk(T, &xv, &dyv, &d);
    const int n_chunks = (d.N + nb - 1) / nb, crs = d.Co * d.R * d.S;
    const size_t col_sz = (size_t)crs * nb * xv.hw, dw_sz = need_dw ? (size_t)d.Ci * crs : 0;
    float *scratch = ssl_ctx_scratch(g->ctx, sizeof(float) * (col_sz + dw_sz) * T);
    if (!scratch) return;
    for (int t = 0; t < T; t++) /* only the per-thread weight-gradient sums start at 0 */
        memset(scratch + (size_t)t * (col_sz + dw_sz) + col_sz, 0, sizeof(float) * dw_sz);
#pragma omp parallel for schedule(static, 1) num_threads(T) /* static: deterministic sums */
    for (int ci = 0; ci < n_chunks; ci++) {
        int n0 = ci * nb, cnt = d.N - n0 < nb ? d.N - n0 : nb, cols = (int)(cnt * xv.hw);
        float *col = scratch + (size_t)ssl_thread_id() * (col_sz + dw_sz), *dw_t = col + col_sz;
        convt_im2col(col, &dyv, &d, n0, cnt);
        if (need_dx)
            ssl_sgemm(0, 0, d.Ci, cols, crs, 1.0f, w->data, crs, col, cols, 1.0f,
                      dxv.p + plane_off(&dxv, n0, 0), (int)dxv.sc);
        if (need_dw)
            ssl_sgemm(0, 1, d.Ci, crs, cols, 1.0f, xv.p + plane_off(&xv, n0, 0), (int)xv.sc, col,
                      cols, 1.0f, dw_t, crs);
    }
    for (int t = 0; t < T && need_dw; t++) {
        const float *p = scratch + (size_t)t * (col_sz + dw_sz) + col_sz;
        for (size_t i = 0; i < dw_sz; i++) w->grad[i] += p[i];
    }
}

ssl_tensor *ssl_op_conv_transpose2d(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b,
                                    int stride, int pad, int output_pad)
{
    if (!x || !w) return NULL;
    if (x->ndim != 4 || w->ndim != 4 || w->shape[0] != x->shape[1])
        return ssl_graph_shape_error(g, "conv_transpose2d",
                                     "x (N, Ci, H, W) and w (Ci, Co, R, S) do not match");
    if (b && ssl_tensor_numel(b) != w->shape[1])
        return ssl_graph_shape_error(g, "conv_transpose2d", "bias must have Co values");
    if (stride < 1 || pad < 0 || output_pad < 0 || output_pad >= stride)
        return ssl_graph_arg_error(g, "conv_transpose2d",
                         "needs stride >= 1, pad >= 0, 0 <= output_pad < stride");
    if (!(x = planar(g, x))) return NULL;
    convt_geom d = convt_geom_of(x, w, stride, pad, output_pad);
    if (d.OH < 1 || d.OW < 1)
        return ssl_graph_shape_error(g, "conv_transpose2d", "padding leaves an empty output");
    int shape[4] = {d.N, d.Co, d.OH, d.OW};
    ssl_tensor *y = ssl_tensor_new(g, 4, shape, x->layout);
    if (!y) return NULL;
    act_view xv = view(x, x->data), yv = view(y, y->data);
    const int T = ssl_graph_threads(g), nb = convt_chunk(T, &xv, &yv, &d);
    const int n_chunks = (d.N + nb - 1) / nb, crs = d.Co * d.R * d.S;
    const size_t col_sz = (size_t)crs * nb * xv.hw;
    float *scratch = ssl_ctx_scratch(g->ctx, sizeof(float) * col_sz * T);
    if (!scratch) return NULL;
    const float *bias = b ? b->data : NULL;
#pragma omp parallel for schedule(static, 1) num_threads(T)
    for (int ci = 0; ci < n_chunks; ci++) {
        int n0 = ci * nb, cnt = d.N - n0 < nb ? d.N - n0 : nb, cols = (int)(cnt * xv.hw);
        float *col = scratch + (size_t)ssl_thread_id() * col_sz;
        ssl_sgemm(1, 0, crs, cols, d.Ci, 1.0f, w->data, crs, xv.p + plane_off(&xv, n0, 0),
                  (int)xv.sc, 0.0f, col, cols);
        for (int j = n0; j < n0 + cnt; j++)
            for (int co = 0; co < d.Co; co++) {
                float *p = yv.p + plane_off(&yv, j, co), v = bias ? bias[co] : 0.0f;
                for (long k = 0; k < yv.hw; k++) p[k] = v;
            }
        convt_col2im_add(&yv, col, &d, n0, cnt);
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, convt_bwd, y, x, w, b, &fail);
    if (fail) return NULL;
    if (n) {
        n->iattr[0] = stride;
        n->iattr[1] = pad;
        n->iattr[2] = output_pad;
    }
    return y;
}

/* ============================================================== upsample */

/* Bilinear source of each output row (or column): the two input indices and
 * the weight of the second, as PyTorch computes them for align_corners=False. */
typedef struct lerp_table {
    int *i0, *i1;
    float *l1;
} lerp_table;

static int lerp_table_init(ssl_graph *g, lerp_table *t, int in, int factor)
{
    int out = in * factor;
    t->i0 = ssl_graph_saved(g, sizeof(int) * 2 * (size_t)out);
    t->l1 = ssl_graph_saved(g, sizeof(float) * (size_t)out);
    if (!t->i0 || !t->l1) return 0;
    t->i1 = t->i0 + out;
    for (int o = 0; o < out; o++) {
        double src = ((double)o + 0.5) / factor - 0.5;
        if (src < 0) src = 0;
        int i = (int)src;
        t->i0[o] = i;
        t->i1[o] = i < in - 1 ? i + 1 : i;
        t->l1[o] = (float)(src - i);
    }
    return 1;
}

typedef struct up_saved {
    lerp_table rows, cols; /* bilinear only */
} up_saved;

/* y plane (H*f, W*f) <- upsampled x plane (H, W). */
static void up_plane_fwd(float *y, const float *x, int H, int W, int f, int mode,
                         const up_saved *s)
{
    const int OH = H * f, OW = W * f;
    for (int oh = 0; oh < OH; oh++) {
        float *yr = y + (long)oh * OW;
        if (mode == SSL_UPSAMPLE_NEAREST) {
            const float *xr = x + (long)(oh / f) * W;
            for (int ow = 0; ow < OW; ow++) yr[ow] = xr[ow / f];
            continue;
        }
        const float lh = s->rows.l1[oh], kh = 1.0f - lh;
        const float *x0 = x + (long)s->rows.i0[oh] * W, *x1 = x + (long)s->rows.i1[oh] * W;
        for (int ow = 0; ow < OW; ow++) {
            const int a = s->cols.i0[ow], c = s->cols.i1[ow];
            const float lw = s->cols.l1[ow], kw = 1.0f - lw;
            yr[ow] = kh * (kw * x0[a] + lw * x0[c]) + lh * (kw * x1[a] + lw * x1[c]);
        }
    }
}

/* The adjoint: dx plane (H, W) += up^T(dy plane (H*f, W*f)). */
static void up_plane_bwd(float *dx, const float *dy, int H, int W, int f, int mode,
                         const up_saved *s)
{
    const int OH = H * f, OW = W * f;
    for (int oh = 0; oh < OH; oh++) {
        const float *gr = dy + (long)oh * OW;
        if (mode == SSL_UPSAMPLE_NEAREST) {
            float *xr = dx + (long)(oh / f) * W;
            for (int ow = 0; ow < OW; ow++) xr[ow / f] += gr[ow];
            continue;
        }
        const float lh = s->rows.l1[oh], kh = 1.0f - lh;
        float *x0 = dx + (long)s->rows.i0[oh] * W, *x1 = dx + (long)s->rows.i1[oh] * W;
        for (int ow = 0; ow < OW; ow++) {
            const int a = s->cols.i0[ow], c = s->cols.i1[ow];
            const float lw = s->cols.l1[ow], kw = 1.0f - lw, gv = gr[ow];
            x0[a] += kh * kw * gv;
            x0[c] += kh * lw * gv;
            x1[a] += lh * kw * gv;
            x1[c] += lh * lw * gv;
        }
    }
}

static void upsample_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *y = n->out;
    if (!x->requires_grad) return;
    act_view xv = view(x, x->grad), yv = view(y, y->grad);
    const int f = n->iattr[0], mode = n->iattr[1];
    const long planes = (long)xv.N * xv.C;
    /* planes are disjoint, so threads never add into the same dx */
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (planes * yv.hw >= SSL_PAR_MIN)
    for (long pi = 0; pi < planes; pi++) {
        int i = (int)(pi / xv.C), c = (int)(pi % xv.C);
        up_plane_bwd(xv.p + plane_off(&xv, i, c), yv.p + plane_off(&yv, i, c), xv.H, xv.W, f,
                     mode, n->saved);
    }
}

ssl_tensor *ssl_op_upsample(ssl_graph *g, ssl_tensor *x, int factor, ssl_upsample_mode mode)
{
    if (!x) return NULL;
    if (x->ndim != 4) return ssl_graph_shape_error(g, "upsample", "needs a 4-D tensor");
    if (factor < 1 || (mode != SSL_UPSAMPLE_NEAREST && mode != SSL_UPSAMPLE_BILINEAR))
        return ssl_graph_arg_error(g, "upsample", "needs an integer factor >= 1 and nearest or bilinear");
    if ((long)x->shape[2] * factor > 1 << 20 || (long)x->shape[3] * factor > 1 << 20)
        return ssl_graph_shape_error(g, "upsample", "output too large");
    if (!(x = planar(g, x))) return NULL;
    int shape[4] = {x->shape[0], x->shape[1], x->shape[2] * factor, x->shape[3] * factor};
    ssl_tensor *y = ssl_tensor_new(g, 4, shape, x->layout);
    up_saved *s = ssl_graph_saved(g, sizeof *s);
    if (!y || !s) return NULL;
    memset(s, 0, sizeof *s);
    if (mode == SSL_UPSAMPLE_BILINEAR &&
        (!lerp_table_init(g, &s->rows, x->shape[2], factor) ||
         !lerp_table_init(g, &s->cols, x->shape[3], factor)))
        return NULL;
    act_view xv = view(x, x->data), yv = view(y, y->data);
    const long planes = (long)xv.N * xv.C;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (planes * yv.hw >= SSL_PAR_MIN)
    for (long pi = 0; pi < planes; pi++) {
        int i = (int)(pi / xv.C), c = (int)(pi % xv.C);
        up_plane_fwd(yv.p + plane_off(&yv, i, c), xv.p + plane_off(&xv, i, c), xv.H, xv.W,
                     factor, mode, s);
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, upsample_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->saved = s;
        n->iattr[0] = factor;
        n->iattr[1] = mode;
    }
    return y;
}

/* ===================================================== per-channel bias */

/* Channels c, with the planes of c: offsets i*sn + c*sc of length hw. A 2-D
 * (N, C) tensor is N planes of one value per channel. */
static act_view bias_view(const ssl_tensor *x, float *p)
{
    if (x->ndim == 4) return view(x, p);
    act_view v = {p, x->shape[0], x->shape[1], 1, 1, 1, x->shape[1], 1};
    return v;
}

static void add_bias_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *b = n->in[1], *y = n->out;
    long m = ssl_tensor_numel(y);
    const float *dy = y->grad;
    if (x->requires_grad) {
        float *dx = x->grad;
#pragma omp parallel for simd schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
        for (long i = 0; i < m; i++) dx[i] += dy[i];
    }
    if (b->requires_grad) {
        act_view v = bias_view(y, y->grad);
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
        for (int c = 0; c < v.C; c++) {
            double s = 0;
            for (int i = 0; i < v.N; i++) {
                const float *p = v.p + plane_off(&v, i, c);
                for (long k = 0; k < v.hw; k++) s += p[k];
            }
            b->grad[c] += (float)s;
        }
    }
}

ssl_tensor *ssl_op_add_bias_channel(ssl_graph *g, ssl_tensor *x, ssl_tensor *b)
{
    if (!x || !b) return NULL;
    if ((x->ndim != 4 && x->ndim != 2) || ssl_tensor_numel(b) != x->shape[1])
        return ssl_graph_shape_error(g, "add_bias_channel",
                                     "needs x (N, C, H, W) or (N, C) and b (C)");
    if (!(x = planar(g, x))) return NULL;
    ssl_tensor *y = ssl_tensor_new(g, x->ndim, x->shape, x->layout);
    if (!y) return NULL;
    act_view xv = bias_view(x, x->data), yv = bias_view(y, y->data);
    const long planes = (long)xv.N * xv.C;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (planes * xv.hw >= SSL_PAR_MIN)
    for (long pi = 0; pi < planes; pi++) {
        int i = (int)(pi / xv.C), c = (int)(pi % xv.C);
        const float *xp = xv.p + plane_off(&xv, i, c), bc = b->data[c];
        float *yp = yv.p + plane_off(&yv, i, c);
        for (long k = 0; k < xv.hw; k++) yp[k] = xp[k] + bc;
    }
    int fail;
    ssl_graph_record(g, add_bias_bwd, y, x, b, NULL, &fail);
    return fail ? NULL : y;
}

/* ================================================= element-wise activations */

enum { U_SIGMOID, U_TANH, U_LEAKY };

static void unary_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    long m = ssl_tensor_numel(x);
    const float *px = x->data, *py = n->out->data, *dy = n->out->grad;
    float *dx = x->grad;
    const int kind = n->iattr[0];
    const float slope = n->fattr[0];
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
    for (long i = 0; i < m; i++) {
        float d;
        if (kind == U_SIGMOID)
            d = py[i] * (1.0f - py[i]);
        else if (kind == U_TANH)
            d = 1.0f - py[i] * py[i];
        else
            d = px[i] > 0 ? 1.0f : slope;
        dx[i] += d * dy[i];
    }
}

static ssl_tensor *unary(ssl_graph *g, ssl_tensor *x, int kind, float slope)
{
    if (!x) return NULL;
    ssl_tensor *y = ssl_tensor_new(g, x->ndim, x->shape, x->layout);
    if (!y) return NULL;
    long m = ssl_tensor_numel(x);
    const float *px = x->data;
    float *py = y->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
    for (long i = 0; i < m; i++) {
        float v = px[i];
        if (kind == U_SIGMOID) { /* exp of a non-positive number only: no overflow */
            float e = expf(-fabsf(v));
            py[i] = v >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
        } else if (kind == U_TANH) {
            py[i] = tanhf(v);
        } else {
            py[i] = v > 0 ? v : slope * v;
        }
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, unary_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        n->iattr[0] = kind;
        n->fattr[0] = slope;
    }
    return y;
}

ssl_tensor *ssl_op_sigmoid(ssl_graph *g, ssl_tensor *x)
{
    return unary(g, x, U_SIGMOID, 0);
}

ssl_tensor *ssl_op_tanh(ssl_graph *g, ssl_tensor *x)
{
    return unary(g, x, U_TANH, 0);
}

ssl_tensor *ssl_op_leaky_relu(ssl_graph *g, ssl_tensor *x, float slope)
{
    if (x && !isfinite(slope)) return ssl_graph_arg_error(g, "leaky_relu", "slope must be finite");
    return unary(g, x, U_LEAKY, slope);
}

/* ===================================================================== losses */

/* ---- masked L2 ---- */
ssl_tensor *ssl_op_masked_mse(ssl_graph *g, ssl_tensor *pred, const float *target,
                              const float *mask, int mask_channels)
{
    if (!pred) return NULL;
    if (pred->ndim != 4) return ssl_graph_shape_error(g, "masked_mse", "pred must be (N, C, H, W)");
    if (!target) return ssl_graph_arg_error(g, "masked_mse", "target missing");
    int per_pixel = mask && mask_channels == 1;
    if (mask && mask_channels != 1 && mask_channels != pred->shape[1])
        return ssl_graph_arg_error(g, "masked_mse", "mask_channels must be 1 (per pixel) or C (per element)");
    /* target and a per-element mask follow pred into planar() order */
    ssl_tensor *orig = pred;
    if (!(pred = planar(g, pred)) || !(target = planar_array(g, orig, target))) return NULL;
    if (mask && !per_pixel && !(mask = planar_array(g, orig, mask))) return NULL;
    act_view v = view(pred, pred->data);
    const long planes = (long)v.N * v.C, m = planes * v.hw;
    ssl_tensor *y = new_scalar(g);
    /* per-plane partial sums (weighted squared error, weight), added in order */
    double *part = ssl_ctx_scratch(g->ctx, sizeof(double) * 2 * (size_t)planes);
    float *gr = NULL;
    if (!y || !part) return NULL;
    if (will_record(g, pred, NULL) && !(gr = ssl_graph_saved(g, sizeof(float) * (size_t)m)))
        return NULL;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
    for (long pi = 0; pi < planes; pi++) {
        int i = (int)(pi / v.C), c = (int)(pi % v.C);
        long off = plane_off(&v, i, c);
        const float *p = v.p + off, *t = target + off;
        const float *mk = !mask ? NULL : per_pixel ? mask + (long)i * v.hw : mask + off;
        double se = 0, ws = 0;
        for (long k = 0; k < v.hw; k++) {
            double d = (double)p[k] - t[k], wk = mk ? mk[k] : 1.0;
            se += wk * d * d;
            ws += wk;
            if (gr) gr[off + k] = (float)(wk * d); /* scaled below */
        }
        part[2 * pi] = se;
        part[2 * pi + 1] = ws;
    }
    double se = 0, ws = 0;
    for (long pi = 0; pi < planes; pi++) {
        se += part[2 * pi];
        ws += part[2 * pi + 1];
    }
    y->data[0] = ws > 0 ? (float)(se / ws) : 0.0f;
    if (gr) {
        float s = ws > 0 ? (float)(2.0 / ws) : 0.0f;
#pragma omp parallel for simd schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
        for (long k = 0; k < m; k++) gr[k] *= s;
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, ssl_graph_saved_grad_bwd, y, pred, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = gr;
    return y;
}

/* ---- per-pixel softmax cross-entropy ---- */
typedef struct pce_saved {
    float *lse;    /* (N*H*W) log-sum-exp of each pixel's logits */
    float *wpix;   /* (N*H*W) the pixel's class weight, 0 when ignored */
    int32_t *lab;  /* (N*H*W) */
    float scale;   /* 1 / sum of wpix, 0 when that is 0 */
} pce_saved;

static void pce_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    const pce_saved *s = n->saved;
    act_view xv = view(x, x->data), dv = view(x, x->grad);
    const float sc = s->scale * n->out->grad[0];
    const long work = (long)xv.N * xv.C * xv.hw;
    if (sc == 0.0f) return;
    /* d/dx[q] = w_p (softmax_q - [q == label]) / sum w, image by image */
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (work >= SSL_PAR_MIN)
    for (int i = 0; i < xv.N; i++) {
        const long p0 = (long)i * xv.hw;
        for (int q = 0; q < xv.C; q++) {
            const float *xp = xv.p + plane_off(&xv, i, q);
            float *dp = dv.p + plane_off(&dv, i, q);
            for (long k = 0; k < xv.hw; k++) {
                float w = s->wpix[p0 + k];
                if (w == 0.0f) continue;
                float pr = expf(xp[k] - s->lse[p0 + k]) - (s->lab[p0 + k] == q ? 1.0f : 0.0f);
                dp[k] += sc * w * pr;
            }
        }
    }
}

ssl_tensor *ssl_op_pixel_softmax_ce(ssl_graph *g, ssl_tensor *logits, const int32_t *labels,
                                    const float *class_weights)
{
    if (!logits) return NULL;
    if (logits->ndim != 4)
        return ssl_graph_shape_error(g, "pixel_softmax_ce", "logits must be (N, Q, H, W)");
    if (!labels) return ssl_graph_arg_error(g, "pixel_softmax_ce", "labels missing");
    const int N = logits->shape[0], Q = logits->shape[1];
    const long hw = (long)logits->shape[2] * logits->shape[3], np = N * hw;
    for (long p = 0; p < np; p++)
        if (labels[p] < -1 || labels[p] >= Q)
            return ssl_graph_shape_error(g, "pixel_softmax_ce", "label outside [-1, Q)");
    for (int q = 0; class_weights && q < Q; q++)
        if (!(class_weights[q] >= 0) || !isfinite(class_weights[q]))
            return ssl_graph_arg_error(g, "pixel_softmax_ce", "class weights must be finite and >= 0");
    if (!(logits = planar(g, logits))) return NULL;
    const int rec = will_record(g, logits, NULL), T = ssl_graph_threads(g);
    ssl_tensor *y = new_scalar(g);
    pce_saved *s = ssl_graph_saved(g, sizeof *s);
    if (!y || !s) return NULL;
    memset(s, 0, sizeof *s);
    if (rec) {
        s->lse = ssl_graph_saved(g, sizeof(float) * (size_t)np);
        s->wpix = ssl_graph_saved(g, sizeof(float) * (size_t)np);
        s->lab = ssl_graph_saved(g, sizeof(int32_t) * (size_t)np);
        if (!s->lse || !s->wpix || !s->lab) return NULL;
        memcpy(s->lab, labels, sizeof(int32_t) * (size_t)np);
    }
    /* per image: (weighted loss, weight) partials; per thread: running max
     * (hw floats) and sum of exponentials (hw doubles) of the image's pixels */
    const size_t per_t = ((sizeof(double) + sizeof(float)) * (size_t)hw + 63) & ~(size_t)63;
    char *scr = ssl_ctx_scratch(g->ctx, sizeof(double) * 2 * (size_t)N + per_t * T);
    if (!scr) return NULL;
    double *part = (double *)scr;
    act_view v = view(logits, logits->data);
#pragma omp parallel for schedule(static) num_threads(T) if ((long)N * Q * hw >= SSL_PAR_MIN)
    for (int i = 0; i < N; i++) {
        char *mine = scr + sizeof(double) * 2 * (size_t)N + per_t * ssl_thread_id();
        double *z = (double *)mine;
        float *mx = (float *)(mine + sizeof(double) * (size_t)hw);
        /* channel-major passes: each channel's plane is contiguous in any layout */
        memcpy(mx, v.p + plane_off(&v, i, 0), sizeof(float) * hw);
        for (int q = 1; q < Q; q++) {
            const float *xp = v.p + plane_off(&v, i, q);
            for (long k = 0; k < hw; k++) mx[k] = xp[k] > mx[k] ? xp[k] : mx[k];
        }
        memset(z, 0, sizeof(double) * hw);
        for (int q = 0; q < Q; q++) {
            const float *xp = v.p + plane_off(&v, i, q);
            for (long k = 0; k < hw; k++) z[k] += exp((double)xp[k] - mx[k]);
        }
        double loss = 0, wsum = 0;
        const long p0 = (long)i * hw;
        for (long k = 0; k < hw; k++) {
            int l = labels[p0 + k];
            double w = l < 0 ? 0.0 : class_weights ? class_weights[l] : 1.0;
            double lse = mx[k] + log(z[k]);
            if (w > 0) {
                loss += w * (lse - v.p[plane_off(&v, i, l) + k]);
                wsum += w;
            }
            if (rec) {
                s->lse[p0 + k] = (float)lse;
                s->wpix[p0 + k] = (float)w;
            }
        }
        part[2 * i] = loss;
        part[2 * i + 1] = wsum;
    }
    double loss = 0, wsum = 0;
    for (int i = 0; i < N; i++) {
        loss += part[2 * i];
        wsum += part[2 * i + 1];
    }
    y->data[0] = wsum > 0 ? (float)(loss / wsum) : 0.0f;
    s->scale = wsum > 0 ? (float)(1.0 / wsum) : 0.0f;
    int fail;
    ssl_node *n = ssl_graph_record(g, pce_bwd, y, logits, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = s;
    return y;
}

/* ---- binary cross-entropy on logits ---- */
#define BCE_BLOCK 4096

ssl_tensor *ssl_op_bce_logits(ssl_graph *g, ssl_tensor *logits, const float *targets)
{
    if (!logits) return NULL;
    if (!targets) return ssl_graph_arg_error(g, "bce_logits", "targets missing");
    const long m = ssl_tensor_numel(logits), nblk = (m + BCE_BLOCK - 1) / BCE_BLOCK;
    if (m < 1) return ssl_graph_shape_error(g, "bce_logits", "no logits");
    ssl_tensor *y = new_scalar(g);
    double *part = ssl_ctx_scratch(g->ctx, sizeof(double) * (size_t)nblk);
    float *gr = NULL;
    if (!y || !part) return NULL;
    if (will_record(g, logits, NULL) && !(gr = ssl_graph_saved(g, sizeof(float) * (size_t)m)))
        return NULL;
    const float *x = logits->data;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
    for (long bi = 0; bi < nblk; bi++) {
        long hi = (bi + 1) * BCE_BLOCK < m ? (bi + 1) * BCE_BLOCK : m;
        double s = 0;
        for (long i = bi * BCE_BLOCK; i < hi; i++) {
            double v = x[i], t = targets[i], e = exp(-fabs(v));
            s += fmax(v, 0.0) - v * t + log1p(e);
            if (gr) gr[i] = (float)(((v >= 0 ? 1.0 / (1.0 + e) : e / (1.0 + e)) - t) / m);
        }
        part[bi] = s;
    }
    double s = 0;
    for (long bi = 0; bi < nblk; bi++) s += part[bi];
    y->data[0] = (float)(s / m);
    int fail;
    ssl_node *n = ssl_graph_record(g, ssl_graph_saved_grad_bwd, y, logits, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = gr;
    return y;
}

/* ============================================================ grid sample */

/* The four cells around point (u, v) of an h x w plane, with their bilinear
 * weights; cells outside get weight 0 (and index 0, never read). */
static void grid_corners(float u, float v, int h, int w, long idx[4], float wt[4])
{
    /* far outside, every corner is outside anyway: clamping keeps the
     * int conversion defined without changing the result */
    u = u < -2.0f ? -2.0f : u > (float)w + 1 ? (float)w + 1 : u;
    v = v < -2.0f ? -2.0f : v > (float)h + 1 ? (float)h + 1 : v;
    int x0 = (int)floorf(u), y0 = (int)floorf(v);
    float fx = u - (float)x0, fy = v - (float)y0;
    for (int k = 0; k < 4; k++) {
        int xx = x0 + (k & 1), yy = y0 + (k >> 1);
        float wk = ((k & 1) ? fx : 1.0f - fx) * ((k >> 1) ? fy : 1.0f - fy);
        int inside = xx >= 0 && xx < w && yy >= 0 && yy < h;
        idx[k] = inside ? (long)yy * w + xx : 0;
        wt[k] = inside ? wk : 0.0f;
    }
}

static void grid_sample_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0], *y = n->out;
    if (!x->requires_grad) return;
    act_view dv = view(x, x->grad);
    const int P = n->iattr[0];
    const float *coords = n->saved, *dy = y->grad;
    const long work = (long)dv.N * P * dv.C;
    /* image by image: the planes of different images are disjoint */
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (work >= SSL_PAR_MIN)
    for (int i = 0; i < dv.N; i++)
        for (int p = 0; p < P; p++) {
            long idx[4];
            float wt[4];
            const float *uv = coords + ((long)i * P + p) * 2;
            grid_corners(uv[0], uv[1], dv.H, dv.W, idx, wt);
            const float *gr = dy + ((long)i * P + p) * dv.C;
            for (int c = 0; c < dv.C; c++) {
                float *dp = dv.p + plane_off(&dv, i, c);
                for (int k = 0; k < 4; k++) dp[idx[k]] += wt[k] * gr[c];
            }
        }
}

ssl_tensor *ssl_op_grid_sample(ssl_graph *g, ssl_tensor *x, const float *coords, int P)
{
    if (!x) return NULL;
    if (x->ndim != 4) return ssl_graph_shape_error(g, "grid_sample", "x must be (N, C, h, w)");
    if (P < 1 || !coords) return ssl_graph_arg_error(g, "grid_sample", "needs P >= 1 points per image");
    const int N = x->shape[0], C = x->shape[1];
    const long np = (long)N * P;
    for (long i = 0; i < 2 * np; i++)
        if (!isfinite(coords[i])) return ssl_graph_arg_error(g, "grid_sample", "coordinates must be finite");
    if (!(x = planar(g, x))) return NULL;
    int shape[2] = {(int)np, C};
    if (np > 1L << 30) return ssl_graph_shape_error(g, "grid_sample", "too many points");
    ssl_tensor *y = ssl_tensor_new(g, 2, shape, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    act_view v = view(x, x->data);
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (np * C >= SSL_PAR_MIN)
    for (long r = 0; r < np; r++) {
        int i = (int)(r / P);
        long idx[4];
        float wt[4];
        grid_corners(coords[2 * r], coords[2 * r + 1], v.H, v.W, idx, wt);
        float *out = y->data + r * C;
        for (int c = 0; c < C; c++) {
            const float *xp = v.p + plane_off(&v, i, c);
            out[c] = wt[0] * xp[idx[0]] + wt[1] * xp[idx[1]] + wt[2] * xp[idx[2]] +
                     wt[3] * xp[idx[3]];
        }
    }
    int fail;
    ssl_node *n = ssl_graph_record(g, grid_sample_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) {
        float *c = ssl_graph_saved(g, sizeof(float) * 2 * (size_t)np);
        if (!c) return NULL;
        memcpy(c, coords, sizeof(float) * 2 * (size_t)np);
        n->saved = c;
        n->iattr[0] = P;
    }
    return y;
}

/* ========================================================== dense InfoNCE */

/* Rows of logits per block: about 1 MiB of them per thread. */
static int infonce_block(int M)
{
    int b = (int)((256L * 1024) / M);
    if (b < 16) b = 16;
    return b > M ? M : b;
}

typedef struct dnce_saved {
    float *lse; /* (M) log-sum-exp of each row of q k^T / T */
    float T;
} dnce_saved;

static void dense_infonce_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *q = n->in[0], *k = n->in[1];
    const dnce_saved *s = n->saved;
    const int M = q->shape[0], D = q->shape[1], B = infonce_block(M), T = ssl_graph_threads(g);
    const int nblk = (M + B - 1) / B, need_dq = q->requires_grad, need_dk = k->requires_grad;
    const float go = n->out->grad[0] / (float)M, invT = 1.0f / s->T;
    /* per thread: a block of logits (B, M), then its dk partial (M, D) */
    const size_t lg_sz = (size_t)B * M, dk_sz = need_dk ? (size_t)M * D : 0;
    float *scratch = ssl_ctx_scratch(g->ctx, sizeof(float) * (lg_sz + dk_sz) * T);
    if (!scratch) return;
    for (int t = 0; t < T; t++)
        memset(scratch + (size_t)t * (lg_sz + dk_sz) + lg_sz, 0, sizeof(float) * dk_sz);
#pragma omp parallel for schedule(static, 1) num_threads(T) /* static: deterministic sums */
    for (int bi = 0; bi < nblk; bi++) {
        const int r0 = bi * B, rows = M - r0 < B ? M - r0 : B;
        float *G = scratch + (size_t)ssl_thread_id() * (lg_sz + dk_sz), *dk_t = G + lg_sz;
        /* G = d loss / d logits = (softmax - onehot(diagonal)) / M, times d(loss) */
        ssl_sgemm(0, 1, rows, M, D, invT, q->data + (long)r0 * D, D, k->data, D, 0.0f, G, M);
        for (int r = 0; r < rows; r++) {
            float *row = G + (long)r * M, l = s->lse[r0 + r];
            for (int j = 0; j < M; j++) row[j] = go * expf(row[j] - l);
            row[r0 + r] -= go;
        }
        /* logits = q k^T / T: dq = G k / T, dk = G^T q / T */
        if (need_dq)
            ssl_sgemm(0, 0, rows, D, M, invT, G, M, k->data, D, 1.0f, q->grad + (long)r0 * D, D);
        if (need_dk)
            ssl_sgemm(1, 0, M, D, rows, invT, G, M, q->data + (long)r0 * D, D, 1.0f, dk_t, D);
    }
    for (int t = 0; t < T && need_dk; t++) {
        const float *p = scratch + (size_t)t * (lg_sz + dk_sz) + lg_sz;
        for (size_t i = 0; i < dk_sz; i++) k->grad[i] += p[i];
    }
}

ssl_tensor *ssl_op_dense_infonce(ssl_graph *g, ssl_tensor *q, ssl_tensor *k, float temperature)
{
    if (!q || !k) return NULL;
    if (q->ndim != 2 || k->ndim != 2 || q->shape[0] != k->shape[0] ||
        q->shape[1] != k->shape[1] || q->shape[0] < 1 || q->shape[1] < 1)
        return ssl_graph_shape_error(g, "dense_infonce", "q and k must both be (M, D)");
    if (!(temperature > 0) || !isfinite(temperature))
        return ssl_graph_arg_error(g, "dense_infonce", "temperature must be > 0");
    const int M = q->shape[0], D = q->shape[1], B = infonce_block(M), T = ssl_graph_threads(g);
    const int nblk = (M + B - 1) / B;
    ssl_tensor *y = new_scalar(g);
    dnce_saved *s = ssl_graph_saved(g, sizeof *s);
    if (!y || !s) return NULL;
    s->T = temperature;
    s->lse = ssl_graph_saved(g, sizeof(float) * (size_t)M);
    /* each row's loss (added in order below), then per thread a block of logits */
    const size_t lg_sz = (size_t)B * M;
    char *scr = ssl_ctx_scratch(g->ctx, sizeof(double) * (size_t)M + sizeof(float) * lg_sz * T);
    if (!s->lse || !scr) return NULL;
    double *row_loss = (double *)scr;
    float *logits = (float *)(scr + sizeof(double) * (size_t)M);
#pragma omp parallel for schedule(static, 1) num_threads(T)
    for (int bi = 0; bi < nblk; bi++) {
        const int r0 = bi * B, rows = M - r0 < B ? M - r0 : B;
        float *L = logits + (size_t)ssl_thread_id() * lg_sz;
        ssl_sgemm(0, 1, rows, M, D, 1.0f / temperature, q->data + (long)r0 * D, D, k->data, D,
                  0.0f, L, M);
        for (int r = 0; r < rows; r++) {
            const float *row = L + (long)r * M;
            float mx = row[0];
            for (int j = 1; j < M; j++) mx = row[j] > mx ? row[j] : mx;
            double z = 0;
            for (int j = 0; j < M; j++) z += expf(row[j] - mx);
            double lse = mx + log(z);
            s->lse[r0 + r] = (float)lse;
            row_loss[r0 + r] = lse - row[r0 + r];
        }
    }
    double loss = 0;
    for (int i = 0; i < M; i++) loss += row_loss[i];
    y->data[0] = (float)(loss / M);
    int fail;
    ssl_node *n = ssl_graph_record(g, dense_infonce_bwd, y, q, k, NULL, &fail);
    if (fail) return NULL;
    if (n) n->saved = s;
    return y;
}
