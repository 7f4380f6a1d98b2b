/* MoCo v2 (He et al. 2020; Chen et al. 2020, "Improved Baselines with
 * Momentum Contrastive Learning"), as facebookresearch/moco's builder.py:
 * a query encoder + MLP head (Linear-ReLU-Linear, no BN) and a key encoder
 * + head that follow it by a constant EMA; q from view 0, k from view 1,
 * both L2-normalized; InfoNCE over [q.k, q.queue^T] / T with a queue of K
 * earlier keys as negatives; then the batch's keys replace the oldest ones.
 *
 * Shuffle-BN. The paper runs the key encoder on a batch shuffled across 8
 * GPUs so that a query and its key never share BN statistics (else the
 * model "cheats" through them). In one process the batch is split into G
 * BN groups instead: the query encoder runs on G contiguous sub-batches
 * (each GPU's local batch), the key encoder on G sub-batches of the key
 * batch permuted by perm (x_s[j] = x[perm[j]], un-permuted after:
 * k[perm[j]] = k_s[j]), each sub-batch a separate forward pass with its own
 * BN statistics, as on separate GPUs. perm is a Fisher-Yates shuffle
 * (for i = B-1..1: j = ssl_rng_below(i + 1); swap perm[i], perm[j]) drawn
 * from ssl_rng_derive(MOCO_SHUFFLE_SEED, m->step, 0): a function of the
 * step alone, which tests/torch/gen_method_moco.py reproduces in Python.
 *
 * Momentum update. The official forward updates the key encoder first
 * thing, with the current query weights. Doing it in after_step (with the
 * weights the optimizer just produced) is the same sequence of updates: the
 * step-0 update is the identity (the key encoder starts as a copy), and
 * every other one moves to the end of the step before. The key encoder's BN
 * running statistics are not averaged (parameters only, as the official
 * zip over parameters()); they follow its own forward passes. */
#include "selfsup/method.h"
#include "selfsup/optim.h"

#include <math.h>
#include <string.h>

/* "moco": the permutation stream's seed, shared with the golden generator. */
#define MOCO_SHUFFLE_SEED 0x6D6F636Full
/* Most BN groups the automatic choice uses: the paper's 8 GPUs. */
#define MOCO_MAX_AUTO_GROUPS 8

typedef struct moco_state {
    ssl_mlp projector;        /* query head, in m->heads */
    ssl_encoder key_enc;       /* momentum encoder, saved as "teacher." */
    ssl_registry key_reg;     /* key head, same names and order as m->heads */
    ssl_mlp key_projector;
    float *queue;             /* (K, D) keys, row per key, in m->extra */
    int64_t queue_ptr;        /* next row to overwrite */
    const float *keys;        /* (B, D) this step's keys (graph arena), for after_step */
    int n_keys;
} moco_state;

/* BN groups for a batch of B: bn_groups when set, else (0, automatic) the
 * most groups up to the paper's 8 that keep its 32 images per group, and at
 * least 2 groups of >= 8 images when B allows, so that shuffling happens.
 * Why automatic: more groups hide a key's statistics better from its query
 * (a key group shares 1/G of its images with the query's group), fewer give
 * steadier BN statistics; the paper's 256 images over 8 GPUs is the default
 * batch 256 here exactly (8 x 32), and a fixed G would either break small
 * batches (groups of 1-2 images) or under-shuffle large ones. */
static int moco_groups(int bn_groups, int B)
{
    if (bn_groups > 0) return bn_groups;
    int g = MOCO_MAX_AUTO_GROUPS;
    while (g > 2 && (B % g || B / g < 32)) g /= 2;
    if (g == 2 && (B % 2 || B / 2 < 8)) g = 1;
    return g;
}

static int moco_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->temperature == SSL_UNSET) cfg->temperature = 0.2f; /* v2 (v1: 0.07) */
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 2048;
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 128;
    if (cfg->queue_size == SSL_UNSET) cfg->queue_size = 65536;
    if (cfg->bn_groups == SSL_UNSET) cfg->bn_groups = 0;
    if (!(cfg->temperature > 0))
        return ssl_fail(err, SSL_EINVAL, "--temperature must be > 0 (got %g)", cfg->temperature);
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden and --proj-dim must be >= 1");
    /* The paper's m = 0.999 is constant; --final-momentum makes it a cosine
     * ramp (solo-learn's MoCo v2+: 0.99 -> 0.999). */
    if (ssl_method_check_momentum(cfg, 0.999f, -1.0f, err)) return SSL_EINVAL;
    if (cfg->queue_size < 1)
        return ssl_fail(err, SSL_EINVAL, "--queue-size must be >= 1 for moco (got %d)", cfg->queue_size);
    return ssl_method_check_pair_scale(cfg, 0.2f, err); /* the paper's crop area [0.2, 1] */
}

