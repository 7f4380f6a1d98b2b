/* Fine-tuning: a pretrained (or random) encoder and a linear head trained
 * end to end on the labels, with the recipe of MAE's main_finetune.py
 * (AdamW, label smoothing, per-step warm-up + cosine, layer-wise lr decay
 * from util/lr_decay.py). Progress lines go to stderr, one JSON line per
 * epoch to <out>/finetune_log.jsonl, encoder + head to
 * <out>/finetune.safetensors after each epoch. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/io.h"
#include "selfsup/train.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FT_FORMAT "selfsup-finetune"
#define FT_VERSION "1"

void ssl_finetune_config_default(ssl_finetune_config *c, ssl_encoder_kind kind)
{
    memset(c, 0, sizeof *c);
    c->epochs = 10;
    c->batch_size = 256;
    c->lr = 1e-3f;              /* MAE main_finetune.py --blr default */
    /* MAE: 0.75 (its default; ViT-B's recipe 0.65). A ResNet's four stages
     * are too few for the ViT's per-block decay to mean the same: off. */
    c->layer_decay = kind == SSL_ENC_VIT ? 0.75f : 1.0f;
    c->weight_decay = 0.05f;    /* MAE, DeiT */
    c->warmup_epochs = 1;       /* MAE: 5 of 100 epochs */
    c->label_smoothing = 0.1f;  /* MAE --smoothing; torchvision's ResNet recipe too */
    c->crop_scale_min = 0.5f;   /* 28-px images: MAE's 0.08 leaves too little of a digit */
    c->seed = 1;
    c->workers = 1;
    c->log_every = 20;
}

static int check_config(const ssl_finetune_config *c, char *err)
{
    if (c->epochs < 1 && c->steps < 1)
        return ssl_fail(err, SSL_EINVAL, "finetune: --epochs or --steps must be >= 1");
    if (c->batch_size < 1) return ssl_fail(err, SSL_EINVAL, "finetune: --batch-size must be >= 1");
    if (!(c->lr > 0) || !isfinite(c->lr))
        return ssl_fail(err, SSL_EINVAL, "finetune: --lr %g must be > 0", (double)c->lr);
    if (!(c->layer_decay > 0 && c->layer_decay <= 1))
        return ssl_fail(err, SSL_EINVAL, "finetune: --layer-decay %g must be in (0, 1]",
                        (double)c->layer_decay);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay) || !(c->warmup_epochs >= 0))
        return ssl_fail(err, SSL_EINVAL, "finetune: --weight-decay and --warmup-epochs must be >= 0");
    if (!(c->label_smoothing >= 0 && c->label_smoothing < 1))
        return ssl_fail(err, SSL_EINVAL, "finetune: --label-smoothing %g must be in [0, 1)",
                        (double)c->label_smoothing);
    if (!(c->crop_scale_min > 0 && c->crop_scale_min <= 1))
        return ssl_fail(err, SSL_EINVAL, "finetune: crop scale %g must be in (0, 1]",
                        (double)c->crop_scale_min);
    if (c->labels_per_class < 0 || !(c->label_fraction >= 0 && c->label_fraction <= 1))
        return ssl_fail(err, SSL_EINVAL, "finetune: --labels-per-class must be >= 0, --label-fraction in [0, 1]");
    if (c->labels_per_class > 0 && c->label_fraction > 0)
        return ssl_fail(err, SSL_EINVAL, "finetune: give --labels-per-class or --label-fraction, not both");
    if (c->workers < 0 || c->log_every < 1)
        return ssl_fail(err, SSL_EINVAL, "finetune: --workers must be >= 0, --log-every >= 1");
    return SSL_OK;
}

/* ---- layer-wise lr decay ---- */

int ssl_finetune_num_layers(const ssl_encoder *e)
{
    return e->cfg.kind == SSL_ENC_VIT ? e->cfg.vit.depth + 1 : 5;
}

