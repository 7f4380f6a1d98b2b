/* Barlow Twins (Zbontar et al. 2021, Algorithm 1 and the official code,
 * facebookresearch/barlowtwins main.py): two views through the shared
 * encoder and a projector; each projection standardized per dimension over
 * the batch; the cross-correlation c = z1n^T z2n / N pushed to the identity:
 * sum_i (1 - c_ii)^2 + lambda sum_{i!=j} c_ij^2. No negatives, no teacher. */
#include "selfsup/method.h"

#include <math.h>

typedef struct barlow_state {
    ssl_mlp projector; /* Linear-BN-ReLU-Linear-BN-ReLU-Linear, no biases: projector.0/1/3/4/6 */
} barlow_state;

static int barlow_validate(ssl_method_config *cfg, char *err)
{
    /* lambda: the official code's default 0.0051 (the paper rounds it to 5e-3).
     * Projector: the official 8192-8192-8192 would be 130M parameters on our
     * 128-d features; solo-learn's CIFAR config uses 2048-2048-2048. */
    if (cfg->lambda == SSL_UNSET) cfg->lambda = 0.0051f;
    if (cfg->scale_loss == SSL_UNSET) cfg->scale_loss = 1.0f;
    if (!(cfg->scale_loss > 0) || !isfinite(cfg->scale_loss))
        return ssl_fail(err, SSL_EINVAL, "--scale-loss must be a finite number > 0 (got %g)",
                        cfg->scale_loss);
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 2048;
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 2048;
    if (!(cfg->lambda >= 0) || !isfinite(cfg->lambda))
        return ssl_fail(err, SSL_EINVAL, "--lambda must be a finite number >= 0 (got %g)",
                        cfg->lambda);
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden and --proj-dim must be >= 1 (got %d, %d)",
                        cfg->proj_hidden, cfg->proj_dim);
    return ssl_method_check_pair_scale(cfg, 0.08f, err); /* the paper's crop area [0.08, 1] */
}

static int barlow_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    return ssl_method_views_byol(cfg, c, h, w, augs); /* the official transform pair */
}

static int barlow_init(ssl_method *m, ssl_rng *rng, char *err)
{
    barlow_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "barlow: out of memory");
    m->state_ptr = s;
    /* The official projector has no bias in any Linear (all but the last
     * are followed by BN). */
    int hid = m->cfg.proj_hidden;
    ssl_mlp_spec spec = {.n_layers = 3, .dims = {m->encoder.feat_dim, hid, hid, m->cfg.proj_dim},
                         .hidden_bn = 1, .no_bias_before_bn = 1, .no_last_bias = 1};
    if (ssl_mlp_init_spec(&s->projector, &m->heads, "projector", &spec, rng))
        return ssl_fail(err, SSL_ENOMEM, "barlow: out of memory for the projector");
    /* The official model's BatchNorm1d(affine=False) "bn" before the
     * correlation is part of ssl_op_barlow; its running statistics are never
     * read, so they are not kept. */
    return SSL_OK;
}

/* x (B, C, H, W) -> z (B, proj_dim) */
static ssl_tensor *barlow_branch(ssl_method *m, ssl_graph *g, ssl_tensor *x)
{
    barlow_state *s = m->state_ptr;
    return ssl_mlp_forward(g, &s->projector, ssl_encoder_forward(g, &m->encoder, x));
}

static ssl_tensor *barlow_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    /* One pass per view, as the official forward (backbone(y1), backbone(y2)):
     * BN statistics are per view, and running statistics update twice. */
    ssl_tensor *z1 = barlow_branch(m, g, views[0]);
    ssl_tensor *z2 = barlow_branch(m, g, views[1]);
    ssl_tensor *loss = ssl_op_barlow(g, z1, z2, m->cfg.lambda);
    /* solo-learn's scale_loss (its CIFAR recipe: 0.1); 1 leaves the paper's loss as is */
    return loss && m->cfg.scale_loss != 1.0f ? ssl_op_scale(g, loss, m->cfg.scale_loss) : loss;
}

static void barlow_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_barlow = {
    .name = "barlow",
    .summary = "Barlow Twins: two views, cross-correlation of standardized projections pushed to "
               "the identity",
    .defaults = "lambda 0.0051, projector 2048-2048-2048 (paper 8192; solo-learn CIFAR 2048), "
                "blur 1.0/0.1 (off <= 32 px), solarize 0/0.2; LARS lr 0.2 x batch/256 "
                "(biases/BN too; paper 0.0048), wd 1.5e-6, 0.5 warm-up epochs",
    .optim = {"lars", 0.2f, "linear", 1.5e-6f, 0.9f, 0.5f},
    /* solo-learn scripts/pretrain/cifar/barlow.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"larc", 0.3f, "linear", 1e-4f, 0.9f, 0.5f},
    .cifar_fields = "lambda=0.0051 scale-loss=0.1 proj-hidden=2048 proj-dim=2048",
    .validate = barlow_validate,
    .views = barlow_views,
    .init = barlow_init,
    .loss = barlow_loss,
    .free = barlow_free,
};
