/* Fine-tuning (src/train/finetune.c): layer ids and lr scales for ViT and
 * ResNet names, the scales reaching AdamW (one step by hand), two steps of
 * a tiny ViT against MAE's fine-tuning code in PyTorch
 * (tests/torch/gen_finetune.py), few-label subsets, loading a pretraining
 * checkpoint's encoder, short real runs on Fashion-MNIST that must learn,
 * and bad inputs. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "selfsup/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256];

static ssl_encoder_config vit_config(int img, int patch, int dim, int depth, int heads)
{
    ssl_encoder_config c;
    memset(&c, 0, sizeof c);
    c.kind = SSL_ENC_VIT;
    c.vit.img_size = img;
    c.vit.patch = patch;
    c.vit.in_chans = 1;
    c.vit.embed_dim = dim;
    c.vit.depth = depth;
    c.vit.heads = heads;
    c.vit.mlp_ratio = 4.0f;
    c.vit.qkv_bias = 1;
    c.vit.pos = SSL_VIT_POS_LEARNED;
    c.vit.class_token = 1;
    return c;
}

static void test_layer_ids(void)
{
    char err[SSL_ERR_LEN] = "";
    ssl_rng rng;
    ssl_rng_seed(&rng, 1);
    ssl_encoder vit, res;
    ssl_encoder_config vc = vit_config(8, 4, 24, 3, 3);
    ssl_encoder_config rc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    if (ssl_encoder_init(&vit, &vc, &rng, err) || ssl_encoder_init(&res, &rc, &rng, err)) {
        CHECK(0, "encoder init: %s", err);
        return;
    }
    CHECK(ssl_finetune_num_layers(&vit) == 4, "ViT depth 3: L %d", ssl_finetune_num_layers(&vit));
    CHECK(ssl_finetune_num_layers(&res) == 5, "ResNet: L %d", ssl_finetune_num_layers(&res));
    static const struct { const char *name; int id; } vt[] = {
        {"cls_token", 0}, {"pos_embed", 0}, {"patch_embed.proj.weight", 0},
        {"patch_embed.proj.bias", 0}, {"blocks.0.norm1.weight", 1}, {"blocks.0.attn.qkv.bias", 1},
        {"blocks.1.mlp.fc1.weight", 2}, {"blocks.2.mlp.fc2.bias", 3}, {"norm.weight", 4},
        {"norm.bias", 4}, {"fc_norm.weight", 4}, {"head.weight", 4}, {"head.bias", 4},
        {"blocks.x.norm1.weight", 4}, {"blocks.9.norm1.weight", 4}, {"pos_embedding", 4},
    };
    for (size_t i = 0; i < sizeof vt / sizeof vt[0]; i++) {
        int id = ssl_finetune_layer_id(&vit, vt[i].name);
        CHECK(id == vt[i].id, "ViT '%s': layer %d, want %d", vt[i].name, id, vt[i].id);
    }
    static const struct { const char *name; int id; } rt[] = {
        {"conv1.weight", 0}, {"bn1.weight", 0}, {"bn1.bias", 0}, {"layer1.0.conv1.weight", 1},
        {"layer2.0.downsample.0.weight", 2}, {"layer3.1.bn2.bias", 3}, {"layer4.1.conv2.weight", 4},
        {"fc.weight", 5}, {"fc.bias", 5}, {"layer5.0.conv1.weight", 5}, {"layer10.weight", 5},
    };
    for (size_t i = 0; i < sizeof rt / sizeof rt[0]; i++) {
        int id = ssl_finetune_layer_id(&res, rt[i].name);
        CHECK(id == rt[i].id, "ResNet '%s': layer %d, want %d", rt[i].name, id, rt[i].id);
    }
    /* every parameter of the real networks lands below the head */
    int bad = 0, n0 = 0;
    for (int i = 0; i < vit.reg->n_params; i++) {
        int id = ssl_finetune_layer_id(&vit, vit.reg->params[i].name);
        bad += id < 0 || id > 4;
        n0 += id == 0;
    }
    CHECK(!bad && n0 == 4, "ViT params: %d out of range, %d in layer 0 (want 4)", bad, n0);
    bad = 0;
    for (int i = 0; i < res.reg->n_params; i++) {
        const char *nm = res.reg->params[i].name;
        int id = ssl_finetune_layer_id(&res, nm);
        int want = !strncmp(nm, "layer", 5) ? nm[5] - '0' : 0;
        bad += id != want;
    }
    CHECK(!bad, "ResNet-18 params: %d with a wrong layer", bad);
    ssl_encoder_free(&vit);
    ssl_encoder_free(&res);
}

