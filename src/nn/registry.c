/* Parameter registry and PyTorch-compatible initializers. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/nn.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

void ssl_registry_init(ssl_registry *r) { memset(r, 0, sizeof *r); }

void ssl_registry_free(ssl_registry *r)
{
    for (int i = 0; i < r->n_params; i++) {
        free((char *)r->params[i].name);
        ssl_free(r->params[i].data);
        ssl_free(r->params[i].grad);
    }
    for (int i = 0; i < r->n_buffers; i++) {
        free((char *)r->buffers[i].name);
        ssl_free(r->buffers[i].data);
    }
    for (int i = 0; i < r->n_counters; i++) free((char *)r->counters[i].name);
    free(r->params);
    free(r->buffers);
    free(r->counters);
    for (int i = 0; i < r->n_owned; i++) ssl_free(r->owned[i]);
    free(r->owned);
    memset(r, 0, sizeof *r);
}

/* Grows an array of `size`-byte items to hold one more. */
static int grow(void **items, int *cap, int n, size_t size)
{
    if (n < *cap) return 1;
    int nc = *cap ? 2 * *cap : 32;
    void *p = realloc(*items, size * nc);
    if (!p) return 0;
    *items = p;
    *cap = nc;
    return 1;
}

int ssl_registry_param(ssl_registry *r, const char *name, int ndim, const int *shape,
                       int no_decay, ssl_tensor *t)
{
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (!grow((void **)&r->params, &r->cap_params, r->n_params, sizeof(ssl_param))) goto oom;
    ssl_param *p = &r->params[r->n_params];
    memset(p, 0, sizeof *p);
    p->name = strdup(name);
    p->data = ssl_calloc(sizeof(float) * n);
    p->grad = ssl_calloc(sizeof(float) * n);
    if (!p->name || !p->data || !p->grad) {
        free((char *)p->name);
        ssl_free(p->data);
        ssl_free(p->grad);
        goto oom;
    }
    p->numel = n;
    p->ndim = ndim;
    for (int i = 0; i < ndim; i++) p->shape[i] = shape[i];
    p->no_decay = no_decay;
    r->n_params++;
    *t = ssl_tensor_wrap(p->data, p->grad, ndim, shape, SSL_LAYOUT_NCHW);
    return SSL_OK;
oom:
    r->failed = 1;
    return SSL_ENOMEM;
}

float *ssl_registry_buffer(ssl_registry *r, const char *name, int ndim, const int *shape,
                           float value)
{
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    if (!grow((void **)&r->buffers, &r->cap_buffers, r->n_buffers, sizeof(ssl_buffer))) goto oom;
    ssl_buffer *b = &r->buffers[r->n_buffers];
    memset(b, 0, sizeof *b);
    b->name = strdup(name);
    b->data = ssl_malloc(sizeof(float) * (n > 0 ? n : 1));
    if (!b->name || !b->data) {
        free((char *)b->name);
        ssl_free(b->data);
        goto oom;
    }
    for (long i = 0; i < n; i++) b->data[i] = value;
    b->numel = n;
    b->ndim = ndim;
    for (int i = 0; i < ndim; i++) b->shape[i] = shape[i];
    r->n_buffers++;
    return b->data;
oom:
    r->failed = 1;
    return NULL;
}

int ssl_registry_counter(ssl_registry *r, const char *name, int64_t *value)
{
    if (!grow((void **)&r->counters, &r->cap_counters, r->n_counters, sizeof(ssl_counter))) goto oom;
    r->counters[r->n_counters].name = strdup(name);
    if (!r->counters[r->n_counters].name) goto oom;
    r->counters[r->n_counters].value = value;
    r->n_counters++;
    return SSL_OK;
oom:
    r->failed = 1;
    return SSL_ENOMEM;
}

