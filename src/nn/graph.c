/* The arena, the tape and the backward pass. */
#include "graph_internal.h"

#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <string.h>

long ssl_tensor_numel(const ssl_tensor *t)
{
    long n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

ssl_tensor ssl_tensor_wrap(float *data, float *grad, int ndim, const int *shape,
                           ssl_layout layout)
{
    ssl_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.grad = grad;
    t.ndim = ndim;
    for (int i = 0; i < ndim; i++) t.shape[i] = shape[i];
    t.layout = layout;
    t.device = SSL_DEVICE_CPU;
    t.requires_grad = grad != NULL;
    return t;
}

void *ssl_arena_alloc(ssl_arena *a, size_t bytes)
{
    bytes = (bytes + 63) & ~(size_t)63;
    if (a->base && a->used + bytes <= a->cap) {
        void *p = a->base + a->used;
        a->used += bytes;
        if (a->used + a->extra_bytes > a->high_water) a->high_water = a->used + a->extra_bytes;
        return p;
    }
    /* Overflow (first step only): a block of its own, folded in at reset. */
    if (a->n_extra == a->cap_extra) {
        int nc = a->cap_extra ? 2 * a->cap_extra : 64;
        void **e = realloc(a->extra, sizeof(void *) * nc);
        if (!e) return NULL;
        a->extra = e;
        a->cap_extra = nc;
    }
    void *p = ssl_malloc(bytes);
    if (!p) return NULL;
    a->extra[a->n_extra++] = p;
    a->extra_bytes += bytes;
    a->n_grows++;
    a->used = a->cap; /* later small allocations of this step go to extras too */
    if (a->cap + a->extra_bytes > a->high_water) a->high_water = a->cap + a->extra_bytes;
    return p;
}

void ssl_arena_reset(ssl_arena *a)
{
    if (a->n_extra) {
        size_t need = a->cap + a->extra_bytes;
        for (int i = 0; i < a->n_extra; i++) ssl_free(a->extra[i]);
        a->n_extra = 0;
        a->extra_bytes = 0;
        ssl_free(a->base);
#ifdef __GLIBC__
        /* glibc raises its mmap threshold to the largest mmapped block freed
         * so far (the context scratch grows by such steps), so later chunks
         * of tens of MB come from the heap, and freed they stay resident:
         * +450 MB of peak RSS for a w16 step with bf16 convolutions. Hand
         * them back before the consolidated base is touched. */
        malloc_trim(0);
#endif
        a->base = ssl_malloc(need);
        a->cap = a->base ? need : 0;
        a->n_grows++;
    }
    a->used = 0;
}

void ssl_arena_free(ssl_arena *a)
{
    for (int i = 0; i < a->n_extra; i++) ssl_free(a->extra[i]);
    free(a->extra);
    ssl_free(a->base);
    memset(a, 0, sizeof *a);
}

void ssl_graph_init(ssl_graph *g, ssl_ctx *ctx)
{
    memset(g, 0, sizeof *g);
    g->ctx = ctx;
    g->be = ctx->backend ? ctx->backend : ssl_backend_default();
    g->training = 1;
    g->record = 1;
}

void ssl_graph_reset(ssl_graph *g)
{
    g->n_nodes = 0;
    g->n_grad_bins = 0;
    ssl_arena_reset(&g->arena);
}

void ssl_graph_free(ssl_graph *g)
{
    ssl_arena_free(&g->arena);
    free(g->nodes);
    g->nodes = NULL;
    g->n_nodes = g->cap_nodes = 0;
}

static ssl_grad_bin *grad_bin(ssl_graph *g, size_t bytes, int create);

/* A buffer of `bytes` from the released ones, else from the arena. */
static void *take_buffer(ssl_graph *g, size_t bytes)
{
    ssl_grad_bin *b = grad_bin(g, bytes, 0);
    if (b && b->head) {
        void *p = b->head;
        b->head = *(void **)p;
        return p;
    }
    return ssl_arena_alloc(&g->arena, bytes);
}

static void give_buffer(ssl_graph *g, void *p, size_t bytes)
{
    ssl_grad_bin *b = grad_bin(g, bytes, 1);
    if (!b) return; /* no bin left: the arena keeps it until the reset */
    *(void **)p = b->head;
    b->head = p;
}

ssl_tensor *ssl_tensor_new(ssl_graph *g, int ndim, const int *shape, ssl_layout layout)
{
    ssl_tensor *t = ssl_arena_alloc(&g->arena, sizeof *t);
    if (!t) goto oom;
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->layout = ndim == 4 ? layout : SSL_LAYOUT_NCHW;
    t->device = SSL_DEVICE_CPU;
    t->data = take_buffer(g, sizeof(float) * (size_t)ssl_tensor_numel(t));
    if (!t->data) goto oom;
    return t;
oom:
    ssl_ctx_fail(g->ctx, SSL_ENOMEM, "out of memory for activations (arena at %zu bytes)",
                 g->arena.cap + g->arena.extra_bytes);
    return NULL;
}

/* The bin of buffers of `bytes` (rounded as the arena rounds); NULL when
 * there is none and no room for another (then the arena serves). */
static ssl_grad_bin *grad_bin(ssl_graph *g, size_t bytes, int create)
{
    bytes = (bytes + 63) & ~(size_t)63;
    for (int i = 0; i < g->n_grad_bins; i++)
        if (g->grad_bins[i].bytes == bytes) return &g->grad_bins[i];
    if (!create || g->n_grad_bins == SSL_GRAD_BINS) return NULL;
    ssl_grad_bin *b = &g->grad_bins[g->n_grad_bins++];
    b->bytes = bytes;
    b->head = NULL;
    return b;
}

/* Gives t's gradient buffer back for reuse (t is an op output whose
 * backward has run). */
static void release_grad(ssl_graph *g, ssl_tensor *t)
{
    give_buffer(g, t->grad, sizeof(float) * (size_t)ssl_tensor_numel(t));
    t->grad = NULL;
}

void ssl_graph_drop(ssl_graph *g, ssl_tensor *t)
{
    if (!t || !t->data || t->dropped) return;
    if (g->record) { /* a recorded backward may read it (a convolution's
                        weight gradient reads its input even when the input
                        itself takes no gradient): only what can be rebuilt */
        if (!t->node || !g->nodes[t->node - 1].remat) return;
        t->dropped = 1;
    }
    give_buffer(g, t->data, sizeof(float) * (size_t)ssl_tensor_numel(t));
    t->data = NULL;
}

void ssl_graph_used_up(ssl_graph *g, ssl_tensor *t)
{
    if (t && t->transient && !g->record) ssl_graph_drop(g, t);
}

/* Rebuilds a dropped tensor before a backward that reads it. */
static int remat(ssl_graph *g, ssl_tensor *t)
{
    if (!t || !t->dropped || t->data) return SSL_OK;
    t->data = take_buffer(g, sizeof(float) * (size_t)ssl_tensor_numel(t));
    if (!t->data)
        return ssl_ctx_fail(g->ctx, SSL_ENOMEM, "out of memory recomputing an activation");
    ssl_node *n = &g->nodes[t->node - 1];
    n->remat(g, n);
    return g->ctx->failed;
}

/* memset in one piece per thread: a gradient buffer of an activation is
 * tens of MB, and one thread's stores reach about half the bandwidth two do
 * (the zeroing was 4% of a DINO step on one thread). */
#define ZERO_PAR_MIN (1L << 20)

static void zero_parallel(ssl_graph *g, float *p, size_t bytes)
{
    const int T = ssl_graph_threads(g);
    if (T < 2 || bytes < (size_t)ZERO_PAR_MIN) {
        memset(p, 0, bytes);
        return;
    }
    const size_t n = bytes / sizeof(float), per = (n + T - 1) / T;
#pragma omp parallel for schedule(static) num_threads(T)
    for (int t = 0; t < T; t++) {
        const size_t a = (size_t)t * per, b = a + per < n ? a + per : n;
        if (a < b) memset(p + a, 0, sizeof(float) * (b - a));
    }
}

float *ssl_tensor_grad(ssl_graph *g, ssl_tensor *t)
{
    if (!t->grad) {
        size_t bytes = sizeof(float) * (size_t)ssl_tensor_numel(t);
        t->grad = take_buffer(g, bytes);
        if (!t->grad) {
            ssl_ctx_fail(g->ctx, SSL_ENOMEM, "out of memory for gradients");
            return NULL;
        }
        zero_parallel(g, t->grad, bytes);
    }
    return t->grad;
}

int ssl_graph_backward(ssl_graph *g, ssl_tensor *loss)
{
    if (!loss) return SSL_ENOMEM;
    if (ssl_tensor_numel(loss) != 1)
        return ssl_ctx_fail(g->ctx, SSL_ESHAPE, "backward: loss must have one element");
    float *gl = ssl_tensor_grad(g, loss);
    if (!gl) return SSL_ENOMEM;
    gl[0] = 1.0f;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        ssl_node *n = &g->nodes[i];
        if (!n->out->grad) continue; /* nothing flowed back into this op */
        for (int k = 0; k < 3; k++)
            if (n->in[k] && n->in[k]->requires_grad && !ssl_tensor_grad(g, n->in[k]))
                return SSL_ENOMEM;
        for (int k = 0; k < 3; k++)
            if (remat(g, n->in[k])) return g->ctx->failed;
        if (remat(g, n->out)) return g->ctx->failed;
        n->backward(g, n);
        if (g->ctx->failed) return g->ctx->failed;
        release_grad(g, n->out);
        if (n->out->dropped || n->out->transient) { /* its last reader has run */
            give_buffer(g, n->out->data, sizeof(float) * (size_t)ssl_tensor_numel(n->out));
            n->out->data = NULL;
        }
    }
    return SSL_OK;
}

