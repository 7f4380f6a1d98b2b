/* Helpers the graph-op files share (not public API). */
#ifndef SELFSUP_GRAPH_INTERNAL_H
#define SELFSUP_GRAPH_INTERNAL_H

#include "selfsup/graph.h"

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

#endif
