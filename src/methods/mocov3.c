/* MoCo v3 (Chen, Xie & He 2021, "An Empirical Study of Training
 * Self-Supervised Vision Transformers"), as facebookresearch/moco-v3
 * (moco/builder.py, main_moco.py, vits.py) trains it, on a ResNet or a ViT:
 * the base encoder + projector + predictor gives q, a momentum encoder
 * (encoder + projector, an EMA of the base ones) gives the keys k of the
 * same images, and each view's q contrasts against the other view's keys
 * of the batch, no queue:
 *   ctr(q, k) = CE(normalize(q) normalize(k)^T / T, labels arange(N)) * 2T
 *   loss = ctr(q1, k2) + ctr(q2, k1).
 * Each view is its own pass through each network (BN statistics per view),
 * as the official forward.
 *
 * Heads (builder.py _build_mlp: Linear without bias, BN + ReLU after each
 * hidden layer, BatchNorm1d(affine=False) after the last unless said):
 *   ResNet (MoCo_ResNet): projector 2 layers F-H-D, predictor 2 layers D-H-D
 *     without the last BN;
 *   ViT (MoCo_ViT): projector 3 layers F-H-H-D, predictor 2 layers D-H-D with
 *     the last BN.
 * Their init is nn.Linear's default (they replace the backbone's head after
 * the backbone's own init).
 *
 * Encoder init as the official code builds it: a ResNet with
 * zero_init_residual=True (the last BN gamma of each block 0); a ViT as
 * VisionTransformerMoCo: xavier-uniform linear weights with q, k and v as
 * three matrices, zero biases, cls_token N(0, 1e-6), the patch projection
 * xavier-uniform on its (D, C p p) view with a zero bias. Its position
 * embedding is the user's choice (--pos-embed): the paper's is the fixed
 * 2-D sin-cos table (sincos; ours lists the coordinates in MAE's order,
 * theirs transposed, which only renames the axes).
 *
 * The ViT stability trick (--stop-grad-conv1 there, --freeze-patch-embed 1
 * here, the default; a ResNet ignores it): the random patch projection stays
 * fixed. The official code sets requires_grad False, so the optimizer skips
 * it; here its grads are zeroed after backward and init marks it no_decay,
 * so that SGD, LARS and AdamW (with its decoupled decay) leave it exactly
 * as it is.
 *
 * Momentum update. main_moco.py with --moco-m-cos (every recipe of the
 * repository's CONFIG.md) sets m_k = 1 - (1 - base) (cos(pi k / K) + 1) / 2
 * for iteration k of K, and MoCo.forward of step k first updates the
 * momentum encoder with m_k and the current base weights. Doing it in
 * after_step of step k with m_{k+1} (the weights the optimizer just
 * produced) is the same sequence: step 0's update is the identity (the
 * momentum encoder starts as a copy). Parameters only (the official zip
 * over parameters()); its BN running statistics follow its own passes. */
#include "selfsup/method.h"
#include "selfsup/optim.h"

#include <math.h>
#include <string.h>

typedef struct mocov3_state {
    ssl_mlp projector, predictor; /* in m->heads, projector first (the EMA is index-wise) */
    ssl_encoder mom_enc;          /* momentum encoder, saved as "teacher." */
    int has_mom_enc;
    ssl_registry mom_reg;         /* momentum projector, names and order as in m->heads */
    ssl_mlp mom_projector;
    int freeze;                   /* ViT with freeze_patch_embed: patch projection fixed */
} mocov3_state;

