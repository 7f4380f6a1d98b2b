/* Self-supervised methods. A method is small: it names its networks (beyond
 * the shared encoder), its views and its loss. The training loop,
 * checkpoints, logging and evaluation are shared (train.h). */
#ifndef SELFSUP_METHOD_H
#define SELFSUP_METHOD_H

#include "selfsup/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Hyperparameters any method may read; each method documents which. */
typedef struct ssl_method_config {
    float temperature; /* SimCLR NT-Xent temperature */
    int proj_hidden;   /* projector hidden width */
    int proj_dim;      /* projector output width */
} ssl_method_config;

struct ssl_method;

typedef struct ssl_method_ops {
    const char *name;
    const char *summary;  /* one line for --help */
    int n_views;          /* augmented views per image */
    /* Checks cfg (clear error before any work) and fills the defaults it owns. */
    int (*validate)(ssl_method_config *cfg, char *err);
    /* Builds the heads into m->heads; m->encoder is built already. */
    int (*init)(struct ssl_method *m, ssl_rng *rng, char *err);
    /* The loss of one batch. views[v]: (B, C, H, W) NCHW inputs. */
    ssl_tensor *(*loss)(struct ssl_method *m, ssl_graph *g, ssl_tensor *const *views);
    void (*free)(struct ssl_method *m);
} ssl_method_ops;

typedef struct ssl_method {
    const ssl_method_ops *ops;
    ssl_method_config cfg;
    ssl_resnet encoder;   /* the network users keep */
    ssl_registry heads;   /* projector, predictor, ... (prefixed names) */
    void *state;          /* method-specific */
} ssl_method;

/* Looks a method up by name ("simclr"); NULL if unknown. */
const ssl_method_ops *ssl_method_find(const char *name);
/* Names of all methods, for --help and errors: NULL-terminated. */
const ssl_method_ops *const *ssl_method_list(void);

/* Builds encoder and heads; validates the config first. */
int ssl_method_create(ssl_method *m, const ssl_method_ops *ops, const ssl_method_config *cfg,
                      const ssl_resnet_config *enc, ssl_rng *rng, char *err);
void ssl_method_free(ssl_method *m);

extern const ssl_method_ops ssl_method_simclr;

#ifdef __cplusplus
}
#endif
#endif