int ssl_finetune_layer_id(const ssl_encoder *e, const char *name)
{
    int L = ssl_finetune_num_layers(e);
    if (e->cfg.kind == SSL_ENC_VIT) { /* MAE's get_layer_id_for_vit */
        if (!strcmp(name, "cls_token") || !strcmp(name, "pos_embed") ||
            !strncmp(name, "patch_embed", 11))
            return 0;
        if (!strncmp(name, "blocks.", 7)) {
            char *end;
            long i = strtol(name + 7, &end, 10);
            if (end != name + 7 && *end == '.' && i >= 0 && i < L - 1) return (int)i + 1;
        }
        return L;
    }
    if (!strncmp(name, "conv1.", 6) || !strncmp(name, "bn1.", 4)) return 0;
    if (!strncmp(name, "layer", 5) && name[5] >= '1' && name[5] <= '4' && name[6] == '.')
        return name[5] - '0';
    return L;
}

/* ---- few-label subsets ---- */

int ssl_dataset_label_subset(ssl_dataset *out, const ssl_dataset *ds, int per_class,
                             float fraction, uint64_t seed, char *err)
{
    memset(out, 0, sizeof *out);
    if (!ds->labels)
        return ssl_fail(err, SSL_EINVAL, "%.400s has no labels: a labelled subset needs class labels",
                        ds->source);
    if ((per_class > 0) == (fraction > 0) || per_class < 0 || !(fraction >= 0 && fraction <= 1))
        return ssl_fail(err, SSL_EINVAL, "label subset: one of per-class count %d, fraction %g must be > 0 (fraction <= 1)",
                        per_class, (double)fraction);
    int K = ds->n_classes;
    for (int i = 0; i < ds->n; i++) {
        if (ds->labels[i] < 0)
            return ssl_fail(err, SSL_EFORMAT, "%.400s: image %d has label %d", ds->source, i,
                            (int)ds->labels[i]);
        if (ds->labels[i] >= K) K = ds->labels[i] + 1;
    }
    int *count = calloc((size_t)K + 1, sizeof *count);
    int *order = malloc(sizeof(int) * (size_t)(ds->n > 0 ? ds->n : 1));
    unsigned char *pick = calloc((size_t)(ds->n > 0 ? ds->n : 1), 1);
    int rc = SSL_OK, total = 0;
    if (!count || !order || !pick) { rc = ssl_fail(err, SSL_ENOMEM, "label subset: out of memory"); goto done; }
    /* indices grouped by class (a counting sort: count[k] is class k's start) */
    for (int i = 0; i < ds->n; i++) count[ds->labels[i] + 1]++;
    for (int k = 0; k < K; k++) count[k + 1] += count[k];
    for (int i = 0; i < ds->n; i++) order[count[ds->labels[i]]++] = i;
    for (int k = K; k > 0; k--) count[k] = count[k - 1]; /* starts again */
    count[0] = 0;
    ssl_rng rng;
    ssl_rng_seed(&rng, seed);
    for (int k = 0; k < K; k++) {
        int *idx = order + count[k], nk = count[k + 1] - count[k];
        if (nk == 0) continue;
        int want = per_class > 0 ? per_class : (int)lround((double)fraction * nk);
        if (want < 1) want = 1;
        if (want > nk) {
            rc = ssl_fail(err, SSL_EINVAL, "%.300s: class %d has %d images, fewer than the %d labels per class asked",
                          ds->source, k, nk, want);
            goto done;
        }
        for (int j = 0; j < want; j++) { /* partial Fisher-Yates: the first want of a shuffle */
            int r = j + (int)ssl_rng_below(&rng, (uint32_t)(nk - j));
            int t = idx[j];
            idx[j] = idx[r];
            idx[r] = t;
            pick[idx[j]] = 1;
        }
        total += want;
    }
    size_t img = (size_t)ds->c * ds->h * ds->w;
    out->images = malloc(img * (size_t)total);
    out->labels = malloc(sizeof(int32_t) * (size_t)total);
    if (!out->images || !out->labels) {
        ssl_dataset_free(out);
        rc = ssl_fail(err, SSL_ENOMEM, "label subset: out of memory for %d images", total);
        goto done;
    }
    for (int i = 0, j = 0; i < ds->n; i++)
        if (pick[i]) {
            memcpy(out->images + img * j, ds->images + img * i, img);
            out->labels[j++] = ds->labels[i];
        }
    out->n = total;
    out->c = ds->c;
    out->h = ds->h;
    out->w = ds->w;
    out->n_classes = ds->n_classes;
    if (per_class > 0) snprintf(out->source, sizeof out->source, "%.400s (%d per class)", ds->source, per_class);
    else snprintf(out->source, sizeof out->source, "%.400s (%g of each class)", ds->source, (double)fraction);
done:
    free(count);
    free(order);
    free(pick);
    return rc;
}