static int mocov3_validate(ssl_method_config *cfg, char *err)
{
    /* The ViT recipe (CONFIG.md: --moco-t .2; the ResNet-50 one keeps the
     * argparse default 1.0); --moco-m 0.99 in both. Heads 4096-256 in the
     * paper, 2048-128 here as the other contrastive heads of this library
     * for its 128-192 wide encoders. */
    if (cfg->temperature == SSL_UNSET) cfg->temperature = 0.2f;
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 2048;
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 128;
    if (cfg->pred_hidden == SSL_UNSET) cfg->pred_hidden = 2048;
    if (cfg->freeze_patch_embed == SSL_UNSET) cfg->freeze_patch_embed = 1;
    if (!(cfg->temperature > 0))
        return ssl_fail(err, SSL_EINVAL, "--temperature must be > 0 (got %g)", cfg->temperature);
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1 || cfg->pred_hidden < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden, --proj-dim and --pred-hidden must be >= 1");
    if (ssl_method_check_momentum(cfg, 0.99f, 1.0f, err)) return SSL_EINVAL;
    if (cfg->freeze_patch_embed > 1)
        return ssl_fail(err, SSL_EINVAL, "--freeze-patch-embed must be 0 or 1 (got %d)",
                        cfg->freeze_patch_embed);
    return ssl_method_check_pair_scale(cfg, 0.08f, err); /* the paper's crop area [0.08, 1] */
}

static int mocov3_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    /* main_moco.py: BYOL's asymmetric pair (blur 1.0 / 0.1, solarize 0 / 0.2,
     * jitter 0.4/0.4/0.2/0.1). Crop area [0.08, 1]: --crop-min's default,
     * which the ViT recipes keep (the ResNet-50 ones pass 0.2). */
    return ssl_method_views_byol(cfg, c, h, w, augs);
}

/* builder.py _build_mlp(n_layers, in, hidden, out, last_bn) under prefix. */
static int mocov3_mlp(ssl_mlp *h, ssl_registry *r, const char *prefix, int n_layers, int in, int hidden,
                      int out, int last_bn, ssl_rng *rng)
{
    ssl_mlp_spec spec = {.n_layers = n_layers, .hidden_bn = 1, .last_bn = last_bn ? 2 : 0,
                         .no_bias_before_bn = 1, .no_last_bias = 1};
    spec.dims[0] = in;
    for (int i = 1; i < n_layers; i++) spec.dims[i] = hidden;
    spec.dims[n_layers] = out;
    return ssl_mlp_init_spec(h, r, prefix, &spec, rng);
}

/* torchvision's zero_init_residual: each block's last BN gamma 0, so every
 * residual branch starts as the identity. */
static void resnet_zero_init_residual(ssl_resnet *net)
{
    for (int b = 0; b < net->n_blocks; b++) {
        ssl_bn_layer *bn = &net->blocks[b].bn[net->blocks[b].n_conv - 1];
        memset(bn->weight.data, 0, sizeof(float) * (size_t)bn->C);
    }
}

/* nn.init.xavier_uniform_ of an (out, in) weight, n = rows x in values. */
static void xavier(ssl_tensor *w, long n, int fan_out, int fan_in, ssl_rng *rng)
{
    ssl_init_uniform(w->data, n, sqrtf(6.0f / (float)(fan_in + fan_out)), rng);
}

static void zero(ssl_tensor *b)
{
    if (b->data) memset(b->data, 0, sizeof(float) * (size_t)ssl_tensor_numel(b));
}

/* vits.py VisionTransformerMoCo.__init__'s weight init. */
static void vit_moco_init(ssl_vit *v, ssl_rng *rng)
{
    const int D = v->feat_dim, cpp = v->cfg.in_chans * v->cfg.patch * v->cfg.patch;
    for (int i = 0; i < v->cfg.depth; i++) {
        ssl_vit_block *b = &v->blocks[i];
        xavier(&b->qkv_w, 3L * D * D, D, D, rng); /* "treat the weights of Q, K, V separately" */
        xavier(&b->proj_w, (long)D * D, D, D, rng);
        xavier(&b->fc1_w, (long)b->hidden * D, b->hidden, D, rng);
        xavier(&b->fc2_w, (long)D * b->hidden, D, b->hidden, rng);
        zero(&b->qkv_b);
        zero(&b->proj_b);
        zero(&b->fc1_b);
        zero(&b->fc2_b);
    }
    if (v->cls_token.data)
        for (int i = 0; i < D; i++) v->cls_token.data[i] = 1e-6f * ssl_rng_normal(rng);
    xavier(&v->patch_w, (long)D * cpp, D, cpp, rng);
    zero(&v->patch_b);
}

