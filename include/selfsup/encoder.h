/* The network a method trains and a user keeps: a ResNet or a Vision
 * Transformer behind one interface (src/nn/encoder.c), so that every
 * image-level method, the evaluations, checkpoints and fine-tuning work with
 * either. Methods that need one family's insides (MAE's visible-patch
 * encoder, a ResNet's feature-map sizes) read e->vit or e->resnet after
 * checking e->cfg.kind. */
#ifndef SELFSUP_ENCODER_H
#define SELFSUP_ENCODER_H

#include "selfsup/nn.h"
#include "selfsup/vit.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum ssl_encoder_kind { SSL_ENC_RESNET = 0, SSL_ENC_VIT = 1 } ssl_encoder_kind;

typedef struct ssl_encoder_config {
    ssl_encoder_kind kind;
    ssl_resnet_config resnet; /* kind == SSL_ENC_RESNET */
    ssl_vit_config vit;       /* kind == SSL_ENC_VIT */
} ssl_encoder_config;

/* A ResNet encoder config (depth 18/34/50). */
ssl_encoder_config ssl_encoder_config_resnet(int depth, int width, int in_channels, ssl_stem stem);

/* Lives where it was initialised: reg points into the struct, so an
 * ssl_encoder is never copied by value (clone it). */
typedef struct ssl_encoder {
    ssl_encoder_config cfg;
    int in_channels;
    int feat_dim;       /* width of ssl_encoder_forward's output */
    ssl_registry *reg;  /* the parameters and buffers (torchvision / timm names) */
    ssl_resnet resnet;  /* kind == SSL_ENC_RESNET */
    ssl_vit vit;        /* kind == SSL_ENC_VIT */
} ssl_encoder;

int ssl_encoder_init(ssl_encoder *e, const ssl_encoder_config *cfg, ssl_rng *rng, char *err);
void ssl_encoder_free(ssl_encoder *e);
/* A second encoder of the same architecture, weights and buffers copied
 * (teachers, momentum encoders), without drop path. */
int ssl_encoder_clone(ssl_encoder *dst, const ssl_encoder *src, char *err);
/* Keys the random parts of the training passes of one step (a ViT's drop
 * path) to (seed, step), so a resumed run draws what the uninterrupted one
 * did; the training loops call it before each step. */
void ssl_encoder_step_key(ssl_encoder *e, uint64_t seed, int64_t step);
/* x (N, in_channels, H, W) NCHW -> the image feature (N, feat_dim): the
 * ResNet's pooled last stage, the ViT's class token (or normed token mean).
 * A ViT takes any H = W that is a multiple of its patch; position
 * embeddings are resampled (bicubic) to other sizes than its img_size. */
ssl_tensor *ssl_encoder_forward(ssl_graph *g, ssl_encoder *e, ssl_tensor *x);
/* The dense feature map (N, feat_dim, h, w): a ResNet's last stage in the
 * backend's activation layout. A ViT fails with a clear error (its dense
 * output is the patch tokens: ssl_vit_forward_tokens). */
ssl_tensor *ssl_encoder_forward_dense(ssl_graph *g, ssl_encoder *e, ssl_tensor *x);
/* Checks that the encoder can take c x h x w inputs (channels; a ViT needs
 * square sides that are multiples of its patch). */
int ssl_encoder_check_input(const ssl_encoder *e, int c, int h, int w, char *err);
/* Multiply-accumulates of one forward pass of one h x w image, x2 = FLOPs. */
double ssl_encoder_macs(const ssl_encoder *e, int h, int w);
/* A short description for logs: "resnet18 w16 small" or "vit_tiny/4 192x12". */
void ssl_encoder_describe(const ssl_encoder *e, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif
