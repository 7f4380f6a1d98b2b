/* SwAV (Caron et al. 2020, "Unsupervised Learning of Visual Features by
 * Contrasting Cluster Assignments"), as facebookresearch/swav main_swav.py
 * trains it: multi-crop views through encoder and projector, embeddings z
 * L2-normalized, scores z . C^T against L2-normalized prototypes C; the codes
 * q of each global crop come from Sinkhorn-Knopp on its (detached) scores, and
 * every other view predicts them ("swapped prediction"):
 *   loss = 1/n_g sum_i 1/(n-1) sum_{v != i} mean_b -sum_k q_i log softmax(s_v / T)
 * Prototypes are frozen (zero gradient) for the first freeze_prototypes_epochs.
 * An optional queue of past global-crop embeddings joins the Sinkhorn batch
 * once it is full (main_swav.py's "use_the_queue"); main_swav.py creates it
 * at epoch_queue_starts (15), here it fills from the first step. */
#include "selfsup/method.h"
#include "selfsup/ops.h"

#include <math.h>
#include <string.h>

typedef struct swav_state {
    ssl_mlp projector;
    ssl_tensor prototypes; /* (K, D) "prototypes.weight", a bias-free linear layer */
    float *queue;          /* (n_global, queue_size, D) in m->extra, newest first; NULL: none */
    const float *z;        /* this step's embeddings (n_views * B, D), graph arena, for after_step */
    int batch;             /* B of this step */
} swav_state;


static int swav_validate(ssl_method_config *c, char *err)
{
    /* main_swav.py defaults and the paper's ImageNet multi-crop (2x224 at
     * scale 0.14-1 + 6x96 at 0.05-0.14; 96/224 = 3/7 of the side, which
     * local_size SSL_UNSET means). */
    if (c->temperature == SSL_UNSET) c->temperature = 0.1f;
    if (c->proj_hidden == SSL_UNSET) c->proj_hidden = 2048;
    if (c->proj_dim == SSL_UNSET) c->proj_dim = 128;
    if (c->prototypes == SSL_UNSET) c->prototypes = 3000;
    if (c->sinkhorn_eps == SSL_UNSET) c->sinkhorn_eps = 0.05f;
    if (c->sinkhorn_iters == SSL_UNSET) c->sinkhorn_iters = 3;
    /* freeze_prototypes_niters 313 = one epoch at batch 4096 (5005 at 256) */
    if (c->freeze_prototypes_epochs == SSL_UNSET) c->freeze_prototypes_epochs = 1.0f;
    if (c->queue_size == SSL_UNSET) c->queue_size = 0;
    if (c->global_crops == SSL_UNSET) c->global_crops = 2;
    if (c->local_crops == SSL_UNSET) c->local_crops = 6;
    if (c->global_scale_min == SSL_UNSET) c->global_scale_min = 0.14f;
    if (c->local_scale_min == SSL_UNSET) c->local_scale_min = 0.05f;
    if (c->local_scale_max == SSL_UNSET) c->local_scale_max = 0.14f;
    if (!(c->temperature > 0))
        return ssl_fail(err, SSL_EINVAL, "--temperature must be > 0 (got %g)", c->temperature);
    if (!(c->sinkhorn_eps > 0))
        return ssl_fail(err, SSL_EINVAL, "--sinkhorn-eps must be > 0 (got %g)", c->sinkhorn_eps);
    if (c->sinkhorn_iters < 1)
        return ssl_fail(err, SSL_EINVAL, "--sinkhorn-iters must be >= 1 (got %d)", c->sinkhorn_iters);
    if (c->proj_hidden < 1 || c->proj_dim < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden and --proj-dim must be >= 1");
    if (c->prototypes < 1)
        return ssl_fail(err, SSL_EINVAL, "--prototypes must be >= 1 (got %d)", c->prototypes);
    return ssl_method_check_multicrop(c, "swav", err);
}

static int swav_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    int n = ssl_method_views_multicrop(cfg, c, h, w, augs);
    /* main_swav.py's get_color_distortion(s=1): jitter 0.8/0.8/0.8/0.2 with
     * p 0.8, grayscale 0.2 (solo-learn's CIFAR SwAV uses the same); blur p 0.5
     * as set by the helper, off at <= 32 px. */
    for (int v = 0; v < n && v < SSL_MAX_VIEWS; v++) {
        augs[v].brightness = augs[v].contrast = augs[v].saturation = 0.8f;
        augs[v].hue = 0.2f;
    }
    return n;
}

static int swav_check_batch(const ssl_method *m, int batch, char *err)
{
    /* main_swav.py trims the queue to a multiple of the global batch; here
     * the user chooses it, and the shift-by-B update needs the multiple. */
    if (m->cfg.queue_size > 0 && m->cfg.queue_size % batch)
        return ssl_fail(err, SSL_EINVAL, "--queue-size (%d) must be a multiple of the batch size (%d)",
                        m->cfg.queue_size, batch);
    return SSL_OK;
}

