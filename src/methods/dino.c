/* DINO (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
 * Transformers"), as facebookresearch/dino main_dino.py trains it: a student
 * (encoder + DINO head) sees every crop, an EMA teacher sees the two global
 * crops without gradient; the teacher's output is centered and sharpened,
 *   q = softmax((t - center) / T_t),
 * and the student's softmax(s / T_s) of every other view predicts it:
 *   loss = mean over pairs (teacher crop i, student view v != i) of
 *          mean_b -sum_k q_ik log softmax(s_v / T_s)_k.
 * The head is Linear-GELU-Linear-GELU-Linear to a bottleneck, L2-normalize,
 * then a weight-normalized bias-free last layer with its gain fixed to 1
 * (norm_last_layer=True), frozen for the first freeze_last_layer_epochs. */
#include "selfsup/method.h"
#include "selfsup/optim.h"
#include "nn/graph_internal.h"
#include "ops/fastexp.h"

#include <math.h>
#include <string.h>

typedef struct dino_head {
    ssl_mlp mlp;     /* "head.mlp.0/2/4" */
    ssl_tensor last; /* (out_dim, bottleneck) "head.last_layer.weight_v" */
} dino_head;

typedef struct dino_state {
    dino_head student;           /* its parameters are m->heads */
    dino_head teacher;           /* parameters in teacher_head, same order */
    ssl_encoder teacher_enc;
    int has_teacher_enc;
    ssl_registry teacher_head;
    float *center;               /* (1, out_dim) in m->extra */
    const float *t_out;          /* this step's teacher output (2B, out_dim), graph arena */
    int t_rows;
} dino_state;


static int dino_validate(ssl_method_config *c, char *err)
{
    /* main_dino.py's defaults and its README's ResNet-50 command (global
     * crops at scale 0.14-1, local 0.05-0.14; 8 local crops; teacher
     * temperature 0.04 without warm-up, the argparse defaults that command
     * keeps). out_dim 65536 is sized for ImageNet: 4096 as solo-learn's CIFAR
     * DINO. local_size SSL_UNSET: 3/7 of the side (96/224). */
    if (c->temperature == SSL_UNSET) c->temperature = 0.1f;
    if (c->proj_hidden == SSL_UNSET) c->proj_hidden = 2048;
    if (c->bottleneck_dim == SSL_UNSET) c->bottleneck_dim = 256;
    if (c->out_dim == SSL_UNSET) c->out_dim = 4096;
    if (c->teacher_temp == SSL_UNSET) c->teacher_temp = 0.04f;
    if (c->warmup_teacher_temp == SSL_UNSET) c->warmup_teacher_temp = 0.04f;
    if (c->warmup_teacher_temp_epochs == SSL_UNSET) c->warmup_teacher_temp_epochs = 0;
    if (c->center_momentum == SSL_UNSET) c->center_momentum = 0.9f;
    if (c->freeze_last_layer_epochs == SSL_UNSET) c->freeze_last_layer_epochs = 1;
    if (c->global_crops == SSL_UNSET) c->global_crops = 2;
    if (c->local_crops == SSL_UNSET) c->local_crops = 8;
    if (c->global_scale_min == SSL_UNSET) c->global_scale_min = 0.14f;
    if (c->local_scale_min == SSL_UNSET) c->local_scale_min = 0.05f;
    if (c->local_scale_max == SSL_UNSET) c->local_scale_max = 0.14f;
    if (c->head_bn == SSL_UNSET) c->head_bn = 0;
    if (!(c->temperature > 0))
        return ssl_fail(err, SSL_EINVAL, "--temperature must be > 0 (got %g)", c->temperature);
    if (!(c->teacher_temp > 0) || !(c->warmup_teacher_temp > 0))
        return ssl_fail(err, SSL_EINVAL, "--teacher-temp and --warmup-teacher-temp must be > 0 (got %g, %g)",
                        c->teacher_temp, c->warmup_teacher_temp);
    /* main_dino.py's schedule is one value per epoch */
    if (c->warmup_teacher_temp_epochs != floorf(c->warmup_teacher_temp_epochs))
        return ssl_fail(err, SSL_EINVAL, "--warmup-teacher-temp-epochs must be a whole number (got %g)",
                        c->warmup_teacher_temp_epochs);
    if (c->head_bn > 1)
        return ssl_fail(err, SSL_EINVAL, "--head-bn must be 0 or 1 (got %d)", c->head_bn);
    if (c->proj_hidden < 1 || c->bottleneck_dim < 1 || c->out_dim < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden, --bottleneck-dim and --out-dim must be >= 1");
    if (ssl_method_check_momentum(c, 0.996f, 1.0f, err)) return SSL_EINVAL;
    if (c->center_momentum > 1)
        return ssl_fail(err, SSL_EINVAL, "--center-momentum must be in [0, 1] (got %g)", c->center_momentum);
    /* the teacher sees images[:2] and its output is chunked in two */
    if (c->global_crops != 2)
        return ssl_fail(err, SSL_EINVAL, "--global-crops must be 2 for dino (got %d)", c->global_crops);
    return ssl_method_check_multicrop(c, "dino", err);
}

static int dino_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    int n = ssl_method_views_multicrop(cfg, c, h, w, augs);
    /* DataAugmentationDINO: jitter 0.4/0.4/0.2/0.1 with p 0.8; blur p 1.0 on
     * the first global crop, 0.1 plus solarize 0.2 on the second, 0.5 on the
     * local crops; blur stays off at <= 32 px (it destroys tiny images). */
    for (int v = 0; v < n && v < SSL_MAX_VIEWS; v++) {
        augs[v].brightness = augs[v].contrast = 0.4f;
        augs[v].saturation = 0.2f;
        augs[v].hue = 0.1f;
        int side = augs[v].out_h < augs[v].out_w ? augs[v].out_h : augs[v].out_w;
        float blur = v == 0 ? 1.0f : v == 1 ? 0.1f : 0.5f;
        augs[v].blur_p = side <= 32 ? 0.0f : blur;
    }
    if (n >= 2) augs[1].solarize_p = 0.2f;
    return n;
}

/* timm's trunc_normal_(std, a=-2, b=2), DINOHead._init_weights. */
static void trunc_normal(float *w, long n, float std, ssl_rng *rng)
{
    for (long i = 0; i < n; i++) {
        float x;
        do x = std * ssl_rng_normal(rng);
        while (x < -2.0f || x > 2.0f);
        w[i] = x;
    }
}

/* DINOHead(in, out_dim, use_bn=head_bn, norm_last_layer=True) into r under
 * "head."; weight_g (fixed ones, torch's name) goes to gains. */
static int head_init(dino_head *h, ssl_registry *r, ssl_registry *gains, const ssl_method_config *c,
                     int in, ssl_rng *rng)
{
    ssl_mlp_spec spec = {.n_layers = 3, .dims = {in, c->proj_hidden, c->proj_hidden, c->bottleneck_dim},
                         .act = SSL_ACT_GELU, .hidden_bn = c->head_bn};
    if (ssl_mlp_init_spec(&h->mlp, r, "head.mlp", &spec, rng)) return SSL_ENOMEM;
    for (int i = 0; i < spec.n_layers; i++) {
        trunc_normal(h->mlp.w[i].data, ssl_tensor_numel(&h->mlp.w[i]), 0.02f, rng);
        memset(h->mlp.b[i].data, 0, sizeof(float) * (size_t)ssl_tensor_numel(&h->mlp.b[i]));
    }
    /* last_layer keeps nn.Linear's default init (created after apply()) */
    int ls[2] = {c->out_dim, c->bottleneck_dim};
    if (ssl_registry_param(r, "head.last_layer.weight_v", 2, ls, 0, &h->last)) return SSL_ENOMEM;
    ssl_init_uniform(h->last.data, (long)ls[0] * ls[1], 1.0f / sqrtf((float)c->bottleneck_dim), rng);
    int gs[2] = {c->out_dim, 1};
    if (!ssl_registry_buffer(gains, "head.last_layer.weight_g", 2, gs, 1.0f)) return SSL_ENOMEM;
    return SSL_OK;
}

