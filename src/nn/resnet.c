/* ResNet-18/34/50 (torchvision v1.5 layout: stride on the 3x3 conv of a
 * bottleneck), any width and input channels, ImageNet or small-image stem.
 * Activations run in CNHW layout from the stem to the global pool. */
#include "selfsup/nn.h"

#include <stdio.h>
#include <string.h>

static int conv_layer(ssl_registry *r, ssl_conv_layer *c, const char *name, int cin, int cout,
                      int k, int stride, int pad, ssl_rng *rng)
{
    int shape[4] = {cout, cin, k, k};
    if (ssl_registry_param(r, name, 4, shape, 0, &c->weight)) return SSL_ENOMEM;
    ssl_init_kaiming_normal_fan_out(c->weight.data, ssl_tensor_numel(&c->weight), cout * k * k, rng);
    c->stride = stride;
    c->pad = pad;
    return SSL_OK;
}

int ssl_resnet_depth_from_name(const char *arch)
{
    if (!strcmp(arch, "resnet18")) return 18;
    if (!strcmp(arch, "resnet34")) return 34;
    if (!strcmp(arch, "resnet50")) return 50;
    return 0;
}

int ssl_resnet_init(ssl_resnet *m, const ssl_resnet_config *cfg, ssl_rng *rng, char *err)
{
    static const int layers18[4] = {2, 2, 2, 2}, layers34[4] = {3, 4, 6, 3};
    const int *layers;
    int bottleneck = 0;
    memset(m, 0, sizeof *m);
    switch (cfg->depth) {
    case 18: layers = layers18; break;
    case 34: layers = layers34; break;
    case 50: layers = layers34; bottleneck = 1; break;
    default: return ssl_fail(err, SSL_EINVAL, "resnet: depth %d not supported (18, 34, 50)", cfg->depth);
    }
    if (cfg->width < 1 || cfg->width > 1024)
        return ssl_fail(err, SSL_EINVAL, "resnet: width %d out of range 1..1024", cfg->width);
    if (cfg->in_channels < 1 || cfg->in_channels > 64)
        return ssl_fail(err, SSL_EINVAL, "resnet: %d input channels out of range 1..64", cfg->in_channels);
    m->cfg = *cfg;
    ssl_registry_init(&m->reg);
    ssl_registry *r = &m->reg;
    int w = cfg->width, st = 0;
    if (cfg->stem == SSL_STEM_SMALL) st |= conv_layer(r, &m->conv1, "conv1.weight", cfg->in_channels, w, 3, 1, 1, rng);
    else st |= conv_layer(r, &m->conv1, "conv1.weight", cfg->in_channels, w, 7, 2, 3, rng);
    st |= ssl_registry_bn(r, "bn1", w, &m->bn1);
    const int expansion = bottleneck ? 4 : 1;
    int inplanes = w;
    char name[128];
    for (int L = 0; L < 4; L++) {
        int planes = w << L;
        for (int b = 0; b < layers[L]; b++) {
            ssl_res_block *blk = &m->blocks[m->n_blocks++];
            int stride = (b == 0 && L > 0) ? 2 : 1;
            int outp = planes * expansion;
#define NAME(fmt) (snprintf(name, sizeof name, "layer%d.%d." fmt, L + 1, b), name)
            if (bottleneck) {
                blk->n_conv = 3;
                st |= conv_layer(r, &blk->conv[0], NAME("conv1.weight"), inplanes, planes, 1, 1, 0, rng);
                st |= ssl_registry_bn(r, NAME("bn1"), planes, &blk->bn[0]);
                st |= conv_layer(r, &blk->conv[1], NAME("conv2.weight"), planes, planes, 3, stride, 1, rng);
                st |= ssl_registry_bn(r, NAME("bn2"), planes, &blk->bn[1]);
                st |= conv_layer(r, &blk->conv[2], NAME("conv3.weight"), planes, outp, 1, 1, 0, rng);
                st |= ssl_registry_bn(r, NAME("bn3"), outp, &blk->bn[2]);
            } else {
                blk->n_conv = 2;
                st |= conv_layer(r, &blk->conv[0], NAME("conv1.weight"), inplanes, planes, 3, stride, 1, rng);
                st |= ssl_registry_bn(r, NAME("bn1"), planes, &blk->bn[0]);
                st |= conv_layer(r, &blk->conv[1], NAME("conv2.weight"), planes, planes, 3, 1, 1, rng);
                st |= ssl_registry_bn(r, NAME("bn2"), planes, &blk->bn[1]);
            }
            if (stride != 1 || inplanes != outp) {
                blk->has_down = 1;
                st |= conv_layer(r, &blk->down, NAME("downsample.0.weight"), inplanes, outp, 1, stride, 0, rng);
                st |= ssl_registry_bn(r, NAME("downsample.1"), outp, &blk->down_bn);
            }
#undef NAME
            inplanes = outp;
        }
    }
    m->feat_dim = inplanes;
    if (st || r->failed) {
        ssl_resnet_free(m);
        return ssl_fail(err, SSL_ENOMEM, "resnet: out of memory for parameters");
    }
    return SSL_OK;
}

