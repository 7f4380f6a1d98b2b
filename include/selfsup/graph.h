/* Tensors and reverse-mode differentiation over coarse ops.
 *
 * A graph records, during the forward pass, one node per op with a hand-written
 * backward. Every activation, gradient and saved buffer of a step comes from the
 * graph's arena; ssl_graph_reset() rewinds it. The first step sizes the arena,
 * so later steps of the same shapes allocate nothing.
 *
 * Ops return NULL when an input is NULL or memory runs out (ctx->err says why),
 * so a model can chain ops and check only the final result. */
#ifndef SELFSUP_GRAPH_H
#define SELFSUP_GRAPH_H

#include "selfsup/core.h"
#include "selfsup/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A float32 tensor. 4-D tensors have logical shape (N, C, H, W) whatever their
 * layout; 1-D and 2-D tensors are row-major. grad is NULL until a gradient
 * reaches it; parameters own a persistent grad. */
typedef struct ssl_tensor {
    float *data;
    float *grad;
    int ndim;
    int shape[4];
    ssl_layout layout;
    ssl_device device;
    int requires_grad;
    int node;    /* 1 + index of the node that made it, 0 for none */
    int dropped; /* data released by ssl_graph_drop, rebuilt for the backward */
    int transient; /* internal to a network: the backward releases the data
                      once the node that made it has run (consumers ran before) */
} ssl_tensor;

long ssl_tensor_numel(const ssl_tensor *t);
/* Wraps persistent memory (a parameter or an input owned elsewhere). */
ssl_tensor ssl_tensor_wrap(float *data, float *grad, int ndim, const int *shape,
                           ssl_layout layout);

/* Bump allocator with one block; an overflow goes to extra blocks that the
 * next reset folds into one block big enough for the whole step. */
typedef struct ssl_arena {
    char *base;
    size_t cap, used;
    void **extra;
    int n_extra, cap_extra;
    size_t extra_bytes;
    size_t high_water; /* bytes, for memory reports */
    int n_grows;       /* block allocations so far (tests check it stops) */
} ssl_arena;

void *ssl_arena_alloc(ssl_arena *a, size_t bytes); /* 64-byte aligned, NULL on OOM */
void ssl_arena_reset(ssl_arena *a);
void ssl_arena_free(ssl_arena *a);

struct ssl_graph;
struct ssl_node;
typedef void (*ssl_backward_fn)(struct ssl_graph *g, struct ssl_node *n);

typedef struct ssl_node {
    ssl_backward_fn backward;
    ssl_tensor *in[3];
    ssl_tensor *out;
    void *saved;       /* op-specific, in the arena */
    void *attr;        /* op-specific, owned elsewhere (e.g. a BN layer) */
    int iattr[6];
    float fattr[2];
    /* Optional: recomputes out->data from the inputs and saved state, so
     * the output can be dropped after the forward (ssl_graph_drop). */
    void (*remat)(struct ssl_graph *g, struct ssl_node *n);
} ssl_node;

/* Gradient buffers of one size that the backward pass has finished with
 * (a free list threaded through the buffers themselves). */
#define SSL_GRAD_BINS 48
typedef struct ssl_grad_bin {
    size_t bytes;
    void *head;
} ssl_grad_bin;

typedef struct ssl_graph {
    ssl_ctx *ctx;
    const ssl_backend *be;
    ssl_arena arena;
    ssl_grad_bin grad_bins[SSL_GRAD_BINS];
    int n_grad_bins;
    ssl_node *nodes;
    int n_nodes, cap_nodes;
    int training; /* BN: batch statistics and running-stat updates */
    int record;   /* record nodes for backward; 0 for inference */
} ssl_graph;

void ssl_graph_init(ssl_graph *g, ssl_ctx *ctx);
/* Starts a new step: forgets nodes and rewinds the arena. */
void ssl_graph_reset(ssl_graph *g);
void ssl_graph_free(ssl_graph *g);
/* Seeds d(loss)/d(loss) = 1 for a 1-element loss and runs every node's
 * backward in reverse order. Parameter grads are accumulated (+=). The
 * gradient of an op's output is dead once that op's backward has run, so
 * its buffer is recycled for later gradients of the same size (as PyTorch
 * frees non-leaf grads): afterwards only leaves (parameters, inputs) hold
 * their gradients; an op output's grad is NULL. */