/* One step of the finetuner against AdamW written out with each param's
 * lr * decay^(L - id), for a ViT and a ResNet. */
static void test_scales_reach_adamw(ssl_encoder_config ec, float decay, const char *what)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 3, 1);
    ssl_encoder enc;
    if (ssl_encoder_init(&enc, &ec, &ctx.rng, ctx.err)) {
        CHECK(0, "%s: encoder: %s", what, ctx.err);
        ssl_ctx_free(&ctx);
        return;
    }
    ssl_finetune_config cfg;
    ssl_finetune_config_default(&cfg, ec.kind);
    cfg.layer_decay = decay;
    cfg.weight_decay = 0.3f; /* large enough to show in the comparison */
    ssl_finetuner ft;
    int rc = ssl_finetuner_init(&ft, &ctx, &enc, 4, &cfg);
    CHECK(rc == SSL_OK, "%s: finetuner init: %s", what, ctx.err);
    const int B = 4, S = 8;
    float x[4 * 8 * 8];
    int32_t y[4] = {0, 3, 1, 3};
    for (int i = 0; i < B * S * S; i++) x[i] = ssl_rng_normal(&ctx.rng);
    const int L = ssl_finetune_num_layers(&enc);
    float **w0 = calloc((size_t)ft.n_params, sizeof *w0);
    for (int i = 0; !rc && i < ft.n_params; i++) {
        w0[i] = malloc(sizeof(float) * (size_t)ft.params[i].numel);
        memcpy(w0[i], ft.params[i].data, sizeof(float) * (size_t)ft.params[i].numel);
    }
    const float lr = 0.01f;
    float loss = 0;
    if (!rc) rc = ssl_finetuner_step(&ft, x, y, B, S, S, lr, &loss, NULL);
    CHECK(rc == SSL_OK && isfinite(loss), "%s: step: %s", what, ctx.err);
    int n_scaled = 0;
    for (int i = 0; !rc && i < ft.n_params; i++) {
        const ssl_param *p = &ft.params[i];
        int head = i >= enc.reg->n_params;
        double s = head ? 1.0 : pow(decay, L - ssl_finetune_layer_id(&enc, p->name));
        n_scaled += s < 1;
        CHECK(ft.lr_scales[i] == s, "%s: '%s' scale %g, want %g", what, p->name, ft.lr_scales[i], s);
        double wd = p->no_decay ? 0.0 : 0.3;
        float *want = malloc(sizeof(float) * (size_t)p->numel);
        for (int64_t j = 0; j < p->numel; j++) { /* first AdamW step: m^ = g, v^ = g^2 */
            double g = p->grad[j];
            want[j] = (float)(w0[i][j] * (1 - lr * s * wd) - lr * s * g / (fabs(g) + 1e-8));
        }
        char name[160];
        snprintf(name, sizeof name, "%s: %s after one step", what, p->name);
        CHECK_CLOSE(p->data, want, p->numel, 1e-8, 2e-6, name);
        /* the moments show MAE's betas (0.9, 0.999): m = 0.1 g, v = 0.001 g^2 */
        ssl_buffer m = ssl_optim_state(ft.opt, i), v = ssl_optim_state(ft.opt, ft.n_params + i);
        for (int64_t j = 0; j < p->numel; j++) want[j] = (float)(0.1 * p->grad[j]);
        snprintf(name, sizeof name, "%s: %s exp_avg", what, p->name);
        CHECK(m.numel == p->numel, "%s size", name);
        if (m.numel == p->numel) CHECK_CLOSE(m.data, want, p->numel, 1e-12, 1e-6, name);
        for (int64_t j = 0; j < p->numel; j++) want[j] = (float)(1e-3 * p->grad[j] * p->grad[j]);
        snprintf(name, sizeof name, "%s: %s exp_avg_sq", what, p->name);
        CHECK(v.numel == p->numel, "%s size", name);
        /* (1 - beta2 as a float config value is 1e-3 to 5e-5) */
        if (v.numel == p->numel) CHECK_CLOSE(v.data, want, p->numel, 1e-20, 1e-4, name);
        free(want);
    }
    CHECK(rc || decay == 1.0f || n_scaled > 0, "%s: no parameter got a scale below 1", what);
    for (int i = 0; i < ft.n_params; i++) free(w0[i]);
    free(w0);
    ssl_finetuner_free(&ft);
    ssl_encoder_free(&enc);
    ssl_ctx_free(&ctx);
}

