/* Times one self-supervised method's training step (--method simclr, byol,
 * dino, ...) exactly as src/train/pretrain.c runs it: the method's loss over
 * its views, zero grads of encoder and heads, backward, the method's
 * after-backward rule, one step of the method's recipe optimizer
 * (ssl_train_config_resolve: LARS, SGD or AdamW, lr scaled with the batch,
 * warm-up + cosine), then its after-step update (EMA teacher, center, queue).
 * The views of one batch are made once by the real loader (ssl_loader with
 * the method's augmentations: 2 views for SimCLR and BYOL, 2 global + 8
 * local crops for DINO) and reused, so that the step alone is timed, as
 * bench/torch_step.py times PyTorch's. The loader is timed separately (ms
 * per batch on its worker threads, with no step running beside it) to show
 * how much of a step the data would cost.
 *
 * The schedule of the timed run: warmup + steps steps in all, of which the
 * untimed warm-up steps are epoch 0 (steps_per_epoch = max(1, warmup)), so
 * the epoch-based options (the lr warm-up of warmup_epochs, DINO's last
 * layer frozen for 1 epoch) are over by the timed steps, which are a
 * mid-run step. torch_step.py uses the same schedule.
 *
 * Data: 1x28x28 is real Fashion-MNIST (its test split: 10,000 images are
 * plenty for a batch and keep the train split's 47 MB out of the peak RSS
 * that is compared with PyTorch's); other sizes are random uint8 images
 * through the same augmentation.
 *
 * FLOP convention (the same number is used for PyTorch), per image:
 *   sum over the views v the encoder trains on of
 *     ssl_resnet_macs(h_v, w_v) * 2 (FLOP per MAC) * 3 (forward + backward
 *     ~ 3x forward)
 *   + sum over the views a teacher encodes without gradient (BYOL's target:
 *     both views; MoCo's key encoder: view 1; DINO's teacher: the global
 *     crops) of ssl_resnet_macs(h_v, w_v) * 2 * 1 (forward only)
 * i.e. encoder convolutions only: heads, BN, ReLU, the loss and the
 * optimizer are not counted. For a ViT (--arch vit_tiny) the encoder's
 * MACs are ssl_encoder_macs: patch embedding, the four linear layers of
 * each block and the two attention products. MAE counts its encoder on the
 * visible patches plus its decoder (embedding, blocks on every patch and
 * the class row, prediction), x 2 x 3. Methods whose encoder does not see
 * each view once (the pretext tasks) are refused: their count would be
 * wrong.
 *
 * Prints one JSON line on stdout; progress and errors go to stderr.
 * Build: see scripts/bench.sh. Usage: bench_step --help */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/data.h"
#include "selfsup/ops_dnnl.h"
#include "selfsup/method.h"
#include "selfsup/optim.h"
#include "selfsup/train.h"

#include "methods/mae.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bench_args {
    char method[32];
    char arch[32];    /* "resnet" (--depth/--width/--stem) or vit_tiny, vit_small, ... */
    int patch, vit_depth; /* ViT: patch side, blocks (0: the preset's) */
    int depth, width, channels, size, batch;
    ssl_stem stem;
    int threads, workers, warmup, steps, loader_batches;
    uint64_t seed;
    char data[512]; /* dataset spec for 1x28x28; "random" forces random images */
    char backend[32]; /* ssl_backend_by_name; empty: the library default */
    int profile;      /* 1: time each backend op kind (ssl_profile_wrap) */
    int direct_conv;  /* 1: no Winograd (ctx.direct_conv), for before/after */
    int bf16;         /* 1: bf16 convolutions (ctx.bf16) */
} bench_args;

/* Methods whose encoder sees each view once (so the FLOP convention
 * holds), with the views a teacher encodes without gradient:
 * [first, first + count); count -1: the first global_crops views. */
typedef struct bench_method {
    const char *name;
    int teacher_first, teacher_count;
} bench_method;

