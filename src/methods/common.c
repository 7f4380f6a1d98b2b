/* Helpers the methods share: teacher networks, EMA, no-gradient passes. */
#include "selfsup/method.h"
#include "selfsup/optim.h"

#include <string.h>

void ssl_registry_copy_params(ssl_registry *dst, const ssl_registry *src)
{
    for (int i = 0; i < src->n_params && i < dst->n_params; i++)
        memcpy(dst->params[i].data, src->params[i].data, sizeof(float) * src->params[i].numel);
}

void ssl_registry_ema(ssl_registry *dst, const ssl_registry *src, float m)
{
    for (int i = 0; i < src->n_params && i < dst->n_params; i++)
        ssl_ema_update(dst->params[i].data, src->params[i].data, src->params[i].numel, m);
}

int ssl_graph_no_grad(ssl_graph *g)
{
    int r = g->record;
    g->record = 0;
    return r;
}

int ssl_method_views_multicrop(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    int ng = cfg->global_crops > 0 ? cfg->global_crops : 2;
    int nl = cfg->local_crops > 0 ? cfg->local_crops : 0;
    if (ng + nl > SSL_MAX_VIEWS) return ng + nl; /* create() reports it */
    for (int v = 0; v < ng; v++) {
        ssl_aug_simclr(&augs[v], c, h, w);
        if (cfg->global_scale_min > 0) augs[v].crop_scale_min = cfg->global_scale_min;
    }
    for (int v = ng; v < ng + nl; v++) {
        int s = cfg->local_size > 0 ? cfg->local_size : (h < w ? h : w) * 3 / 7;
        ssl_aug_simclr(&augs[v], c, s, s);
        /* ssl_aug_simclr picks the normalization by channels, the blur by size */
        augs[v].crop_scale_min = cfg->local_scale_min > 0 ? cfg->local_scale_min : 0.05f;
        augs[v].crop_scale_max = cfg->local_scale_max > 0 ? cfg->local_scale_max : 0.14f;
    }
    return ng + nl;
}

int ssl_method_check_multicrop(const ssl_method_config *c, const char *method, char *err)
{
    if (c->global_crops < 1)
        return ssl_fail(err, SSL_EINVAL, "--global-crops must be >= 1 (got %d)", c->global_crops);
    if (c->local_crops < 1)
        return ssl_fail(err, SSL_EINVAL, "--local-crops must be >= 1: %s is a multi-crop method (got %d)",
                        method, c->local_crops);
    if (c->global_crops + c->local_crops > SSL_MAX_VIEWS)
        return ssl_fail(err, SSL_EINVAL, "--global-crops + --local-crops must be <= %d (got %d)",
                        SSL_MAX_VIEWS, c->global_crops + c->local_crops);
    if (c->local_size != SSL_UNSET && c->local_size < 1) /* unset: 3/7 of the image side */
        return ssl_fail(err, SSL_EINVAL, "--local-size must be >= 1 (got %d)", c->local_size);
    if (!(c->global_scale_min > 0 && c->global_scale_min <= 1))
        return ssl_fail(err, SSL_EINVAL, "--global-scale-min must be in (0, 1] (got %g)", c->global_scale_min);
    if (!(c->local_scale_min > 0 && c->local_scale_min <= c->local_scale_max && c->local_scale_max <= 1))
        return ssl_fail(err, SSL_EINVAL,
                        "--local-scale-min and --local-scale-max must satisfy 0 < min <= max <= 1 (got %g, %g)",
                        c->local_scale_min, c->local_scale_max);
    return SSL_OK;
}

ssl_tensor *ssl_method_encode_views(ssl_graph *g, ssl_encoder *enc, ssl_tensor *const *views, int n)
{
    ssl_tensor *out = NULL;
    for (int s = 0; s < n;) {
        int e = s + 1; /* views[s..e) share a size: one pass, one set of BN statistics */
        while (e < n && views[e]->shape[2] == views[s]->shape[2] &&
               views[e]->shape[3] == views[s]->shape[3])
            e++;
        ssl_tensor *x = views[s];
        for (int v = s + 1; v < e; v++) x = ssl_op_concat_batch(g, x, views[v]);
        ssl_tensor *h = ssl_encoder_forward(g, enc, x);
        out = s == 0 ? h : ssl_op_concat_batch(g, out, h);
        if (!out) return NULL;
        s = e;
    }
    return out;
}

int ssl_method_views_byol(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    /* BYOL, Appendix B (Table 6), also Barlow Twins' and VICReg's: crop area
     * [0.08, 1], flip, jitter 0.4/0.4/0.2/0.1 p 0.8, gray 0.2; blur p 1.0 / 0.1,
     * solarize p 0 / 0.2 (x >= 0.5 -> 1 - x). Blur stays off at <= 32 px
     * (ssl_aug_simclr's rule); the asymmetry then lives in the solarization. */
    ssl_aug_simclr(&augs[0], c, h, w);
    augs[0].saturation = 0.2f;
    augs[0].solarize_threshold = 0.5f;
    augs[1] = augs[0];
    if (augs[0].blur_p > 0) {
        augs[0].blur_p = 1.0f;
        augs[1].blur_p = 0.1f;
    }
    augs[0].solarize_p = 0.0f;
    augs[1].solarize_p = 0.2f;
    return ssl_method_views_pair_scale(cfg, augs);
}

int ssl_method_check_pair_scale(ssl_method_config *c, float paper, char *err)
{
    if (c->global_scale_min == SSL_UNSET) c->global_scale_min = paper;
    if (!(c->global_scale_min > 0 && c->global_scale_min <= 1))
        return ssl_fail(err, SSL_EINVAL, "--global-scale-min must be in (0, 1] (got %g)", c->global_scale_min);
    return SSL_OK;
}

int ssl_method_check_momentum(ssl_method_config *c, float base, float final, char *err)
{
    if (c->base_momentum == SSL_UNSET) c->base_momentum = base;
    if (c->final_momentum == SSL_UNSET) c->final_momentum = final < 0 ? c->base_momentum : final;
    if (!(c->base_momentum >= 0 && c->base_momentum <= 1) || !(c->final_momentum >= 0 && c->final_momentum <= 1))
        return ssl_fail(err, SSL_EINVAL, "--base-momentum and --final-momentum must be in [0, 1] (got %g, %g)",
                        c->base_momentum, c->final_momentum);
    return SSL_OK;
}

int ssl_method_views_pair_scale(const ssl_method_config *cfg, ssl_aug *augs)
{
    if (cfg->global_scale_min > 0) augs[0].crop_scale_min = augs[1].crop_scale_min = cfg->global_scale_min;
    return 2;
}

const ssl_dataset *ssl_method_encoder_data(const ssl_method_ops *ops, const ssl_dataset *ds,
                                           ssl_dataset *tmp, char *err)
{
    memset(tmp, 0, sizeof *tmp);
    if (!ops || !ops->encoder_data) return ds;
    return ops->encoder_data(ds, tmp, err) ? NULL : tmp;
}