/* ---- the encoder of a pretraining checkpoint ---- */

int ssl_finetune_load_encoder(const char *path, ssl_encoder *enc, ssl_train_config *cfg,
                              char *err)
{
    memset(enc, 0, sizeof *enc);
    int ch, side;
    int rc = ssl_checkpoint_read_config(path, cfg, &ch, &side, err);
    if (rc) return rc;
    const ssl_method_ops *ops = ssl_method_find(cfg->method);
    if (!ops) return ssl_fail(err, SSL_EINVAL, "%s: method '%s' unknown to this build", path, cfg->method);
    ssl_encoder_config ecfg;
    rc = ssl_train_encoder_config(cfg, ch, side, &ecfg, err);
    if (rc) return rc;
    /* the method's networks rebuilt and loaded, so a checkpoint of another
     * architecture fails as in `eval`; only the encoder is kept */
    ssl_method m;
    memset(&m, 0, sizeof m);
    ssl_rng rng;
    ssl_rng_seed(&rng, cfg->seed);
    rc = ssl_method_create(&m, ops, &cfg->mcfg, &ecfg, &rng, err);
    if (!rc) rc = ssl_checkpoint_load(path, &m, NULL, NULL, err);
    if (!rc) rc = ssl_encoder_clone(enc, &m.encoder, err);
    /* the clone copies weights and buffers; BN batch counters travel too,
     * so the fine-tuned checkpoint continues them as PyTorch would */
    for (int i = 0; !rc && i < enc->reg->n_counters && i < m.encoder.reg->n_counters; i++)
        *enc->reg->counters[i].value = *m.encoder.reg->counters[i].value;
    ssl_method_free(&m);
    return rc;
}

/* ---- one network ---- */