static const bench_method bench_methods[] = {
    {"simclr", 0, 0}, {"byol", 0, 2},  {"dino", 0, -1},  {"moco", 1, 1},
    {"simsiam", 0, 0}, {"swav", 0, 0}, {"barlow", 0, 0}, {"vicreg", 0, 0},
    {"mae", 0, 0}, {"mocov3", 0, 2},
};
#define N_BENCH_METHODS ((int)(sizeof bench_methods / sizeof bench_methods[0]))

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_step [--method simclr] [--depth 18] [--width 64] [--stem small|imagenet]\n"
            "                  [--arch resnet|vit_tiny|vit_small] [--patch 4] [--vit-depth 0]\n"
            "                  [--channels 1] [--size 28] [--batch 256] [--threads 2]\n"
            "                  [--workers 1] [--warmup 2] [--steps 5] [--loader-batches 5]\n"
            "                  [--seed 1] [--data fashion-mnist|random] [--backend cpu]\n"
            "                  [--profile 1] [--direct-conv 1] [--bf16 1]\n"
            "Times training steps of one method (selfsup) and prints one JSON line.\n"
            "--method: simclr, byol, dino, moco, simsiam, swav, barlow, vicreg, mae (ViT),\n"
            "mocov3, with the\n"
            "method's default hyperparameters, views and optimizer recipe.\n"
            "--profile 1 times every backend op kind during the timed steps and prints\n"
            "where a step's time goes (stderr, and a \"profile\" object in the JSON).\n");
}

static int parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == 0 || *end != 0 || v < lo || v > hi) {
        fprintf(stderr, "bench_step: %s '%s' must be an integer in %d..%d\n", opt, s, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, bench_args *a)
{
    *a = (bench_args){"simclr", "resnet", 4, 0, 18, 64, 1, 28, 256, SSL_STEM_SMALL, 2, 1, 2, 5, 5, 1,
                      "fashion-mnist", "", 0, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            exit(0);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "bench_step: %s needs a value (or unknown option)\n", o);
            return -1;
        }
        const char *v = argv[++i];
        int seed = 0, rc = 0;
        if (!strcmp(o, "--method")) snprintf(a->method, sizeof a->method, "%s", v);
        else if (!strcmp(o, "--depth")) rc = parse_int(o, v, 18, 50, &a->depth);
        else if (!strcmp(o, "--arch")) snprintf(a->arch, sizeof a->arch, "%s", v);
        else if (!strcmp(o, "--patch")) rc = parse_int(o, v, 1, 64, &a->patch);
        else if (!strcmp(o, "--vit-depth")) rc = parse_int(o, v, 0, 256, &a->vit_depth);
        else if (!strcmp(o, "--width")) rc = parse_int(o, v, 1, 1024, &a->width);
        else if (!strcmp(o, "--channels")) rc = parse_int(o, v, 1, 3, &a->channels);
        else if (!strcmp(o, "--size")) rc = parse_int(o, v, 8, 512, &a->size);
        else if (!strcmp(o, "--batch")) rc = parse_int(o, v, 2, 65536, &a->batch);
        else if (!strcmp(o, "--threads")) rc = parse_int(o, v, 1, 1024, &a->threads);
        else if (!strcmp(o, "--workers")) rc = parse_int(o, v, 1, 64, &a->workers);
        else if (!strcmp(o, "--warmup")) rc = parse_int(o, v, 0, 1000, &a->warmup);
        else if (!strcmp(o, "--steps")) rc = parse_int(o, v, 1, 100000, &a->steps);
        else if (!strcmp(o, "--loader-batches")) rc = parse_int(o, v, 1, 1000, &a->loader_batches);
        else if (!strcmp(o, "--seed")) { rc = parse_int(o, v, 0, 1 << 30, &seed); a->seed = (uint64_t)seed; }
        else if (!strcmp(o, "--data")) snprintf(a->data, sizeof a->data, "%s", v);
        else if (!strcmp(o, "--backend")) snprintf(a->backend, sizeof a->backend, "%s", v);
        else if (!strcmp(o, "--profile")) rc = parse_int(o, v, 0, 1, &a->profile);
        else if (!strcmp(o, "--direct-conv")) rc = parse_int(o, v, 0, 1, &a->direct_conv);
        else if (!strcmp(o, "--bf16")) rc = parse_int(o, v, 0, 1, &a->bf16);
        else if (!strcmp(o, "--stem")) {
            if (!strcmp(v, "small")) a->stem = SSL_STEM_SMALL;
            else if (!strcmp(v, "imagenet")) a->stem = SSL_STEM_IMAGENET;
            else { fprintf(stderr, "bench_step: --stem '%s' must be small or imagenet\n", v); rc = -1; }
        } else {
            fprintf(stderr, "bench_step: unknown option %s\n", o);
            rc = -1;
        }
        if (rc) return rc;
    }
    if (a->channels == 2) {
        fprintf(stderr, "bench_step: --channels must be 1 or 3\n");
        return -1;
    }
    return 0;
}