/* running_mean, running_var and num_batches_tracked of prefix. */
static int bn_stats(ssl_registry *r, const char *prefix, int C, ssl_bn_layer *bn)
{
    char name[256];
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    bn->running_mean = ssl_registry_buffer(r, name, 1, &C, 0.0f);
    snprintf(name, sizeof name, "%s.running_var", prefix);
    bn->running_var = ssl_registry_buffer(r, name, 1, &C, 1.0f);
    if (!bn->running_mean || !bn->running_var) return SSL_ENOMEM;
    snprintf(name, sizeof name, "%s.num_batches_tracked", prefix);
    return ssl_registry_counter(r, name, &bn->num_batches_tracked);
}

int ssl_registry_bn_noaffine(ssl_registry *r, const char *prefix, int C, ssl_bn_layer *bn)
{
    memset(bn, 0, sizeof *bn);
    bn->C = C;
    bn->momentum = 0.1f;
    bn->eps = 1e-5f;
    if (!grow((void **)&r->owned, &r->cap_owned, r->n_owned, sizeof(void *))) goto oom;
    float *wb = ssl_malloc(sizeof(float) * 2 * (size_t)C);
    if (!wb) goto oom;
    r->owned[r->n_owned++] = wb;
    for (int i = 0; i < C; i++) {
        wb[i] = 1.0f;
        wb[C + i] = 0.0f;
    }
    /* grad NULL: requires_grad 0, the op leaves them alone */
    bn->weight = ssl_tensor_wrap(wb, NULL, 1, &C, SSL_LAYOUT_NCHW);
    bn->bias = ssl_tensor_wrap(wb + C, NULL, 1, &C, SSL_LAYOUT_NCHW);
    return bn_stats(r, prefix, C, bn);
oom:
    r->failed = 1;
    return SSL_ENOMEM;
}

int ssl_registry_bn(ssl_registry *r, const char *prefix, int C, ssl_bn_layer *bn)
{
    char name[256];
    memset(bn, 0, sizeof *bn);
    bn->C = C;
    bn->momentum = 0.1f;
    bn->eps = 1e-5f;
    snprintf(name, sizeof name, "%s.weight", prefix);
    if (ssl_registry_param(r, name, 1, &C, 1, &bn->weight)) return SSL_ENOMEM;
    for (int i = 0; i < C; i++) bn->weight.data[i] = 1.0f;
    snprintf(name, sizeof name, "%s.bias", prefix);
    if (ssl_registry_param(r, name, 1, &C, 1, &bn->bias)) return SSL_ENOMEM;
    return bn_stats(r, prefix, C, bn);
}

void ssl_registry_zero_grad(ssl_registry *r)
{
    for (int i = 0; i < r->n_params; i++)
        memset(r->params[i].grad, 0, sizeof(float) * r->params[i].numel);
}

long ssl_registry_numel(const ssl_registry *r)
{
    long n = 0;
    for (int i = 0; i < r->n_params; i++) n += r->params[i].numel;
    return n;
}

float *ssl_registry_find(const ssl_registry *r, const char *name, int64_t *numel)
{
    for (int i = 0; i < r->n_params; i++)
        if (!strcmp(r->params[i].name, name)) {
            if (numel) *numel = r->params[i].numel;
            return r->params[i].data;
        }
    for (int i = 0; i < r->n_buffers; i++)
        if (!strcmp(r->buffers[i].name, name)) {
            if (numel) *numel = r->buffers[i].numel;
            return r->buffers[i].data;
        }
    return NULL;
}

void ssl_init_kaiming_normal_fan_out(float *w, long n, int fan_out, ssl_rng *rng)
{
    float std = sqrtf(2.0f / (float)fan_out);
    for (long i = 0; i < n; i++) w[i] = std * ssl_rng_normal(rng);
}

void ssl_init_uniform(float *w, long n, float bound, ssl_rng *rng)
{
    for (long i = 0; i < n; i++) w[i] = bound * (2.0f * ssl_rng_uniform(rng) - 1.0f);
}
