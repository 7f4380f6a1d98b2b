/* VICReg (Bardes, Ponce and LeCun 2022, Algorithm 1 and the official code,
 * facebookresearch/vicreg main_vicreg.py): two views through the shared
 * encoder and an expander; the loss is an invariance term (MSE between the
 * embeddings), a variance hinge keeping each dimension's standard deviation
 * over the batch at least 1, and a covariance term decorrelating dimensions,
 * each on its own embedding. No negatives, no teacher. */
#include "selfsup/method.h"

#include <math.h>

/* The official std = sqrt(var + 0.0001); not an option there either. */
#define VICREG_EPS 1e-4f

typedef struct vicreg_state {
    ssl_mlp projector; /* Linear-BN-ReLU-Linear-BN-ReLU-Linear: projector.0/1/3/4/6 */
    /* The last batch's unweighted (invariance, variance, covariance) terms,
     * for logging. */
    float parts[3];
} vicreg_state;

static int check_coeff(const char *name, float v, char *err)
{
    if (!(v >= 0) || !isfinite(v))
        return ssl_fail(err, SSL_EINVAL, "--%s must be a finite number >= 0 (got %g)", name, v);
    return SSL_OK;
}

static int vicreg_validate(ssl_method_config *cfg, char *err)
{
    /* Coefficients: paper and official defaults (lambda = mu = 25, nu = 1).
     * Expander: the official 8192-8192-8192 would be 130M parameters on our
     * 128-d features; solo-learn's CIFAR config uses 2048-2048-2048. */
    if (cfg->sim_coeff == SSL_UNSET) cfg->sim_coeff = 25.0f;
    if (cfg->std_coeff == SSL_UNSET) cfg->std_coeff = 25.0f;
    if (cfg->cov_coeff == SSL_UNSET) cfg->cov_coeff = 1.0f;
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 2048;
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 2048;
    int rc = check_coeff("sim-coeff", cfg->sim_coeff, err);
    if (!rc) rc = check_coeff("std-coeff", cfg->std_coeff, err);
    if (!rc) rc = check_coeff("cov-coeff", cfg->cov_coeff, err);
    if (rc) return rc;
    if (cfg->sim_coeff == 0 && cfg->std_coeff == 0 && cfg->cov_coeff == 0)
        return ssl_fail(err, SSL_EINVAL, "--sim-coeff, --std-coeff and --cov-coeff are all 0: "
                        "the loss would be 0");
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden and --proj-dim must be >= 1 (got %d, %d)",
                        cfg->proj_hidden, cfg->proj_dim);
    return ssl_method_check_pair_scale(cfg, 0.08f, err); /* the paper's crop area [0.08, 1] */
}

static int vicreg_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    return ssl_method_views_byol(cfg, c, h, w, augs); /* the official transform pair */
}

static int vicreg_init(ssl_method *m, ssl_rng *rng, char *err)
{
    vicreg_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "vicreg: out of memory");
    m->state_ptr = s;
    /* The official Projector: nn.Linear (with bias) - BN - ReLU per hidden
     * layer, then nn.Linear(bias=False). */
    int hid = m->cfg.proj_hidden;
    ssl_mlp_spec spec = {.n_layers = 3, .dims = {m->encoder.feat_dim, hid, hid, m->cfg.proj_dim},
                         .hidden_bn = 1, .no_last_bias = 1};
    if (ssl_mlp_init_spec(&s->projector, &m->heads, "projector", &spec, rng))
        return ssl_fail(err, SSL_ENOMEM, "vicreg: out of memory for the expander");
    return SSL_OK;
}

/* x (B, C, H, W) -> embedding (B, proj_dim) */
static ssl_tensor *vicreg_branch(ssl_method *m, ssl_graph *g, ssl_tensor *x)
{
    vicreg_state *s = m->state_ptr;
    return ssl_mlp_forward(g, &s->projector, ssl_encoder_forward(g, &m->encoder, x));
}

static ssl_tensor *vicreg_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    vicreg_state *s = m->state_ptr;
    /* One pass per view, as the official forward (backbone(x), backbone(y)):
     * BN statistics are per view, and running statistics update twice. */
    ssl_tensor *z1 = vicreg_branch(m, g, views[0]);
    ssl_tensor *z2 = vicreg_branch(m, g, views[1]);
    return ssl_op_vicreg(g, z1, z2, m->cfg.sim_coeff, m->cfg.std_coeff, m->cfg.cov_coeff,
                         VICREG_EPS, s->parts);
}

static void vicreg_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_vicreg = {
    .name = "vicreg",
    .summary = "VICReg: two views, invariance + variance + covariance terms on the embeddings",
    .defaults = "sim/std/cov coeff 25/25/1, expander 2048-2048-2048 (paper 8192; solo-learn CIFAR "
                "2048), blur 1.0/0.1 (off <= 32 px), solarize 0/0.2; LARS lr 0.2 x batch/256, "
                "wd 1e-6, 0.5 warm-up epochs",
    .optim = {"lars", 0.2f, "linear", 1e-6f, 0.9f, 0.5f},
    /* solo-learn scripts/pretrain/cifar/vicreg.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"larc", 0.3f, "linear", 1e-4f, 0.9f, 0.5f},
    .cifar_fields = "proj-hidden=2048 proj-dim=2048 global-scale-min=0.2",
    .validate = vicreg_validate,
    .views = vicreg_views,
    .init = vicreg_init,
    .loss = vicreg_loss,
    .free = vicreg_free,
};
