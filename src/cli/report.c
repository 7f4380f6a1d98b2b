/* The evaluation table shared by `pretrain` and `eval`: optional baselines
 * (raw pixels, the random-init encoder), then the encoder; text and JSON. */
#include "cli.h"
#include "selfsup/io.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *const row_keys[3] = {"raw", "random_init", "encoder"};

int cli_evaluate(ssl_ctx *ctx, ssl_resnet *enc, const char *label, const ssl_train_config *cfg,
                 const ssl_dataset *train, const ssl_dataset *test, int baselines, int which,
                 ssl_eval_row *rows, int *n_rows)
{
    int n = 0;
    memset(rows, 0, sizeof(ssl_eval_row) * 3);
    if (baselines) {
        rows[n].protocols = which;
        snprintf(rows[n].name, sizeof rows[n].name, "raw pixels");
        if (ssl_eval_raw(train, test, cfg->seed, &rows[n], ctx->err)) return SSL_EINVAL;
        n++;
        ssl_resnet rnd;
        ssl_rng rng;
        ssl_rng_seed(&rng, cfg->seed); /* the start point of the pretraining run */
        if (ssl_resnet_init(&rnd, &enc->cfg, &rng, ctx->err)) return SSL_ENOMEM;
        rows[n].protocols = which;
        snprintf(rows[n].name, sizeof rows[n].name, "random-init %.16s w%d", cfg->arch, enc->cfg.width);
        int rc = ssl_eval_encoder(ctx, &rnd, train, test, cfg->seed, &rows[n]);
        ssl_resnet_free(&rnd);
        if (rc) return rc;
        n++;
    }
    rows[n].protocols = which;
    snprintf(rows[n].name, sizeof rows[n].name, "%s", label);
    int rc = ssl_eval_encoder(ctx, enc, train, test, cfg->seed, &rows[n]);
    if (rc) return rc;
    *n_rows = n + 1;
    printf("\nFrozen-feature evaluation on %s (test split, %d images):\n", cfg->data, test->n);
    ssl_eval_print_table(stdout, rows, n + 1);
    return SSL_OK;
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
        fprintf(f, ",\"dim\":%d,\"eval_seconds\":%.1f}", r->dim, r->seconds);
    }
    fputc('}', f);
}
