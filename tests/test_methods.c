/* Every method against PyTorch 1.13: tests/torch/gen_method_<name>.py writes
 * a few training steps of the paper's pseudo-code on a tiny encoder
 * (tests/torch/method_golden.py describes the file); this test loads the
 * same initial state into selfsup's method, replays the steps and compares
 * the loss, the gradient of every trained parameter, and every tensor the
 * golden records after a step (SGD update plus EMA teachers, queues,
 * centers, running statistics). Each method listed must have its golden:
 * a missing one fails. Tolerances: loss rtol 1e-4; grads atol tol_grad[0] x
 * max|grad| (+1e-6: a bias before BN has an exactly zero gradient
 * that float32 meets only to ~1e-7), rtol tol_grad[1] (from the golden, default 1e-4 / 1e-3);
 * after-step tensors atol 1e-5 x max|ref| (+1e-7), rtol 1e-4. */
#define _POSIX_C_SOURCE 200809L
#include "check.h"
#include "selfsup/io.h"
#include "selfsup/optim.h"
#include "selfsup/train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *meta_str(const ssl_st_file *f, const char *key)
{
    const char *v = ssl_st_meta(f, key);
    CHECK(v != NULL, "golden metadata '%s' missing", key);
    return v ? v : "0";
}

static double meta_num(const ssl_st_file *f, const char *key) { return atof(meta_str(f, key)); }

/* A tensor of m by checkpoint name: its data and size, or NULL. */
static float *find_tensor(ssl_method *m, const char *name, int64_t *numel)
{
    float *p = ssl_registry_find(m->encoder.reg, name, numel);
    if (!p) p = ssl_registry_find(&m->heads, name, numel);
    for (int i = 0; !p && i < m->n_state; i++) {
        size_t n = strlen(m->state[i].prefix);
        if (!strncmp(name, m->state[i].prefix, n))
            p = ssl_registry_find(m->state[i].reg, name + n, numel);
    }
    return p;
}