/* Two steps against MAE's fine-tuning loop in PyTorch. */
static void test_golden(void)
{
    ssl_st_file f;
    if (!golden_load(&f, "finetune.safetensors", "gen_finetune.py")) return;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    ssl_encoder enc;
    ssl_encoder_config ec = vit_config(8, 4, 24, 2, 3);
    const ssl_st_entry *xe = ssl_st_find(&f, "x"), *ye = ssl_st_find(&f, "labels");
    const ssl_st_entry *le = ssl_st_find(&f, "lr"), *loss_e = ssl_st_find(&f, "loss");
    if (!xe || !ye || !le || !loss_e || ye->dtype != SSL_DT_I32 || xe->ndim != 4 ||
        ssl_encoder_init(&enc, &ec, &ctx.rng, ctx.err)) {
        CHECK(0, "golden inputs missing or encoder init failed: %s", ctx.err);
        ssl_st_free(&f);
        ssl_ctx_free(&ctx);
        return;
    }
    ssl_finetune_config cfg;
    ssl_finetune_config_default(&cfg, SSL_ENC_VIT);
    cfg.layer_decay = 0.75f;
    cfg.weight_decay = 0.05f;
    cfg.label_smoothing = 0.1f;
    ssl_finetuner ft;
    int rc = ssl_finetuner_init(&ft, &ctx, &enc, 5, &cfg);
    CHECK(rc == SSL_OK, "finetuner init: %s", ctx.err);
    char key[200];
    for (int i = 0; !rc && i < ft.n_params; i++) { /* the golden start point */
        const ssl_param *p = &ft.params[i];
        snprintf(key, sizeof key, "init.%s", p->name);
        const ssl_st_entry *e = ssl_st_find(&f, key);
        if (!e || e->nbytes != sizeof(float) * (size_t)p->numel) {
            CHECK(0, "golden '%s' missing or of another size", key);
            rc = SSL_EFORMAT;
            break;
        }
        memcpy(p->data, e->data, e->nbytes);
        snprintf(key, sizeof key, "scale.%s", p->name);
        e = ssl_st_find(&f, key);
        CHECK(e && fabs(ft.lr_scales[i] - *(const float *)e->data) <= 1e-7 * ft.lr_scales[i],
              "'%s': lr scale %g differs from MAE's param_groups_lrd", p->name, ft.lr_scales[i]);
    }
    const int B = (int)xe->shape[0], S = (int)xe->shape[2];
    float *x = malloc(xe->nbytes);
    memcpy(x, xe->data, xe->nbytes);
    for (int k = 0; !rc && k < 2; k++) {
        float loss = 0;
        rc = ssl_finetuner_step(&ft, x, ye->data, B, S, S, ((const float *)le->data)[k], &loss, NULL);
        CHECK(rc == SSL_OK, "step %d: %s", k + 1, ctx.err);
        float want = ((const float *)loss_e->data)[k];
        CHECK(fabsf(loss - want) <= 1e-5f * fabsf(want), "step %d: loss %.7f, PyTorch %.7f", k + 1,
              (double)loss, (double)want);
        for (int i = 0; !rc && i < ft.n_params; i++) {
            const ssl_param *p = &ft.params[i];
            snprintf(key, sizeof key, "step%d.%s", k + 1, p->name);
            const ssl_st_entry *e = ssl_st_find(&f, key);
            if (!e || e->nbytes != sizeof(float) * (size_t)p->numel) {
                CHECK(0, "golden '%s' missing", key);
                continue;
            }
            const float *want_w = e->data;
            int64_t n = p->numel;
            if (strstr(p->name, "attn.qkv.bias")) {
                /* the key bias has an exactly-zero gradient (a constant added to
                 * every key leaves the softmax unchanged): AdamW moves it by
                 * rounding noise, up to lr * scale a step (gen_finetune.py) */
                const int D = (int)(n / 3);
                double lim = 0.03 * ft.lr_scales[i] * (k + 1);
                double worst = 0;
                for (int j = D; j < 2 * D; j++) worst = fmax(worst, fabs(p->data[j] - want_w[j]));
                CHECK(worst <= lim, "%s: key bias moved %g (limit %g)", key, worst, lim);
                CHECK_CLOSE(p->data, want_w, D, 5e-5, 1e-5, key);
                CHECK_CLOSE(p->data + 2 * D, want_w + 2 * D, D, 5e-5, 1e-5, key);
            } else {
                CHECK_CLOSE(p->data, want_w, n, 5e-5, 1e-5, key);
            }
        }
    }
    free(x);
    ssl_finetuner_free(&ft);
    ssl_encoder_free(&enc);
    ssl_st_free(&f);
    ssl_ctx_free(&ctx);
}

