/* The evaluation table shared by `pretrain` and `eval`: optional baselines
 * (raw pixels, the random-init encoder), then the encoder; text and JSON. */
#include "cli.h"
#include "selfsup/io.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const char *const row_keys[3] = {"raw", "random_init", "encoder"};

/* train, test: the splits as the encoder sees them; task_test: the test
 * split itself, for the pretext task. */
static int evaluate_rows(ssl_ctx *ctx, ssl_encoder *enc, const char *label,
                         const ssl_train_config *cfg, const ssl_dataset *train,
                         const ssl_dataset *test, const ssl_dataset *task_test, int baselines,
                         int which, ssl_eval_row *rows, int *n_rows)
{
    int n = 0;
    memset(rows, 0, sizeof(ssl_eval_row) * 3);
    if (baselines) {
        rows[n].protocols = which;
        snprintf(rows[n].name, sizeof rows[n].name, "raw pixels");
        if (ssl_eval_raw(train, test, cfg->seed, &rows[n], ctx->err)) return SSL_EINVAL;
        n++;
        ssl_encoder rnd;
        ssl_rng rng;
        ssl_rng_seed(&rng, cfg->seed); /* the start point of the pretraining run */
        if (ssl_encoder_init(&rnd, &enc->cfg, &rng, ctx->err)) return SSL_ENOMEM;
        rows[n].protocols = which;
        char arch[48];
        ssl_encoder_describe(enc, arch, sizeof arch);
        snprintf(rows[n].name, sizeof rows[n].name, "random-init %.40s", arch);
        int rc = ssl_eval_encoder(ctx, &rnd, train, test, cfg->seed, &rows[n]);
        ssl_encoder_free(&rnd);
        if (rc) return rc;
        n++;
    }
    rows[n].protocols = which;
    snprintf(rows[n].name, sizeof rows[n].name, "%s", label);
    int rc = ssl_eval_encoder(ctx, enc, train, test, cfg->seed, &rows[n]);
    if (rc) return rc;
    /* A pretext method's own task on the test split. Both callers (pretrain
     * and eval) pass the encoder of the run's ssl_method, which holds the
     * task's head: the method is found around it. (Cleaner: pass the method
     * to cli_evaluate; cli.h and the commands are not this file's.) */
    const ssl_method_ops *ops = ssl_method_find(cfg->method);
    if (ops && ops->pretext_metrics) {
        ssl_method *m = (ssl_method *)((char *)enc - offsetof(ssl_method, encoder));
        char unused[SSL_ERR_LEN]; /* data the task cannot use (colorization of gray images): no figure */
        if (m->ops == ops && (!ops->encoder_channels || ops->encoder_channels(&m->cfg, task_test->c, unused) > 0) &&
            (rc = ssl_eval_pretext(ctx, m, task_test, 256, &rows[n])))
            return rc;
    }
    *n_rows = n + 1;
    printf("\nFrozen-feature evaluation on %s (test split, %d images):\n", cfg->data, test->n);
    ssl_eval_print_table(stdout, rows, n + 1);
    if (!isnan(rows[n].pretext_acc))
        printf("Pretext task (%s) on the test split: accuracy %.2f%% (chance %.2f%%), loss %.4f\n",
               cfg->method, 100 * rows[n].pretext_acc, 100.0 / rows[n].pretext_classes,
               rows[n].pretext_loss);
    else if (!isnan(rows[n].pretext_loss)) /* a regression task (inpainting: masked-region MSE) */
        printf("Pretext task (%s) on the test split: loss %.4f\n", cfg->method, rows[n].pretext_loss);
    return SSL_OK;
}

int cli_evaluate(ssl_ctx *ctx, ssl_encoder *enc, const char *label, const ssl_train_config *cfg,
                 const ssl_dataset *train, const ssl_dataset *test, int baselines, int which,
                 ssl_eval_row *rows, int *n_rows)
{
    /* The frozen-feature rows see the data as the encoder does (colorization:
     * the lightness alone), the pretext task sees the data itself. */
    const ssl_method_ops *ops = ssl_method_find(cfg->method);
    ssl_dataset etrain, etest;
    memset(&etrain, 0, sizeof etrain);
    memset(&etest, 0, sizeof etest);
    const ssl_dataset *ftrain = ssl_method_encoder_data(ops, train, &etrain, ctx->err);
    const ssl_dataset *ftest = ftrain ? ssl_method_encoder_data(ops, test, &etest, ctx->err) : NULL;
    int rc = ftest ? evaluate_rows(ctx, enc, label, cfg, ftrain, ftest, test, baselines, which, rows, n_rows)
                   : SSL_EINVAL;
    ssl_dataset_free(&etrain);
    ssl_dataset_free(&etest);
    return rc;
}

/* JSON has no NaN: protocols not run are null. */
static void json_pct(FILE *f, const char *key, double v)
{
    if (isnan(v)) fprintf(f, "\"%s\":null", key);
    else fprintf(f, "\"%s\":%.2f", key, 100 * v);
}

void cli_json_eval(FILE *f, const ssl_eval_row *rows, int n)
{
    fprintf(f, "\"eval\":{");
    for (int i = 0; i < n; i++) {
        const ssl_eval_row *r = &rows[i];
        fprintf(f, "%s\"%s\":{", i ? "," : "", row_keys[i + 3 - n]);
        json_pct(f, "knn_top1_k200", r->knn200);
        fputc(',', f);
        json_pct(f, "knn_top1_k20", r->knn20);
        fputc(',', f);
        json_pct(f, "linear_top1", r->linear);
        if (isnan(r->std_norm)) fprintf(f, ",\"std_norm\":null,\"eff_rank\":null");
        else fprintf(f, ",\"std_norm\":%.4f,\"eff_rank\":%.2f", r->std_norm, r->eff_rank);
        if (!isnan(r->pretext_acc)) /* pretext methods only: other rows keep their keys */
            fprintf(f, ",\"pretext_top1\":%.2f,\"pretext_loss\":%.5f,\"pretext_classes\":%d",
                    100 * r->pretext_acc, r->pretext_loss, r->pretext_classes);
        else if (!isnan(r->pretext_loss)) /* a regression task */
            fprintf(f, ",\"pretext_loss\":%.5f", r->pretext_loss);
        fprintf(f, ",\"dim\":%d,\"eval_seconds\":%.1f}", r->dim, r->seconds);
    }
    fputc('}', f);
}
