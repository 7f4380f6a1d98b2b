/* selfsup eval / embed / info: use a saved checkpoint. */
#include "cli.h"
#include "selfsup/io.h"

#include <stdio.h>
#include <string.h>

static const char eval_usage[] =
    "usage: selfsup eval CKPT [options]\n"
    "Evaluates the frozen encoder of a checkpoint on the labelled splits of its data.\n"
    "  --protocol knn|linear|all   k-NN (k=200 and k=20, T=0.1, cosine, weighted votes),\n"
    "                              linear probe (L2 chosen on a held-out part of train), or both\n"
    "  --data SPEC          another dataset of the same image shape (default: the run's)\n"
    "  --image-size N  --channels 1|3  --skip-bad-images  --holdout F\n"
    "                       image folder options, with --data (see 'selfsup pretrain --help')\n"
    "  --arch, --width, --stem  override the architecture the checkpoint says it holds\n"
    "  --baselines          also raw pixels and the random-init encoder\n"
    "  --threads N  --seed N  --device dnnl|cpu|ref  --precision fp32|bf16  --json\n";

static const char embed_usage[] =
    "usage: selfsup embed CKPT --prefix OUT [--split train|test] [--data SPEC]\n"
    "Writes OUT_features.npy (float32, N x D frozen encoder features) and\n"
    "OUT_labels.npy (int32, N) for one split (default test).\n";

static const char info_usage[] =
    "usage: selfsup info CKPT [--json]\n"
    "Prints what a checkpoint holds: method, architecture, training state, tensors.\n";

int cli_load_model(const char *cmd, const cli_opts *o, ssl_ctx *ctx, ssl_method *m,
                      ssl_train_config *cfg, ssl_train_state *st)
{
    int ch, side;
    if (!o->positional) {
        cli_error(cmd, "needs a checkpoint path (see --help)");
        return CLI_USAGE;
    }
    if (ssl_checkpoint_read_config(o->positional, cfg, &ch, &side, ctx->err)) {
        cli_error(cmd, ctx->err);
        return CLI_ERR;
    }
    if (o->data_set) snprintf(cfg->data, sizeof cfg->data, "%s", o->train.data);
    if (o->arch_set) { /* the user's architecture; loading then checks it fits */
        snprintf(cfg->arch, sizeof cfg->arch, "%s", o->train.arch);
        cfg->width = o->train.width;
        cfg->stem = o->train.stem;
        cfg->patch_size = o->train.patch_size;
        cfg->vit_depth = o->train.vit_depth;
        snprintf(cfg->pos_embed, sizeof cfg->pos_embed, "%s", o->train.pos_embed);
    }
    const ssl_method_ops *ops = ssl_method_find(cfg->method);
    ssl_encoder_config enc;
    if (!ops) {
        snprintf(ctx->err, SSL_ERR_LEN, "%s: method '%s' unknown to this build", o->positional, cfg->method);
        cli_error(cmd, ctx->err);
        return CLI_ERR;
    }
    if (ssl_train_encoder_config(cfg, ch, side, &enc, ctx->err) ||
        ssl_method_create(m, ops, &cfg->mcfg, &enc, &ctx->rng, ctx->err) ||
        ssl_checkpoint_load(o->positional, m, NULL, st, ctx->err)) {
        cli_error(cmd, ctx->err);
        return CLI_ERR;
    }
    return CLI_OK;
}

/* threads: image folders decode on that many threads (0: all cores). */
int cli_load_split(const char *cmd, const ssl_train_config *cfg, const ssl_method *m,
                      int train, int threads, ssl_dataset *ds, char *err)
{
    ssl_data_opts dopt;
    ssl_data_opts_default(&dopt);
    dopt.n_threads = threads;
    if (ssl_dataset_load_opts(ds, cfg->data, train, &dopt, err)) {
        cli_error(cmd, err);
        return CLI_ERR;
    }
    /* (a method that converts the data for its encoder, colorization, checks it then) */
    if (!m->ops->encoder_data && ds->c != m->encoder.in_channels) {
        char msg[SSL_ERR_LEN];
        snprintf(msg, sizeof msg, "%.300s has %d channels, the encoder takes %d", cfg->data, ds->c,
                 m->encoder.in_channels);
        cli_error(cmd, msg);
        return CLI_ERR;
    }
    return CLI_OK;
}