static int count_class(const ssl_dataset *d, int k)
{
    int n = 0;
    for (int i = 0; i < d->n; i++) n += d->labels[i] == k;
    return n;
}

/* Is every image of sub an image of ds with the same label, in ds's order? */
static int is_ordered_subset(const ssl_dataset *sub, const ssl_dataset *ds)
{
    size_t img = (size_t)ds->c * ds->h * ds->w;
    int j = 0;
    for (int i = 0; i < ds->n && j < sub->n; i++)
        if (!memcmp(ds->images + img * i, sub->images + img * j, img) && ds->labels[i] == sub->labels[j])
            j++;
    return j == sub->n;
}

static void test_subsets(const ssl_dataset *train)
{
    char err[SSL_ERR_LEN] = "";
    ssl_dataset a, b, c, fr;
    int rc = ssl_dataset_label_subset(&a, train, 5, 0, 1, err);
    rc |= ssl_dataset_label_subset(&b, train, 5, 0, 1, err);
    rc |= ssl_dataset_label_subset(&c, train, 5, 0, 2, err);
    rc |= ssl_dataset_label_subset(&fr, train, 0, 0.1f, 1, err);
    CHECK(rc == SSL_OK, "label subsets: %s", err);
    if (rc) return;
    CHECK(a.n == 50 && a.c == train->c && a.h == train->h && a.n_classes == 10, "5 per class: %d images", a.n);
    int balanced = 1;
    for (int k = 0; k < 10; k++) balanced &= count_class(&a, k) == 5;
    CHECK(balanced, "5 per class is not 5 of each class");
    CHECK(a.n == b.n && !memcmp(a.images, b.images, (size_t)a.n * 784) &&
          !memcmp(a.labels, b.labels, sizeof(int32_t) * a.n), "same seed, another subset");
    CHECK(memcmp(a.images, c.images, (size_t)a.n * 784), "seeds 1 and 2 picked the same images");
    CHECK(is_ordered_subset(&a, train), "the subset is not the dataset's images in order");
    int fr_ok = 1;
    for (int k = 0; k < 10; k++) fr_ok &= count_class(&fr, k) == (int)lround(0.1 * count_class(train, k));
    CHECK(fr_ok && is_ordered_subset(&fr, train), "fraction 0.1: %d images not 10%% of each class", fr.n);
    ssl_dataset_free(&a);
    ssl_dataset_free(&b);
    ssl_dataset_free(&c);
    ssl_dataset_free(&fr);

    err[0] = 0;
    rc = ssl_dataset_label_subset(&a, train, 100000, 0, 1, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "fewer than") && a.images == NULL, "too many per class: %d '%s'", rc, err);
    err[0] = 0;
    rc = ssl_dataset_label_subset(&a, train, 5, 0.5f, 1, err);
    CHECK(rc == SSL_EINVAL && err[0], "both count and fraction: %d", rc);
    ssl_dataset nolab = *train;
    nolab.labels = NULL;
    err[0] = 0;
    rc = ssl_dataset_label_subset(&a, &nolab, 5, 0, 1, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "no labels"), "unlabelled: %d '%s'", rc, err);
}

/* A short real run must learn: training accuracy of the second epoch and
 * test top-1 well above chance (10%); the log and the checkpoint hold it.
 * A ViT from scratch learns slowly under random crops (PyTorch too: the
 * same recipe gives 38% / 36% training accuracy in epoch 2 without /
 * with the crop scale 0.5 at batch 16 / 32), so its run crops nothing. */