/* The patch projection takes no weight decay either: frozen means untouched. */
static void mark_frozen(ssl_registry *r, const ssl_tensor *t)
{
    for (int i = 0; i < r->n_params; i++)
        if (r->params[i].data == t->data) r->params[i].no_decay = 1;
}

static int mocov3_init(ssl_method *m, ssl_rng *rng, char *err)
{
    mocov3_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "mocov3: out of memory");
    m->state_ptr = s;
    ssl_registry_init(&s->mom_reg);
    const ssl_method_config *c = &m->cfg;
    const int vit = m->encoder.cfg.kind == SSL_ENC_VIT, F = m->encoder.feat_dim;
    if (vit) {
        vit_moco_init(&m->encoder.vit, rng);
        s->freeze = c->freeze_patch_embed == 1;
        if (s->freeze) {
            mark_frozen(m->encoder.reg, &m->encoder.vit.patch_w);
            mark_frozen(m->encoder.reg, &m->encoder.vit.patch_b);
        }
    } else {
        resnet_zero_init_residual(&m->encoder.resnet);
    }
    const int proj_layers = vit ? 3 : 2;
    if (mocov3_mlp(&s->projector, &m->heads, "projector", proj_layers, F, c->proj_hidden, c->proj_dim, 1,
                   rng) ||
        mocov3_mlp(&s->predictor, &m->heads, "predictor", 2, c->proj_dim, c->pred_hidden, c->proj_dim, vit,
                   rng))
        return ssl_fail(err, SSL_ENOMEM, "mocov3: out of memory for the heads");
    int rc = ssl_encoder_clone(&s->mom_enc, &m->encoder, err);
    if (rc) return rc;
    s->has_mom_enc = 1;
    /* The draws are overwritten by the copy: a private RNG. */
    ssl_rng mrng;
    ssl_rng_seed(&mrng, 0);
    if (mocov3_mlp(&s->mom_projector, &s->mom_reg, "projector", proj_layers, F, c->proj_hidden, c->proj_dim,
                   1, &mrng) ||
        s->mom_reg.failed)
        return ssl_fail(err, SSL_ENOMEM, "mocov3: out of memory for the momentum projector");
    ssl_registry_copy_params(&s->mom_reg, &m->heads);
    rc = ssl_method_add_state(m, "teacher.", s->mom_enc.reg, err);
    if (!rc) rc = ssl_method_add_state(m, "teacher.", &s->mom_reg, err);
    return rc;
}

/* ctr(q, k): q (N, D) with gradient, k (N, D) keys without -> (1). */
static ssl_tensor *ctr_loss(ssl_graph *g, ssl_tensor *q, ssl_tensor *k, const int32_t *labels, float T)
{
    ssl_tensor *logits = ssl_op_matmul(g, ssl_op_l2normalize(g, q), ssl_op_l2normalize(g, k), 1);
    return ssl_op_scale(g, ssl_op_softmax_ce(g, ssl_op_scale(g, logits, 1.0f / T), labels), 2.0f * T);
}

