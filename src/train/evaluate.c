/* Evaluation protocols on frozen features: k-NN (k = 200 and 20, T = 0.1,
 * InstDisc/DINO weighting) and the linear probe (regularization chosen on a
 * held-out part of the training set), for raw pixels and encoders alike. */
#include "selfsup/eval.h"
#include "selfsup/train.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int ssl_extract_features(ssl_ctx *ctx, ssl_encoder *enc, const ssl_dataset *ds, int batch,
                         float *out)
{
    ssl_aug aug;
    ssl_aug_eval(&aug, ds->c, ds->h, ds->w);
    const long img = (long)ds->c * ds->h * ds->w;
    float *x = ssl_malloc(sizeof(float) * img * batch);
    float *scratch = ssl_malloc(sizeof(float) * ssl_aug_scratch_floats(&aug, ds->c, ds->h, ds->w));
    if (!x || !scratch) {
        ssl_free(x);
        ssl_free(scratch);
        return ssl_ctx_fail(ctx, SSL_ENOMEM, "out of memory for feature extraction");
    }
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    g.record = 0;
    int rc = SSL_OK;
    ssl_rng unused;
    ssl_rng_seed(&unused, 0);
    for (int n0 = 0; n0 < ds->n && !rc; n0 += batch) {
        int nb = ds->n - n0 < batch ? ds->n - n0 : batch;
        for (int i = 0; i < nb; i++)
            ssl_aug_apply(&aug, ds->images + (long)(n0 + i) * img, ds->c, ds->h, ds->w,
                          x + (long)i * img, scratch, &unused);
        ssl_graph_reset(&g);
        int shape[4] = {nb, ds->c, ds->h, ds->w};
        ssl_tensor in = ssl_tensor_wrap(x, NULL, 4, shape, SSL_LAYOUT_NCHW);
        ssl_tensor *h = ssl_encoder_forward(&g, enc, &in);
        if (!h) { rc = SSL_ENOMEM; break; }
        memcpy(out + (long)n0 * enc->feat_dim, h->data, sizeof(float) * nb * enc->feat_dim);
    }
    ssl_graph_free(&g);
    ssl_free(x);
    ssl_free(scratch);
    return rc;
}

int ssl_eval_features(const float *train, const int32_t *ytrain, int ntrain, const float *test,
                      const int32_t *ytest, int ntest, int d, int n_classes, uint64_t seed,
                      ssl_eval_row *row, char *err)
{
    double t0 = ssl_time();
    int which = row->protocols ? row->protocols : SSL_EVAL_KNN | SSL_EVAL_LINEAR;
    row->knn200 = row->knn20 = row->linear = row->linear_lambda = NAN;
    row->std_norm = row->eff_rank = NAN;
    row->pretext_acc = row->pretext_loss = NAN;
    row->pretext_classes = 0;
    if (which & SSL_EVAL_KNN) {
        int ks[2] = {200, 20};
        double top1[2];
        int rc = ssl_knn_eval(train, ytrain, ntrain, test, ytest, ntest, d, n_classes, ks, 2,
                              0.1f, top1, err);
        if (rc) return rc;
        row->knn200 = top1[0];
        row->knn20 = top1[1];
    }
    if (which & SSL_EVAL_LINEAR) {
        ssl_linear_result lr;
        int rc = ssl_linear_probe(train, ytrain, ntrain, test, ytest, ntest, d, n_classes, seed,
                                  &lr, err);
        if (rc) return rc;
        row->linear = lr.test_top1;
        row->linear_lambda = lr.lambda;
    }
    row->dim = d;
    row->seconds = ssl_time() - t0;
    return SSL_OK;
}