static const bench_method *find_bench_method(const char *name)
{
    for (int i = 0; i < N_BENCH_METHODS; i++)
        if (!strcmp(bench_methods[i].name, name)) return &bench_methods[i];
    fprintf(stderr, "bench_step: --method '%s': one of", name);
    for (int i = 0; i < N_BENCH_METHODS; i++) fprintf(stderr, " %s", bench_methods[i].name);
    fprintf(stderr, " (methods whose encoder sees each view once)\n");
    return NULL;
}

/* Random uint8 images, (n, c, s, s), labels 0, for sizes without a dataset. */
static int random_dataset(ssl_dataset *ds, int n, int c, int s, uint64_t seed)
{
    memset(ds, 0, sizeof *ds);
    size_t bytes = (size_t)n * c * s * s;
    ds->images = malloc(bytes);
    ds->labels = calloc((size_t)n, sizeof *ds->labels);
    if (!ds->images || !ds->labels) return SSL_ENOMEM;
    ssl_rng r;
    ssl_rng_seed(&r, seed);
    for (size_t i = 0; i < bytes; i++) ds->images[i] = (uint8_t)(ssl_rng_u64(&r) >> 56);
    ds->n = n;
    ds->c = c;
    ds->h = ds->w = s;
    ds->n_classes = 10;
    snprintf(ds->source, sizeof ds->source, "random");
    return SSL_OK;
}

/* Floats of view v of one batch: B x C x out_h x out_w. */
static size_t view_floats(const ssl_method *m, int v, int B, int c)
{
    return (size_t)B * c * m->augs[v].out_h * m->augs[v].out_w;
}

/* Times the loader alone: create, then 1 + k batches back to back (the
 * consumer always waits, so this is the workers' production rate, start-up
 * included); the last batch is copied into views[v] (view_floats each).
 * Writes ms per batch to *ms. */
static int load_batch(const ssl_dataset *ds, const bench_args *a, const ssl_method *m,
                      float **views, double *ms, char *err)
{
    ssl_loader *l = NULL;
    double t0 = ssl_time();
    int rc = ssl_loader_create(&l, ds, m->augs, m->n_views, a->batch, a->seed, a->workers, err);
    if (rc) return rc;
    float *const *v = NULL;
    const int32_t *labels;
    int epoch, step;
    for (int i = 0; i <= a->loader_batches && rc == SSL_OK; i++)
        rc = ssl_loader_next(l, &v, &labels, &epoch, &step, err);
    *ms = 1e3 * (ssl_time() - t0) / (a->loader_batches + 1);
    if (rc == SSL_OK)
        for (int i = 0; i < m->n_views; i++)
            memcpy(views[i], v[i], view_floats(m, i, a->batch, ds->c) * sizeof(float));
    ssl_loader_free(l);
    return rc;
}

/* The views as runs of equal sizes, "2x28+8x12" (count x side; count x h x w
 * when not square), into buf. */
static void views_spec(const ssl_method *m, char *buf, size_t n)
{
    size_t len = 0;
    buf[0] = 0;
    for (int s = 0; s < m->n_views && len < n;) {
        int e = s + 1;
        while (e < m->n_views && m->augs[e].out_h == m->augs[s].out_h &&
               m->augs[e].out_w == m->augs[s].out_w)
            e++;
        const ssl_aug *a = &m->augs[s];
        if (a->out_h == a->out_w)
            len += (size_t)snprintf(buf + len, n - len, "%s%dx%d", s ? "+" : "", e - s, a->out_h);
        else
            len += (size_t)snprintf(buf + len, n - len, "%s%dx%dx%d", s ? "+" : "", e - s, a->out_h,
                                    a->out_w);
        s = e;
    }
}

/* GFLOP per image under the convention above; *teacher: how many views a
 * teacher encodes. */
