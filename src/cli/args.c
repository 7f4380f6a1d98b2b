/* Option parsing shared by the subcommands: --name value or --name=value. */
#define _POSIX_C_SOURCE 200809L
#include "cli.h"
#include "selfsup/ops_dnnl.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void cli_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "selfsup %s: %s\n", cmd, msg);
}

static int usage_err(const char *cmd, const char *fmt, const char *a, const char *b)
{
    char msg[768];
    snprintf(msg, sizeof msg, fmt, a, b);
    fprintf(stderr, "selfsup %s: %s (see 'selfsup %s --help')\n", cmd, msg, cmd);
    return CLI_USAGE;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return 0;
    *out = v;
    return 1;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end) return 0;
    *out = v;
    return 1;
}

/* The image-folder options travel inside the data spec ("DIR#size=96,...",
 * see ssl_dataset_load_opts), so that a checkpoint's config, a resume and an
 * eval all see them. Appends them to t->data. */
static int fold_image_options(const char *cmd, ssl_train_config *t, int size, int channels,
                              int skip_bad, int holdout_set, float holdout)
{
    char opts[128] = "";
    size_t at = 0;
    if (size) at += (size_t)snprintf(opts + at, sizeof opts - at, ",size=%d", size);
    if (channels) at += (size_t)snprintf(opts + at, sizeof opts - at, ",channels=%d", channels);
    if (skip_bad) at += (size_t)snprintf(opts + at, sizeof opts - at, ",skip-bad");
    if (holdout_set) at += (size_t)snprintf(opts + at, sizeof opts - at, ",holdout=%g", holdout);
    if (!at) return CLI_OK;
    struct stat st;
    /* a folder whose own name holds '#' gets a fresh option list */
    int has_opts = strchr(t->data, '#') && !(stat(t->data, &st) == 0 && S_ISDIR(st.st_mode));
    size_t len = strlen(t->data);
    if (len + at + 1 > 400)
        return usage_err(cmd, "--data with its image options is too long%s%s", "", "");
    snprintf(t->data + len, sizeof t->data - len, "%c%s", has_opts ? ',' : '#', opts + 1);
    return CLI_OK;
}

/* Index of --name in the method hyperparameter table, or -1. */
static int method_field(const char *opt)
{
    for (int i = 0; i < ssl_method_n_fields; i++)
        if (!strcmp(opt + 2, ssl_method_fields[i].name)) return i;
    return -1;
}

int cli_parse(const char *cmd, int argc, char **argv, cli_opts *o, const char *usage)
{
    memset(o, 0, sizeof *o);
    ssl_train_config_default(&o->train);
    snprintf(o->protocol, sizeof o->protocol, "all");
    snprintf(o->split, sizeof o->split, "test");
    o->layer_decay = o->label_smoothing = SSL_UNSET;
    ssl_train_config *t = &o->train;
    int image_size = 0, channels = 0, skip_bad = 0, holdout_set = 0; /* 0: not given */
    float holdout = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage, stdout);
            return -1;
        }
        if (strncmp(a, "--", 2)) {
            if (o->positional) return usage_err(cmd, "unexpected argument '%s'%s", a, "");
            o->positional = a;
            continue;
        }
        char name[64];
        const char *val = NULL, *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        if (nl >= sizeof name) return usage_err(cmd, "unknown option '%s'%s", a, "");
        memcpy(name, a, nl);
        name[nl] = 0;
        /* flags */
        if (!strcmp(name, "--json")) { o->json = 1; continue; }
        if (!strcmp(name, "--baselines")) { o->baselines = 1; continue; }
        if (!strcmp(name, "--no-eval")) { o->no_eval = 1; continue; }
        if (!strcmp(name, "--quiet")) { t->quiet = 1; continue; }
        if (!strcmp(name, "--skip-bad-images")) { skip_bad = 1; continue; }
        if (!strcmp(name, "--from-scratch")) { o->from_scratch = 1; continue; }
        if (eq) val = eq + 1;
        else if (i + 1 < argc) val = argv[++i];
        else return usage_err(cmd, "option '%s' needs a value%s", name, "");
        long v;
        float f;