int ssl_finetuner_init(ssl_finetuner *ft, ssl_ctx *ctx, ssl_encoder *enc, int n_classes,
                       const ssl_finetune_config *cfg)
{
    memset(ft, 0, sizeof *ft);
    ft->ctx = ctx;
    ft->enc = enc;
    ft->n_classes = n_classes;
    ft->label_smoothing = cfg->label_smoothing;
    ssl_registry_init(&ft->head);
    ssl_graph_init(&ft->g, ctx);
    int rc = check_config(cfg, ctx->err);
    if (rc) return rc;
    if (n_classes < 2) return ssl_ctx_fail(ctx, SSL_EINVAL, "finetune: %d classes (need >= 2)", n_classes);
    const int vit = enc->cfg.kind == SSL_ENC_VIT, D = enc->feat_dim;
    int ws[2] = {n_classes, D};
    if (ssl_registry_param(&ft->head, vit ? "head.weight" : "fc.weight", 2, ws, 0, &ft->head_w) ||
        ssl_registry_param(&ft->head, vit ? "head.bias" : "fc.bias", 1, &n_classes, 1, &ft->head_b))
        return ssl_ctx_fail(ctx, SSL_ENOMEM, "finetune: out of memory for the head");
    long nw = (long)n_classes * D;
    if (vit) { /* MAE: trunc_normal_(head.weight, std=2e-5); the +-2 cut never binds */
        for (long i = 0; i < nw; i++) ft->head_w.data[i] = 2e-5f * ssl_rng_normal(&ctx->rng);
    } else {
        float bound = 1.0f / sqrtf((float)D);
        ssl_init_uniform(ft->head_w.data, nw, bound, &ctx->rng);
        ssl_init_uniform(ft->head_b.data, n_classes, bound, &ctx->rng);
    }

    const ssl_registry *er = enc->reg;
    ft->n_params = er->n_params + ft->head.n_params;
    ft->params = malloc(sizeof(ssl_param) * (size_t)ft->n_params);
    ft->lr_scales = malloc(sizeof(double) * (size_t)ft->n_params);
    if (!ft->params || !ft->lr_scales) return ssl_ctx_fail(ctx, SSL_ENOMEM, "finetune: out of memory");
    memcpy(ft->params, er->params, sizeof(ssl_param) * (size_t)er->n_params);
    memcpy(ft->params + er->n_params, ft->head.params, sizeof(ssl_param) * (size_t)ft->head.n_params);
    const int L = ssl_finetune_num_layers(enc);
    for (int i = 0; i < ft->n_params; i++) /* MAE: layer_decay ** (num_layers - layer_id) */
        ft->lr_scales[i] = i < er->n_params
                               ? pow((double)cfg->layer_decay, L - ssl_finetune_layer_id(enc, ft->params[i].name))
                               : 1.0;
    ssl_optim_config oc;
    memset(&oc, 0, sizeof oc);
    oc.kind = SSL_OPTIM_ADAMW;
    oc.lr = cfg->lr;
    oc.weight_decay = cfg->weight_decay;
    oc.beta1 = 0.9f;
    oc.beta2 = 0.999f;
    oc.eps = 1e-8f;
    rc = ssl_optim_create(&ft->opt, &oc, ft->params, ft->n_params, ctx->err);
    if (!rc) rc = ssl_optim_set_lr_scales(ft->opt, ft->lr_scales, ctx->err);
    return rc;
}

void ssl_finetuner_free(ssl_finetuner *ft)
{
    ssl_optim_free(ft->opt);
    ssl_graph_free(&ft->g);
    ssl_registry_free(&ft->head);
    free(ft->params);
    free(ft->lr_scales);
    ssl_free(ft->targets);
    memset(ft, 0, sizeof *ft);
}

int ssl_finetuner_step(ssl_finetuner *ft, float *x, const int32_t *labels, int B, int h, int w,
                       float lr, float *loss, int *correct)
{
    ssl_ctx *ctx = ft->ctx;
    const int K = ft->n_classes;
    if (!x || !labels || B < 1) return ssl_ctx_fail(ctx, SSL_EINVAL, "finetune step: no batch");
    int rc = ssl_encoder_check_input(ft->enc, ft->enc->in_channels, h, w, ctx->err);
    if (rc) return rc;
    if (B > ft->cap) { /* the first step sizes it; later ones allocate nothing */
        ssl_free(ft->targets);
        ft->targets = ssl_malloc(sizeof(float) * (size_t)B * K);
        ft->cap = ft->targets ? B : 0;
        if (!ft->targets) return ssl_ctx_fail(ctx, SSL_ENOMEM, "finetune: out of memory");
    }
    /* label smoothing as F.cross_entropy(label_smoothing=eps): the target
     * is (1 - eps) one-hot + eps / K */
    const float off = ft->label_smoothing / (float)K, on = 1.0f - ft->label_smoothing + off;
    for (int i = 0; i < B; i++) {
        if (labels[i] < 0 || labels[i] >= K)
            return ssl_ctx_fail(ctx, SSL_EINVAL, "finetune: label %d of batch row %d not in [0, %d)",
                                (int)labels[i], i, K);
        float *t = ft->targets + (size_t)i * K;
        for (int k = 0; k < K; k++) t[k] = k == labels[i] ? on : off;
    }
    ssl_graph *g = &ft->g;
    ssl_graph_reset(g);
    g->training = 1;
    g->record = 1;
    int shape[4] = {B, ft->enc->in_channels, h, w};
    ssl_tensor in = ssl_tensor_wrap(x, NULL, 4, shape, SSL_LAYOUT_NCHW);
    ssl_tensor *logits = ssl_op_linear(g, ssl_encoder_forward(g, ft->enc, &in), &ft->head_w, &ft->head_b);
    ssl_tensor *l = ssl_op_soft_ce(g, logits, ft->targets, 1.0f);
    if (!l) return ctx->failed ? ctx->failed : SSL_ENOMEM;
    if (!isfinite(l->data[0]))
        return ssl_ctx_fail(ctx, SSL_ENAN, "finetune: loss is %s (lower --lr?)", isnan(l->data[0]) ? "NaN" : "infinite");
    if (correct) {
        int hits = 0;
        for (int i = 0; i < B; i++) {
            const float *r = logits->data + (size_t)i * K;
            int best = 0;
            for (int k = 1; k < K; k++) if (r[k] > r[best]) best = k;
            hits += best == labels[i];
        }
        *correct = hits;
    }
    if (loss) *loss = l->data[0];
    ssl_registry_zero_grad(ft->enc->reg);
    ssl_registry_zero_grad(&ft->head);
    rc = ssl_graph_backward(g, l);
    if (rc) return rc;
    ssl_optim_step(ft->opt, lr);
    return SSL_OK;
}