static void test_learns(const ssl_dataset *train, const ssl_dataset *test, ssl_encoder_config ec,
                        int batch, float lr, float crop_min, const char *what)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 7, 1);
    ssl_encoder enc;
    if (ssl_encoder_init(&enc, &ec, &ctx.rng, ctx.err)) {
        CHECK(0, "%s: encoder: %s", what, ctx.err);
        ssl_ctx_free(&ctx);
        return;
    }
    ssl_finetune_config cfg;
    ssl_finetune_config_default(&cfg, ec.kind);
    cfg.epochs = 2;
    cfg.batch_size = batch;
    cfg.lr = lr;
    cfg.crop_scale_min = crop_min;
    cfg.warmup_epochs = 0.25f;
    cfg.workers = 0;
    cfg.quiet = 1;
    snprintf(cfg.out, sizeof cfg.out, "%s/%s", tmpdir, what);
    snprintf(cfg.source, sizeof cfg.source, "scratch");
    ssl_finetune_result res;
    double t0 = ssl_time();
    int rc = ssl_finetune(&ctx, &enc, train, test, &cfg, &res);
    CHECK(rc == SSL_OK, "%s: finetune: %s", what, ctx.err);
    if (!rc) {
        const ssl_finetune_epoch *e = &res.epochs[res.n_epochs - 1];
        printf("%s: %d images, %lld steps in %.1f s: epoch 1 acc %.1f%%, epoch 2 loss %.3f acc %.1f%%, test top-1 %.1f%%\n",
               what, res.n_train, (long long)res.steps, ssl_time() - t0, 100 * res.epochs[0].train_acc,
               e->train_loss, 100 * e->train_acc, 100 * res.test_top1);
        CHECK(res.n_epochs == 2 && res.steps == 2 * (train->n / batch), "%s: %d epochs, %lld steps", what,
              res.n_epochs, (long long)res.steps);
        CHECK(e->train_acc > 0.2, "%s: epoch 2 training accuracy %.3f is near chance", what, e->train_acc);
        CHECK(res.test_top1 > 0.2 && res.test_top1 == e->test_top1, "%s: test top-1 %.3f", what, res.test_top1);
        char path[700];
        snprintf(path, sizeof path, "%s/finetune_log.jsonl", cfg.out);
        FILE *fl = fopen(path, "r");
        int lines = 0, ch;
        while (fl && (ch = fgetc(fl)) != EOF) lines += ch == '\n';
        if (fl) fclose(fl);
        CHECK(lines == 2, "%s: %d lines in %s", what, lines, path);
        ssl_st_file f;
        char err[SSL_ERR_LEN];
        rc = ssl_st_load(&f, res.checkpoint, err);
        CHECK(rc == SSL_OK, "%s: checkpoint: %s", what, err);
        if (!rc) {
            const char *hw = ec.kind == SSL_ENC_VIT ? "head.weight" : "fc.weight";
            const ssl_st_entry *h = ssl_st_find(&f, hw);
            const ssl_st_entry *e0 = ssl_st_find(&f, enc.reg->params[0].name);
            const char *fmt = ssl_st_meta(&f, "format"), *ep = ssl_st_meta(&f, "epoch");
            CHECK(h && h->ndim == 2 && h->shape[0] == 10 && h->shape[1] == enc.feat_dim && e0 &&
                      !memcmp(e0->data, enc.reg->params[0].data, e0->nbytes),
                  "%s: checkpoint tensors", what);
            CHECK(fmt && !strcmp(fmt, "selfsup-finetune") && ep && !strcmp(ep, "2") &&
                      ssl_st_meta(&f, "encoder") && ssl_st_meta(&f, "finetune"),
                  "%s: checkpoint metadata", what);
            ssl_st_free(&f);
        }
    }
    ssl_finetune_result_free(&res);
    ssl_encoder_free(&enc);
    ssl_ctx_free(&ctx);
}