/* x (N, in) -> (N, out_dim): mlp, L2-normalize, x . (v / |v|_row)^T */
static ssl_tensor *head_forward(ssl_graph *g, dino_head *h, ssl_tensor *x)
{
    ssl_tensor *z = ssl_op_l2normalize(g, ssl_mlp_forward(g, &h->mlp, x));
    return ssl_op_matmul(g, z, ssl_op_l2normalize(g, &h->last), 1);
}

static int dino_init(ssl_method *m, ssl_rng *rng, char *err)
{
    dino_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "dino: out of memory");
    m->state_ptr = s;
    ssl_registry_init(&s->teacher_head);
    int F = m->encoder.feat_dim, st;
    if (head_init(&s->student, &m->heads, &m->extra, &m->cfg, F, rng))
        return ssl_fail(err, SSL_ENOMEM, "dino: out of memory for the head");
    int cs[2] = {1, m->cfg.out_dim};
    s->center = ssl_registry_buffer(&m->extra, "center", 2, cs, 0.0f);
    if (!s->center) return ssl_fail(err, SSL_ENOMEM, "dino: out of memory for the center");
    /* teacher = student's weights (load_state_dict), encoder BN stats included;
     * its init draws come from a private RNG and are overwritten */
    if ((st = ssl_encoder_clone(&s->teacher_enc, &m->encoder, err))) return st;
    s->has_teacher_enc = 1;
    ssl_rng trng;
    ssl_rng_seed(&trng, 0);
    if (head_init(&s->teacher, &s->teacher_head, &s->teacher_head, &m->cfg, F, &trng) ||
        s->teacher_head.failed)
        return ssl_fail(err, SSL_ENOMEM, "dino: out of memory for the teacher head");
    ssl_registry_copy_params(&s->teacher_head, &m->heads);
    if ((st = ssl_method_add_state(m, "teacher.", s->teacher_enc.reg, err))) return st;
    return ssl_method_add_state(m, "teacher.", &s->teacher_head, err);
}

/* DINOLoss.teacher_temp_schedule[epoch]: linspace(warmup, final, E) over the
 * first E epochs, then final. */
static double teacher_temp(const ssl_method *m)
{
    const ssl_method_config *c = &m->cfg;
    int64_t E = (int64_t)c->warmup_teacher_temp_epochs;
    int64_t epoch = m->steps_per_epoch > 0 ? m->step / m->steps_per_epoch : 0;
    if (epoch >= E) return c->teacher_temp;
    if (E == 1) return c->warmup_teacher_temp;
    return c->warmup_teacher_temp +
           ((double)c->teacher_temp - c->warmup_teacher_temp) * (double)epoch / (double)(E - 1);
}

/* Centering and sharpening: q (rows, O) = softmax((t - center) / T) per row
 * of t (rows, O), center (O). Float with the vectorised exp, as PyTorch's
 * float32; rows split across threads (each row alone: any thread count
 * gives the same q). */
static void teacher_targets(ssl_graph *g, float *q, const float *t, const float *center, double T,
                            int rows, int O)
{
    const float inv_t = (float)(1.0 / T);
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if ((long)rows * O >= SSL_PAR_MIN)
    for (int i = 0; i < rows; i++) {
        const float *ti = t + (long)i * O;
        float *qi = q + (long)i * O;
        for (int k = 0; k < O; k++) qi[k] = ti[k] - center[k];
        double z = ssl_fast_exp_sum(qi, qi, ssl_fast_maxf(qi, O), inv_t, O);
        float r = (float)(1.0 / z);
        for (int k = 0; k < O; k++) qi[k] *= r;
    }
}

/* The targets of student view v: the sum of q_i (B, O) over the teacher's
 * crops i != v (ng of them, q (ng, B, O)), in sum (B, O) unless a single
 * q_i is the whole sum. */
static const float *view_targets(ssl_graph *g, float *sum, const float *q, int ng, int v, long BO)
{
    if (ng - (v < ng) == 1) return q + (v == 0 ? BO : 0);
    int first = v == 0 ? 1 : 0;
    const float *q0 = q + first * BO;
#pragma omp parallel for schedule(static) num_threads(ssl_graph_threads(g)) if (BO >= SSL_PAR_MIN)
    for (long j = 0; j < BO; j++) {
        float a = q0[j];
        for (int i = first + 1; i < ng; i++)
            if (i != v) a += q[i * BO + j];
        sum[j] = a;
    }
    return sum;
}