int ssl_finetuner_eval(ssl_finetuner *ft, const ssl_dataset *ds, int batch, double *top1)
{
    ssl_ctx *ctx = ft->ctx;
    const int K = ft->n_classes, D = ft->enc->feat_dim;
    *top1 = NAN;
    if (!ds->labels) return ssl_ctx_fail(ctx, SSL_EINVAL, "%.400s has no labels to test on", ds->source);
    int rc = ssl_encoder_check_input(ft->enc, ds->c, ds->h, ds->w, ctx->err);
    if (rc) return rc;
    float *feat = ssl_malloc(sizeof(float) * (size_t)ds->n * D);
    if (!feat) return ssl_ctx_fail(ctx, SSL_ENOMEM, "finetune: out of memory for %d test features", ds->n);
    rc = ssl_extract_features(ctx, ft->enc, ds, batch, feat);
    long hits = 0;
    for (int i = 0; !rc && i < ds->n; i++) {
        const float *f = feat + (size_t)i * D;
        int best = 0;
        double best_v = -INFINITY;
        for (int k = 0; k < K; k++) {
            const float *wk = ft->head_w.data + (size_t)k * D;
            double v = ft->head_b.data[k];
            for (int d = 0; d < D; d++) v += (double)wk[d] * f[d];
            if (v > best_v) { best_v = v; best = k; }
        }
        hits += best == ds->labels[i];
    }
    ssl_free(feat);
    if (!rc) *top1 = ds->n ? (double)hits / ds->n : NAN;
    return rc;
}

/* ---- checkpoint ---- */

static int add_registry(ssl_st_writer *w, const ssl_registry *r, char *err)
{
    int rc = SSL_OK;
    for (int i = 0; i < r->n_params && !rc; i++)
        rc = ssl_st_add(w, r->params[i].name, SSL_DT_F32, r->params[i].ndim, r->params[i].shape,
                        r->params[i].data, err);
    for (int i = 0; i < r->n_buffers && !rc; i++)
        rc = ssl_st_add(w, r->buffers[i].name, SSL_DT_F32, r->buffers[i].ndim, r->buffers[i].shape,
                        r->buffers[i].data, err);
    for (int i = 0; i < r->n_counters && !rc; i++)
        rc = ssl_st_add(w, r->counters[i].name, SSL_DT_I64, 0, NULL, r->counters[i].value, err);
    return rc;
}