/* A pretraining checkpoint's encoder comes back bit for bit. */
static void test_load_encoder(void)
{
    char err[SSL_ERR_LEN] = "", path[512];
    snprintf(path, sizeof path, "%s/pre.safetensors", tmpdir);
    ssl_train_config tc;
    ssl_train_config_default(&tc);
    tc.width = 4;
    int rc = ssl_train_config_resolve(&tc, err);
    ssl_encoder_config ec;
    if (!rc) rc = ssl_train_encoder_config(&tc, 1, 28, &ec, err);
    ssl_method m;
    memset(&m, 0, sizeof m);
    ssl_rng rng;
    ssl_rng_seed(&rng, 11);
    if (!rc) rc = ssl_method_create(&m, ssl_method_find(tc.method), &tc.mcfg, &ec, &rng, err);
    ssl_train_state st = {5, 1, 0, 1};
    for (int i = 0; !rc && i < m.encoder.reg->n_counters; i++) *m.encoder.reg->counters[i].value = 7 + i;
    if (!rc) rc = ssl_checkpoint_save(path, &tc, &m, NULL, &st, err);
    CHECK(rc == SSL_OK, "pretraining checkpoint: %s", err);
    ssl_encoder enc;
    ssl_train_config got;
    if (!rc) {
        rc = ssl_finetune_load_encoder(path, &enc, &got, err);
        CHECK(rc == SSL_OK && !strcmp(got.method, "simclr"), "load encoder: %s", err);
    }
    if (!rc) {
        int same = enc.reg->n_params == m.encoder.reg->n_params && enc.reg->n_buffers == m.encoder.reg->n_buffers;
        for (int i = 0; same && i < enc.reg->n_params; i++)
            same = !memcmp(enc.reg->params[i].data, m.encoder.reg->params[i].data,
                           sizeof(float) * (size_t)enc.reg->params[i].numel);
        for (int i = 0; same && i < enc.reg->n_buffers; i++)
            same = !memcmp(enc.reg->buffers[i].data, m.encoder.reg->buffers[i].data,
                           sizeof(float) * (size_t)enc.reg->buffers[i].numel);
        same &= enc.reg->n_counters == m.encoder.reg->n_counters && enc.reg->n_counters > 0;
        for (int i = 0; same && i < enc.reg->n_counters; i++)
            same = *enc.reg->counters[i].value == 7 + i;
        CHECK(same, "loaded encoder differs from the saved one");
        ssl_encoder_free(&enc);
    }
    ssl_method_free(&m);

    /* a missing file, and a file that is not a checkpoint */
    err[0] = 0;
    rc = ssl_finetune_load_encoder("/nonexistent/ckpt.safetensors", &enc, &got, err);
    CHECK(rc == SSL_EIO && strstr(err, "/nonexistent/ckpt.safetensors") && !strchr(err, '\n'),
          "missing checkpoint: %d '%s'", rc, err);
    snprintf(path, sizeof path, "%s/junk.safetensors", tmpdir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("not a checkpoint at all", f);
        fclose(f);
    }
    err[0] = 0;
    rc = ssl_finetune_load_encoder(path, &enc, &got, err);
    CHECK(rc != SSL_OK && strstr(err, "junk.safetensors"), "junk checkpoint: %d '%s'", rc, err);
}