static int moco_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    /* MoCo v2's augmentation (main_moco.py --aug-plus): SimCLR's, with crop
     * area [0.2, 1], jitter 0.4/0.4/0.4/0.1 p 0.8, gray 0.2, blur p 0.5
     * (off at <= 32 px, see ssl_aug_simclr); the same for both views. */
    ssl_aug_simclr(&augs[0], c, h, w);
    augs[1] = augs[0];
    return ssl_method_views_pair_scale(cfg, augs);
}

static int moco_check_batch(const ssl_method *m, int batch, char *err)
{
    int K = m->cfg.queue_size, G = moco_groups(m->cfg.bn_groups, batch);
    /* The official code asserts it: each step's keys fill whole queue slots. */
    if (K % batch)
        return ssl_fail(err, SSL_EINVAL, "moco: --queue-size %d must be a multiple of the batch size %d", K,
                        batch);
    if (batch % G || batch / G < 2)
        return ssl_fail(err, SSL_EINVAL,
                        "moco: --bn-groups %d must divide the batch size %d into groups of >= 2 images", G,
                        batch);
    return SSL_OK;
}

static int moco_init(ssl_method *m, ssl_rng *rng, char *err)
{
    moco_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "moco: out of memory");
    m->state_ptr = s;
    ssl_registry_init(&s->key_reg);
    int F = m->encoder.feat_dim, H = m->cfg.proj_hidden, D = m->cfg.proj_dim, K = m->cfg.queue_size;
    if (ssl_mlp_init(&s->projector, &m->heads, "projector", F, H, D, 0, rng))
        return ssl_fail(err, SSL_ENOMEM, "moco: out of memory for the projector");
    int rc = ssl_encoder_clone(&s->key_enc, &m->encoder, err);
    if (rc) return rc;
    /* The key head's draws are overwritten by the copy: a private RNG. */
    ssl_rng krng;
    ssl_rng_seed(&krng, 0);
    if (ssl_mlp_init(&s->key_projector, &s->key_reg, "projector", F, H, D, 0, &krng))
        return ssl_fail(err, SSL_ENOMEM, "moco: out of memory for the key head");
    ssl_registry_copy_params(&s->key_reg, &m->heads);
    rc = ssl_method_add_state(m, "teacher.", s->key_enc.reg, err);
    if (!rc) rc = ssl_method_add_state(m, "teacher.", &s->key_reg, err);
    if (rc) return rc;
    /* The official queue: randn(dim, K) normalized per key (dim 0 there). */
    int qs[2] = {K, D};
    s->queue = ssl_registry_buffer(&m->extra, "queue", 2, qs, 0.0f);
    if (!s->queue || ssl_registry_counter(&m->extra, "queue_ptr", &s->queue_ptr))
        return ssl_fail(err, SSL_ENOMEM, "moco: out of memory for a queue of %d x %d", K, D);
    for (long i = 0; i < K; i++) {
        float *row = s->queue + i * D;
        double ss = 0;
        for (int j = 0; j < D; j++) {
            row[j] = ssl_rng_normal(rng);
            ss += (double)row[j] * row[j];
        }
        float inv = (float)(1.0 / fmax(sqrt(ss), 1e-12));
        for (int j = 0; j < D; j++) row[j] *= inv;
    }
    return SSL_OK;
}

/* Encoder features of x (B, C, H, W) in G groups of B / G images, each its
 * own forward pass (own BN statistics), concatenated back in order. */
static ssl_tensor *grouped_features(ssl_graph *g, ssl_encoder *enc, ssl_tensor *x, int G)
{
    if (G == 1) return ssl_encoder_forward(g, enc, x);
    int n = x->shape[0] / G;
    ssl_tensor *h = NULL;
    for (int i = 0; i < G; i++) {
        ssl_tensor *hi = ssl_encoder_forward(g, enc, ssl_op_slice_batch(g, x, i * n, n));
        h = i ? ssl_op_concat_batch(g, h, hi) : hi;
    }
    return h;
}

/* The keys of x (B, C, H, W) NCHW, no gradient: shuffled into G BN groups
 * by the step's permutation, encoded, normalized, un-shuffled -> (B, D). */