int cmd_eval(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse("eval", argc, argv, &o, eval_usage);
    if (rc) return rc < 0 ? CLI_OK : rc;
    int which = cli_protocols(o.protocol);
    if (!which) {
        cli_error("eval", "--protocol must be knn, linear or all");
        return CLI_USAGE;
    }
    ssl_ctx ctx;
    if ((rc = cli_ctx("eval", &o, &ctx))) return rc;
    ssl_method m;
    memset(&m, 0, sizeof m);
    ssl_train_config cfg;
    ssl_train_state st;
    ssl_dataset train, test;
    memset(&train, 0, sizeof train);
    memset(&test, 0, sizeof test);
    ssl_eval_row rows[3];
    int n = 0;
    rc = cli_load_model("eval", &o, &ctx, &m, &cfg, &st);
    if (!rc) rc = cli_load_split("eval", &cfg, &m, 1, o.train.threads, &train, ctx.err);
    if (!rc) rc = cli_load_split("eval", &cfg, &m, 0, o.train.threads, &test, ctx.err);
    if (rc) goto done;
    char label[64], arch[48];
    ssl_encoder_describe(&m.encoder, arch, sizeof arch);
    snprintf(label, sizeof label, "%.12s %.30s (%lld steps)", cfg.method, arch, (long long)st.step);
    if (cli_evaluate(&ctx, &m.encoder, label, &cfg, &train, &test, o.baselines, which, rows, &n))
        goto fail;
    if (o.json) {
        printf("{\"checkpoint\":");
        ssl_json_write_string(stdout, o.positional);
        printf(",\"method\":\"%s\",\"steps\":%lld,", cfg.method, (long long)st.step);
        cli_json_eval(stdout, rows, n);
        printf("}\n");
    }
    goto done;
fail:
    cli_error("eval", ctx.err);
    rc = CLI_ERR;
done:
    ssl_method_free(&m);
    ssl_dataset_free(&train);
    ssl_dataset_free(&test);
    ssl_ctx_free(&ctx);
    return rc;
}

int cmd_embed(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse("embed", argc, argv, &o, embed_usage);
    if (rc) return rc < 0 ? CLI_OK : rc;
    if (!o.prefix[0]) {
        cli_error("embed", "--prefix OUT is required (writes OUT_features.npy, OUT_labels.npy)");
        return CLI_USAGE;
    }
    int train = !strcmp(o.split, "train");
    if (!train && strcmp(o.split, "test")) {
        cli_error("embed", "--split must be train or test");
        return CLI_USAGE;
    }
    ssl_ctx ctx;
    if ((rc = cli_ctx("embed", &o, &ctx))) return rc;
    ssl_method m;
    memset(&m, 0, sizeof m);
    ssl_train_config cfg;
    ssl_train_state st;
    ssl_dataset ds;
    memset(&ds, 0, sizeof ds);
    float *feat = NULL;
    rc = cli_load_model("embed", &o, &ctx, &m, &cfg, &st);
    if (!rc) rc = cli_load_split("embed", &cfg, &m, train, o.train.threads, &ds, ctx.err);
    if (rc) goto done;
    int d = m.encoder.feat_dim;
    feat = ssl_malloc(sizeof(float) * (size_t)ds.n * d);
    char path[600];
    int64_t shape[2] = {ds.n, d};
    if (!feat) {
        snprintf(ctx.err, SSL_ERR_LEN, "out of memory for %d x %d features", ds.n, d);
        goto fail;
    }
    ssl_dataset eds; /* the split as the encoder sees it (colorization: the lightness) */
    const ssl_dataset *fds = ssl_method_encoder_data(m.ops, &ds, &eds, ctx.err);
    rc = fds ? ssl_extract_features(&ctx, &m.encoder, fds, 512, feat) : SSL_EINVAL;
    ssl_dataset_free(&eds);
    if (rc) goto fail;
    snprintf(path, sizeof path, "%s_features.npy", o.prefix);
    if (ssl_npy_write(path, SSL_DT_F32, 2, shape, feat, ctx.err)) goto fail;
    printf("wrote %s (%d x %d float32)\n", path, ds.n, d);
    if (ds.labels) {
        snprintf(path, sizeof path, "%s_labels.npy", o.prefix);
        if (ssl_npy_write(path, SSL_DT_I32, 1, shape, ds.labels, ctx.err)) goto fail;
        printf("wrote %s (%d int32)\n", path, ds.n);
    }
    goto done;
fail:
    cli_error("embed", ctx.err);
    rc = CLI_ERR;
done:
    ssl_free(feat);
    ssl_method_free(&m);
    ssl_dataset_free(&ds);
    ssl_ctx_free(&ctx);
    return rc;
}