int ssl_graph_backward(ssl_graph *g, ssl_tensor *loss);

/* Releases t's data after its last use in the forward pass: later
 * tensors of the same size reuse the memory, and the backward pass
 * recomputes t just before a node that reads it and releases it again
 * after t's own node. Only outputs of ops that can recompute them
 * (ssl_op_bn_act: one cheap elementwise pass) are dropped; for others, and
 * for tensors no backward will read (not recording), it just releases or
 * does nothing. Reading t->data after a drop is an error. */
void ssl_graph_drop(ssl_graph *g, ssl_tensor *t);

/* After the last forward use of an activation a network made for itself
 * (ssl_tensor.transient): when nothing is recorded (a teacher's or an
 * evaluation's pass) no backward will read it, so its memory goes back at
 * once and such a pass keeps about one layer alive instead of all. When
 * recording it does nothing (the backward releases it). */
void ssl_graph_used_up(ssl_graph *g, ssl_tensor *t);

/* A tensor whose memory lives in the arena (uninitialized); memory
 * released by the backward or by ssl_graph_drop is reused first. */
ssl_tensor *ssl_tensor_new(ssl_graph *g, int ndim, const int *shape, ssl_layout layout);
/* The gradient buffer of t, allocated zeroed on first use. */
float *ssl_tensor_grad(ssl_graph *g, ssl_tensor *t);

/* Batch-norm layer state the op reads and updates. */
typedef struct ssl_bn_layer {
    ssl_tensor weight, bias;         /* (C) gamma, beta */
    float *running_mean, *running_var; /* (C) */
    int64_t num_batches_tracked;
    int C;
    float momentum, eps;
} ssl_bn_layer;

/* ---- ops (outputs in the arena; see ops.h for the math) ---- */
/* x (N,C,H,W) any layout -> same data in `layout` */
ssl_tensor *ssl_op_to_layout(ssl_graph *g, ssl_tensor *x, ssl_layout layout);
/* x (N,C,H,W), w (K,C,R,S) -> (N,K,OH,OW), x's layout */
ssl_tensor *ssl_op_conv2d(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, int stride, int pad);
/* x (N,C,H,W) or (N,C) */
ssl_tensor *ssl_op_batchnorm(ssl_graph *g, ssl_tensor *x, ssl_bn_layer *bn);
/* relu(bn(x) + skip) in one pass (skip may be NULL, relu 0 or 1): what a
 * residual block does after each convolution, keeping one activation where
 * separate ops keep three (BN's output, the sum, the ReLU's output). */
ssl_tensor *ssl_op_bn_act(ssl_graph *g, ssl_tensor *x, ssl_bn_layer *bn, ssl_tensor *skip,
                          int relu);
ssl_tensor *ssl_op_relu(ssl_graph *g, ssl_tensor *x);
ssl_tensor *ssl_op_maxpool(ssl_graph *g, ssl_tensor *x, int k, int stride, int pad);
ssl_tensor *ssl_op_avgpool(ssl_graph *g, ssl_tensor *x, int k, int stride, int pad);
/* x (N,C,H,W) -> (N,C) */
ssl_tensor *ssl_op_global_avgpool(ssl_graph *g, ssl_tensor *x);
/* x (N,I), w (O,I), b (O) or NULL -> (N,O) */
ssl_tensor *ssl_op_linear(ssl_graph *g, ssl_tensor *x, ssl_tensor *w, ssl_tensor *b);
/* a + b, same shape and layout */
ssl_tensor *ssl_op_add(ssl_graph *g, ssl_tensor *a, ssl_tensor *b);
/* Along the batch (first) dimension; same layout. */
ssl_tensor *ssl_op_concat_batch(ssl_graph *g, ssl_tensor *a, ssl_tensor *b);
ssl_tensor *ssl_op_slice_batch(ssl_graph *g, ssl_tensor *x, int start, int count);
/* rows of x (N,D) scaled to unit L2 norm (eps 1e-12, as F.normalize) */
ssl_tensor *ssl_op_l2normalize(ssl_graph *g, ssl_tensor *x);
/* a (M,K) * b (K,N), or b^T when trans_b (b: (N,K)) -> (M,N) */
ssl_tensor *ssl_op_matmul(ssl_graph *g, ssl_tensor *a, ssl_tensor *b, int trans_b);
/* mean over rows of -log softmax(logits)[label]; logits (N,C), labels (N) copied -> (1) */
ssl_tensor *ssl_op_softmax_ce(ssl_graph *g, ssl_tensor *logits, const int32_t *labels);
/* SimCLR's NT-Xent over 2N views: z (2N,D) L2-normalized, row i's positive is
 * row (i+N) mod 2N, all other rows are negatives; mean over the 2N rows -> (1) */