void ssl_resnet_free(ssl_resnet *m) { ssl_registry_free(&m->reg); }

/* Marks an activation the network alone reads: the backward releases it
 * as soon as the op that made it is done, so the gradients of the early
 * layers reuse the memory of the late ones. */
static ssl_tensor *internal(ssl_tensor *t)
{
    if (t) t->transient = 1;
    return t;
}

/* act(bn(conv(x)) + skip), skip may be NULL: BN, the residual sum and the
 * ReLU are one op (ssl_op_bn_act). */
static ssl_tensor *conv_bn(ssl_graph *g, ssl_tensor *x, ssl_conv_layer *c, ssl_bn_layer *bn,
                           ssl_tensor *skip, int relu)
{
    ssl_tensor *y = internal(ssl_op_conv2d(g, x, &c->weight, c->stride, c->pad));
    ssl_tensor *out = internal(ssl_op_bn_act(g, y, bn, skip, relu));
    ssl_graph_used_up(g, y);
    return out;
}

ssl_tensor *ssl_resnet_forward(ssl_graph *g, ssl_resnet *m, ssl_tensor *x)
{
    ssl_tensor *h = ssl_resnet_forward_dense(g, m, x);
    if (h) h->transient = 1; /* only the pool reads it here */
    ssl_tensor *f = ssl_op_global_avgpool(g, h);
    ssl_graph_used_up(g, h);
    return f;
}

ssl_tensor *ssl_resnet_forward_dense(ssl_graph *g, ssl_resnet *m, ssl_tensor *x)
{
    if (!x) return NULL;
    if (x->ndim != 4 || x->shape[1] != m->cfg.in_channels) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "resnet: expected (N, %d, H, W) input", m->cfg.in_channels);
        return NULL;
    }
    ssl_tensor *in = ssl_op_to_layout(g, x, g->be->act_layout);
    if (in != x) internal(in);
    ssl_tensor *h = conv_bn(g, in, &m->conv1, &m->bn1, NULL, 1);
    ssl_graph_used_up(g, in);
    if (m->cfg.stem == SSL_STEM_IMAGENET) {
        ssl_tensor *p = internal(ssl_op_maxpool(g, h, 3, 2, 1));
        ssl_graph_used_up(g, h);
        h = p;
    }
    for (int b = 0; b < m->n_blocks; b++) {
        ssl_res_block *blk = &m->blocks[b];
        /* The activations inside a block are only convolution inputs: each
         * is dropped after its convolution and recomputed in the backward
         * from the BN input (ssl_graph_drop), a quarter of the block's
         * memory (a third for a bottleneck) for one elementwise pass. */
        ssl_tensor *y = h;
        for (int i = 0; i + 1 < blk->n_conv; i++) {
            ssl_tensor *t = conv_bn(g, y, &blk->conv[i], &blk->bn[i], NULL, 1);
            if (y != h) ssl_graph_drop(g, y);
            y = t;
        }
        /* torchvision runs the downsample after the main branch; the order
         * of the two is immaterial (separate layers, no randomness) */
        ssl_tensor *skip = blk->has_down ? conv_bn(g, h, &blk->down, &blk->down_bn, NULL, 0) : h;
        int last = blk->n_conv - 1;
        ssl_tensor *out = conv_bn(g, y, &blk->conv[last], &blk->bn[last], skip, 1);
        if (y != h) ssl_graph_drop(g, y);
        if (skip != h) ssl_graph_used_up(g, skip);
        ssl_graph_used_up(g, h);
        h = out;
    }
    if (h) h->transient = 0; /* the caller's */
    return h;
}

static double conv_macs(const ssl_conv_layer *c, int *h, int *w)
{
    const int *s = c->weight.shape;
    *h = ssl_conv_out_size(*h, s[2], c->stride, c->pad);
    *w = ssl_conv_out_size(*w, s[3], c->stride, c->pad);
    return (double)s[0] * s[1] * s[2] * s[3] * (*h) * (*w);
}

double ssl_resnet_macs(const ssl_resnet *m, int h, int w)
{
    double macs = conv_macs(&m->conv1, &h, &w);
    if (m->cfg.stem == SSL_STEM_IMAGENET) {
        h = ssl_conv_out_size(h, 3, 2, 1);
        w = ssl_conv_out_size(w, 3, 2, 1);
    }
    for (int b = 0; b < m->n_blocks; b++) {
        const ssl_res_block *blk = &m->blocks[b];
        int h0 = h, w0 = w;
        for (int i = 0; i < blk->n_conv; i++) macs += conv_macs(&blk->conv[i], &h, &w);
        if (blk->has_down) macs += conv_macs(&blk->down, &h0, &w0);
    }
    return macs;
}