static double max_abs(const float *x, long n)
{
    double m = 0;
    for (long i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    return m;
}

/* Builds the method of the golden's metadata. */
static int build(const ssl_st_file *f, const char *method, ssl_ctx *ctx, ssl_method *m)
{
    ssl_method_config cfg;
    ssl_method_config_unset(&cfg);
    const char *cj = meta_str(f, "config");
    ssl_json j;
    char err[SSL_ERR_LEN];
    if (ssl_json_parse(&j, cj, strlen(cj), err)) {
        CHECK(0, "%s: config is not JSON: %s", method, err);
        return 1;
    }
    for (int i = 0; i < ssl_method_n_fields; i++) {
        char key[64];
        snprintf(key, sizeof key, "%s", ssl_method_fields[i].name);
        for (char *p = key; *p; p++) if (*p == '-') *p = '_';
        const ssl_json *v = ssl_json_get(&j, key);
        if (v && v->type == SSL_JSON_NUMBER) ssl_method_field_set(&cfg, &ssl_method_fields[i], v->num);
    }
    ssl_json_free(&j);
    ssl_encoder_config enc = ssl_encoder_config_resnet((int)meta_num(f, "depth"), (int)meta_num(f, "width"),
                             (int)meta_num(f, "in_channels"), SSL_STEM_SMALL);
    const ssl_method_ops *ops = ssl_method_find(method);
    CHECK(ops != NULL, "method '%s' unknown", method);
    if (!ops) return 1;
    int rc = ssl_method_create(m, ops, &cfg, &enc, &ctx->rng, err);
    CHECK(rc == SSL_OK, "%s: create: %s", method, err);
    if (rc) return 1;
    m->steps_per_epoch = (int)meta_num(f, "steps_per_epoch");
    rc = ssl_checkpoint_load_tensors(f, method, m, err);
    CHECK(rc == SSL_OK, "%s: initial state: %s", method, err);
    return rc != SSL_OK;
}

/* The golden F32 tensor `name`, which must have n values. */
static const float *golden(const ssl_st_file *f, const char *name, long n)
{
    const ssl_st_entry *e = ssl_st_find(f, name);
    int ok = e && e->dtype == SSL_DT_F32 && (long)(e->nbytes / sizeof(float)) == n;
    CHECK(ok, "golden '%s' missing or not %ld F32 values", name, n);
    return ok ? (const float *)e->data : NULL;
}

static void replay(const ssl_st_file *f, const char *method)
{
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, 1, 1);
    /* Direct convolutions, as PyTorch's: these goldens check each method's
     * logic, and some (Barlow Twins' cross-correlation over a batch of 8)
     * amplify the ~5e-6 relative rounding of the Winograd kernels a
     * thousandfold. Winograd itself is checked against the reference in
     * test_winograd and, inside a whole network, against PyTorch in
     * test_resnet. */
    ctx.direct_conv = 1;
    ssl_method m;
    memset(&m, 0, sizeof m);
    if (build(f, method, &ctx, &m)) goto out;
    double tg[2] = {1e-4, 1e-3};
    const char *tj = ssl_st_meta(f, "tol_grad");
    if (tj) sscanf(tj, "[%lf, %lf]", &tg[0], &tg[1]);
    int steps = (int)meta_num(f, "steps"), start = (int)meta_num(f, "start_step");
    ssl_param *params = malloc(sizeof(ssl_param) * (m.encoder.reg->n_params + m.heads.n_params));
    memcpy(params, m.encoder.reg->params, sizeof(ssl_param) * m.encoder.reg->n_params);
    memcpy(params + m.encoder.reg->n_params, m.heads.params, sizeof(ssl_param) * m.heads.n_params);
    int np = m.encoder.reg->n_params + m.heads.n_params;
    ssl_optim_config oc = {.kind = SSL_OPTIM_SGD, .lr = (float)meta_num(f, "lr")};
    ssl_optim *opt = NULL;
    char err[SSL_ERR_LEN];
    CHECK(ssl_optim_create(&opt, &oc, params, np, err) == SSL_OK, "%s: optimizer: %s", method, err);
    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    for (int k = 0; opt && k < steps; k++) {
        char key[600];
        ssl_tensor in[SSL_MAX_VIEWS], *vp[SSL_MAX_VIEWS];
        int nv = 0;
        for (; nv < SSL_MAX_VIEWS; nv++) {
            snprintf(key, sizeof key, "step%d.view%d", k, nv);
            const ssl_st_entry *e = ssl_st_find(f, key);
            if (!e) break;
            int shape[4] = {(int)e->shape[0], (int)e->shape[1], (int)e->shape[2], (int)e->shape[3]};
            in[nv] = ssl_tensor_wrap((float *)e->data, NULL, 4, shape, SSL_LAYOUT_NCHW);
            vp[nv] = &in[nv];
        }
        CHECK(nv >= 1, "%s: step %d has no views", method, k);
        ssl_graph_reset(&g);
        m.step = start + k;
        m.total_steps = (int64_t)meta_num(f, "total_steps");
        ssl_tensor *loss = m.ops->loss(&m, &g, vp);
        CHECK(loss != NULL, "%s: loss failed: %s", method, ctx.err);
        if (!loss) break;
        snprintf(key, sizeof key, "step%d.loss", k);
        const float *lref = golden(f, key, 1);
        /* A loss that is a mean of signed terms (SimSiam's cosines) can sit
         * near 0, far below the terms' size, which sets float32's rounding:
         * the golden then gives that size, and the atol is 1e-4 of it. */
        snprintf(key, sizeof key, "step%d.loss_scale", k);
        const ssl_st_entry *se = ssl_st_find(f, key);
        const double atol = se && se->dtype == SSL_DT_F32 ? 1e-4 * *(const float *)se->data : 0.0;
        snprintf(key, sizeof key, "step%d.loss", k);
        if (lref) CHECK_CLOSE(loss->data, lref, 1, atol, 1e-4, key);
        ssl_registry_zero_grad(m.encoder.reg);
        ssl_registry_zero_grad(&m.heads);
        CHECK(ssl_graph_backward(&g, loss) == SSL_OK, "%s: backward: %s", method, ctx.err);
        if (m.ops->after_backward) m.ops->after_backward(&m);
        ssl_method_mark_frozen(&m, params, np);
        for (int i = 0; i < np; i++) {
            snprintf(key, sizeof key, "step%d.grad.%s", k, params[i].name);
            const float *ref = golden(f, key, params[i].numel);
            if (!ref) continue;
            double atol = 1e-6 + tg[0] * max_abs(ref, params[i].numel);
            CHECK_CLOSE(params[i].grad, ref, params[i].numel, atol, tg[1], key);
        }
        ssl_optim_step(opt, oc.lr);
        if (m.ops->after_step) m.ops->after_step(&m);
        char prefix[64];
        int n_after = 0;
        snprintf(prefix, sizeof prefix, "step%d.after.", k);
        for (int i = 0; i < f->n; i++) {
            const ssl_st_entry *e = &f->entries[i];
            if (strncmp(e->name, prefix, strlen(prefix))) continue;
            const char *name = e->name + strlen(prefix);
            int64_t n = 0;
            float *mine = find_tensor(&m, name, &n);
            CHECK(mine != NULL, "%s: no tensor '%s' to compare after step %d", method, name, k);
            if (!mine) continue;
            const float *ref = golden(f, e->name, n);
            if (!ref) continue;
            n_after++;
            CHECK_CLOSE(mine, ref, n, 1e-7 + 1e-5 * max_abs(ref, n), 1e-4, e->name);
        }
        CHECK(n_after > 0, "%s: golden has no after-step tensors for step %d", method, k);
    }
    ssl_graph_free(&g);
    ssl_optim_free(opt);
    free(params);
out:
    ssl_method_free(&m);
    ssl_ctx_free(&ctx);
}

