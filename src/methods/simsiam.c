/* SimSiam (Chen & He 2021), as facebookresearch/simsiam's builder.py: one
 * encoder f (backbone + 3-layer projection MLP) and a predictor h; with
 * z = f(x), p = h(z) per view, the loss is
 *   0.5 D(p1, stopgrad(z2)) + 0.5 D(p2, stopgrad(z1)),  D = -mean_i cos
 * No momentum encoder, no negatives. Each view is its own forward pass
 * (the official z1 = encoder(x1); z2 = encoder(x2)), so BN statistics are
 * per view.
 *
 * Heads, as nn.Sequential names of the official code:
 *   projector  0 Linear(F, H, no bias) 1 BN 2 ReLU 3 Linear(H, H, no bias)
 *              4 BN 5 ReLU 6 Linear(H, D) 7 BN(D, affine=False)
 *   predictor  0 Linear(D, P, no bias) 1 BN 2 ReLU 3 Linear(P, D)
 * The official projector's layer 6 has a bias that is frozen (its "hack",
 * requires_grad = False) in front of BN(affine=False): a constant shift
 * that the BN's batch mean removes from every output. selfsup has no bias
 * there, the same as that bias frozen at 0.
 *
 * Not supported: the official --fix-pred-lr (the predictor at a constant
 * learning rate while the rest follows the cosine) needs per-group
 * learning rates, which the optimizer does not have; everything follows
 * one schedule, the paper's baseline (its Table 1 reports a constant
 * predictor lr slightly better). */
#include "selfsup/method.h"

#include <string.h>

typedef struct simsiam_state {
    ssl_mlp projector, predictor;
} simsiam_state;

static int simsiam_validate(ssl_method_config *cfg, char *err)
{
    /* The paper's widths (solo-learn keeps them for CIFAR too). */
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 2048;
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 2048;
    if (cfg->pred_hidden == SSL_UNSET) cfg->pred_hidden = 512;
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1 || cfg->pred_hidden < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden, --proj-dim and --pred-hidden must be >= 1");
    return ssl_method_check_pair_scale(cfg, 0.2f, err); /* the paper's crop area [0.2, 1] */
}

static int simsiam_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    /* The official (MoCo v2's) augmentation: crop area [0.2, 1], jitter
     * 0.4/0.4/0.4/0.1 p 0.8, gray 0.2, blur p 0.5 (off at <= 32 px, see
     * ssl_aug_simclr), flip; the same for both views. */
    ssl_aug_simclr(&augs[0], c, h, w);
    augs[1] = augs[0];
    return ssl_method_views_pair_scale(cfg, augs);
}

static int simsiam_init(ssl_method *m, ssl_rng *rng, char *err)
{
    simsiam_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "simsiam: out of memory");
    m->state_ptr = s;
    const ssl_method_config *c = &m->cfg;
    ssl_mlp_spec proj = {.n_layers = 3,
                         .dims = {m->encoder.feat_dim, c->proj_hidden, c->proj_hidden, c->proj_dim},
                         .hidden_bn = 1, .last_bn = 2, .no_bias_before_bn = 1};
    ssl_mlp_spec pred = {.n_layers = 2, .dims = {c->proj_dim, c->pred_hidden, c->proj_dim},
                         .hidden_bn = 1, .no_bias_before_bn = 1};
    if (ssl_mlp_init_spec(&s->projector, &m->heads, "projector", &proj, rng) ||
        ssl_mlp_init_spec(&s->predictor, &m->heads, "predictor", &pred, rng))
        return ssl_fail(err, SSL_ENOMEM, "simsiam: out of memory for the heads");
    /* The official encoder is built with zero_init_residual=True: the last
     * BN of every residual block starts at gamma 0 (each block starts as
     * the identity). */
    for (int b = 0; m->encoder.cfg.kind == SSL_ENC_RESNET && b < m->encoder.resnet.n_blocks; b++) {
        ssl_res_block *blk = &m->encoder.resnet.blocks[b];
        ssl_bn_layer *bn = &blk->bn[blk->n_conv - 1];
        memset(bn->weight.data, 0, sizeof(float) * (size_t)bn->C);
    }
    return SSL_OK;
}

static ssl_tensor *simsiam_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    simsiam_state *s = m->state_ptr;
    ssl_tensor *z[2], *p[2];
    for (int v = 0; v < 2; v++) {
        z[v] = ssl_mlp_forward(g, &s->projector, ssl_encoder_forward(g, &m->encoder, views[v]));
        p[v] = ssl_mlp_forward(g, &s->predictor, z[v]);
    }
    /* a = 0, b = -0.5: half of D = -mean cos per direction */
    ssl_tensor *l12 = ssl_op_cosine_loss(g, p[0], ssl_op_detach(g, z[1]), 0.0f, -0.5f);
    ssl_tensor *l21 = ssl_op_cosine_loss(g, p[1], ssl_op_detach(g, z[0]), 0.0f, -0.5f);
    return ssl_op_add(g, l12, l21);
}

static void simsiam_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_simsiam = {
    .name = "simsiam",
    .summary = "SimSiam: predictor on one view regresses the stop-gradient projection of the other",
    .defaults = "projector 2048-2048-2048 (last BN without affine), predictor 512 (the paper's); "
                "SGD lr 0.05 x batch/256, wd 1e-4, momentum 0.9, cosine, no warm-up (no fixed predictor lr)",
    .optim = {"sgd", 0.05f, "linear", 1e-4f, 0.9f, 0.0f},
    /* solo-learn scripts/pretrain/cifar/simsiam.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"sgd", 0.5f, "linear", 1e-5f, 0.9f, 0.5f},
    .cifar_fields = "proj-hidden=2048 proj-dim=2048 pred-hidden=512",
    .validate = simsiam_validate,
    .views = simsiam_views,
    .init = simsiam_init,
    .loss = simsiam_loss,
    .free = simsiam_free,
};
