/* The list of methods, their shared hyperparameter table and create/free. */
#include "selfsup/method.h"

#include <stddef.h>
#include <string.h>

static const ssl_method_ops *const methods[] = {
    &ssl_method_simclr, &ssl_method_moco, &ssl_method_byol, &ssl_method_simsiam,
    &ssl_method_swav,   &ssl_method_dino, &ssl_method_barlow, &ssl_method_vicreg,
    &ssl_method_rotation, &ssl_method_jigsaw, &ssl_method_relloc,
    &ssl_method_dense, &ssl_method_colorization, &ssl_method_inpainting,
    &ssl_method_mae, &ssl_method_simmim, &ssl_method_beit, &ssl_method_mocov3, NULL};

const ssl_method_ops *const *ssl_method_list(void) { return methods; }

const ssl_method_ops *ssl_method_find(const char *name)
{
    for (int i = 0; methods[i]; i++)
        if (!strcmp(methods[i]->name, name)) return methods[i];
    return NULL;
}

#define F(name, field, help) {name, offsetof(ssl_method_config, field), 0, help}
#define I(name, field, help) {name, offsetof(ssl_method_config, field), 1, help}
const ssl_method_field ssl_method_fields[] = {
    F("temperature", temperature, "softmax temperature (DINO: the student's)"),
    I("proj-hidden", proj_hidden, "projector hidden width"),
    I("proj-dim", proj_dim, "projector output width"),
    I("pred-hidden", pred_hidden, "predictor hidden width (BYOL, SimSiam)"),
    F("base-momentum", base_momentum, "teacher / key encoder EMA momentum (at step 0 when cosine)"),
    F("final-momentum", final_momentum, "EMA momentum at the last step, cosine from base-momentum (MoCo: unset = constant)"),
    I("queue-size", queue_size, "MoCo negatives; SwAV feature queue (0: none)"),
    I("bn-groups", bn_groups, "MoCo: BN sub-batches for single-process shuffle-BN"),
    I("prototypes", prototypes, "SwAV prototypes"),
    F("sinkhorn-eps", sinkhorn_eps, "SwAV Sinkhorn-Knopp epsilon"),
    I("sinkhorn-iters", sinkhorn_iters, "SwAV Sinkhorn-Knopp iterations"),
    F("freeze-prototypes-epochs", freeze_prototypes_epochs, "SwAV: prototypes fixed this long"),
    I("out-dim", out_dim, "DINO head output dimension"),
    I("bottleneck-dim", bottleneck_dim, "DINO head bottleneck"),
    F("teacher-temp", teacher_temp, "DINO teacher temperature after warm-up"),
    F("warmup-teacher-temp", warmup_teacher_temp, "DINO teacher temperature at step 0"),
    F("warmup-teacher-temp-epochs", warmup_teacher_temp_epochs, "DINO teacher temperature ramp"),
    F("center-momentum", center_momentum, "DINO teacher center momentum"),
    F("freeze-last-layer-epochs", freeze_last_layer_epochs, "DINO: last layer fixed this long"),
    F("lambda", lambda, "Barlow Twins off-diagonal weight"),
    F("scale-loss", scale_loss, "Barlow Twins: loss multiplier (solo-learn's scale_loss; 1: the paper's)"),
    F("sim-coeff", sim_coeff, "VICReg invariance weight"),
    F("std-coeff", std_coeff, "VICReg variance weight"),
    F("cov-coeff", cov_coeff, "VICReg covariance weight"),
    I("global-crops", global_crops, "full-size views per image"),
    I("local-crops", local_crops, "small views per image (multi-crop)"),
    I("local-size", local_size, "side of a local crop in pixels"),
    F("global-scale-min", global_scale_min, "smallest area fraction of a global crop (both views of a two-view method)"),
    F("local-scale-min", local_scale_min, "smallest area fraction of a local crop"),
    F("local-scale-max", local_scale_max, "largest area fraction of a local crop"),
    I("head-hidden", head_hidden, "pretext classifier hidden width (0: linear head)"),
    I("permutations", permutations, "jigsaw: permutation classes (greedy max Hamming distance)"),
    I("view-size", view_size, "pretext tasks: side of the square view (0: the image's)"),
    I("color-drop", color_drop, "relloc on RGB: 1 keeps one random channel per patch, 0 off"),
    F("dense-weight", dense_weight, "dense: weight of the patch-level loss (0 SimCLR, 1 dense only)"),
    I("color-regression", color_regression, "colorization: 1 = L2 regression on ab, 0 = 261-bin classifier"),
    F("mask-size", mask_size, "inpainting: masked square's side, fraction of the view's (0.5: 1/4 area)"),
    I("mask-blocks", mask_blocks, "inpainting: 0 one central square, N random squares of 1/N its area"),
    F("adv-weight", adv_weight, "inpainting: adversarial weight lambda_adv (0 off; paper 0.001)"),
    F("mask-ratio", mask_ratio, "MAE, SimMIM, BEiT: fraction of the patches masked"),
    I("decoder-dim", decoder_dim, "MAE: decoder width"),
    I("decoder-depth", decoder_depth, "MAE: decoder blocks"),
    I("decoder-heads", decoder_heads, "MAE: decoder attention heads"),
    I("norm-pix-loss", norm_pix_loss, "MAE: 1 = targets are per-patch normalised pixels"),
    I("vocab-size", vocab_size, "BEiT: visual-token vocabulary (tokenizer codebook size)"),
    I("tokenizer-steps", tokenizer_steps, "BEiT: steps training the tokenizer before pretraining"),
    I("freeze-patch-embed", freeze_patch_embed, "MoCo v3 (ViT): 1 = frozen random patch projection"),
    I("head-bn", head_bn, "DINO: 1 = BatchNorm after the head's hidden layers (DINOHead use_bn)"),
};
#undef F
#undef I
const int ssl_method_n_fields = (int)(sizeof ssl_method_fields / sizeof ssl_method_fields[0]);