/* Masked image modeling runs on a ViT only, which this replay's ResNet
 * golden format does not describe: those methods replay the official code
 * in their own tests. */
static const char *const own_test[][2] = {
    {"mae", "tests/test_mae.c"}, {"simmim", "tests/test_mim.c"}, {"beit", "tests/test_mim.c"}};

/* The two-view methods' crop area: the paper's lower bound unless
 * --global-scale-min sets it, the same for both views; out of (0, 1] fails. */
static void test_pair_scale(void)
{
    static const struct {
        const char *name;
        float paper;
    } pairs[] = {{"simclr", 0.08f}, {"moco", 0.2f},   {"byol", 0.08f},  {"simsiam", 0.2f},
                 {"barlow", 0.08f}, {"vicreg", 0.08f}, {"dense", 0.08f}, {"mocov3", 0.08f}};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        const ssl_method_ops *ops = ssl_method_find(pairs[i].name);
        CHECK(ops != NULL, "%s: no such method", pairs[i].name);
        if (!ops) continue;
        const float set[] = {SSL_UNSET, 0.3f, 1.0f};
        for (int k = 0; k < 3; k++) {
            ssl_method_config c;
            ssl_aug augs[SSL_MAX_VIEWS];
            char err[SSL_ERR_LEN] = "";
            ssl_method_config_unset(&c);
            c.global_scale_min = set[k];
            int st = ops->validate(&c, err);
            CHECK(st == SSL_OK, "%s: validate: %s", pairs[i].name, err);
            float want = k == 0 ? pairs[i].paper : set[k];
            int n = ops->views(&c, 1, 28, 28, augs);
            CHECK(n == 2 && augs[0].crop_scale_min == want && augs[1].crop_scale_min == want &&
                      augs[0].crop_scale_max == 1 && augs[1].crop_scale_max == 1,
                  "%s, --global-scale-min %g: views %d, crop area [%g, %g] / [%g, %g], want [%g, 1]",
                  pairs[i].name, (double)set[k], n, (double)augs[0].crop_scale_min,
                  (double)augs[0].crop_scale_max, (double)augs[1].crop_scale_min,
                  (double)augs[1].crop_scale_max, (double)want);
        }
        const float bad[] = {1.5f, 0.0f};
        for (int k = 0; k < 2; k++) {
            ssl_method_config c;
            char err[SSL_ERR_LEN] = "";
            ssl_method_config_unset(&c);
            c.global_scale_min = bad[k];
            CHECK(ops->validate(&c, err) != SSL_OK && strstr(err, "--global-scale-min must be in (0, 1]"),
                  "%s, --global-scale-min %g: '%s'", pairs[i].name, (double)bad[k], err);
        }
    }
}

/* --recipe cifar: solo-learn's CIFAR-10 optimizer and hyperparameters fill
 * what the user left unset; a value given wins; methods without one, ViTs
 * and unknown recipes are refused. */
