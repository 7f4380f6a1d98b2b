/* DINO's ViT optimizer recipe against facebookresearch/dino main_dino.py
 * (goldens from tests/torch/gen_dino_recipe.py, PyTorch 1.13):
 *   ssl_wd_cosine vs utils.cosine_scheduler(0.04, 0.4, 3 epochs, 5 iters);
 *   ssl_clip_grad_per_param vs utils.clip_gradients (clip 3.0);
 *   4 AdamW steps, each setting the scheduled weight decay, clipping, then
 *   stepping, vs torch.optim.AdamW with DINO's two param groups;
 * and the config side: the arch-chosen recipe in ssl_train_config_resolve,
 * range checks, and the two new fields through a checkpoint's config. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "golden.h"
#include "selfsup/io.h"
#include "selfsup/method.h"
#include "selfsup/optim.h"
#include "selfsup/train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The schedule in double, rounded once: within one float ulp of the golden. */
#define SCHED_RTOL 1.2e-7
/* Float rounding differs from PyTorch only in operation order (as test_optim.c). */
#define ATOL 1e-7
#define RTOL 1e-6

static char tmpdir[64];

static long entry_numel(const ssl_st_entry *e)
{
    long n = 1;
    for (int d = 0; d < e->ndim; d++) n *= (long)e->shape[d];
    return n;
}

/* The golden F32 tensor `name` of n values, or NULL (and a failed CHECK). */
static const float *golden(const ssl_st_file *f, const char *name, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    CHECK(e && e->dtype == SSL_DT_F32 && entry_numel(e) == n,
          "golden '%s' missing, not F32 or not %ld values", name, n);
    return e && e->dtype == SSL_DT_F32 && entry_numel(e) == n ? e->data : NULL;
}

/* A param of the given shape with malloc'ed data and grad (free_param). */
static void make_param(ssl_param *p, const char *name, int ndim, const int64_t *shape, int no_decay)
{
    memset(p, 0, sizeof *p);
    p->name = name;
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        p->shape[d] = shape[d];
        p->numel *= shape[d];
    }
    p->no_decay = no_decay;
    p->data = calloc((size_t)p->numel, sizeof(float));
    p->grad = calloc((size_t)p->numel, sizeof(float));
}

static void free_param(ssl_param *p)
{
    free(p->data);
    free(p->grad);
}

/* Every step of cosine_scheduler(0.04, 0.4, epochs=3, niter_per_ep=5), and
 * the ends: final at total (which DINO's list never reaches), clamping. */
static void test_wd_schedule(const ssl_st_file *f)
{
    enum { TOTAL = 15 };
    const float *ref = golden(f, "wd_schedule", TOTAL);
    if (!ref) return;
    float got[TOTAL];
    for (int i = 0; i < TOTAL; i++) got[i] = ssl_wd_cosine(i, TOTAL, 0.04f, 0.4f);
    CHECK_CLOSE(got, ref, TOTAL, 0.0, SCHED_RTOL, "ssl_wd_cosine vs cosine_scheduler");
    CHECK(ssl_wd_cosine(TOTAL, TOTAL, 0.04f, 0.4f) == 0.4f, "wd at total_steps: %g",
          (double)ssl_wd_cosine(TOTAL, TOTAL, 0.04f, 0.4f));
    CHECK(ssl_wd_cosine(TOTAL + 7, TOTAL, 0.04f, 0.4f) == 0.4f, "wd after total_steps");
    CHECK(ssl_wd_cosine(-3, TOTAL, 0.04f, 0.4f) == 0.04f, "wd before step 0");
    CHECK(ssl_wd_cosine(5, 0, 0.04f, 0.4f) == 0.04f, "wd of an empty schedule");
}

/* main_dino.py's learning rate, cosine_scheduler(1e-3, min_lr 1e-6, 4
 * epochs of 5 steps, 1 warm-up epoch): after the warm-up (where DINO's
 * linspace(0, lr, 5) starts at 0 and ours at lr / 5) every step matches,
 * and the end is min_lr. */