static ssl_tensor *dino_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    dino_state *s = m->state_ptr;
    const ssl_method_config *c = &m->cfg;
    const int ng = c->global_crops, n = ng + c->local_crops, B = views[0]->shape[0], O = c->out_dim;
    int r = ssl_graph_no_grad(g);
    ssl_tensor *tx = views[0];
    for (int v = 1; v < ng; v++) tx = ssl_op_concat_batch(g, tx, views[v]);
    ssl_tensor *t = head_forward(g, &s->teacher, ssl_encoder_forward(g, &s->teacher_enc, tx));
    g->record = r;
    ssl_tensor *st = head_forward(g, &s->student, ssl_method_encode_views(g, &m->encoder, views, n));
    if (!t || !st) return NULL;
    /* the teacher's targets q (ng, B, O), then per student view the sum of
     * those it is paired with (sum (B, O)) */
    const long BO = (long)B * O;
    float *q = ssl_arena_alloc(&g->arena, sizeof(float) * (size_t)(ng + 1) * BO);
    if (!q) {
        ssl_ctx_fail(g->ctx, SSL_ENOMEM, "dino: out of memory for the teacher targets");
        return NULL;
    }
    float *sum = q + ng * BO;
    teacher_targets(g, q, t->data, s->center, teacher_temp(m), ng * B, O);
    s->t_out = t->data;
    s->t_rows = ng * B;
    /* The pairs (teacher crop i, student view v != i) share v's soft_ce:
     * cross-entropy is linear in its targets, so sum_i CE(s_v, q_i) =
     * CE(s_v, sum_i q_i), and each student row's log-softmax is taken once.
     * Views v >= ng all pair with every crop: their sum is made once (a
     * soft_ce is done with its targets when it returns). */
    ssl_tensor *loss = NULL;
    const float *shared = NULL;
    int terms = 0;
    for (int v = 0; v < n; v++) {
        int pairs = ng - (v < ng); /* not the same view for teacher and student */
        if (pairs < 1) continue;
        const float *tv = v < ng ? view_targets(g, sum, q, ng, v, BO)
                          : shared ? shared : (shared = view_targets(g, sum, q, ng, v, BO));
        ssl_tensor *ce = ssl_op_soft_ce(g, ssl_op_slice_batch(g, st, v * B, B), tv, c->temperature);
        loss = loss ? ssl_op_add(g, loss, ce) : ce;
        if (!loss) return NULL;
        terms += pairs;
    }
    return ssl_op_scale(g, loss, 1.0f / (float)terms);
}

/* The last layer during the first freeze_last_layer_epochs (p NULL: any). */
static int dino_frozen(const ssl_method *m, const ssl_param *p)
{
    const dino_state *s = m->state_ptr;
    return (!p || p->data == s->student.last.data) &&
           m->step < ssl_method_epochs_to_steps(m, m->cfg.freeze_last_layer_epochs);
}

static void dino_after_backward(ssl_method *m)
{
    dino_state *s = m->state_ptr;
    /* cancel_gradients_last_layer: grad None while epoch < freeze_last_layer.
     * The gradient reads 0 here, and dino_frozen has the optimizer skip the
     * layer as torch.optim skips a grad of None (no decay, no Adam step). */
    if (dino_frozen(m, NULL))
        memset(s->student.last.grad, 0, sizeof(float) * (size_t)ssl_tensor_numel(&s->student.last));
}

#define CENTER_COLS 512 /* 4 KB of double sums */