static void test_cifar_recipe(void)
{
    static const struct {
        const char *name, *optimizer;
        float lr, wd;
        const char *field;
        double value;
    } want[] = {{"simclr", "larc", 0.4f, 1e-4f, "proj-dim", 256},
                {"moco", "sgd", 0.3f, 1e-4f, "base-momentum", 0.99},
                {"byol", "larc", 1.0f, 1e-5f, "base-momentum", 0.99},
                {"simsiam", "sgd", 0.5f, 1e-5f, "pred-hidden", 512},
                {"swav", "larc", 0.6f, 1e-6f, "freeze-prototypes-epochs", 2},
                {"dino", "larc", 0.3f, 1e-6f, "base-momentum", 0.9995},
                {"barlow", "larc", 0.3f, 1e-4f, "scale-loss", 0.1},
                {"vicreg", "larc", 0.3f, 1e-4f, "global-scale-min", 0.2}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        const ssl_method_field *f = NULL;
        for (int k = 0; k < ssl_method_n_fields; k++)
            if (!strcmp(ssl_method_fields[k].name, want[i].field)) f = &ssl_method_fields[k];
        CHECK(f != NULL, "no field %s", want[i].field);
        if (!f) continue;
        for (int given = 0; given < 2; given++) {
            ssl_train_config c;
            char err[SSL_ERR_LEN] = "";
            ssl_train_config_default(&c);
            snprintf(c.method, sizeof c.method, "%s", want[i].name);
            snprintf(c.recipe, sizeof c.recipe, "cifar");
            if (given) { /* the user's values win over the recipe's */
                c.lr = 0.125f;
                ssl_method_field_set(&c.mcfg, f, 7);
            }
            int rc = ssl_train_config_resolve(&c, err);
            CHECK(rc == SSL_OK, "%s --recipe cifar: %s", want[i].name, err);
            if (rc) continue;
            double v = ssl_method_field_get(&c.mcfg, f);
            CHECK(!strcmp(c.optimizer, want[i].optimizer) && c.lr == (given ? 0.125f : want[i].lr) &&
                      c.weight_decay == want[i].wd && !strcmp(c.lr_scale, "linear") &&
                      fabs(v - (given ? 7 : want[i].value)) < 1e-6,
                  "%s --recipe cifar%s: %s lr %g wd %g %s, --%s %g", want[i].name, given ? " (given)" : "",
                  c.optimizer, (double)c.lr, (double)c.weight_decay, c.lr_scale, want[i].field, v);
            /* the method reads every field the recipe sets */
            const ssl_method_ops *ops = ssl_method_find(want[i].name);
            ssl_method m;
            ssl_encoder_config enc = ssl_encoder_config_resnet(18, 4, 1, SSL_STEM_SMALL);
            ssl_rng rng;
            ssl_rng_seed(&rng, 1);
            if (!given) {
                rc = ssl_method_create(&m, ops, &c.mcfg, &enc, &rng, err);
                CHECK(rc == SSL_OK, "%s --recipe cifar: create: %s", want[i].name, err);
                ssl_method_free(&m);
            }
        }
    }
    const char *bad[][3] = {{"rotation", "resnet18", "rotation has no CIFAR recipe"},
                            {"dino", "vit_tiny", "is for ResNets"},
                            {"simclr", "resnet18", "--recipe 'imagenet' unknown (paper, cifar)"}};
    for (int i = 0; i < 3; i++) {
        ssl_train_config c;
        char err[SSL_ERR_LEN] = "";
        ssl_train_config_default(&c);
        snprintf(c.method, sizeof c.method, "%s", bad[i][0]);
        snprintf(c.arch, sizeof c.arch, "%s", bad[i][1]);
        snprintf(c.recipe, sizeof c.recipe, "%s", i == 2 ? "imagenet" : "cifar");
        CHECK(ssl_train_config_resolve(&c, err) == SSL_EINVAL && strstr(err, bad[i][2]), "%s: '%s'",
              bad[i][0], err);
    }
}

int main(void)
{
    test_pair_scale();
    test_cifar_recipe();
    const char *dir = getenv("SSL_GOLDEN_DIR");
    if (!dir || !dir[0]) dir = "build/golden";
    for (const ssl_method_ops *const *ops = ssl_method_list(); *ops; ops++) {
        const char *elsewhere = NULL;
        for (size_t i = 0; i < sizeof own_test / sizeof *own_test; i++)
            if (!strcmp(own_test[i][0], (*ops)->name)) elsewhere = own_test[i][1];
        if (elsewhere) {
            printf("  %-12s replayed against the official code in %s\n", (*ops)->name, elsewhere);
            continue;
        }
        char path[1024], err[SSL_ERR_LEN];
        snprintf(path, sizeof path, "%s/method_%s.safetensors", dir, (*ops)->name);
        ssl_st_file f;
        if (ssl_st_load(&f, path, err) != SSL_OK) {
            CHECK(0, "method %s has no golden: %s", (*ops)->name, err);
            continue;
        }
        int before = check_failed_;
        replay(&f, (*ops)->name);
        printf("%-10s %s\n", (*ops)->name, check_failed_ == before ? "matches PyTorch" : "MISMATCH");
        ssl_st_free(&f);
    }
    /* Second goldens of a method: other settings of the same code. */
    static const char *const variants[][2] = {
        {"moco_final", "moco"}, /* --final-momentum: the cosine key-encoder ramp */
        {"dino_bn", "dino"},    /* --head-bn 1: BatchNorm in the DINO head */
    };
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        char path[1024], err[SSL_ERR_LEN];
        snprintf(path, sizeof path, "%s/method_%s.safetensors", dir, variants[i][0]);
        ssl_st_file f;
        if (ssl_st_load(&f, path, err) != SSL_OK) {
            CHECK(0, "golden %s missing: %s", variants[i][0], err);
            continue;
        }
        int before = check_failed_;
        replay(&f, variants[i][1]);
        printf("%-10s %s\n", variants[i][0], check_failed_ == before ? "matches PyTorch" : "MISMATCH");
        ssl_st_free(&f);
    }
    return check_report("test_methods");
}