static void test_lr_schedule(const ssl_st_file *f)
{
    enum { TOTAL = 20, WARM = 5 };
    const float *ref = golden(f, "lr_schedule", TOTAL);
    if (!ref) return;
    float got[TOTAL];
    for (int i = 0; i < TOTAL; i++) got[i] = ssl_lr_warmup_cosine(i, WARM, TOTAL, 1e-3f, 1e-6f);
    CHECK_CLOSE(got + WARM, ref + WARM, TOTAL - WARM, 0.0, SCHED_RTOL,
                "ssl_lr_warmup_cosine vs cosine_scheduler with min_lr, after the warm-up");
    CHECK(got[WARM - 1] == 1e-3f && fabsf(ref[WARM - 1] - 1e-3f) <= 1e-9f,
          "both reach the peak at the last warm-up step: %g, %g", (double)got[WARM - 1],
          (double)ref[WARM - 1]);
    CHECK(ssl_lr_warmup_cosine(TOTAL, WARM, TOTAL, 1e-3f, 1e-6f) == 1e-6f, "lr at the end: %g",
          (double)ssl_lr_warmup_cosine(TOTAL, WARM, TOTAL, 1e-3f, 1e-6f));
}

/* clip_gradients(model, 3.0) on five params: norm 5 (clipped to 3), 0.5,
 * a zero gradient, 2.9999 (coefficient just over 1: untouched) and a large
 * param of norm 17 (summed on several threads). */
static void test_clip(const ssl_st_file *f)
{
    enum { N = 5 };
    static const int64_t shapes[N][2] = {{7, 3}, {11, 0}, {4, 2}, {3, 3}, {40000, 0}};
    static const int ndims[N] = {2, 1, 2, 2, 1};
    static const char *const names[N] = {"p0", "p1", "p2", "p3", "p4"};
    ssl_param ps[N];
    const float *norms = golden(f, "clip.norms", N);
    int ok = norms != NULL;
    for (int i = 0; i < N; i++) {
        make_param(&ps[i], names[i], ndims[i], shapes[i], 0);
        char key[32];
        snprintf(key, sizeof key, "clip.grad.%d", i);
        const float *g = golden(f, key, ps[i].numel);
        if (g) memcpy(ps[i].grad, g, sizeof(float) * (size_t)ps[i].numel);
        ok &= g != NULL;
    }
    if (ok) {
        float largest = ssl_clip_grad_per_param(ps, N, 3.0f);
        float ref_largest = 0;
        for (int i = 0; i < N; i++) ref_largest = norms[i] > ref_largest ? norms[i] : ref_largest;
        CHECK(fabsf(largest - ref_largest) <= 1e-6f * ref_largest,
              "returned largest norm %.9g, clip_gradients' norms give %.9g", (double)largest,
              (double)ref_largest);
        for (int i = 0; i < N; i++) {
            char key[32], what[64];
            snprintf(key, sizeof key, "clip.clipped.%d", i);
            snprintf(what, sizeof what, "clipped gradient of p%d", i);
            const float *ref = golden(f, key, ps[i].numel);
            if (ref) CHECK_CLOSE(ps[i].grad, ref, ps[i].numel, ATOL, RTOL, what);
        }
        /* the untouched ones bit for bit */
        CHECK(!memcmp(ps[1].grad, golden(f, "clip.grad.1", 11), 11 * sizeof(float)),
              "a gradient below the clip changed");
        CHECK(!memcmp(ps[3].grad, golden(f, "clip.grad.3", 9), 9 * sizeof(float)),
              "a gradient of norm 2.9999 changed");
    }
    CHECK(ssl_clip_grad_per_param(ps, 0, 3.0f) == 0.0f, "no params: largest norm 0");
    for (int i = 0; i < N; i++) free_param(&ps[i]);
}

/* main_dino.py's iteration: group 0's weight_decay = wd_schedule[it], both
 * groups' lr = lr_schedule[it], backward, clip_gradients, step. */