static int swav_init(ssl_method *m, ssl_rng *rng, char *err)
{
    const ssl_method_config *c = &m->cfg;
    swav_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "swav: out of memory");
    m->state_ptr = s;
    /* projection_head: Linear-BN-ReLU-Linear, biases everywhere */
    if (ssl_mlp_init(&s->projector, &m->heads, "projector", m->encoder.feat_dim, c->proj_hidden,
                     c->proj_dim, 1, rng))
        return ssl_fail(err, SSL_ENOMEM, "swav: out of memory for the projector");
    int ps[2] = {c->prototypes, c->proj_dim};
    if (ssl_registry_param(&m->heads, "prototypes.weight", 2, ps, 0, &s->prototypes))
        return ssl_fail(err, SSL_ENOMEM, "swav: out of memory for the prototypes");
    /* nn.Linear's default init; rows are normalized before every step */
    ssl_init_uniform(s->prototypes.data, (long)ps[0] * ps[1], 1.0f / sqrtf((float)c->proj_dim), rng);
    if (c->queue_size > 0) {
        int qs[3] = {c->global_crops, c->queue_size, c->proj_dim};
        s->queue = ssl_registry_buffer(&m->extra, "queue", 3, qs, 0.0f);
        if (!s->queue) return ssl_fail(err, SSL_ENOMEM, "swav: out of memory for the queue");
    }
    return SSL_OK;
}

/* w (K, D): each row to unit L2 norm, in place (F.normalize, eps 1e-12). */
static void normalize_rows(float *w, int K, int D)
{
    for (int k = 0; k < K; k++) {
        float *r = w + (long)k * D;
        double ss = 0;
        for (int j = 0; j < D; j++) ss += (double)r[j] * r[j];
        double nr = fmax(sqrt(ss), 1e-12);
        for (int j = 0; j < D; j++) r[j] = (float)(r[j] / nr);
    }
}

/* main_swav.py's distributed_sinkhorn on one process, in double: the codes
 * q (B, K) of the batch scores (B, K), with the scores of the queue
 * (Q, D) . protos^T prepended when queue is not NULL. The global maximum is
 * subtracted before exp (the first normalization divides it out again), so
 * any eps is safe. */
static int sinkhorn(ssl_ctx *ctx, const ssl_method_config *c, const float *scores, int B,
                    const float *queue, int Q, const float *protos, float *q)
{
    int K = c->prototypes, D = c->proj_dim, R = B + (queue ? Q : 0);
    size_t nq = queue ? (size_t)Q * K : 0;
    double *e = ssl_ctx_scratch(ctx, sizeof(double) * (size_t)R * K + sizeof(float) * nq);
    if (!e) return SSL_ENOMEM;
    double *eb = e + nq; /* the batch's rows come after the queue's */
    if (queue) {
        float *qs = (float *)(e + (size_t)R * K);
        ssl_sgemm(0, 1, Q, K, D, 1.0f, queue, D, protos, D, 0.0f, qs, K);
        for (size_t i = 0; i < nq; i++) e[i] = qs[i];
    }
    for (long i = 0; i < (long)B * K; i++) eb[i] = scores[i];
    long n = (long)R * K;
    double mx = -INFINITY, tot = 0;
    for (long i = 0; i < n; i++) mx = fmax(mx, e[i]);
    for (long i = 0; i < n; i++) tot += e[i] = exp((e[i] - mx) / c->sinkhorn_eps);
    for (long i = 0; i < n; i++) e[i] /= tot;
    /* Sums that underflow to 0 (a degenerate eps) are left alone rather than
     * turned into NaN. */
    for (int it = 0; it < c->sinkhorn_iters; it++) {
        /* each prototype's total weight 1/K */
        for (int k = 0; k < K; k++) {
            double s = 0;
            for (int r = 0; r < R; r++) s += e[(long)r * K + k];
            if (s > 0)
                for (int r = 0; r < R; r++) e[(long)r * K + k] /= s * K;
        }
        /* each sample's total weight 1/R */
        for (int r = 0; r < R; r++) {
            double *row = e + (long)r * K, s = 0;
            for (int k = 0; k < K; k++) s += row[k];
            if (s > 0)
                for (int k = 0; k < K; k++) row[k] /= s * R;
        }
    }
    for (long i = 0; i < (long)B * K; i++) q[i] = (float)(eb[i] * R);
    return SSL_OK;
}

