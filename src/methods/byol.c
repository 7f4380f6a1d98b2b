/* BYOL (Grill et al. 2020), as google-deepmind/deepmind-research byol/:
 * an online network (encoder, projector, predictor) predicts the target
 * network's projection of the other view; the target (encoder, projector)
 * is an EMA of the online one and takes no gradient. Loss, summed over both
 * directions: mean_i 2 - 2 cos(q_online(v0)_i, z_target(v1)_i) + the same
 * with the views swapped.
 *
 * Each view is its own forward pass through each network (the official
 * apply_once_fn per view), so BN statistics are per view, as there.
 *
 * Target update after step k (0-based, m->step during after_step), with
 * the online weights the optimizer just produced, as the official
 * _update_fn: target = tau_k target + (1 - tau_k) online,
 * tau_k = ssl_momentum_cosine_to(k, total_steps, base_momentum, final_momentum = 1)
 *       = 1 - (1 - base) (cos(pi k / total) + 1) / 2. Parameters only: the
 * target's BN running statistics follow its own forward passes (the
 * official target_state). The target starts as a copy of the online
 * network (the official code draws it from another seed and reports no
 * difference). */
#include "selfsup/method.h"
#include "selfsup/optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct byol_state {
    ssl_mlp projector, predictor; /* in m->heads, projector first (the EMA is index-wise) */
    ssl_encoder target_enc;        /* saved as "teacher." */
    ssl_registry target_reg;      /* target projector, names and order as in m->heads */
    ssl_mlp target_projector;
} byol_state;

static int byol_validate(ssl_method_config *cfg, char *err)
{
    /* The paper's widths (solo-learn keeps them for CIFAR too). */
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 4096;
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 256;
    if (cfg->pred_hidden == SSL_UNSET) cfg->pred_hidden = 4096;
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1 || cfg->pred_hidden < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden, --proj-dim and --pred-hidden must be >= 1");
    if (ssl_method_check_momentum(cfg, 0.996f, 1.0f, err)) return SSL_EINVAL; /* tau 0.996 -> 1 */
    return ssl_method_check_pair_scale(cfg, 0.08f, err); /* the paper's crop area [0.08, 1] */
}

static int byol_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    return ssl_method_views_byol(cfg, c, h, w, augs); /* the official transform pair */
}

/* The official MLP: Linear(in, hidden) BN ReLU Linear(hidden, out) with no
 * bias in the last layer (networks.py: with_bias=False); nn.Sequential
 * names prefix.0, .1, .3. */
static int byol_mlp(ssl_mlp *h, ssl_registry *r, const char *prefix, int in, int hidden, int out,
                    ssl_rng *rng)
{
    ssl_mlp_spec spec = {.n_layers = 2, .dims = {in, hidden, out}, .hidden_bn = 1, .no_last_bias = 1};
    return ssl_mlp_init_spec(h, r, prefix, &spec, rng);
}

static int byol_init(ssl_method *m, ssl_rng *rng, char *err)
{
    byol_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "byol: out of memory");
    m->state_ptr = s;
    ssl_registry_init(&s->target_reg);
    const ssl_method_config *c = &m->cfg;
    int F = m->encoder.feat_dim;
    if (byol_mlp(&s->projector, &m->heads, "projector", F, c->proj_hidden, c->proj_dim, rng) ||
        byol_mlp(&s->predictor, &m->heads, "predictor", c->proj_dim, c->pred_hidden, c->proj_dim, rng))
        return ssl_fail(err, SSL_ENOMEM, "byol: out of memory for the heads");
    int rc = ssl_encoder_clone(&s->target_enc, &m->encoder, err);
    if (rc) return rc;
    /* The draws are overwritten by the copy: a private RNG. */
    ssl_rng trng;
    ssl_rng_seed(&trng, 0);
    if (byol_mlp(&s->target_projector, &s->target_reg, "projector", F, c->proj_hidden, c->proj_dim,
                 &trng))
        return ssl_fail(err, SSL_ENOMEM, "byol: out of memory for the target projector");
    ssl_registry_copy_params(&s->target_reg, &m->heads);
    rc = ssl_method_add_state(m, "teacher.", s->target_enc.reg, err);
    if (!rc) rc = ssl_method_add_state(m, "teacher.", &s->target_reg, err);
    return rc;
}

static ssl_tensor *byol_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    byol_state *s = m->state_ptr;
    ssl_tensor *p[2], *z[2];
    for (int v = 0; v < 2; v++) {
        ssl_tensor *h = ssl_encoder_forward(g, &m->encoder, views[v]);
        p[v] = ssl_mlp_forward(g, &s->predictor, ssl_mlp_forward(g, &s->projector, h));
    }
    int r = ssl_graph_no_grad(g);
    for (int v = 0; v < 2; v++)
        z[v] = ssl_mlp_forward(g, &s->target_projector, ssl_encoder_forward(g, &s->target_enc, views[v]));
    g->record = r;
    /* not recorded, so no gradient reaches the target; detach says so */
    ssl_tensor *l01 = ssl_op_cosine_loss(g, p[0], ssl_op_detach(g, z[1]), 2.0f, -2.0f);
    ssl_tensor *l10 = ssl_op_cosine_loss(g, p[1], ssl_op_detach(g, z[0]), 2.0f, -2.0f);
    return ssl_op_add(g, l01, l10);
}

static void byol_after_step(ssl_method *m)
{
    byol_state *s = m->state_ptr;
    float tau = ssl_momentum_cosine_to(m->step, m->total_steps, m->cfg.base_momentum, m->cfg.final_momentum);
    ssl_registry_ema(s->target_enc.reg, m->encoder.reg, tau);
    ssl_registry_ema(&s->target_reg, &m->heads, tau); /* the projector: first in m->heads */
}

static void byol_free(ssl_method *m)
{
    byol_state *s = m->state_ptr;
    if (!s) return;
    ssl_encoder_free(&s->target_enc);
    ssl_registry_free(&s->target_reg);
    ssl_free(s);
}

const ssl_method_ops ssl_method_byol = {
    .name = "byol",
    .summary = "BYOL: online network predicts an EMA target's projection of the other view",
    .defaults = "projector 4096-256, predictor 4096-256 (the paper's), target EMA 0.996 -> 1 (cosine), "
                "asymmetric blur/solarize; LARS lr 0.2 x batch/256, wd 1.5e-6, 0.5 warm-up epochs",
    .optim = {"lars", 0.2f, "linear", 1.5e-6f, 0.9f, 0.5f},
    /* solo-learn scripts/pretrain/cifar/byol.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"larc", 1.0f, "linear", 1e-5f, 0.9f, 0.5f},
    .cifar_fields = "proj-hidden=4096 proj-dim=256 pred-hidden=4096 base-momentum=0.99",
    .validate = byol_validate,
    .views = byol_views,
    .init = byol_init,
    .loss = byol_loss,
    .after_step = byol_after_step,
    .free = byol_free,
};
