/* MLP heads (projectors, predictors, DINO's head) named like nn.Sequential. */
#include "selfsup/nn.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* nn.Linear(in, out[, bias]) at prefix.idx with PyTorch's default init. */
static int linear_layer(ssl_registry *r, const char *prefix, int idx, int in, int out,
                        int bias, ssl_tensor *w, ssl_tensor *b, ssl_rng *rng)
{
    char name[256];
    int ws[2] = {out, in};
    float bound = 1.0f / sqrtf((float)in);
    snprintf(name, sizeof name, "%s.%d.weight", prefix, idx);
    if (ssl_registry_param(r, name, 2, ws, 0, w)) return SSL_ENOMEM;
    ssl_init_uniform(w->data, (long)out * in, bound, rng);
    memset(b, 0, sizeof *b);
    if (!bias) return SSL_OK;
    snprintf(name, sizeof name, "%s.%d.bias", prefix, idx);
    if (ssl_registry_param(r, name, 1, &out, 1, b)) return SSL_ENOMEM;
    ssl_init_uniform(b->data, out, bound, rng);
    return SSL_OK;
}

int ssl_mlp_init_spec(ssl_mlp *h, ssl_registry *r, const char *prefix, const ssl_mlp_spec *spec,
                      ssl_rng *rng)
{
    char name[256];
    memset(h, 0, sizeof *h);
    if (spec->n_layers < 1 || spec->n_layers > SSL_MLP_MAX_LAYERS) return SSL_EINVAL;
    h->spec = *spec;
    int idx = 0; /* nn.Sequential index: Linear, [BN], act per hidden layer */
    for (int i = 0; i < spec->n_layers; i++) {
        int last = i == spec->n_layers - 1;
        int bn = last ? spec->last_bn : spec->hidden_bn;
        int bias = !(bn && spec->no_bias_before_bn) && !(last && spec->no_last_bias);
        int out = spec->dims[i + 1];
        if (linear_layer(r, prefix, idx++, spec->dims[i], out, bias, &h->w[i], &h->b[i], rng))
            return SSL_ENOMEM;
        if (bn) {
            snprintf(name, sizeof name, "%s.%d", prefix, idx++);
            int rc = bn == 2 ? ssl_registry_bn_noaffine(r, name, out, &h->bn[i])
                             : ssl_registry_bn(r, name, out, &h->bn[i]);
            if (rc) return rc;
            h->has_bn[i] = 1;
        }
        if (!last) idx++; /* the activation */
    }
    return SSL_OK;
}

int ssl_mlp_init(ssl_mlp *h, ssl_registry *r, const char *prefix, int in, int hidden,
                 int out, int use_bn, ssl_rng *rng)
{
    ssl_mlp_spec s = {.n_layers = 2, .dims = {in, hidden, out}, .hidden_bn = use_bn};
    return ssl_mlp_init_spec(h, r, prefix, &s, rng);
}

ssl_tensor *ssl_mlp_forward(ssl_graph *g, ssl_mlp *h, ssl_tensor *x)
{
    for (int i = 0; i < h->spec.n_layers; i++) {
        x = ssl_op_linear(g, x, &h->w[i], h->b[i].data ? &h->b[i] : NULL);
        if (h->has_bn[i]) x = ssl_op_batchnorm(g, x, &h->bn[i]);
        if (i < h->spec.n_layers - 1)
            x = h->spec.act == SSL_ACT_GELU ? ssl_op_gelu(g, x) : ssl_op_relu(g, x);
    }
    return x;
}