int ssl_graph_needs_grad(const ssl_tensor *a, const ssl_tensor *b, const ssl_tensor *c)
{
    return (a && a->requires_grad) || (b && b->requires_grad) || (c && c->requires_grad);
}

ssl_node *ssl_graph_record(ssl_graph *g, ssl_backward_fn bw, ssl_tensor *out, ssl_tensor *a,
                           ssl_tensor *b, ssl_tensor *c, int *fail)
{
    *fail = 0;
    if (!g->record || !ssl_graph_needs_grad(a, b, c)) return NULL;
    if (g->n_nodes == g->cap_nodes) {
        int nc = g->cap_nodes ? 2 * g->cap_nodes : 256;
        ssl_node *nn = realloc(g->nodes, sizeof(ssl_node) * nc);
        if (!nn) {
            ssl_ctx_fail(g->ctx, SSL_ENOMEM, "out of memory for graph nodes");
            *fail = 1;
            return NULL;
        }
        g->nodes = nn;
        g->cap_nodes = nc;
    }
    ssl_node *n = &g->nodes[g->n_nodes++];
    memset(n, 0, sizeof *n);
    n->backward = bw;
    n->out = out;
    n->in[0] = a;
    n->in[1] = b;
    n->in[2] = c;
    out->requires_grad = 1;
    out->node = g->n_nodes;
    return n;
}

void *ssl_graph_saved(ssl_graph *g, size_t bytes)
{
    void *p = ssl_arena_alloc(&g->arena, bytes);
    if (!p) ssl_ctx_fail(g->ctx, SSL_ENOMEM, "out of memory for saved activations");
    return p;
}

ssl_tensor *ssl_graph_shape_error(ssl_graph *g, const char *op, const char *what)
{
    ssl_ctx_fail(g->ctx, SSL_ESHAPE, "%s: %s", op, what);
    return NULL;
}

void ssl_graph_saved_grad_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    long m = ssl_tensor_numel(x);
    const float *gx = n->saved;
    float *dx = x->grad, s = n->out->grad[0];
#pragma omp parallel for simd schedule(static) num_threads(ssl_graph_threads(g)) if (m >= SSL_PAR_MIN)
    for (long i = 0; i < m; i++) dx[i] += s * gx[i];
}