double ssl_method_field_get(const ssl_method_config *c, const ssl_method_field *f)
{
    const char *p = (const char *)c + f->offset;
    return f->is_int ? (double)*(const int *)p : (double)*(const float *)p;
}

void ssl_method_field_set(ssl_method_config *c, const ssl_method_field *f, double v)
{
    char *p = (char *)c + f->offset;
    if (f->is_int) *(int *)p = (int)v;
    else *(float *)p = (float)v;
}

void ssl_method_config_unset(ssl_method_config *c)
{
    for (int i = 0; i < ssl_method_n_fields; i++)
        ssl_method_field_set(c, &ssl_method_fields[i], SSL_UNSET);
}

int ssl_method_config_check_ranges(const ssl_method_config *c, char *err)
{
    for (int i = 0; i < ssl_method_n_fields; i++) {
        double v = ssl_method_field_get(c, &ssl_method_fields[i]);
        if (v != SSL_UNSET && !(v >= 0))
            return ssl_fail(err, SSL_EINVAL, "--%s must be >= 0 (got %g)", ssl_method_fields[i].name, v);
    }
    return SSL_OK;
}

/* An option set for a method that never reads it is a mistake worth an
 * error: the fields a method reads are those its validate() fills from
 * unset (local_size stays unset, meaning 3/7 of the side, where local
 * crops exist). */
static int check_applies(const ssl_method_ops *ops, const ssl_method_config *cfg, char *err)
{
    ssl_method_config probe;
    char unused[SSL_ERR_LEN];
    ssl_method_config_unset(&probe);
    ops->validate(&probe, unused);
    for (int i = 0; i < ssl_method_n_fields; i++) {
        const ssl_method_field *f = &ssl_method_fields[i];
        int used = ssl_method_field_get(&probe, f) != SSL_UNSET ||
                   (f->offset == offsetof(ssl_method_config, local_size) && probe.local_crops != SSL_UNSET);
        if (!used && ssl_method_field_get(cfg, f) != SSL_UNSET)
            return ssl_fail(err, SSL_EINVAL, "--%s does not apply to %s (see 'selfsup pretrain --help')",
                            f->name, ops->name);
    }
    return SSL_OK;
}

