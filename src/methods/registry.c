/* The list of methods and the shared create/free. */
#include "selfsup/method.h"

#include <string.h>

static const ssl_method_ops *const methods[] = {&ssl_method_simclr, NULL};

const ssl_method_ops *const *ssl_method_list(void) { return methods; }

const ssl_method_ops *ssl_method_find(const char *name)
{
    for (int i = 0; methods[i]; i++)
        if (!strcmp(methods[i]->name, name)) return methods[i];
    return NULL;
}

int ssl_method_create(ssl_method *m, const ssl_method_ops *ops, const ssl_method_config *cfg,
                      const ssl_resnet_config *enc, ssl_rng *rng, char *err)
{
    memset(m, 0, sizeof *m);
    m->ops = ops;
    m->cfg = *cfg;
    int st = ops->validate(&m->cfg, err);
    if (st) return st;
    ssl_registry_init(&m->heads);
    st = ssl_resnet_init(&m->encoder, enc, rng, err);
    if (st) return st;
    st = ops->init(m, rng, err);
    if (st) ssl_method_free(m);
    return st;
}

void ssl_method_free(ssl_method *m)
{
    if (m->ops && m->ops->free) m->ops->free(m);
    m->state = NULL;
    ssl_resnet_free(&m->encoder);
    ssl_registry_free(&m->heads);
}
