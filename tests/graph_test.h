/* Helpers the graph-op tests share: zeroing a gradient, a max-norm, and
 * the test-only node loss = sum(x * R) that turns any op's output into a
 * scalar to differentiate (finite differences and PyTorch parity). */
#ifndef SELFSUP_TESTS_GRAPH_TEST_H
#define SELFSUP_TESTS_GRAPH_TEST_H

#include <math.h>
#include <string.h>

#include "nn/graph_internal.h"

static inline void zero_grad(ssl_tensor *t)
{
    if (t && t->grad) memset(t->grad, 0, sizeof(float) * (size_t)ssl_tensor_numel(t));
}

static inline double max_abs(const float *a, long n)
{
    double m = 0;
    for (long i = 0; i < n; i++) m = fmax(m, fabs((double)a[i]));
    return m;
}

static inline void wsum_bwd(ssl_graph *g, ssl_node *n)
{
    ssl_tensor *x = n->in[0];
    if (!x->requires_grad) return;
    const float *R = n->attr;
    for (long i = 0; i < ssl_tensor_numel(x); i++) x->grad[i] += n->out->grad[0] * R[i];
}

/* loss = sum(x * R) (R: numel(x) floats, kept by the caller), summed in
 * double; NULL when x is NULL or memory runs out. */
static inline ssl_tensor *wsum(ssl_graph *g, ssl_tensor *x, const float *R)
{
    if (!x) return NULL;
    int one = 1;
    ssl_tensor *y = ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    double s = 0;
    for (long i = 0; i < ssl_tensor_numel(x); i++) s += (double)x->data[i] * R[i];
    y->data[0] = (float)s;
    int fail;
    ssl_node *n = ssl_graph_record(g, wsum_bwd, y, x, NULL, NULL, &fail);
    if (fail) return NULL;
    if (n) n->attr = (void *)R;
    return y;
}

#endif