/* The encoder's architecture, enough to rebuild it, as one JSON object. */
static void encoder_json(const ssl_encoder *e, char *buf, size_t n)
{
    if (e->cfg.kind == SSL_ENC_RESNET) {
        const ssl_resnet_config *c = &e->cfg.resnet;
        snprintf(buf, n, "{\"kind\":\"resnet\",\"depth\":%d,\"width\":%d,\"in_channels\":%d,\"stem\":\"%s\"}",
                 c->depth, c->width, c->in_channels, c->stem == SSL_STEM_SMALL ? "small" : "imagenet");
    } else {
        const ssl_vit_config *c = &e->cfg.vit;
        snprintf(buf, n, "{\"kind\":\"vit\",\"img_size\":%d,\"patch\":%d,\"in_chans\":%d,\"embed_dim\":%d,"
                         "\"depth\":%d,\"heads\":%d,\"mlp_ratio\":%.9g,\"qkv_bias\":%d,\"pos_embed\":\"%s\","
                         "\"class_token\":%d}",
                 c->img_size, c->patch, c->in_chans, c->embed_dim, c->depth, c->heads,
                 (double)c->mlp_ratio, c->qkv_bias, c->pos == SSL_VIT_POS_SINCOS ? "sincos" : "learned",
                 c->class_token);
    }
}

static void config_json(const ssl_finetune_config *c, FILE *f)
{
    fprintf(f, "{\"epochs\":%d,\"steps\":%" PRId64 ",\"batch_size\":%d,\"lr\":%.9g,\"layer_decay\":%.9g,"
               "\"weight_decay\":%.9g,\"warmup_epochs\":%.9g,\"label_smoothing\":%.9g,"
               "\"crop_scale_min\":%.9g,\"labels_per_class\":%d,\"label_fraction\":%.9g,\"seed\":%" PRIu64
               ",\"source\":",
            c->epochs, c->steps, c->batch_size, (double)c->lr, (double)c->layer_decay,
            (double)c->weight_decay, (double)c->warmup_epochs, (double)c->label_smoothing,
            (double)c->crop_scale_min, c->labels_per_class, (double)c->label_fraction, c->seed);
    ssl_json_write_string(f, c->source);
    fputc('}', f);
}

int ssl_finetuner_save(const ssl_finetuner *ft, const char *path, const ssl_finetune_config *cfg,
                       int epoch, int64_t step, double test_top1, char *err)
{
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    char buf[512], *cj = NULL;
    size_t cl = 0;
    int rc = add_registry(&w, ft->enc->reg, err);
    if (!rc) rc = add_registry(&w, &ft->head, err);
    FILE *mf = rc ? NULL : open_memstream(&cj, &cl);
    if (!rc && !mf) rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory for the header", path);
    if (mf) {
        config_json(cfg, mf);
        fclose(mf);
    }
#define META(k, v) if (!rc) rc = ssl_st_add_meta(&w, (k), (v), err)
    META("format", FT_FORMAT);
    META("version", FT_VERSION);
    encoder_json(ft->enc, buf, sizeof buf);
    META("encoder", buf);
    ssl_encoder_describe(ft->enc, buf, sizeof buf);
    META("arch", buf);
    snprintf(buf, sizeof buf, "%d", ft->enc->in_channels);
    META("in_channels", buf);
    snprintf(buf, sizeof buf, "%d", ft->enc->feat_dim);
    META("feat_dim", buf);
    snprintf(buf, sizeof buf, "%d", ft->n_classes);
    META("n_classes", buf);
    snprintf(buf, sizeof buf, "%d", epoch);
    META("epoch", buf);
    snprintf(buf, sizeof buf, "%" PRId64, step);
    META("step", buf);
    snprintf(buf, sizeof buf, "%.6f", test_top1);
    META("test_top1", isnan(test_top1) ? "null" : buf);
    if (cj) META("finetune", cj);
#undef META
    if (!rc) rc = ssl_st_write(&w, path, err);
    free(cj);
    ssl_st_writer_free(&w);
    return rc;
}

/* ---- the loop ---- */

static void json_num(FILE *f, const char *key, double v, const char *fmt)
{
    fprintf(f, ",\"%s\":", key);
    if (isnan(v)) fputs("null", f);
    else fprintf(f, fmt, v);
}

void ssl_finetune_result_free(ssl_finetune_result *res)
{
    free(res->epochs);
    res->epochs = NULL;
    res->n_epochs = 0;
}

