/* Times selfsup's SimCLR training step exactly as src/train/pretrain.c runs
 * it (both views concatenated through the encoder, projector, NT-Xent, zero
 * grad, backward, LARS step on the warm-up + cosine schedule), on one batch
 * made once by the real loader (ssl_loader + ssl_aug_simclr) and then reused,
 * so that the step alone is timed, as bench/torch_step.py times PyTorch's.
 * The loader is timed separately (ms per batch on its worker threads, with no
 * step running beside it) to show how much of a step the data would cost.
 *
 * Data: 1x28x28 is real Fashion-MNIST (its test split: 10,000 images are
 * plenty for a batch and keep the train split's 47 MB out of the peak RSS
 * that is compared with PyTorch's); other sizes are random uint8 images
 * through the same augmentation.
 *
 * FLOP convention (the same number is used for PyTorch): one image costs
 *   ssl_resnet_macs(h, w) * 2 (FLOP per MAC) * 3 (forward + backward ~ 3x
 *   forward) * n_views (2)
 * i.e. encoder convolutions only; the projector, BN, ReLU and the loss are
 * not counted.
 *
 * Prints one JSON line on stdout; progress and errors go to stderr.
 * Build: see scripts/bench.sh. Usage: bench_step --help */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/data.h"
#include "selfsup/method.h"
#include "selfsup/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct bench_args {
    int depth, width, channels, size, batch;
    ssl_stem stem;
    int threads, workers, warmup, steps, loader_batches;
    uint64_t seed;
    char data[512]; /* dataset spec for 1x28x28; "random" forces random images */
    char backend[32]; /* ssl_backend_by_name; empty: the library default */
    int profile;      /* 1: time each backend op kind (ssl_profile_wrap) */
} bench_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench_step [--depth 18] [--width 64] [--stem small|imagenet]\n"
            "                  [--channels 1] [--size 28] [--batch 256] [--threads 2]\n"
            "                  [--workers 1] [--warmup 2] [--steps 5] [--loader-batches 5]\n"
            "                  [--seed 1] [--data fashion-mnist|random] [--backend cpu]\n"
            "                  [--profile 1]\n"
            "Times SimCLR training steps (selfsup) and prints one JSON line.\n"
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
    *a = (bench_args){18, 64, 1, 28, 256, SSL_STEM_SMALL, 2, 1, 2, 5, 5, 1, "fashion-mnist", "", 0};
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
        if (!strcmp(o, "--depth")) rc = parse_int(o, v, 18, 50, &a->depth);
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

/* Times the loader alone: create, then 1 + k batches back to back (the
 * consumer always waits, so this is the workers' production rate, start-up
 * included); the last batch is copied into views[v] (B*C*H*W floats each).
 * Writes ms per batch to *ms. */
static int load_batch(const ssl_dataset *ds, const bench_args *a, float *views[2], double *ms,
                      char *err)
{
    ssl_aug augs[2];
    ssl_aug_simclr(&augs[0], ds->c, ds->h, ds->w);
    augs[1] = augs[0];
    ssl_loader *l = NULL;
    double t0 = ssl_time();
    int rc = ssl_loader_create(&l, ds, augs, 2, a->batch, a->seed, a->workers, err);
    if (rc) return rc;
    float *const *v = NULL;
    const int32_t *labels;
    int epoch, step;
    for (int i = 0; i <= a->loader_batches && rc == SSL_OK; i++)
        rc = ssl_loader_next(l, &v, &labels, &epoch, &step, err);
    *ms = 1e3 * (ssl_time() - t0) / (a->loader_batches + 1);
    if (rc == SSL_OK) {
        size_t n = (size_t)a->batch * ds->c * ds->h * ds->w;
        for (int i = 0; i < 2; i++) memcpy(views[i], v[i], n * sizeof(float));
    }
    ssl_loader_free(l);
    return rc;
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
    fprintf(stderr, "  %-12s %9.3f %6.1f%%  (sums, concat, loss, optimizer, ...)\n", "other",
            s_step - known, 100 * (s_step - known) / s_step);
    printf("\"other\":%.4f}", s_step - known);
}