static double gflop_per_image(const ssl_method *m, const bench_method *bm, int *teacher)
{
    double flop = 0;
    if (!strcmp(m->ops->name, "mae")) {
        const ssl_vit *vit = &m->encoder.vit;
        const int P = vit->n_patches, K = ssl_mae_len_keep(P, m->cfg.mask_ratio);
        const double Dd = m->cfg.decoder_dim, L = P + vit->cfg.class_token;
        const double p2c = (double)vit->cfg.patch * vit->cfg.patch * vit->cfg.in_chans;
        double dec = (K + vit->cfg.class_token) * (double)vit->feat_dim * Dd +
                     m->cfg.decoder_depth * (L * (4 * Dd * Dd + 2 * Dd * 4 * Dd) + 2 * L * L * Dd) +
                     P * Dd * p2c;
        *teacher = 0;
        return (ssl_vit_macs(vit, K) + dec) * 2 * 3 / 1e9;
    }
    for (int v = 0; v < m->n_views; v++)
        flop += ssl_encoder_macs(&m->encoder, m->augs[v].out_h, m->augs[v].out_w) * 2 * 3;
    int first = bm->teacher_first;
    int count = bm->teacher_count < 0 ? m->cfg.global_crops : bm->teacher_count;
    *teacher = count;
    for (int v = first; v < first + count && v < m->n_views; v++)
        flop += ssl_encoder_macs(&m->encoder, m->augs[v].out_h, m->augs[v].out_w) * 2 * 1;
    return flop / 1e9;
}

/* Where a timed step's time goes, per backend op kind: a table on stderr
 * and a "profile" object ending the JSON line (seconds per step). */
static void print_profile(const ssl_profile *p, int steps, double s_step)
{
    double known = 0;
    fprintf(stderr, "[bench_step] profile of a timed step (%.3f s):\n", s_step);
    fprintf(stderr, "  %-12s %9s %7s %8s %9s\n", "op", "s/step", "share", "calls", "GFLOP/s");
    printf(",\"profile\":{");
    for (int k = 0; k < SSL_PROF_N; k++) {
        double s = p->sec[k] / steps;
        known += s;
        fprintf(stderr, "  %-12s %9.3f %6.1f%% %8ld", ssl_prof_kind_name(k), s, 100 * s / s_step,
                p->calls[k] / steps);
        if (p->flop[k] > 0) fprintf(stderr, " %9.1f", p->flop[k] / p->sec[k] / 1e9);
        fprintf(stderr, "\n");
        printf("\"%s\":%.4f,", ssl_prof_kind_name(k), s);
    }
    fprintf(stderr, "  %-12s %9.3f %6.1f%%  (sums, concat, loss, optimizer, EMA, ...)\n", "other",
            s_step - known, 100 * (s_step - known) / s_step);
    printf("\"other\":%.4f}", s_step - known);
}