static ssl_tensor *swav_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    swav_state *s = m->state_ptr;
    const ssl_method_config *c = &m->cfg;
    const int ng = c->global_crops, n = ng + c->local_crops, B = views[0]->shape[0];
    const int K = c->prototypes, D = c->proj_dim, Q = c->queue_size;
    /* main_swav.py: w = normalize(w) under no_grad at the start of each iteration */
    normalize_rows(s->prototypes.data, K, D);
    ssl_tensor *h = ssl_method_encode_views(g, &m->encoder, views, n);
    /* the projector's BN sees all crops at once, as forward_head does */
    ssl_tensor *z = ssl_op_l2normalize(g, ssl_mlp_forward(g, &s->projector, h));
    ssl_tensor *scores = ssl_op_linear(g, z, &s->prototypes, NULL); /* (n * B, K) */
    if (!scores) return NULL;
    s->z = z->data;
    s->batch = B;
    /* The queue joins once full: its oldest row is no longer zero (an
     * embedding has unit norm), main_swav.py's test. */
    int use_queue = 0;
    if (s->queue)
        for (int j = 0; j < D; j++) use_queue |= s->queue[(long)(Q - 1) * D + j] != 0.0f;
    ssl_tensor *loss = NULL;
    for (int i = 0; i < ng; i++) {
        float *q = ssl_arena_alloc(&g->arena, sizeof(float) * (size_t)B * K);
        if (!q) {
            ssl_ctx_fail(g->ctx, SSL_ENOMEM, "swav: out of memory for the codes");
            return NULL;
        }
        if (sinkhorn(g->ctx, c, scores->data + (long)i * B * K, B,
                     use_queue ? s->queue + (long)i * Q * D : NULL, Q, s->prototypes.data, q))
            return NULL;
        ssl_tensor *sub = NULL;
        for (int v = 0; v < n; v++) {
            if (v == i) continue;
            ssl_tensor *ce = ssl_op_soft_ce(g, ssl_op_slice_batch(g, scores, v * B, B), q, c->temperature);
            sub = sub ? ssl_op_add(g, sub, ce) : ce;
            if (!sub) return NULL;
        }
        sub = ssl_op_scale(g, sub, 1.0f / (float)(n - 1));
        loss = loss ? ssl_op_add(g, loss, sub) : sub;
        if (!loss) return NULL;
    }
    return ssl_op_scale(g, loss, 1.0f / (float)ng);
}

/* The prototypes during the first freeze_prototypes_epochs (p NULL: any). */
static int swav_frozen(const ssl_method *m, const ssl_param *p)
{
    const swav_state *s = m->state_ptr;
    return (!p || p->data == s->prototypes.data) &&
           m->step < ssl_method_epochs_to_steps(m, m->cfg.freeze_prototypes_epochs);
}

static void swav_after_backward(ssl_method *m)
{
    swav_state *s = m->state_ptr;
    /* main_swav.py sets the prototypes' grad to None while iteration <
     * freeze_prototypes_niters: the gradient reads 0 here, and swav_frozen
     * has the optimizer skip them (no weight decay, no momentum). */
    if (swav_frozen(m, NULL))
        memset(s->prototypes.grad, 0, sizeof(float) * (size_t)ssl_tensor_numel(&s->prototypes));
}

static void swav_after_step(ssl_method *m)
{
    swav_state *s = m->state_ptr;
    if (!s->queue || !s->z) return;
    /* queue[i, B:] = queue[i, :-B]; queue[i, :B] = embedding of global crop i */
    const int Q = m->cfg.queue_size, D = m->cfg.proj_dim, B = s->batch;
    for (int i = 0; i < m->cfg.global_crops; i++) {
        float *qi = s->queue + (long)i * Q * D;
        memmove(qi + (long)B * D, qi, sizeof(float) * (size_t)(Q - B) * D);
        memcpy(qi, s->z + (long)i * B * D, sizeof(float) * (size_t)B * D);
    }
    s->z = NULL;
}

static void swav_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_swav = {
    .name = "swav",
    .summary = "SwAV: multi-crop, prototypes, Sinkhorn codes of the global crops, swapped prediction",
    .defaults = "temperature 0.1, projector 2048-128, 3000 prototypes, Sinkhorn eps 0.05 x 3, "
                "prototypes frozen 1 epoch, no queue; crops 2 global (scale 0.14-1) + 6 local "
                "(3/7 side, scale 0.05-0.14); LARS lr 0.6 x batch/256, wd 1e-6, 0.5 warm-up epochs",
    /* main_swav.py's batch-256 recipe: LARC(SGD momentum 0.9), base_lr 0.6,
     * wd 1e-6 (4.8 at batch 4096 in the paper); warm-up shortened to 0.5
     * epochs for our short runs. */
    .optim = {"lars", 0.6f, "linear", 1e-6f, 0.9f, 0.5f},
    /* solo-learn scripts/pretrain/cifar/swav.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"larc", 0.6f, "linear", 1e-6f, 0.9f, 0.5f},
    .cifar_fields = "temperature=0.1 proj-hidden=2048 proj-dim=128 prototypes=3000 freeze-prototypes-epochs=2",
    .validate = swav_validate,
    .views = swav_views,
    .check_batch = swav_check_batch,
    .init = swav_init,
    .loss = swav_loss,
    .after_backward = swav_after_backward,
    .frozen = swav_frozen,
    .after_step = swav_after_step,
    .free = swav_free,
};