int main(int argc, char **argv)
{
    bench_args a;
    if (parse_args(argc, argv, &a)) return 2;
    ssl_ctx ctx;
    ssl_ctx_init(&ctx, a.seed, a.threads);
    char *err = ctx.err;
    if (a.backend[0] && ssl_backend_by_name(a.backend, &ctx.backend, err)) {
        fprintf(stderr, "bench_step: --backend: %s\n", err);
        return 2;
    }
    ssl_profile prof;
    if (a.profile) {
        ctx.backend = ssl_profile_wrap(&prof, ctx.backend ? ctx.backend : ssl_backend_default());
        ctx.profile = &prof;
    }

    ssl_dataset ds;
    int rc;
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
    int shape[4] = {B, ds.c, ds.h, ds.w};
    size_t view_floats = (size_t)B * ds.c * ds.h * ds.w;
    float *views[2] = {ssl_malloc(view_floats * sizeof(float)), ssl_malloc(view_floats * sizeof(float))};
    if (!views[0] || !views[1]) {
        fprintf(stderr, "bench_step: out of memory for the batch\n");
        return 1;
    }
    double loader_ms = 0;
    rc = load_batch(&ds, &a, views, &loader_ms, err);
    if (rc) {
        fprintf(stderr, "bench_step: loader: %s\n", err);
        return 1;
    }

    /* The model and optimizer as ssl_pretrain builds them (defaults of
     * ssl_train_config_default: LARS lr 0.3 x B/256, wd 1e-6, momentum 0.9,
     * eta 0.001; projector 2048-128; temperature 0.2). */
    ssl_resnet_config enc = {a.depth, a.width, ds.c, a.stem};
    ssl_method_config mcfg;
    ssl_method_config_unset(&mcfg);
    ssl_method m;
    memset(&m, 0, sizeof m);
    rc = ssl_method_create(&m, &ssl_method_simclr, &mcfg, &enc, &ctx.rng, err);
    if (rc) {
        fprintf(stderr, "bench_step: %s\n", err);
        return 1;
    }
    int np = m.encoder.reg.n_params + m.heads.n_params;
    ssl_param *params = malloc(sizeof(ssl_param) * np);
    if (!params) {
        fprintf(stderr, "bench_step: out of memory\n");
        return 1;
    }
    memcpy(params, m.encoder.reg.params, sizeof(ssl_param) * m.encoder.reg.n_params);
    memcpy(params + m.encoder.reg.n_params, m.heads.params, sizeof(ssl_param) * m.heads.n_params);
    ssl_optim_config ocfg = {.kind = SSL_OPTIM_LARS, .lr = 0.3f, .momentum = 0.9f,
                             .weight_decay = 1e-6f, .eta = 0.001f};
    ssl_optim *opt = NULL;
    rc = ssl_optim_create(&opt, &ocfg, params, np, err);
    if (rc) {
        fprintf(stderr, "bench_step: %s\n", err);
        return 1;
    }
    const float peak_lr = ssl_lr_scale_linear(ocfg.lr, B);
    const int64_t total = a.warmup + a.steps;

    ssl_graph g;
    ssl_graph_init(&g, &ctx);
    double t_timed = 0, t_min = INFINITY, last_loss = 0;
    for (int64_t step = 0; step < total; step++) {
        double t0 = ssl_time();
        ssl_graph_reset(&g);
        ssl_tensor in[2] = {ssl_tensor_wrap(views[0], NULL, 4, shape, SSL_LAYOUT_NCHW),
                            ssl_tensor_wrap(views[1], NULL, 4, shape, SSL_LAYOUT_NCHW)};
        ssl_tensor *vp[2] = {&in[0], &in[1]};
        ssl_tensor *loss = ssl_method_simclr.loss(&m, &g, vp);
        if (!loss) {
            fprintf(stderr, "bench_step: step %lld: %s\n", (long long)step + 1, err);
            return 1;
        }
        float lv = loss->data[0];
        if (!isfinite(lv)) {
            fprintf(stderr, "bench_step: step %lld: loss is not finite\n", (long long)step + 1);
            return 1;
        }
        ssl_registry_zero_grad(&m.encoder.reg);
        ssl_registry_zero_grad(&m.heads);
        rc = ssl_graph_backward(&g, loss);
        if (rc) {
            fprintf(stderr, "bench_step: backward: %s\n", err);
            return 1;
        }
        ssl_optim_step(opt, ssl_lr_warmup_cosine(step, 0, total, peak_lr, 0.0f));
        double dt = ssl_time() - t0;
        last_loss = lv;
        fprintf(stderr, "[bench_step] %s step %lld/%lld: %.3f s, loss %.4f\n",
                step < a.warmup ? "warm-up" : "timed", (long long)step + 1, (long long)total,
                dt, lv);
        if (step + 1 == a.warmup && a.profile) ssl_profile_clear(&prof);
        if (step >= a.warmup) {
            t_timed += dt;
            if (dt < t_min) t_min = dt;
        }
    }
    double s_step = t_timed / a.steps;
    double ips = B / s_step;
    double gflop_img = ssl_resnet_macs(&m.encoder, ds.h, ds.w) * 2 * 3 * 2 / 1e9;
    printf("{\"impl\":\"selfsup\",\"backend\":\"%s\",\"depth\":%d,\"width\":%d,\"stem\":\"%s\",\"in_channels\":%d,"
           "\"size\":%d,\"batch\":%d,\"data\":\"%s\",\"threads\":%d,\"warmup\":%d,\"steps\":%d,"
           "\"img_per_s\":%.3f,\"s_per_step\":%.4f,\"s_per_step_min\":%.4f,"
           "\"gflop_per_img\":%.5f,\"gflops\":%.3f,\"peak_rss_mb\":%.1f,"
           "\"loader_ms_per_batch\":%.2f,\"loader_workers\":%d,\"loader_frac_of_step\":%.4f,"
           "\"arena_mb\":%.1f,\"last_loss\":%.5f",
           ctx.backend->name, a.depth, a.width, a.stem == SSL_STEM_SMALL ? "small" : "imagenet", ds.c, ds.h, B,
           real ? "fashion-mnist test split" : "random uint8", ctx.n_threads, a.warmup, a.steps,
           ips, s_step, t_min, gflop_img, gflop_img * ips, ssl_peak_rss() / 1048576.0, loader_ms,
           a.workers, loader_ms / 1e3 / s_step, g.arena.high_water / 1048576.0, last_loss);
    if (a.profile) print_profile(&prof, a.steps, s_step);
    printf("}\n");

    ssl_graph_free(&g);
    ssl_optim_free(opt);
    free(params);
    ssl_method_free(&m);
    ssl_free(views[0]);
    ssl_free(views[1]);
    ssl_dataset_free(&ds);
    ssl_ctx_free(&ctx);
    return 0;
}
