/* Helpers the graph-op files share (not public API). */
#ifndef SELFSUP_GRAPH_INTERNAL_H
#define SELFSUP_GRAPH_INTERNAL_H

#include "selfsup/graph.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Whether any of the (possibly NULL) inputs wants a gradient. */
int ssl_graph_needs_grad(const ssl_tensor *a, const ssl_tensor *b, const ssl_tensor *c);
/* Records a node when recording and some input wants a gradient. Returns the
 * node (to fill saved state), or NULL when none is recorded or on OOM (then
 * *fail is set). */
ssl_node *ssl_graph_record(ssl_graph *g, ssl_backward_fn bw, ssl_tensor *out, ssl_tensor *a,
                           ssl_tensor *b, ssl_tensor *c, int *fail);
/* Arena memory for what a backward needs; NULL (and ctx->err) on OOM. */
void *ssl_graph_saved(ssl_graph *g, size_t bytes);
/* Sets ctx->err to "op: what" (SSL_ESHAPE) and returns NULL. */
ssl_tensor *ssl_graph_shape_error(ssl_graph *g, const char *op, const char *what);

/* Backward of a scalar loss whose forward stored d(loss)/d(input) for
 * d(loss) = 1 in n->saved (input n->in[0], same size): scales it by the
 * loss's incoming gradient and accumulates. */
void ssl_graph_saved_grad_bwd(ssl_graph *g, ssl_node *n);

/* The same for a bad argument (SSL_EINVAL). */
static inline ssl_tensor *ssl_graph_arg_error(ssl_graph *g, const char *op, const char *what)
{
    ssl_ctx_fail(g->ctx, SSL_EINVAL, "%s: %s", op, what);
    return NULL;
}

/* Elementwise loops spawn threads only when there is enough work to pay
 * for them. */
#define SSL_PAR_MIN 16384

/* The calling OpenMP thread's index (0 without OpenMP). */
static inline int ssl_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Threads an op of g may use, at least 1. */
static inline int ssl_graph_threads(const ssl_graph *g)
{
    return g->ctx->n_threads > 0 ? g->ctx->n_threads : 1;
}

#endif