static ssl_tensor *mocov3_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    mocov3_state *s = m->state_ptr;
    const int N = views[0]->shape[0];
    if (views[1]->shape[0] != N) {
        ssl_ctx_fail(g->ctx, SSL_EINVAL, "mocov3: views of %d and %d images", N, views[1]->shape[0]);
        return NULL;
    }
    ssl_tensor *q[2], *k[2];
    for (int v = 0; v < 2; v++)
        q[v] = ssl_mlp_forward(g, &s->predictor,
                               ssl_mlp_forward(g, &s->projector, ssl_encoder_forward(g, &m->encoder, views[v])));
    int r = ssl_graph_no_grad(g);
    for (int v = 0; v < 2; v++)
        k[v] = ssl_mlp_forward(g, &s->mom_projector, ssl_encoder_forward(g, &s->mom_enc, views[v]));
    g->record = r;
    int32_t *labels = ssl_arena_alloc(&g->arena, sizeof(int32_t) * (size_t)N);
    if (!labels) {
        ssl_ctx_fail(g->ctx, SSL_ENOMEM, "mocov3: out of memory for the labels");
        return NULL;
    }
    for (int i = 0; i < N; i++) labels[i] = i; /* one process: rank 0's arange(N) */
    const float T = m->cfg.temperature;
    /* not recorded, so no gradient reaches the keys; detach says so */
    ssl_tensor *l12 = ctr_loss(g, q[0], ssl_op_detach(g, k[1]), labels, T);
    ssl_tensor *l21 = ctr_loss(g, q[1], ssl_op_detach(g, k[0]), labels, T);
    return ssl_op_add(g, l12, l21);
}

static void mocov3_after_backward(ssl_method *m)
{
    mocov3_state *s = m->state_ptr;
    if (!s->freeze) return;
    ssl_vit *v = &m->encoder.vit;
    memset(v->patch_w.grad, 0, sizeof(float) * (size_t)ssl_tensor_numel(&v->patch_w));
    memset(v->patch_b.grad, 0, sizeof(float) * (size_t)ssl_tensor_numel(&v->patch_b));
}

/* The frozen random patch projection: requires_grad False in the paper's
 * code, so no optimizer state either. */
static int mocov3_frozen(const ssl_method *m, const ssl_param *p)
{
    const mocov3_state *s = m->state_ptr;
    const ssl_vit *v = &m->encoder.vit;
    return s->freeze && (p->data == v->patch_w.data || p->data == v->patch_b.data);
}

static void mocov3_after_step(ssl_method *m)
{
    mocov3_state *s = m->state_ptr;
    /* the update step m->step + 1's forward starts with (see the top) */
    float mom = ssl_momentum_cosine_to(m->step + 1, m->total_steps, m->cfg.base_momentum, m->cfg.final_momentum);
    ssl_registry_ema(s->mom_enc.reg, m->encoder.reg, mom);
    ssl_registry_ema(&s->mom_reg, &m->heads, mom); /* the projector: first in m->heads */
}

static void mocov3_free(ssl_method *m)
{
    mocov3_state *s = m->state_ptr;
    if (!s) return;
    if (s->has_mom_enc) ssl_encoder_free(&s->mom_enc);
    ssl_registry_free(&s->mom_reg);
    ssl_free(s);
}

const ssl_method_ops ssl_method_mocov3 = {
    .name = "mocov3",
    .summary = "MoCo v3: predicted queries contrast the momentum encoder's keys of the other view in "
               "the batch (no queue); ResNet or ViT",
    .defaults = "temperature 0.2, projector 2048-128 (ResNet 2 layers, ViT 3; paper 4096-256), predictor "
                "2048-128, momentum 0.99 -> 1 (cosine), frozen ViT patch projection, BYOL's asymmetric "
                "views; the ViT recipe: AdamW lr 1.5e-4 x batch/256, wd 0.1, 0.5 warm-up epochs (the "
                "paper's ResNet-50: --optimizer lars --lr 0.3 --weight-decay 1.5e-6 --temperature 1)",
    /* CONFIG.md's ViT commands: AdamW (PyTorch's betas) lr 1.5e-4 per 256,
     * wd 0.1, 40 warm-up epochs of 300 (0.5 for our short runs). One recipe
     * per method: the ViT one, as MoCo v3 is the ViT study. The official
     * AdamW decays biases and norms too; ours spares them (no_decay). */
    .optim = {"adamw", 1.5e-4f, "linear", 0.1f, 0.9f, 0.5f},
    .validate = mocov3_validate,
    .views = mocov3_views,
    .init = mocov3_init,
    .loss = mocov3_loss,
    .after_backward = mocov3_after_backward,
    .frozen = mocov3_frozen,
    .after_step = mocov3_after_step,
    .free = mocov3_free,
};