#define STR(opt, dst) if (!strcmp(name, opt)) { \
            if (strlen(val) >= sizeof(dst)) return usage_err(cmd, "value of %s too long%s", opt, ""); \
            snprintf(dst, sizeof(dst), "%s", val); continue; }
#define INT(opt, dst, lo, hi) if (!strcmp(name, opt)) { \
            if (!parse_long(val, lo, hi, &v)) return usage_err(cmd, "%s: '%s' is not a valid integer in range", opt, val); \
            dst = v; continue; }
/* no float option takes a negative value (and -1 is SSL_UNSET, "not given") */
#define FLT(opt, dst) if (!strcmp(name, opt)) { \
            if (!parse_float(val, &f) || !(f >= 0)) \
                return usage_err(cmd, "%s: '%s' must be a non-negative number", opt, val); \
            dst = f; continue; }
        if (!strcmp(name, "--data")) o->data_set = 1;
        if (!strcmp(name, "--arch") || !strcmp(name, "--width") || !strcmp(name, "--patch-size") ||
            !strcmp(name, "--pos-embed") || !strcmp(name, "--vit-depth"))
            o->arch_set = 1;
        STR("--method", t->method);
        STR("--data", t->data);
        STR("--arch", t->arch);
        STR("--pos-embed", t->pos_embed);
        STR("--optimizer", t->optimizer);
        STR("--lr-scale", t->lr_scale);
        STR("--recipe", t->recipe);
        STR("--out", t->out);
        STR("--resume", t->resume);
        STR("--tokenizer", t->tokenizer);
        STR("--protocol", o->protocol);
        STR("--split", o->split);
        STR("--prefix", o->prefix);
        STR("--device", o->device);
        STR("--precision", o->precision);
        INT("--width", t->width, 1, 1024);
        INT("--patch-size", t->patch_size, 1, 1024);
        INT("--vit-depth", t->vit_depth, 0, 256);
        if (!strcmp(name, "--epochs")) o->epochs_set = 1;
        INT("--epochs", t->epochs, 0, 100000);
        INT("--steps", t->steps, 0, 1000000000L);
        INT("--batch-size", t->batch_size, 2, 1 << 20);
        INT("--threads", t->threads, 0, 1024);
        INT("--workers", t->workers, 1, 64);
        INT("--seed", t->seed, 0, 0x7fffffffL);
        INT("--log-every", t->log_every, 1, 1000000);
        INT("--stop-after", t->stop_after, 0, 1000000000L);
        if (!strcmp(name, "--knn-every")) o->knn_every_set = 1;
        FLT("--knn-every", t->knn_every);
        FLT("--lr", t->lr);
        FLT("--weight-decay", t->weight_decay);
        FLT("--weight-decay-end", t->weight_decay_end);
        FLT("--clip-grad", t->clip_grad);
        FLT("--min-lr", t->min_lr);
        FLT("--drop-path", t->drop_path);
        FLT("--momentum", t->momentum);
        FLT("--warmup-epochs", t->warmup_epochs);
        FLT("--time-budget", t->time_budget);
        FLT("--layer-decay", o->layer_decay);
        FLT("--label-smoothing", o->label_smoothing);
        FLT("--label-fraction", o->label_fraction);
        INT("--labels-per-class", o->labels_per_class, 1, 1L << 30);
        INT("--image-size", image_size, 1, 4096);
        INT("--images", o->images, 1, 64);
        INT("--first", o->first, 0, 0x7fffffffL);
        if (!strcmp(name, "--holdout")) holdout_set = 1;
        FLT("--holdout", holdout);
        if (!strcmp(name, "--channels")) {
            if (strcmp(val, "1") && strcmp(val, "3"))
                return usage_err(cmd, "--channels: '%s' must be 1 or 3%s", val, "");
            channels = val[0] - '0';
            continue;
        }
        int field = method_field(name);
        if (field >= 0) {
            const ssl_method_field *fd = &ssl_method_fields[field];
            if (!parse_float(val, &f) || !(f >= 0) || (fd->is_int && (f != (float)(long)f || f > 1e9f)))
                return usage_err(cmd, fd->is_int ? "%s: '%s' must be a non-negative integer"
                                                 : "%s: '%s' must be a non-negative number", name, val);
            ssl_method_field_set(&t->mcfg, fd, f);
            continue;
        }
        if (!strcmp(name, "--stem")) {
            if (!strcmp(val, "small")) t->stem = SSL_STEM_SMALL;
            else if (!strcmp(val, "imagenet")) t->stem = SSL_STEM_IMAGENET;
            else return usage_err(cmd, "--stem: '%s' unknown (small, imagenet)%s", val, "");
            o->arch_set = 1;
            continue;
        }