int ssl_method_create(ssl_method *m, const ssl_method_ops *ops, const ssl_method_config *cfg,
                      const ssl_encoder_config *enc, ssl_rng *rng, char *err)
{
    memset(m, 0, sizeof *m);
    m->ops = ops;
    m->cfg = *cfg;
    int st = check_applies(ops, cfg, err);
    if (!st) st = ops->validate(&m->cfg, err);
    if (st) return st;
    ssl_registry_init(&m->heads);
    ssl_registry_init(&m->extra);
    m->state[m->n_state++] = (ssl_method_state){"", &m->extra};
    if (ops->needs_feature_map && enc->kind != SSL_ENC_RESNET)
        return ssl_fail(err, SSL_EINVAL,
                        "--method %s needs a convolutional feature map: use a ResNet (--arch resnet18)",
                        ops->name);
    st = ssl_encoder_init(&m->encoder, enc, rng, err);
    if (st) return st;
    st = ops->init(m, rng, err);
    if (!st && (m->heads.failed || m->extra.failed))
        st = ssl_fail(err, SSL_ENOMEM, "%s: out of memory for the heads", ops->name);
    if (st) ssl_method_free(m);
    return st;
}

int ssl_method_setup_run(ssl_method *m, int h, int w, int batch, char *err)
{
    /* A ViT cuts every view into patches, so the default local crop (3/7 of
     * the side, DINO's 96/224) becomes the nearest multiple of the patch, at
     * least one patch: 12 -> 14 px at 28 px with patch 7, as 96 px is 6
     * patches of 16. A --local-size the user gave is kept, and checked below. */
    if (m->encoder.cfg.kind == SSL_ENC_VIT && m->cfg.local_crops > 0 && m->cfg.local_size == SSL_UNSET) {
        int p = m->encoder.cfg.vit.patch, side = h < w ? h : w;
        int s = (side * 3 / 7 + p / 2) / p * p;
        m->cfg.local_size = s > p ? s : p;
    }
    int n = m->ops->views(&m->cfg, m->encoder.in_channels, h, w, m->augs);
    if (n < 1 || n > SSL_MAX_VIEWS)
        return ssl_fail(err, SSL_EINVAL, "%s: %d views per image (1..%d allowed)", m->ops->name, n,
                        SSL_MAX_VIEWS);
    for (int v = 0; v < n; v++)
        if (m->augs[v].out_h < 1 || m->augs[v].out_w < 1)
            return ssl_fail(err, SSL_EINVAL, "%s: view %d is %dx%d pixels", m->ops->name, v,
                            m->augs[v].out_h, m->augs[v].out_w);
    /* Views go to the encoder as they are, except in pretext tasks that
     * cut them up first (their own checks name the piece sizes). */
    for (int v = 0; v < n && !m->ops->pretext_metrics; v++) {
        int st = ssl_encoder_check_input(&m->encoder, m->encoder.in_channels, m->augs[v].out_h,
                                         m->augs[v].out_w, err);
        if (st) return st;
    }
    m->n_views = n;
    return m->ops->check_batch ? m->ops->check_batch(m, batch, err) : SSL_OK;
}

void ssl_method_free(ssl_method *m)
{
    if (m->ops && m->ops->free) m->ops->free(m);
    m->state_ptr = NULL;
    ssl_encoder_free(&m->encoder);
    ssl_registry_free(&m->heads);
    ssl_registry_free(&m->extra);
    m->n_state = 0;
}

int ssl_method_add_state(ssl_method *m, const char *prefix, ssl_registry *reg, char *err)
{
    if (m->n_state == SSL_METHOD_MAX_STATE)
        return ssl_fail(err, SSL_EINVAL, "%s: more than %d saved registries", m->ops->name,
                        SSL_METHOD_MAX_STATE);
    m->state[m->n_state++] = (ssl_method_state){prefix, reg};
    return SSL_OK;
}

void ssl_method_mark_frozen(const ssl_method *m, ssl_param *params, int n)
{
    for (int i = 0; i < n; i++) params[i].frozen = m->ops->frozen ? m->ops->frozen(m, &params[i]) : 0;
}

int64_t ssl_method_epochs_to_steps(const ssl_method *m, float epochs)
{
    double s = (double)epochs * m->steps_per_epoch;
    return s > 0 ? (int64_t)(s + 0.5) : 0;
}