ssl_tensor *ssl_op_ntxent(ssl_graph *g, ssl_tensor *z, float temperature);


/* ---- ops for the SSL objectives (src/nn/graph_loss.c) ---- */
/* The same data without a gradient path (stop-gradient, torch's .detach()). */
ssl_tensor *ssl_op_detach(ssl_graph *g, ssl_tensor *x);
/* s * x, any shape */
ssl_tensor *ssl_op_scale(ssl_graph *g, ssl_tensor *x, float s);
/* GELU, exact (erf) form as torch.nn.GELU(); any shape */
ssl_tensor *ssl_op_gelu(ssl_graph *g, ssl_tensor *x);
/* p, z (N,D) -> (1): a + b * mean_i cos(p_i, z_i), rows normalized as
 * F.normalize (eps 1e-12). BYOL: a=2, b=-2; SimSiam: a=0, b=-1. Gradients
 * go to whichever inputs require them (detach z for a stop-gradient). */
ssl_tensor *ssl_op_cosine_loss(ssl_graph *g, ssl_tensor *p, ssl_tensor *z, float a, float b);
/* logits (N,K), targets (N,K) probabilities (no gradient) -> (1):
 * mean_i -sum_k t_ik log softmax(logits_i / T)_k. SwAV and DINO. */
ssl_tensor *ssl_op_soft_ce(ssl_graph *g, ssl_tensor *logits, const float *targets, float T);
/* MoCo's InfoNCE: q (N,D) query, k (N,D) positive keys (no gradient),
 * queue (K,D) negatives (no gradient, read during forward and backward,
 * so it must not change before ssl_graph_backward) -> (1):
 * mean_i CE([q_i.k_i, q_i.queue^T] / T, label 0). K may be 0. */
ssl_tensor *ssl_op_infonce_queue(ssl_graph *g, ssl_tensor *q, ssl_tensor *k, const float *queue,
                                 int K, float T);
/* Barlow Twins: z1, z2 (N,D); each standardized per dimension over the batch
 * as BatchNorm1d(affine=False) in training (biased variance, eps 1e-5);
 * c = z1n^T z2n / N (D,D) -> (1): sum_i (1 - c_ii)^2 + lambda sum_{i!=j} c_ij^2 */
ssl_tensor *ssl_op_barlow(ssl_graph *g, ssl_tensor *z1, ssl_tensor *z2, float lambda);
/* VICReg: z1, z2 (N,D) -> (1): sim * mse(z1, z2) + var * (mean_d relu(1 - s1_d)
 * + mean_d relu(1 - s2_d)) / 2 + cov * (offdiag(C1)^2 + offdiag(C2)^2).sum / D,
 * s_d = sqrt(unbiased var_d + eps), C = centered z^T z / (N - 1). parts, when
 * not NULL, receives (invariance, variance, covariance) unweighted. */
ssl_tensor *ssl_op_vicreg(ssl_graph *g, ssl_tensor *z1, ssl_tensor *z2, float sim, float var,
                          float cov, float eps, float parts[3]);

#ifdef __cplusplus
}
#endif
#endif
