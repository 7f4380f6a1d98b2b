/* MLP heads (projector, predictor) named like nn.Sequential. */
#include "selfsup/nn.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int linear_layer(ssl_registry *r, const char *prefix, int idx, int in, int out,
                        ssl_tensor *w, ssl_tensor *b, ssl_rng *rng)
{
    char name[256];
    int ws[2] = {out, in};
    float bound = 1.0f / sqrtf((float)in);
    snprintf(name, sizeof name, "%s.%d.weight", prefix, idx);
    if (ssl_registry_param(r, name, 2, ws, 0, w)) return SSL_ENOMEM;
    snprintf(name, sizeof name, "%s.%d.bias", prefix, idx);
    if (ssl_registry_param(r, name, 1, &out, 1, b)) return SSL_ENOMEM;
    ssl_init_uniform(w->data, (long)out * in, bound, rng);
    ssl_init_uniform(b->data, out, bound, rng);
    return SSL_OK;
}

int ssl_mlp_init(ssl_mlp *h, ssl_registry *r, const char *prefix, int in, int hidden,
                 int out, int use_bn, ssl_rng *rng)
{
    char name[256];
    memset(h, 0, sizeof *h);
    h->in = in;
    h->hidden = hidden;
    h->out = out;
    h->use_bn = use_bn;
    if (linear_layer(r, prefix, 0, in, hidden, &h->w1, &h->b1, rng)) return SSL_ENOMEM;
    if (use_bn) {
        snprintf(name, sizeof name, "%s.1", prefix);
        if (ssl_registry_bn(r, name, hidden, &h->bn)) return SSL_ENOMEM;
    }
    /* Sequential index: Linear 0, [BN 1], ReLU, Linear */
    return linear_layer(r, prefix, use_bn ? 3 : 2, hidden, out, &h->w2, &h->b2, rng);
}

ssl_tensor *ssl_mlp_forward(ssl_graph *g, ssl_mlp *h, ssl_tensor *x)
{
    ssl_tensor *y = ssl_op_linear(g, x, &h->w1, &h->b1);
    if (h->use_bn) y = ssl_op_batchnorm(g, y, &h->bn);
    y = ssl_op_relu(g, y);
    return ssl_op_linear(g, y, &h->w2, &h->b2);
}