int cmd_info(int argc, char **argv)
{
    cli_opts o;
    int rc = cli_parse("info", argc, argv, &o, info_usage);
    if (rc) return rc < 0 ? CLI_OK : rc;
    if (!o.positional) {
        cli_error("info", "needs a checkpoint path (see --help)");
        return CLI_USAGE;
    }
    char err[SSL_ERR_LEN];
    ssl_st_file f;
    if (ssl_st_load(&f, o.positional, err)) {
        cli_error("info", err);
        return CLI_ERR;
    }
    long enc = 0, heads = 0, optim = 0, teacher = 0;
    for (int i = 0; i < f.n; i++) {
        long n = (long)(f.entries[i].nbytes / ssl_dtype_size(f.entries[i].dtype));
        const char *nm = f.entries[i].name;
        if (!strncmp(nm, "optim.", 6)) optim += n;
        else if (!strncmp(nm, "teacher.", 8)) teacher += n;
        else if (!strncmp(nm, "conv1.", 6) || !strncmp(nm, "bn1.", 4) || !strncmp(nm, "layer", 5)) enc += n;
        else heads += n; /* heads and method state (queue, center, ...) */
    }
    if (o.json) {
        printf("{\"path\":");
        ssl_json_write_string(stdout, o.positional);
        printf(",\"tensors\":%d,\"encoder_values\":%ld,\"head_values\":%ld,\"teacher_values\":%ld,"
               "\"optimizer_values\":%ld,\"metadata\":{", f.n, enc, heads, teacher, optim);
        for (int i = 0; i < f.n_meta; i++) {
            printf("%s", i ? "," : "");
            ssl_json_write_string(stdout, f.meta_keys[i]);
            printf(":");
            ssl_json_write_string(stdout, f.meta_vals[i]);
        }
        printf("}}\n");
    } else {
        printf("%s\n", o.positional);
        for (int i = 0; i < f.n_meta; i++) printf("  %-14s %s\n", f.meta_keys[i], f.meta_vals[i]);
        printf("  tensors        %d (encoder %ld values, heads and state %ld, teacher %ld, optimizer state %ld)\n",
               f.n, enc, heads, teacher, optim);
        for (int i = 0; i < f.n && i < 8; i++) {
            printf("    %-40s %s [", f.entries[i].name, ssl_dtype_name(f.entries[i].dtype));
            for (int d = 0; d < f.entries[i].ndim; d++)
                printf("%s%lld", d ? ", " : "", (long long)f.entries[i].shape[d]);
            printf("]\n");
        }
        if (f.n > 8) printf("    ... %d more\n", f.n - 8);
    }
    ssl_st_free(&f);
    return CLI_OK;
}