int main(int argc, char **argv)
{
    bench_args a;
    if (parse_args(argc, argv, &a)) return 2;
    const bench_method *bm = find_bench_method(a.method);
    if (!bm) return 2;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, a.seed, a.threads);
    ctx.direct_conv = a.direct_conv;
    char *err = ctx.err;
    if (a.backend[0] && ssl_backend_by_name(a.backend, &ctx.backend, err)) {
        fprintf(stderr, "bench_step: --backend: %s\n", err);
        return 2;
    }
    if (a.bf16 && ssl_dnnl_bf16_check(ctx.backend, err)) {
        fprintf(stderr, "bench_step: --bf16 1: %s\n", err);
        return 2;
    }
    ctx.bf16 = a.bf16;
    ssl_profile prof;
    if (a.profile) {
        ctx.backend = ssl_profile_wrap(&prof, ctx.backend ? ctx.backend : ssl_backend_default());
        ctx.profile = &prof;
    }

    /* The method's recipe, as ssl_pretrain resolves it. */
    ssl_train_config tc;
    ssl_train_config_default(&tc);
    snprintf(tc.method, sizeof tc.method, "%s", a.method);
    tc.batch_size = a.batch;
    int rc = ssl_train_config_resolve(&tc, err);
    ssl_optim_config ocfg;
    if (!rc) rc = ssl_train_optim_config(&tc, &ocfg, err);
    if (rc) {
        fprintf(stderr, "bench_step: %s\n", err);
        return 2;
    }

    ssl_dataset ds;
    int real = a.channels == 1 && a.size == 28 && strcmp(a.data, "random");
    if (real) rc = ssl_dataset_load(&ds, a.data, 0, err);
    else rc = random_dataset(&ds, a.batch * 2, a.channels, a.size, a.seed);
    if (rc) {
        if (!real) snprintf(err, SSL_ERR_LEN, "out of memory for random images");
        fprintf(stderr, "bench_step: %s\n", err);
        return 1;
    }
    if (ds.n < a.batch) {
        fprintf(stderr, "bench_step: --batch %d is larger than %s (%d images)\n", a.batch,
                ds.source, ds.n);
        return 1;
    }
    const int B = a.batch;

    /* The model as ssl_pretrain builds it: the method's default widths,
     * temperatures and views for this image size. */
    ssl_encoder_config enc = ssl_encoder_config_resnet(a.depth, a.width, ds.c, a.stem);
    if (strcmp(a.arch, "resnet")) {
        snprintf(tc.arch, sizeof tc.arch, "%s", a.arch);
        tc.patch_size = a.patch;
        tc.vit_depth = a.vit_depth;
        rc = ssl_train_encoder_config(&tc, ds.c, ds.h, &enc, err);
        if (rc) {
            fprintf(stderr, "bench_step: %s\n", err);
            return 2;
        }
    }
    ssl_method m;
    memset(&m, 0, sizeof m);
    /* ssl_train_config_resolve found it */
    rc = ssl_method_create(&m, ssl_method_find(a.method), &tc.mcfg, &enc, &ctx.rng, err);
    if (!rc) rc = ssl_method_setup_run(&m, ds.h, ds.w, B, err);
    if (rc) {
        fprintf(stderr, "bench_step: %s\n", err);
        return 1;
    }
    float *views[SSL_MAX_VIEWS] = {0};
    for (int v = 0; v < m.n_views; v++) {
        views[v] = ssl_malloc(view_floats(&m, v, B, ds.c) * sizeof(float));
        if (!views[v]) {
            fprintf(stderr, "bench_step: out of memory for the batch\n");
            return 1;
        }
    }
    double loader_ms = 0;
    rc = load_batch(&ds, &a, &m, views, &loader_ms, err);
    if (rc) {
        fprintf(stderr, "bench_step: loader: %s\n", err);
        return 1;
    }

    int np = m.encoder.reg->n_params + m.heads.n_params;
    ssl_param *params = malloc(sizeof(ssl_param) * np);
    if (!params) {
        fprintf(stderr, "bench_step: out of memory\n");
        return 1;
    }
    memcpy(params, m.encoder.reg->params, sizeof(ssl_param) * m.encoder.reg->n_params);
    memcpy(params + m.encoder.reg->n_params, m.heads.params, sizeof(ssl_param) * m.heads.n_params);
    ssl_optim *opt = NULL;
    rc = ssl_optim_create(&opt, &ocfg, params, np, err);
    if (rc) {
        fprintf(stderr, "bench_step: %s\n", err);
        return 1;
    }
    const float peak_lr = !strcmp(tc.lr_scale, "sqrt") ? ssl_lr_scale_sqrt(tc.lr, B)
                        : !strcmp(tc.lr_scale, "linear") ? ssl_lr_scale_linear(tc.lr, B)
                        : tc.lr;
    const int64_t total = a.warmup + a.steps;
    m.total_steps = total;
    m.steps_per_epoch = a.warmup > 1 ? a.warmup : 1;
    const int64_t lr_warmup = (int64_t)(tc.warmup_epochs * m.steps_per_epoch);

    char spec[128];
    views_spec(&m, spec, sizeof spec);
    int teacher_views = 0;
    const double gflop_img = gflop_per_image(&m, bm, &teacher_views);
    char arch[48];
    ssl_encoder_describe(&m.encoder, arch, sizeof arch);
    fprintf(stderr, "[bench_step] %s %s %dx%dx%d B%d, views %s (teacher %d), %s lr %.4g, "
                    "%.4f GFLOP/img, %d threads\n",
            a.method, arch, ds.c, ds.h, ds.w, B, spec, teacher_views, tc.optimizer,
            peak_lr, gflop_img, ctx.n_threads);

    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    double t_timed = 0, t_min = INFINITY, t_max = 0, last_loss = 0;
    double *step_s = calloc((size_t)a.steps, sizeof *step_s);
    if (!step_s) {
        fprintf(stderr, "bench_step: out of memory\n");
        return 1;
    }
    for (int64_t step = 0; step < total; step++) {
        double t0 = ssl_time();
        ssl_graph_reset(&g);
        ssl_tensor in[SSL_MAX_VIEWS];
        ssl_tensor *vp[SSL_MAX_VIEWS];
        for (int v = 0; v < m.n_views; v++) {
            int shape[4] = {B, ds.c, m.augs[v].out_h, m.augs[v].out_w};
            in[v] = ssl_tensor_wrap(views[v], NULL, 4, shape, SSL_LAYOUT_NCHW);
            vp[v] = &in[v];
        }
        m.step = step;
        ssl_tensor *loss = m.ops->loss(&m, &g, vp);
        if (!loss) {
            fprintf(stderr, "bench_step: step %lld: %s\n", (long long)step + 1, err);
            return 1;
        }
        float lv = loss->data[0];
        if (!isfinite(lv)) {
            fprintf(stderr, "bench_step: step %lld: loss is not finite\n", (long long)step + 1);
            return 1;
        }
        ssl_registry_zero_grad(m.encoder.reg);
        ssl_registry_zero_grad(&m.heads);
        rc = ssl_graph_backward(&g, loss);
        if (rc) {
            fprintf(stderr, "bench_step: backward: %s\n", err);
            return 1;
        }
        if (m.ops->after_backward) m.ops->after_backward(&m);
        ssl_method_mark_frozen(&m, params, np);
        ssl_optim_step(opt, ssl_lr_warmup_cosine(step, lr_warmup, total, peak_lr, 0.0f));
        if (m.ops->after_step) m.ops->after_step(&m);
        double dt = ssl_time() - t0;
        last_loss = lv;
        fprintf(stderr, "[bench_step] %s step %lld/%lld: %.3f s, loss %.4f\n",
                step < a.warmup ? "warm-up" : "timed", (long long)step + 1, (long long)total,
                dt, lv);
        if (step + 1 == a.warmup && a.profile) ssl_profile_clear(&prof);
        if (step >= a.warmup) {
            step_s[step - a.warmup] = dt;
            t_timed += dt;
            if (dt < t_min) t_min = dt;
            if (dt > t_max) t_max = dt;
        }
    }
    double s_step = t_timed / a.steps;
    double ips = B / s_step;
    printf("{\"impl\":\"selfsup\",\"arch\":\"%s\",\"patch\":%d,\"vit_depth\":%d,"
           "\"method\":\"%s\",\"backend\":\"%s\",\"bf16\":%d,\"depth\":%d,\"width\":%d,"
           "\"stem\":\"%s\",\"in_channels\":%d,\"size\":%d,\"batch\":%d,\"views\":\"%s\","
           "\"n_views\":%d,\"teacher_views\":%d,\"data\":\"%s\",\"threads\":%d,\"warmup\":%d,"
           "\"steps\":%d,\"optimizer\":\"%s\",\"peak_lr\":%.9g,"
           "\"img_per_s\":%.3f,\"s_per_step\":%.4f,\"s_per_step_min\":%.4f,\"s_per_step_max\":%.4f,"
           "\"step_s\":[",
           a.arch, a.patch, m.encoder.cfg.kind == SSL_ENC_VIT ? m.encoder.cfg.vit.depth : 0,
           a.method, ctx.backend->name, a.bf16, a.depth, a.width, a.stem == SSL_STEM_SMALL ? "small" : "imagenet",
           ds.c, ds.h, B, spec, m.n_views, teacher_views,
           real ? "fashion-mnist test split" : "random uint8", ctx.n_threads, a.warmup, a.steps,
           tc.optimizer, peak_lr, ips, s_step, t_min, t_max);
    for (int i = 0; i < a.steps; i++) printf("%s%.4f", i ? "," : "", step_s[i]);
    printf("],\"gflop_per_img\":%.5f,\"gflops\":%.3f,\"peak_rss_mb\":%.1f,"
           "\"loader_ms_per_batch\":%.2f,\"loader_workers\":%d,\"loader_frac_of_step\":%.4f,"
           "\"arena_mb\":%.1f,\"scratch_mb\":%.1f,\"last_loss\":%.5f",
           gflop_img, gflop_img * ips, ssl_peak_rss() / 1048576.0, loader_ms, a.workers,
           loader_ms / 1e3 / s_step, g.arena.high_water / 1048576.0,
           ctx.scratch.size / 1048576.0, last_loss);
    if (a.profile) print_profile(&prof, a.steps, s_step);
    printf("}\n");

    free(step_s);
    ssl_graph_free(&g);
    ssl_optim_free(opt);
    free(params);
    for (int v = 0; v < m.n_views; v++) ssl_free(views[v]);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
    ssl_ctx_free(&ctx);
    return 0;
}