static void test_adamw_steps(const ssl_st_file *f)
{
    enum { STEPS = 4, NP = 3, FREEZE = 2 };
    static const int64_t ws[2] = {6, 5}, bs[1] = {6}, ls[2] = {4, 5};
    ssl_param ps[NP];
    make_param(&ps[0], "weight", 2, ws, 0);
    make_param(&ps[1], "bias", 1, bs, 1);
    make_param(&ps[2], "last_layer", 2, ls, 0);
    int ok = 1;
    for (int i = 0; i < NP; i++) {
        char key[48];
        snprintf(key, sizeof key, "adamw.init.%s", ps[i].name);
        const float *v = golden(f, key, ps[i].numel);
        if (v) memcpy(ps[i].data, v, sizeof(float) * (size_t)ps[i].numel);
        ok &= v != NULL;
    }
    const float *lr = golden(f, "adamw.lr", STEPS), *wd_ref = golden(f, "adamw.wd", STEPS);
    ssl_optim *o = NULL;
    char err[SSL_ERR_LEN] = "";
    if (ok && lr && wd_ref) {
        ssl_optim_config c = {.kind = SSL_OPTIM_ADAMW, .lr = lr[0], .weight_decay = 0.04f,
                              .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
        int rc = ssl_optim_create(&o, &c, ps, NP, err);
        CHECK(rc == SSL_OK, "create: %s", err);
    }
    for (int k = 0; o && k < STEPS; k++) {
        char key[48], what[64];
        for (int i = 0; i < NP; i++) {
            snprintf(key, sizeof key, "adamw.grad.%d.%s", k, ps[i].name);
            const float *gr = golden(f, key, ps[i].numel);
            if (gr) memcpy(ps[i].grad, gr, sizeof(float) * (size_t)ps[i].numel);
            ok &= gr != NULL;
        }
        if (!ok) break;
        float wd = ssl_wd_cosine(k, STEPS, 0.04f, 0.4f);
        CHECK(fabsf(wd - wd_ref[k]) <= SCHED_RTOL * wd_ref[k], "step %d: wd %.9g vs %.9g", k,
              (double)wd, (double)wd_ref[k]);
        ssl_optim_set_weight_decay(o, wd);
        ssl_clip_grad_per_param(ps, NP, 3.0f);
        for (int i = 0; i < NP; i++) {
            snprintf(key, sizeof key, "adamw.clipped.%d.%s", k, ps[i].name);
            snprintf(what, sizeof what, "step %d: clipped %s", k, ps[i].name);
            const float *ref = golden(f, key, ps[i].numel);
            if (ref) CHECK_CLOSE(ps[i].grad, ref, ps[i].numel, ATOL, RTOL, what);
        }
        /* cancel_gradients_last_layer: grad None for the first FREEZE steps */
        ps[2].frozen = k < FREEZE;
        ssl_optim_step(o, lr[k]);
        for (int i = 0; i < NP; i++) {
            snprintf(key, sizeof key, "adamw.step%d.%s", k + 1, ps[i].name);
            snprintf(what, sizeof what, "after step %d: %s", k + 1, ps[i].name);
            const float *ref = golden(f, key, ps[i].numel);
            if (ref) CHECK_CLOSE(ps[i].data, ref, ps[i].numel, ATOL, RTOL, what);
        }
        CHECK(ssl_optim_param_steps(o, 2) == (k < FREEZE ? 0 : k + 1 - FREEZE) &&
                  ssl_optim_param_steps(o, 0) == k + 1 && ssl_optim_steps(o) == k + 1,
              "after step %d: step counts %lld (last layer), %lld, %lld", k + 1,
              (long long)ssl_optim_param_steps(o, 2), (long long)ssl_optim_param_steps(o, 0),
              (long long)ssl_optim_steps(o));
    }
    ssl_optim_free(o);
    for (int i = 0; i < NP; i++) free_param(&ps[i]);
}

static int resolve(ssl_train_config *c, const char *method, const char *arch, char *err)
{
    snprintf(c->method, sizeof c->method, "%s", method);
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    return ssl_train_config_resolve(c, err);
}

static void test_resolve(void)
{
    char err[SSL_ERR_LEN] = "";
    ssl_train_config c;

    ssl_train_config_default(&c);
    int rc = resolve(&c, "dino", "vit_tiny", err);
    CHECK(rc == SSL_OK, "dino vit_tiny: %s", err);
    CHECK(!strcmp(c.optimizer, "adamw") && !strcmp(c.lr_scale, "linear") && c.lr == 5e-4f,
          "dino vit_tiny: %s lr %g (%s), want adamw 5e-4 (linear)", c.optimizer, (double)c.lr,
          c.lr_scale);
    CHECK(c.weight_decay == 0.04f && c.weight_decay_end == 0.4f && c.clip_grad == 3.0f,
          "dino vit_tiny: wd %g -> %g, clip %g; want 0.04 -> 0.4, 3", (double)c.weight_decay,
          (double)c.weight_decay_end, (double)c.clip_grad);
    CHECK(c.warmup_epochs == 0.5f, "dino vit_tiny: warm-up %g epochs", (double)c.warmup_epochs);
    CHECK(c.min_lr == 1e-6f && c.drop_path == 0.1f, "dino vit_tiny: min lr %g, drop path %g",
          (double)c.min_lr, (double)c.drop_path);
    ssl_encoder_config ec;
    CHECK(ssl_train_encoder_config(&c, 1, 28, &ec, err) == SSL_OK && ec.vit.drop_path == 0.1f,
          "dino vit_tiny: the encoder's drop path %g (%s)", (double)ec.vit.drop_path, err);
    const ssl_method_ops *dino = ssl_method_find("dino");
    CHECK(dino && ssl_train_config_recipe(&c, dino)->beta2 == 0.999f, "dino ViT recipe beta2");

    ssl_train_config_default(&c);
    rc = resolve(&c, "dino", "resnet18", err);
    CHECK(rc == SSL_OK, "dino resnet18: %s", err);
    CHECK(!strcmp(c.optimizer, "sgd") && c.lr == 0.03f && c.weight_decay == 1e-4f &&
              c.weight_decay_end == 0 && c.clip_grad == 0,
          "dino resnet18: %s lr %g wd %g -> %g clip %g; want sgd 0.03 1e-4, no schedule, no clip",
          c.optimizer, (double)c.lr, (double)c.weight_decay, (double)c.weight_decay_end,
          (double)c.clip_grad);
    CHECK(c.min_lr == 1e-6f && c.drop_path == 0, "dino resnet18: min lr %g, drop path %g",
          (double)c.min_lr, (double)c.drop_path);
    ssl_train_config_default(&c);
    c.drop_path = 0.2f;
    CHECK(resolve(&c, "dino", "resnet18", err) == SSL_EINVAL && strstr(err, "--drop-path"),
          "--drop-path on a ResNet accepted (%s)", err);
    ssl_train_config_default(&c);
    c.drop_path = 1.0f;
    CHECK(resolve(&c, "dino", "vit_tiny", err) == SSL_EINVAL && strstr(err, "--drop-path"),
          "--drop-path 1 accepted (%s)", err);
    ssl_train_config_default(&c);
    c.drop_path = 0.3f; /* any method's ViT may use it */
    rc = resolve(&c, "mae", "vit_tiny", err);
    CHECK(rc == SSL_OK && c.drop_path == 0.3f && c.min_lr == 0, "mae vit_tiny --drop-path 0.3: "
          "%g, min lr %g (%s)", (double)c.drop_path, (double)c.min_lr, err);

    /* what the user set stays; the rest comes from the ViT recipe */
    ssl_train_config_default(&c);
    snprintf(c.optimizer, sizeof c.optimizer, "sgd");
    c.clip_grad = 1.5f;
    c.weight_decay_end = 0;
    rc = resolve(&c, "dino", "vit_small", err);
    CHECK(rc == SSL_OK && !strcmp(c.optimizer, "sgd") && c.clip_grad == 1.5f &&
              c.weight_decay_end == 0 && c.lr == 5e-4f,
          "user-set: %s clip %g wd end %g lr %g (%s)", c.optimizer, (double)c.clip_grad,
          (double)c.weight_decay_end, (double)c.lr, err);

    /* a method without a ViT recipe uses its only one for a ViT */
    ssl_train_config_default(&c);
    rc = resolve(&c, "simclr", "vit_tiny", err);
    CHECK(rc == SSL_OK && !strcmp(c.optimizer, "lars") && c.clip_grad == 0 &&
              c.weight_decay_end == 0 && c.min_lr == 0 && c.drop_path == 0,
          "simclr vit_tiny: %s clip %g wd end %g min lr %g drop path %g (%s)", c.optimizer,
          (double)c.clip_grad, (double)c.weight_decay_end, (double)c.min_lr,
          (double)c.drop_path, err);

    ssl_train_config_default(&c);
    c.clip_grad = -2;
    CHECK(resolve(&c, "dino", "vit_tiny", err) == SSL_EINVAL && strstr(err, "--clip-grad"),
          "negative --clip-grad accepted (%s)", err);
    ssl_train_config_default(&c);
    c.weight_decay_end = INFINITY;
    CHECK(resolve(&c, "dino", "vit_tiny", err) == SSL_EINVAL && strstr(err, "--weight-decay-end"),
          "infinite --weight-decay-end accepted (%s)", err);
}

/* The recipe fields survive ssl_checkpoint_save -> ssl_checkpoint_read_config;
 * a checkpoint written before them reads as 0 (no schedule, no clip, lr to
 * 0, no drop path). */
static void test_checkpoint_config(void)
{
    char err[SSL_ERR_LEN] = "", path[128];
    snprintf(path, sizeof path, "%s/new.safetensors", tmpdir);
    ssl_train_config tc;
    ssl_train_config_default(&tc);
    tc.width = 4;
    tc.weight_decay_end = 0.3f;
    tc.clip_grad = 2.5f;
    tc.min_lr = 2e-5f;
    int rc = ssl_train_config_resolve(&tc, err);
    ssl_encoder_config ec;
    if (!rc) rc = ssl_train_encoder_config(&tc, 1, 28, &ec, err);
    ssl_method m;
    memset(&m, 0, sizeof m);
    ssl_rng rng;
    ssl_rng_seed(&rng, 3);
    if (!rc) rc = ssl_method_create(&m, ssl_method_find(tc.method), &tc.mcfg, &ec, &rng, err);
    ssl_train_state st = {5, 1, 0, 1};
    if (!rc) rc = ssl_checkpoint_save(path, &tc, &m, NULL, &st, err);
    CHECK(rc == SSL_OK, "checkpoint save: %s", err);
    ssl_train_config got;
    int ch = 0;
    if (!rc) {
        rc = ssl_checkpoint_read_config(path, &got, &ch, NULL, err);
        CHECK(rc == SSL_OK && got.weight_decay_end == 0.3f && got.clip_grad == 2.5f &&
                  got.min_lr == 2e-5f && got.drop_path == 0,
              "read back: wd end %g, clip %g, min lr %g, drop path %g (%s)",
              (double)got.weight_decay_end, (double)got.clip_grad, (double)got.min_lr,
              (double)got.drop_path, err);
    }
    ssl_method_free(&m);
    remove(path);

    /* an older checkpoint: a config without the keys */
    snprintf(path, sizeof path, "%s/old.safetensors", tmpdir);
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    float x = 1;
    int64_t one = 1;
    rc = ssl_st_add(&w, "x", SSL_DT_F32, 1, &one, &x, err);
    if (!rc) rc = ssl_st_add_meta(&w, "format", "selfsup-checkpoint", err);
    if (!rc) rc = ssl_st_add_meta(&w, "version", "1", err);
    if (!rc) rc = ssl_st_add_meta(&w, "in_channels", "1", err);
    if (!rc) rc = ssl_st_add_meta(&w, "config", "{\"method\":\"dino\",\"arch\":\"vit_tiny\","
                                                "\"optimizer\":\"adamw\",\"weight_decay\":0.04}", err);
    if (!rc) rc = ssl_st_write(&w, path, err);
    ssl_st_writer_free(&w);
    CHECK(rc == SSL_OK, "old checkpoint write: %s", err);
    if (!rc) {
        rc = ssl_checkpoint_read_config(path, &got, &ch, NULL, err);
        CHECK(rc == SSL_OK && got.weight_decay_end == 0 && got.clip_grad == 0 &&
                  got.min_lr == 0 && got.drop_path == 0,
              "old checkpoint: wd end %g, clip %g, min lr %g, drop path %g, want 0 (%s)",
              (double)got.weight_decay_end, (double)got.clip_grad, (double)got.min_lr,
              (double)got.drop_path, err);
        /* resolved, it keeps them off rather than taking the ViT recipe's */
        if (!rc) rc = ssl_train_config_resolve(&got, err);
        CHECK(rc == SSL_OK && got.weight_decay_end == 0 && got.clip_grad == 0 &&
                  got.min_lr == 0 && got.drop_path == 0,
              "old checkpoint resolved: wd end %g, clip %g, min lr %g, drop path %g (%s)",
              (double)got.weight_decay_end, (double)got.clip_grad, (double)got.min_lr,
              (double)got.drop_path, err);
    }
    remove(path);
}

/* DINO on a ViT: the default local crop is a whole number of patches. */
static void test_local_crops(void)
{
    char err[SSL_ERR_LEN] = "";
    ssl_encoder_config e;
    memset(&e, 0, sizeof e);
    e.kind = SSL_ENC_VIT;
    e.vit = (ssl_vit_config){.img_size = 28, .patch = 7, .in_chans = 1, .embed_dim = 8, .depth = 1,
                             .heads = 2, .mlp_ratio = 2.0f, .qkv_bias = 1,
                             .pos = SSL_VIT_POS_SINCOS, .class_token = 1};
    /* side, patch, the --local-size given (SSL_UNSET: none), the local crop's
     * side wanted (0: an error naming the patch) */
    const int cases[][4] = {{28, 7, SSL_UNSET, 14}, {28, 4, SSL_UNSET, 12}, {28, 14, SSL_UNSET, 14},
                            {32, 16, SSL_UNSET, 16}, {224, 16, SSL_UNSET, 96}, {28, 7, 21, 21},
                            {28, 7, 12, 0}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        const int *c = cases[k];
        e.vit.img_size = c[0];
        e.vit.patch = c[1];
        ssl_method_config mc;
        ssl_method_config_unset(&mc);
        mc.local_crops = 2;
        mc.out_dim = 8;
        mc.proj_hidden = 8;
        mc.bottleneck_dim = 4;
        mc.local_size = c[2];
        ssl_rng rng;
        ssl_rng_seed(&rng, 1);
        ssl_method m;
        int rc = ssl_method_create(&m, &ssl_method_dino, &mc, &e, &rng, err);
        CHECK(rc == SSL_OK, "case %zu: create: %s", k, err);
        if (rc) continue;
        rc = ssl_method_setup_run(&m, c[0], c[0], 4, err);
        if (c[3]) {
            CHECK(rc == SSL_OK && m.n_views == 4 && m.augs[2].out_h == c[3] && m.augs[3].out_w == c[3] &&
                      m.augs[0].out_h == c[0] && m.cfg.local_size == c[3],
                  "case %zu: side %d patch %d: local crop %dx%d, want %d (%s)", k, c[0], c[1],
                  m.augs[2].out_h, m.augs[2].out_w, c[3], err);
        } else {
            CHECK(rc != SSL_OK && strstr(err, "patch"), "case %zu: local size %d with patch %d: %s", k,
                  c[2], c[1], rc ? err : "accepted");
        }
        ssl_method_free(&m);
    }
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_dino_recipe.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    ssl_st_file f;
    if (golden_load(&f, "dino_recipe.safetensors", "gen_dino_recipe.py")) {
        test_wd_schedule(&f);
        test_lr_schedule(&f);
        test_clip(&f);
        test_adamw_steps(&f);
        ssl_st_free(&f);
    }
    test_resolve();
    test_checkpoint_config();
    test_local_crops();
    rmdir(tmpdir);
    return check_report("test_dino_vit_recipe");
}
