/* SimCLR (Chen et al. 2020, Algorithm 1): two views of each image through a
 * shared encoder f and projector g; z = g(f(x)) L2-normalized; NT-Xent with
 * temperature over all 2N views, each view's positive being the other view
 * of its image and the other 2(N-1) views its negatives. */
#include "selfsup/method.h"

typedef struct simclr_state {
    ssl_mlp projector;
} simclr_state;

static int simclr_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->temperature == SSL_UNSET) cfg->temperature = 0.2f;
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 2048;
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 128;
    if (!(cfg->temperature > 0))
        return ssl_fail(err, SSL_EINVAL, "--temperature must be > 0 (got %g)", cfg->temperature);
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden and --proj-dim must be >= 1");
    return ssl_method_check_pair_scale(cfg, 0.08f, err); /* the paper's crop area [0.08, 1] */
}

static int simclr_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    ssl_aug_simclr(&augs[0], c, h, w);
    augs[1] = augs[0];
    return ssl_method_views_pair_scale(cfg, augs);
}

static int simclr_init(ssl_method *m, ssl_rng *rng, char *err)
{
    simclr_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "simclr: out of memory");
    m->state_ptr = s;
    if (ssl_mlp_init(&s->projector, &m->heads, "projector", m->encoder.feat_dim,
                     m->cfg.proj_hidden, m->cfg.proj_dim, 1, rng))
        return ssl_fail(err, SSL_ENOMEM, "simclr: out of memory for the projector");
    return SSL_OK;
}

static ssl_tensor *simclr_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    simclr_state *s = m->state_ptr;
    /* One pass over both views: BN statistics over all 2N, as in the paper's
     * global-BN setting on one device. */
    ssl_tensor *x = ssl_op_concat_batch(g, views[0], views[1]);
    ssl_tensor *h = ssl_encoder_forward(g, &m->encoder, x);
    ssl_tensor *z = ssl_op_l2normalize(g, ssl_mlp_forward(g, &s->projector, h));
    return ssl_op_ntxent(g, z, m->cfg.temperature);
}

static void simclr_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_simclr = {
    .name = "simclr",
    .summary = "SimCLR: two views, MLP projector with BN, NT-Xent over 2N views",
    .defaults = "temperature 0.2, projector 2048-128; LARS lr 0.075 x sqrt(batch), wd 1e-6, 0.5 warm-up epochs",
    .optim = {"lars", 0.075f, "sqrt", 1e-6f, 0.9f, 0.5f},
    /* solo-learn scripts/pretrain/cifar/simclr.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"larc", 0.4f, "linear", 1e-4f, 0.9f, 0.5f},
    .cifar_fields = "temperature=0.2 proj-hidden=2048 proj-dim=256",
    .validate = simclr_validate,
    .views = simclr_views,
    .init = simclr_init,
    .loss = simclr_loss,
    .free = simclr_free,
};