#undef STR
#undef INT
#undef FLT
        return usage_err(cmd, "unknown option '%s'%s", name, "");
    }
    if ((t->lr != SSL_UNSET && !(t->lr > 0)) ||
        (t->weight_decay != SSL_UNSET && !(t->weight_decay >= 0)) ||
        (t->momentum != SSL_UNSET && !(t->momentum >= 0 && t->momentum < 1)) ||
        (t->warmup_epochs != SSL_UNSET && !(t->warmup_epochs >= 0)))
        return usage_err(cmd, "--lr must be > 0, --weight-decay and --warmup-epochs >= 0, --momentum in [0, 1)%s%s", "", "");
    if ((t->weight_decay_end != SSL_UNSET && !(t->weight_decay_end >= 0 && isfinite(t->weight_decay_end))) ||
        (t->clip_grad != SSL_UNSET && !(t->clip_grad >= 0 && isfinite(t->clip_grad))) ||
        (t->min_lr != SSL_UNSET && !(t->min_lr >= 0 && isfinite(t->min_lr))))
        return usage_err(cmd, "--weight-decay-end, --clip-grad and --min-lr must be finite and >= 0%s%s", "", "");
    if (t->drop_path != SSL_UNSET && !(t->drop_path >= 0 && t->drop_path < 1))
        return usage_err(cmd, "--drop-path must be in [0, 1)%s%s", "", "");
    if (holdout_set && !(holdout >= 0 && holdout < 1))
        return usage_err(cmd, "--holdout must be in [0, 1)%s%s", "", "");
    if ((image_size || channels || skip_bad || holdout_set) && !o->data_set)
        return usage_err(cmd, "--image-size, --channels, --skip-bad-images and --holdout "
                              "describe an image folder: give it with --data%s%s", "", "");
    return fold_image_options(cmd, t, image_size, channels, skip_bad, holdout_set, holdout);
}

int cli_ctx(const char *cmd, const cli_opts *o, ssl_ctx *ctx)
{
    ssl_ctx_init(ctx, o->train.seed, o->train.threads);
    const ssl_backend *be = ctx->backend; /* the default: dnnl when built, else cpu */
    if (o->device[0] && ssl_backend_by_name(o->device, &be, ctx->err)) {
        cli_error(cmd, ctx->err);
        return CLI_USAGE;
    }
    ctx->backend = be;
    if (!o->precision[0] || !strcmp(o->precision, "fp32")) return CLI_OK;
    int bad = strcmp(o->precision, "bf16")
                  ? ssl_fail(ctx->err, SSL_EINVAL, "--precision '%s' unknown (fp32, bf16)",
                             o->precision)
                  : ssl_dnnl_bf16_check(be, ctx->err);
    if (bad) {
        cli_error(cmd, ctx->err);
        return CLI_USAGE;
    }
    ctx->bf16 = 1;
    return CLI_OK;
}

int cli_protocols(const char *name)
{
    if (!strcmp(name, "knn")) return SSL_EVAL_KNN;
    if (!strcmp(name, "linear")) return SSL_EVAL_LINEAR;
    if (!strcmp(name, "all")) return SSL_EVAL_KNN | SSL_EVAL_LINEAR;
    return 0;
}
