/* Models: a parameter registry with torchvision names, ResNet-18/34/50 with a
 * width multiplier and two stems, and MLP heads. */
#ifndef SELFSUP_NN_H
#define SELFSUP_NN_H

#include "selfsup/graph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Named parameters, buffers and BN batch counters of one network, in
 * registration order (the order of PyTorch's state_dict). Memory is owned here. */
typedef struct ssl_counter {
    const char *name;
    int64_t *value;
} ssl_counter;

typedef struct ssl_registry {
    ssl_param *params;
    int n_params, cap_params;
    ssl_buffer *buffers;
    int n_buffers, cap_buffers;
    ssl_counter *counters;
    int n_counters, cap_counters;
    void **owned;   /* memory freed with the registry (fixed BN affine) */
    int n_owned, cap_owned;
    int failed; /* an allocation failed during registration */
} ssl_registry;

void ssl_registry_init(ssl_registry *r);
void ssl_registry_free(ssl_registry *r);
/* Allocates data and grad (zeroed) of `shape`, wraps them into *t. */
int ssl_registry_param(ssl_registry *r, const char *name, int ndim, const int *shape,
                       int no_decay, ssl_tensor *t);
/* prefix.weight, prefix.bias, prefix.running_mean, prefix.running_var,
 * prefix.num_batches_tracked; gamma 1, beta 0, mean 0, var 1. */
int ssl_registry_bn(ssl_registry *r, const char *prefix, int C, ssl_bn_layer *bn);
void ssl_registry_zero_grad(ssl_registry *r);
/* Total number of trainable values. */
long ssl_registry_numel(const ssl_registry *r);
/* Looks a parameter or buffer up by name: its data and size; NULL if absent. */
float *ssl_registry_find(const ssl_registry *r, const char *name, int64_t *numel);

/* Weight init as PyTorch: conv kaiming_normal(fan_out, relu); linear
 * kaiming_uniform(a=sqrt(5)) i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. */
void ssl_init_kaiming_normal_fan_out(float *w, long n, int fan_out, ssl_rng *rng);
void ssl_init_uniform(float *w, long n, float bound, ssl_rng *rng);

typedef enum ssl_stem {
    SSL_STEM_IMAGENET = 0, /* 7x7/2 conv, BN, ReLU, 3x3/2 max-pool */
    SSL_STEM_SMALL = 1     /* 3x3/1 conv, BN, ReLU, no pool (28-32 px images) */
} ssl_stem;

typedef struct ssl_resnet_config {
    int depth;       /* 18, 34 or 50 */
    int width;       /* base width; 64 is torchvision's */
    int in_channels;
    ssl_stem stem;
} ssl_resnet_config;

typedef struct ssl_conv_layer {
    ssl_tensor weight; /* (cout, cin, k, k) */
    int stride, pad;
} ssl_conv_layer;

typedef struct ssl_res_block {
    ssl_conv_layer conv[3];
    ssl_bn_layer bn[3];
    int n_conv; /* 2 basic, 3 bottleneck */
    int has_down;
    ssl_conv_layer down;
    ssl_bn_layer down_bn;
} ssl_res_block;

#define SSL_RESNET_MAX_BLOCKS 16

typedef struct ssl_resnet {
    ssl_resnet_config cfg;
    ssl_conv_layer conv1;
    ssl_bn_layer bn1;
    ssl_res_block blocks[SSL_RESNET_MAX_BLOCKS];
    int n_blocks;
    int feat_dim;
    ssl_registry reg;
} ssl_resnet;

int ssl_resnet_init(ssl_resnet *m, const ssl_resnet_config *cfg, ssl_rng *rng, char *err);
void ssl_resnet_free(ssl_resnet *m);
/* x (N, in_channels, H, W) NCHW -> features (N, feat_dim) */
ssl_tensor *ssl_resnet_forward(ssl_graph *g, ssl_resnet *m, ssl_tensor *x);
/* The same without the global pool: the last feature map (N, feat_dim, h, w)
 * in the backend's activation layout, for dense (per-location) objectives.
 * 28 px with the small stem -> 4 x 4. */
ssl_tensor *ssl_resnet_forward_dense(ssl_graph *g, ssl_resnet *m, ssl_tensor *x);
/* Multiply-accumulates of one forward pass of one image of size h x w, x2 = FLOPs. */
double ssl_resnet_macs(const ssl_resnet *m, int h, int w);
/* "resnet18" etc. -> depth; 0 if unknown. */
int ssl_resnet_depth_from_name(const char *arch);

/* MLP heads named as nn.Sequential: n_layers linear layers; after each
 * hidden one an optional BN, then the activation; after the last one an
 * optional BN (with or without affine). Module indices count every layer,
 * e.g. Linear-BN-ReLU-Linear is prefix.0, prefix.1, (ReLU 2), prefix.3. */
#define SSL_MLP_MAX_LAYERS 4

typedef enum ssl_act_kind { SSL_ACT_RELU = 0, SSL_ACT_GELU = 1 } ssl_act_kind;

typedef struct ssl_mlp_spec {
    int n_layers;                        /* 1..SSL_MLP_MAX_LAYERS */
    int dims[SSL_MLP_MAX_LAYERS + 1];    /* in, hidden..., out */
    int hidden_bn;                       /* BN after each hidden linear */
    int last_bn;                         /* 0 none, 1 BN, 2 BN without affine */
    ssl_act_kind act;
    int no_bias_before_bn;               /* linear layers followed by BN have no bias */
    int no_last_bias;                    /* the last linear layer has no bias */
} ssl_mlp_spec;

typedef struct ssl_mlp {
    ssl_mlp_spec spec;
    ssl_tensor w[SSL_MLP_MAX_LAYERS], b[SSL_MLP_MAX_LAYERS]; /* b[i].data NULL: no bias */
    ssl_bn_layer bn[SSL_MLP_MAX_LAYERS];
    int has_bn[SSL_MLP_MAX_LAYERS];
} ssl_mlp;

int ssl_mlp_init_spec(ssl_mlp *h, ssl_registry *r, const char *prefix, const ssl_mlp_spec *spec,
                      ssl_rng *rng);
/* Linear(in, hidden) [BN] ReLU Linear(hidden, out), biases everywhere (SimCLR). */
int ssl_mlp_init(ssl_mlp *h, ssl_registry *r, const char *prefix, int in, int hidden,
                 int out, int use_bn, ssl_rng *rng);
/* x (N, in) -> (N, out) */
ssl_tensor *ssl_mlp_forward(ssl_graph *g, ssl_mlp *h, ssl_tensor *x);

/* Registry entries beyond parameters (queues, centers, their positions). */
/* A float buffer of `shape` filled with value; NULL on OOM. */
float *ssl_registry_buffer(ssl_registry *r, const char *name, int ndim, const int *shape,
                           float value);
/* An I64 scalar saved with the checkpoint; value must outlive r. */
int ssl_registry_counter(ssl_registry *r, const char *name, int64_t *value);
/* BatchNorm without affine (gamma 1, beta 0 fixed, not parameters), as
 * BatchNorm1d(affine=False): running stats and counter only. */
int ssl_registry_bn_noaffine(ssl_registry *r, const char *prefix, int C, ssl_bn_layer *bn);

#ifdef __cplusplus
}
#endif
#endif