int ssl_eval_encoder(ssl_ctx *ctx, ssl_encoder *enc, const ssl_dataset *train,
                     const ssl_dataset *test, uint64_t seed, ssl_eval_row *row)
{
    if (!train->labels || !test->labels)
        return ssl_ctx_fail(ctx, SSL_EINVAL, "evaluation needs labelled train and test splits");
    double t0 = ssl_time();
    int d = enc->feat_dim;
    float *ftr = ssl_malloc(sizeof(float) * (size_t)train->n * d);
    float *fte = ssl_malloc(sizeof(float) * (size_t)test->n * d);
    int rc = (!ftr || !fte) ? ssl_ctx_fail(ctx, SSL_ENOMEM, "out of memory for features") : SSL_OK;
    if (!rc) rc = ssl_extract_features(ctx, enc, train, 512, ftr);
    if (!rc) rc = ssl_extract_features(ctx, enc, test, 512, fte);
    if (!rc)
        rc = ssl_eval_features(ftr, train->labels, train->n, fte, test->labels, test->n, d,
                               train->n_classes, seed, row, ctx->err);
    /* collapse measures: cheap up to ResNet-18/34 widths (d^3 eigenvalues) */
    if (!rc && d <= 1024)
        rc = ssl_embedding_stats(fte, test->n, d, &row->std_norm, &row->eff_rank, ctx->err);
    row->seconds = ssl_time() - t0;
    ssl_free(ftr);
    ssl_free(fte);
    return rc;
}

int ssl_eval_pretext(ssl_ctx *ctx, ssl_method *m, const ssl_dataset *ds, int batch,
                     ssl_eval_row *row)
{
    const ssl_method_ops *ops = m->ops;
    row->pretext_acc = row->pretext_loss = NAN;
    row->pretext_classes = 0;
    if (!ops->pretext_metrics)
        return ssl_ctx_fail(ctx, SSL_EINVAL, "%s has no pretext task to evaluate", ops->name);
    if (batch < 1) return ssl_ctx_fail(ctx, SSL_EINVAL, "pretext evaluation: batch %d", batch);
    /* The views the method trains on, without their randomness. */
    ssl_aug train_augs[SSL_MAX_VIEWS], augs[SSL_MAX_VIEWS];
    int nv = ops->views(&m->cfg, ds->c, ds->h, ds->w, train_augs);
    if (nv < 1 || nv > SSL_MAX_VIEWS)
        return ssl_ctx_fail(ctx, SSL_EINVAL, "%s: %d views per image", ops->name, nv);
    size_t scratch_n = 0, view_n = 0;
    for (int v = 0; v < nv; v++) {
        ssl_aug_eval(&augs[v], ds->c, train_augs[v].out_h, train_augs[v].out_w);
        size_t sn = ssl_aug_scratch_floats(&augs[v], ds->c, ds->h, ds->w);
        scratch_n = sn > scratch_n ? sn : scratch_n;
        view_n += (size_t)ds->c * augs[v].out_h * augs[v].out_w;
    }
    const long img = (long)ds->c * ds->h * ds->w;
    float *x = ssl_malloc(sizeof(float) * view_n * batch);
    float *scratch = ssl_malloc(sizeof(float) * scratch_n);
    if (!x || !scratch) {
        ssl_free(x);
        ssl_free(scratch);
        return ssl_ctx_fail(ctx, SSL_ENOMEM, "out of memory for the pretext evaluation");
    }
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0; /* encoder and head in eval mode: running BN statistics */
    g.record = 0;
    ssl_rng unused;
    ssl_rng_seed(&unused, 0);
    int rc = SSL_OK;
    int64_t correct = 0, total = 0;
    double loss_sum = 0;
    int classes = 0;
    m->pretext_eval = 1;
    for (int n0 = 0; n0 < ds->n && !rc; n0 += batch) {
        int nb = ds->n - n0 < batch ? ds->n - n0 : batch;
        ssl_tensor in[SSL_MAX_VIEWS], *vp[SSL_MAX_VIEWS];
        float *xv = x;
        for (int v = 0; v < nv; v++) {
            long vs = (long)ds->c * augs[v].out_h * augs[v].out_w;
            for (int i = 0; i < nb; i++)
                ssl_aug_apply(&augs[v], ds->images + (long)(n0 + i) * img, ds->c, ds->h, ds->w,
                              xv + i * vs, scratch, &unused);
            int shape[4] = {nb, ds->c, augs[v].out_h, augs[v].out_w};
            in[v] = ssl_tensor_wrap(xv, NULL, 4, shape, SSL_LAYOUT_NCHW);
            vp[v] = &in[v];
            xv += nb * vs;
        }
        ssl_graph_reset(&g);
        m->pretext_eval_first = n0;
        ssl_tensor *loss = ops->loss(m, &g, vp);
        if (!loss) {
            rc = ctx->failed ? ctx->failed : SSL_EINVAL;
            break;
        }
        int64_t c, t;
        classes = ops->pretext_metrics(m, &c, &t);
        correct += c;
        total += t;
        loss_sum += (double)loss->data[0] * t; /* the loss is a mean over the batch's t predictions */
    }
    m->pretext_eval = 0;
    m->pretext_eval_first = 0;
    if (!rc && total > 0) {
        row->pretext_acc = classes > 0 ? (double)correct / total : NAN; /* 0: a regression task */
        row->pretext_loss = loss_sum / total;
        row->pretext_classes = classes;
    }
    ssl_graph_free(&g);
    ssl_free(x);
    ssl_free(scratch);
    return rc;
}