static ssl_tensor *moco_keys(ssl_method *m, ssl_graph *g, ssl_tensor *x, int G)
{
    moco_state *s = m->state_ptr;
    int B = x->shape[0];
    if (G == 1) /* one BN batch: a permutation would change nothing */
        return ssl_op_l2normalize(g, ssl_mlp_forward(g, &s->key_projector,
                                                      ssl_encoder_forward(g, &s->key_enc, x)));
    int *perm = ssl_arena_alloc(&g->arena, sizeof(int) * (size_t)B);
    ssl_tensor *xs = ssl_tensor_new(g, 4, x->shape, SSL_LAYOUT_NCHW);
    if (!perm || !xs) {
        ssl_ctx_fail(g->ctx, SSL_ENOMEM, "moco: out of memory for the shuffled keys");
        return NULL;
    }
    ssl_rng r;
    ssl_rng_derive(&r, MOCO_SHUFFLE_SEED, (uint64_t)m->step, 0);
    for (int i = 0; i < B; i++) perm[i] = i;
    for (int i = B - 1; i > 0; i--) {
        int j = (int)ssl_rng_below(&r, (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    size_t img = (size_t)x->shape[1] * x->shape[2] * x->shape[3];
    for (int j = 0; j < B; j++) memcpy(xs->data + j * img, x->data + perm[j] * img, sizeof(float) * img);
    ssl_tensor *ks = ssl_op_l2normalize(
        g, ssl_mlp_forward(g, &s->key_projector, grouped_features(g, &s->key_enc, xs, G)));
    if (!ks) return NULL;
    int D = ks->shape[1];
    ssl_tensor *k = ssl_tensor_new(g, 2, ks->shape, SSL_LAYOUT_NCHW);
    if (!k) {
        ssl_ctx_fail(g->ctx, SSL_ENOMEM, "moco: out of memory for the keys");
        return NULL;
    }
    for (int j = 0; j < B; j++)
        memcpy(k->data + (size_t)perm[j] * D, ks->data + (size_t)j * D, sizeof(float) * D);
    return k;
}

static ssl_tensor *moco_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    moco_state *s = m->state_ptr;
    int B = views[0]->shape[0], G = moco_groups(m->cfg.bn_groups, B);
    if (B % G || B / G < 2 || views[1]->shape[0] != B) {
        ssl_ctx_fail(g->ctx, SSL_EINVAL, "moco: batch %d does not split into %d BN groups", B, G);
        return NULL;
    }
    /* The head has no BN: one pass over the concatenated features is the
     * same as one per group. */
    ssl_tensor *q = ssl_op_l2normalize(
        g, ssl_mlp_forward(g, &s->projector, grouped_features(g, &m->encoder, views[0], G)));
    int r = ssl_graph_no_grad(g);
    ssl_tensor *k = moco_keys(m, g, views[1], G);
    g->record = r;
    if (!q || !k) return NULL;
    s->keys = k->data;
    s->n_keys = B;
    /* The loss reads the queue again in backward: it changes in after_step. */
    return ssl_op_infonce_queue(g, q, k, s->queue, m->cfg.queue_size, m->cfg.temperature);
}

static void moco_after_step(ssl_method *m)
{
    moco_state *s = m->state_ptr;
    float mom = ssl_momentum_cosine_to(m->step, m->total_steps, m->cfg.base_momentum, m->cfg.final_momentum);
    ssl_registry_ema(s->key_enc.reg, m->encoder.reg, mom);
    ssl_registry_ema(&s->key_reg, &m->heads, mom);
    if (!s->keys) return;
    /* Ring buffer: the keys overwrite the oldest ones from queue_ptr. Rows
     * wrap modulo K, which only matters when a resumed run changed the
     * batch (check_batch makes K a multiple of it). */
    int64_t K = m->cfg.queue_size, D = m->cfg.proj_dim;
    int64_t p = s->queue_ptr % K;
    if (p < 0) p += K;
    for (int i = 0; i < s->n_keys; i++, p = (p + 1) % K)
        memcpy(s->queue + p * D, s->keys + (int64_t)i * D, sizeof(float) * (size_t)D);
    s->queue_ptr = p;
    s->keys = NULL;
}

static void moco_free(ssl_method *m)
{
    moco_state *s = m->state_ptr;
    if (!s) return;
    ssl_encoder_free(&s->key_enc);
    ssl_registry_free(&s->key_reg);
    ssl_free(s);
}

const ssl_method_ops ssl_method_moco = {
    .name = "moco",
    .summary = "MoCo v2: momentum key encoder, queue of negative keys, InfoNCE; single-process shuffle-BN",
    .defaults = "temperature 0.2, projector 2048-128 (no BN), key EMA 0.999 (constant; a cosine to "
                "--final-momentum when that is set), queue 65536, bn-groups 0 = auto (up to 8 "
                "shuffle-BN groups of >= 32 images, >= 2 groups when the batch allows); SGD lr "
                "0.03 x batch/256, wd 1e-4, momentum 0.9, cosine, no warm-up",
    .optim = {"sgd", 0.03f, "linear", 1e-4f, 0.9f, 0.0f},
    /* solo-learn scripts/pretrain/cifar/mocov2plus.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"sgd", 0.3f, "linear", 1e-4f, 0.9f, 0.5f},
    .cifar_fields = "temperature=0.2 proj-hidden=2048 proj-dim=256 queue-size=32768 base-momentum=0.99 final-momentum=0.999",
    .validate = moco_validate,
    .views = moco_views,
    .check_batch = moco_check_batch,
    .init = moco_init,
    .loss = moco_loss,
    .after_step = moco_after_step,
    .free = moco_free,
};