int ssl_finetune(ssl_ctx *ctx, ssl_encoder *enc, const ssl_dataset *train,
                 const ssl_dataset *test, const ssl_finetune_config *cfg,
                 ssl_finetune_result *res)
{
    char *err = ctx->err;
    memset(res, 0, sizeof *res);
    res->test_top1 = res->best_top1 = NAN;
    int rc = check_config(cfg, err);
    if (rc) return rc;
    if (!train->labels)
        return ssl_fail(err, SSL_EINVAL, "%.400s has no labels: fine-tuning needs class labels", train->source);
    if (test && !test->labels)
        return ssl_fail(err, SSL_EINVAL, "%.400s: the test split has no labels", test->source);
    if ((rc = ssl_encoder_check_input(enc, train->c, train->h, train->w, err))) return rc;
    if (test && (test->c != train->c || test->h != train->h || test->w != train->w))
        return ssl_fail(err, SSL_ESHAPE, "test images are %dx%dx%d, train %dx%dx%d", test->c, test->h,
                        test->w, train->c, train->h, train->w);
    int K = train->n_classes;
    for (int i = 0; i < train->n; i++) if (train->labels[i] >= K) K = train->labels[i] + 1;

    ssl_dataset sub;
    memset(&sub, 0, sizeof sub);
    const ssl_dataset *ds = train;
    if (cfg->labels_per_class > 0 || cfg->label_fraction > 0) {
        if ((rc = ssl_dataset_label_subset(&sub, train, cfg->labels_per_class, cfg->label_fraction,
                                           cfg->seed, err)))
            return rc;
        ds = &sub;
    }
    res->n_train = ds->n;
    const int B = cfg->batch_size < ds->n ? cfg->batch_size : ds->n;
    ssl_aug aug; /* the evaluation's normalization, plus crop and flip */
    ssl_aug_eval(&aug, ds->c, ds->h, ds->w);
    aug.crop_scale_min = cfg->crop_scale_min;
    aug.crop_scale_max = 1.0f;
    aug.crop_ratio_min = 3.0f / 4.0f;
    aug.crop_ratio_max = 4.0f / 3.0f;
    aug.flip_p = 0.5f;

    ssl_finetuner ft;
    ssl_loader *loader = NULL;
    FILE *log = NULL;
    char path[600] = "";
    rc = ssl_finetuner_init(&ft, ctx, enc, K, cfg);
    if (!rc) rc = ssl_loader_create(&loader, ds, &aug, 1, B, cfg->seed, cfg->workers, err);
    if (rc) goto done;
    const int spe = ssl_loader_steps_per_epoch(loader);
    const int64_t total = cfg->steps > 0 ? cfg->steps : (int64_t)cfg->epochs * spe;
    const int64_t warmup = (int64_t)(cfg->warmup_epochs * spe);
    const float peak = (float)((double)cfg->lr * B / 256.0);
    const int n_epochs = (int)((total + spe - 1) / spe);
    res->epochs = calloc((size_t)n_epochs, sizeof *res->epochs);
    if (!res->epochs) { rc = ssl_fail(err, SSL_ENOMEM, "out of memory"); goto done; }
    if (cfg->out[0]) {
        if ((rc = ssl_train_make_dir(cfg->out, err))) goto done;
        snprintf(path, sizeof path, "%.500s/finetune_log.jsonl", cfg->out);
        log = fopen(path, "w");
        if (!log) { rc = ssl_fail(err, SSL_EIO, "%s: cannot open for writing: %s", path, strerror(errno)); goto done; }
        snprintf(res->checkpoint, sizeof res->checkpoint, "%.500s/finetune.safetensors", cfg->out);
    }
    char arch[64];
    ssl_encoder_describe(enc, arch, sizeof arch);
    if (!cfg->quiet)
        fprintf(stderr, "[finetune] %s from %s on %d labelled images (%d classes), %d steps/epoch, %lld steps, "
                        "batch %d, peak lr %.3g, layer decay %.3g, %d threads\n",
                arch, cfg->source[0] ? cfg->source : "the given weights", ds->n, K, spe,
                (long long)total, B, (double)peak, (double)cfg->layer_decay, ctx->n_threads);

    double t0 = ssl_time(), t_int = t0, int_loss = 0, ep_loss = 0;
    long ep_hits = 0, int_hits = 0;
    int n_int = 0, ep_steps = 0;
    int64_t step = 0;
    while (step < total) {
        float *const *views;
        const int32_t *labels;
        int epoch, sie;
        if ((rc = ssl_loader_next(loader, &views, &labels, &epoch, &sie, err))) goto done;
        float lr = ssl_lr_warmup_cosine(step, warmup, total, peak, 0.0f), loss;
        int hits;
        if ((rc = ssl_finetuner_step(&ft, views[0], labels, B, ds->h, ds->w, lr, &loss, &hits))) {
            if (rc == SSL_ENAN)
                snprintf(err + strlen(err), SSL_ERR_LEN - strlen(err), " at step %lld", (long long)step + 1);
            goto done;
        }
        step++;
        int_loss += loss;
        ep_loss += loss;
        int_hits += hits;
        ep_hits += hits;
        ep_steps++;
        n_int++;
        const int epoch_end = sie + 1 == spe || step == total;
        if (!cfg->quiet && (n_int == cfg->log_every || epoch_end)) {
            double now = ssl_time(), rate = (double)step / (now - t0);
            char eta[32];
            ssl_train_fmt_eta(eta, sizeof eta, (double)(total - step) / rate);
            fprintf(stderr, "[finetune] ep %d/%d step %lld/%lld loss %.4f acc %.1f%% lr %.3g %.1f img/s ETA %s\n",
                    epoch + 1, n_epochs, (long long)step, (long long)total, int_loss / n_int,
                    100.0 * int_hits / ((double)n_int * B), (double)lr, (double)n_int * B / (now - t_int), eta);
        }
        if (n_int == cfg->log_every || epoch_end) {
            t_int = ssl_time();
            int_loss = 0;
            int_hits = 0;
            n_int = 0;
        }
        if (!epoch_end) continue;
        ssl_finetune_epoch *e = &res->epochs[res->n_epochs];
        e->epoch = epoch + 1;
        e->step = step;
        e->train_loss = ep_loss / ep_steps;
        e->train_acc = (double)ep_hits / ((double)ep_steps * B);
        e->lr = lr;
        e->test_top1 = NAN;
        if (test && (rc = ssl_finetuner_eval(&ft, test, B, &e->test_top1))) goto done;
        e->seconds = ssl_time() - t0;
        res->n_epochs++;
        res->test_top1 = e->test_top1;
        if (!isnan(e->test_top1) && !(e->test_top1 <= res->best_top1)) res->best_top1 = e->test_top1;
        if (!cfg->quiet)
            fprintf(stderr, "[finetune] epoch %d/%d: train loss %.4f acc %.2f%%, test top-1 %.2f%%\n",
                    e->epoch, n_epochs, e->train_loss, 100 * e->train_acc, 100 * e->test_top1);
        if (log) {
            fprintf(log, "{\"epoch\":%d,\"step\":%lld", e->epoch, (long long)e->step);
            json_num(log, "train_loss", e->train_loss, "%.6f");
            json_num(log, "train_acc", e->train_acc, "%.6f");
            json_num(log, "test_top1", e->test_top1, "%.6f");
            fprintf(log, ",\"lr\":%.6g,\"img_per_s\":%.2f,\"elapsed_s\":%.2f}\n", e->lr,
                    (double)step * B / e->seconds, e->seconds);
            fflush(log);
        }
        if (res->checkpoint[0] &&
            (rc = ssl_finetuner_save(&ft, res->checkpoint, cfg, e->epoch, step, e->test_top1, err)))
            goto done;
        ep_loss = 0;
        ep_hits = 0;
        ep_steps = 0;
    }
    res->steps = step;
    res->seconds = ssl_time() - t0;
    res->img_per_s = res->seconds > 0 ? (double)step * B / res->seconds : 0;
done:
    if (log) fclose(log);
    ssl_loader_free(loader);
    ssl_finetuner_free(&ft);
    ssl_dataset_free(&sub);
    return rc;
}