int ssl_eval_raw(const ssl_dataset *train, const ssl_dataset *test, uint64_t seed,
                 ssl_eval_row *row, char *err)
{
    if (!train->labels || !test->labels)
        return ssl_fail(err, SSL_EINVAL, "evaluation needs labelled train and test splits");
    double t0 = ssl_time();
    ssl_aug aug;
    ssl_aug_eval(&aug, train->c, train->h, train->w);
    int d = train->c * train->h * train->w;
    float *ftr = ssl_malloc(sizeof(float) * (size_t)train->n * d);
    float *fte = ssl_malloc(sizeof(float) * (size_t)test->n * d);
    int rc = (!ftr || !fte) ? ssl_fail(err, SSL_ENOMEM, "out of memory for raw features") : SSL_OK;
    if (!rc) rc = ssl_dataset_to_float(train, &aug, ftr);
    if (!rc) rc = ssl_dataset_to_float(test, &aug, fte);
    if (rc && rc != SSL_ENOMEM) ssl_fail(err, rc, "raw pixels: cannot convert the dataset");
    if (!rc)
        rc = ssl_eval_features(ftr, train->labels, train->n, fte, test->labels, test->n, d,
                               train->n_classes, seed, row, err);
    row->seconds = ssl_time() - t0;
    ssl_free(ftr);
    ssl_free(fte);
    return rc;
}

void ssl_eval_print_table(FILE *f, const ssl_eval_row *rows, int n)
{
    fprintf(f, "| %-32s | %5s | %10s | %9s | %8s | %8s | %7s |\n", "features", "dim",
            "k-NN k=200", "k-NN k=20", "linear", "eff rank", "eval s");
    fprintf(f, "|%s|%s|%s|%s|%s|%s|%s|\n", "----------------------------------", "-------",
            "------------", "-----------", "----------", "----------", "---------");
    for (int i = 0; i < n; i++) {
        char v[3][16];
        double x[3] = {rows[i].knn200, rows[i].knn20, rows[i].linear};
        for (int k = 0; k < 3; k++) /* protocols not run show as "-" */
            if (isnan(x[k])) snprintf(v[k], sizeof v[k], "-");
            else snprintf(v[k], sizeof v[k], "%.2f%%", 100 * x[k]);
        char er[16] = "-";
        if (!isnan(rows[i].eff_rank)) snprintf(er, sizeof er, "%.1f", rows[i].eff_rank);
        fprintf(f, "| %-32s | %5d | %10s | %9s | %8s | %8s | %7.1f |\n", rows[i].name,
                rows[i].dim, v[0], v[1], v[2], er, rows[i].seconds);
    }
}
