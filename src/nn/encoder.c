/* One interface over the two backbone families (see encoder.h). */
#include "selfsup/encoder.h"

#include <stdio.h>
#include <string.h>

ssl_encoder_config ssl_encoder_config_resnet(int depth, int width, int in_channels, ssl_stem stem)
{
    ssl_encoder_config c;
    memset(&c, 0, sizeof c);
    c.kind = SSL_ENC_RESNET;
    c.resnet.depth = depth;
    c.resnet.width = width;
    c.resnet.in_channels = in_channels;
    c.resnet.stem = stem;
    return c;
}

int ssl_encoder_init(ssl_encoder *e, const ssl_encoder_config *cfg, ssl_rng *rng, char *err)
{
    memset(e, 0, sizeof *e);
    e->cfg = *cfg;
    int rc;
    if (cfg->kind == SSL_ENC_RESNET) {
        rc = ssl_resnet_init(&e->resnet, &cfg->resnet, rng, err);
        if (rc) return rc;
        e->in_channels = cfg->resnet.in_channels;
        e->feat_dim = e->resnet.feat_dim;
        e->reg = &e->resnet.reg;
    } else if (cfg->kind == SSL_ENC_VIT) {
        rc = ssl_vit_init(&e->vit, &cfg->vit, rng, err);
        if (rc) return rc;
        e->in_channels = cfg->vit.in_chans;
        e->feat_dim = e->vit.feat_dim;
        e->reg = &e->vit.reg;
    } else {
        return ssl_fail(err, SSL_EINVAL, "encoder: unknown kind %d", (int)cfg->kind);
    }
    return SSL_OK;
}

void ssl_encoder_free(ssl_encoder *e)
{
    if (!e->reg) return;
    if (e->cfg.kind == SSL_ENC_RESNET) ssl_resnet_free(&e->resnet);
    else ssl_vit_free(&e->vit);
    e->reg = NULL;
}

int ssl_encoder_clone(ssl_encoder *dst, const ssl_encoder *src, char *err)
{
    /* The init draws are overwritten: a private RNG keeps the caller's stream. */
    ssl_rng rng;
    ssl_rng_seed(&rng, 0);
    ssl_encoder_config cfg = src->cfg;
    cfg.vit.drop_path = 0; /* teachers run without drop path (DINO's) */
    int rc = ssl_encoder_init(dst, &cfg, &rng, err);
    if (rc) return rc;
    const ssl_registry *s = src->reg;
    ssl_registry *d = dst->reg;
    for (int i = 0; i < s->n_params; i++)
        memcpy(d->params[i].data, s->params[i].data, sizeof(float) * s->params[i].numel);
    for (int i = 0; i < s->n_buffers; i++)
        memcpy(d->buffers[i].data, s->buffers[i].data, sizeof(float) * s->buffers[i].numel);
    return SSL_OK;
}

void ssl_encoder_step_key(ssl_encoder *e, uint64_t seed, int64_t step)
{
    if (e->cfg.kind == SSL_ENC_VIT) ssl_vit_drop_path_key(&e->vit, seed, step);
}

ssl_tensor *ssl_encoder_forward(ssl_graph *g, ssl_encoder *e, ssl_tensor *x)
{
    if (e->cfg.kind == SSL_ENC_RESNET) return ssl_resnet_forward(g, &e->resnet, x);
    return ssl_vit_forward(g, &e->vit, x);
}

ssl_tensor *ssl_encoder_forward_dense(ssl_graph *g, ssl_encoder *e, ssl_tensor *x)
{
    if (e->cfg.kind == SSL_ENC_RESNET) return ssl_resnet_forward_dense(g, &e->resnet, x);
    ssl_ctx_fail(g->ctx, SSL_EINVAL,
                 "this method needs a convolutional feature map: use a ResNet (--arch resnet18)");
    return NULL;
}

int ssl_encoder_check_input(const ssl_encoder *e, int c, int h, int w, char *err)
{
    if (c != e->in_channels)
        return ssl_fail(err, SSL_ESHAPE, "the encoder takes %d channels, the views have %d",
                        e->in_channels, c);
    if (e->cfg.kind == SSL_ENC_VIT) {
        int p = e->vit.cfg.patch;
        if (h % p || w % p || h < p || w < p)
            return ssl_fail(err, SSL_ESHAPE,
                            "a %dx%d view does not tile into the ViT's %dx%d patches "
                            "(make view sizes multiples of --patch-size)",
                            h, w, p, p);
    }
    return SSL_OK;
}

double ssl_encoder_macs(const ssl_encoder *e, int h, int w)
{
    if (e->cfg.kind == SSL_ENC_RESNET) return ssl_resnet_macs(&e->resnet, h, w);
    const ssl_vit *v = &e->vit;
    int p = v->cfg.patch, tokens = (h / p) * (w / p);
    /* ssl_vit_macs counts the patch embedding at the model's grid */
    double embed = (double)v->cfg.in_chans * p * p * v->feat_dim;
    return ssl_vit_macs(v, tokens) + embed * (tokens - v->n_patches);
}

void ssl_encoder_describe(const ssl_encoder *e, char *buf, size_t n)
{
    if (e->cfg.kind == SSL_ENC_RESNET) {
        const ssl_resnet_config *c = &e->cfg.resnet;
        snprintf(buf, n, "resnet%d w%d %s", c->depth, c->width,
                 c->stem == SSL_STEM_SMALL ? "small" : "imagenet");
    } else {
        const ssl_vit_config *c = &e->cfg.vit;
        snprintf(buf, n, "vit %dx%d/%d d%d x%d h%d", c->img_size, c->img_size, c->patch,
                 c->embed_dim, c->depth, c->heads);
    }
}