static void test_bad_inputs(const ssl_dataset *train, const ssl_dataset *test)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    ssl_encoder enc;
    ssl_encoder_config ec = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
    if (ssl_encoder_init(&enc, &ec, &ctx.rng, ctx.err)) {
        CHECK(0, "encoder: %s", ctx.err);
        ssl_ctx_free(&ctx);
        return;
    }
    ssl_finetune_config cfg;
    ssl_finetune_config_default(&cfg, ec.kind);
    cfg.quiet = 1;
    cfg.workers = 0;
    ssl_finetune_result res;
    ssl_dataset nolab = *train;
    nolab.labels = NULL;
    ctx.err[0] = 0;
    int rc = ssl_finetune(&ctx, &enc, &nolab, test, &cfg, &res);
    CHECK(rc == SSL_EINVAL && strstr(ctx.err, "no labels"), "unlabelled train: %d '%s'", rc, ctx.err);
    nolab = *test;
    nolab.labels = NULL;
    ctx.err[0] = 0;
    rc = ssl_finetune(&ctx, &enc, train, &nolab, &cfg, &res);
    CHECK(rc == SSL_EINVAL && strstr(ctx.err, "no labels"), "unlabelled test: %d '%s'", rc, ctx.err);
    ssl_dataset rgb = *train;
    rgb.c = 3;
    ctx.err[0] = 0;
    rc = ssl_finetune(&ctx, &enc, &rgb, NULL, &cfg, &res);
    CHECK(rc == SSL_ESHAPE && strstr(ctx.err, "channels"), "3-channel data, 1-channel encoder: %d '%s'", rc, ctx.err);
    const struct { float *field; float value; const char *what; } bad[] = {
        {&cfg.layer_decay, 0.0f, "layer-decay"}, {&cfg.layer_decay, 1.5f, "layer-decay"},
        {&cfg.label_smoothing, 1.0f, "label-smoothing"}, {&cfg.lr, 0.0f, "--lr"},
        {&cfg.label_fraction, 2.0f, "label-fraction"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ssl_finetune_config keep = cfg;
        *bad[i].field = bad[i].value;
        ctx.err[0] = 0;
        rc = ssl_finetune(&ctx, &enc, train, test, &cfg, &res);
        CHECK(rc == SSL_EINVAL && strstr(ctx.err, bad[i].what), "%s %g: %d '%s'", bad[i].what,
              (double)bad[i].value, rc, ctx.err);
        cfg = keep;
    }
    cfg.labels_per_class = 3;
    cfg.label_fraction = 0.5f;
    ctx.err[0] = 0;
    rc = ssl_finetune(&ctx, &enc, train, test, &cfg, &res);
    CHECK(rc == SSL_EINVAL && strstr(ctx.err, "not both"), "both few-label options: '%s'", ctx.err);

    /* a label outside the head's classes reaches the step */
    ssl_finetune_config_default(&cfg, ec.kind);
    ssl_finetuner ft;
    rc = ssl_finetuner_init(&ft, &ctx, &enc, 10, &cfg);
    float x[2 * 28 * 28] = {0};
    int32_t y[2] = {3, 10};
    ctx.err[0] = 0;
    if (!rc) rc = ssl_finetuner_step(&ft, x, y, 2, 28, 28, 1e-3f, NULL, NULL);
    CHECK(rc == SSL_EINVAL && strstr(ctx.err, "label 10"), "label out of range: %d '%s'", rc, ctx.err);
    ssl_finetuner_free(&ft);
    ssl_encoder_free(&enc);
    ssl_ctx_free(&ctx);
}

/* One thread: these steps are tiny, and on a loaded machine OpenMP
 * threads spend most of a step waiting for each other. */
int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/selfsup-finetune.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        CHECK(0, "mkdtemp failed");
        return check_report("finetune");
    }
    test_layer_ids();
    test_scales_reach_adamw(vit_config(8, 4, 24, 2, 3), 0.5f, "vit");
    test_scales_reach_adamw(ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL), 0.8f, "resnet");
    test_golden();
    test_load_encoder();

    char err[SSL_ERR_LEN] = "";
    ssl_dataset full, fulltest, train, test;
    memset(&full, 0, sizeof full);
    memset(&fulltest, 0, sizeof fulltest);
    int rc = ssl_dataset_load(&full, "fashion-mnist", 1, err);
    if (!rc) rc = ssl_dataset_load(&fulltest, "fashion-mnist", 0, err);
    CHECK(rc == SSL_OK, "Fashion-MNIST: %s", err);
    /* 512 training images (51-52 of each class) and 300 test images */
    if (!rc) rc = ssl_dataset_label_subset(&train, &full, 0, 512.0f / full.n, 5, err);
    if (!rc) rc = ssl_dataset_label_subset(&test, &fulltest, 30, 0, 5, err);
    CHECK(rc == SSL_OK, "subsets: %s", err);
    if (!rc) {
        test_subsets(&full);
        test_bad_inputs(&train, &test);
        test_learns(&train, &test, ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL), 32, 2e-2f,
                    0.5f, "resnet18_w4");
        ssl_encoder_config vc = vit_config(28, 7, 192, 1, 3); /* vit_tiny, one block */
        test_learns(&train, &test, vc, 16, 2e-2f, 1.0f, "vit_tiny_d1");
        ssl_dataset_free(&train);
        ssl_dataset_free(&test);
    }
    ssl_dataset_free(&full);
    ssl_dataset_free(&fulltest);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_report("finetune");
}