static void dino_after_step(ssl_method *m)
{
    dino_state *s = m->state_ptr;
    const ssl_method_config *c = &m->cfg;
    /* main_dino.py: after the optimizer step of iteration it, the teacher
     * takes momentum_schedule[it] = cosine from base_momentum to 1. */
    float tau = ssl_momentum_cosine_to(m->step, m->total_steps, c->base_momentum, c->final_momentum);
    ssl_registry_ema(s->teacher_enc.reg, m->encoder.reg, tau);
    ssl_registry_ema(&s->teacher_head, &m->heads, tau);
    /* DINOLoss.update_center: EMA of the mean teacher output of this step */
    if (!s->t_out) return;
    /* column sums in row order, CENTER_COLS columns at a time so that the
     * rows are read along their length */
    const int O = c->out_dim, R = s->t_rows;
    double sum[CENTER_COLS];
    for (int k0 = 0; k0 < O; k0 += CENTER_COLS) {
        int nk = O - k0 < CENTER_COLS ? O - k0 : CENTER_COLS;
        memset(sum, 0, sizeof(double) * (size_t)nk);
        for (int i = 0; i < R; i++) {
            const float *row = s->t_out + (long)i * O + k0;
            for (int j = 0; j < nk; j++) sum[j] += row[j];
        }
        for (int j = 0; j < nk; j++)
            s->center[k0 + j] = (float)(s->center[k0 + j] * (double)c->center_momentum +
                                        sum[j] / R * (1.0 - (double)c->center_momentum));
    }
    s->t_out = NULL;
}

static void dino_free(ssl_method *m)
{
    dino_state *s = m->state_ptr;
    if (!s) return;
    if (s->has_teacher_enc) ssl_encoder_free(&s->teacher_enc);
    ssl_registry_free(&s->teacher_head);
    ssl_free(s);
}

const ssl_method_ops ssl_method_dino = {
    .name = "dino",
    .summary = "DINO: multi-crop self-distillation, EMA teacher on the global crops, centering and sharpening",
    .defaults = "student temperature 0.1, teacher 0.04 (no warm-up), center momentum 0.9, head "
                "2048-2048-256 -> 4096 (paper 65536: ImageNet), EMA 0.996 -> 1 cosine, last layer "
                "frozen 1 epoch; crops 2 global (scale 0.14-1) + 8 local (3/7 side, scale 0.05-0.14); "
                "ResNet: SGD lr 0.03 x batch/256, wd 1e-4; ViT: AdamW lr 5e-4 x batch/256, wd 0.04 -> "
                "0.4 cosine, per-parameter grad clip 3.0, drop path 0.1; both 0.5 warm-up epochs, "
                "cosine to min lr 1e-6",
    /* README's ResNet-50 command: SGD (momentum 0.9) lr 0.03 per 256, wd 1e-4
     * constant; 10 warm-up epochs there, 0.5 for our short runs; min_lr
     * 1e-6 (main_dino.py's default). Its gradient clipping at 3.0 is not
     * the default here (--clip-grad 3). */
    .optim = {"sgd", 0.03f, "linear", 1e-4f, 0.9f, 0.5f, 0.0f /* beta2 */, 0.0f /* wd end */,
              0.0f /* clip */, 1e-6f /* min lr */},
    /* solo-learn scripts/pretrain/cifar/dino.yaml (warm-up: 0.5 epochs here, 10 of its 1000) */
    .optim_cifar = {"larc", 0.3f, "linear", 1e-6f, 0.9f, 0.5f},
    .cifar_fields = "proj-hidden=2048 bottleneck-dim=256 out-dim=4096 base-momentum=0.9995 warmup-teacher-temp=0.04 teacher-temp=0.07 warmup-teacher-temp-epochs=50",
    /* main_dino.py's argparse defaults, which train its ViTs: AdamW lr 5e-4
     * per 256 images, weight decay on a cosine from 0.04 to 0.4 (biases and
     * norms none), clip_gradients at 3.0; its 10 warm-up epochs suit 100+
     * epoch runs, so 0.5 here as for the ResNet; the cosine ends at min_lr
     * 1e-6; the student's drop path rate 0.1 (the teacher has none). */
    .optim_vit = {"adamw", 5e-4f, "linear", 0.04f, 0.9f,
                  0.5f /* warm-up epochs */, 0.999f /* beta2 */, 0.4f /* wd end */,
                  3.0f /* clip */, 1e-6f /* min lr */, 0.1f /* drop path */},
    .validate = dino_validate,
    .views = dino_views,
    .init = dino_init,
    .loss = dino_loss,
    .after_backward = dino_after_backward,
    .frozen = dino_frozen,
    .after_step = dino_after_step,
    .free = dino_free,
};
