/* The shared pretraining loop: loader threads feed augmented views, the
 * method gives a loss, the graph gives gradients, the optimizer steps on a
 * warm-up + cosine schedule. Progress lines go to stderr, metrics to
 * <out>/log.jsonl, checkpoints to <out>/last.safetensors at each epoch end;
 * optionally a k-NN evaluation every few epochs, kept off the clock. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/eval.h"
#include "selfsup/train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int ssl_train_make_dir(const char *path, char *err)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%.511s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) goto fail;
            *p = '/';
        }
    if (mkdir(tmp, 0755) && errno != EEXIST) goto fail;
    return SSL_OK;
fail:
    return ssl_fail(err, SSL_EIO, "--out %s: cannot create folder: %s", path, strerror(errno));
}

int ssl_train_optim_config(const ssl_train_config *c, ssl_optim_config *o, char *err)
{
    memset(o, 0, sizeof *o);
    o->lr = c->lr;
    o->momentum = c->momentum;
    o->weight_decay = c->weight_decay;
    o->eta = !strcmp(c->optimizer, "larc") ? 0.02f : 0.001f; /* solo-learn's, SimCLR's */
    o->beta1 = 0.9f;
    const ssl_method_ops *ops = ssl_method_find(c->method);
    /* the recipe of this arch (DINO's ViT one is AdamW) */
    const ssl_method_optim *recipe = ops ? ssl_train_config_recipe(c, ops) : NULL;
    o->beta2 = recipe && recipe->beta2 > 0 ? recipe->beta2 : 0.999f; /* MAE: 0.95 */
    o->eps = 1e-8f;
    if (!strcmp(c->optimizer, "lars")) o->kind = SSL_OPTIM_LARS;
    else if (!strcmp(c->optimizer, "larc")) o->kind = SSL_OPTIM_LARC;
    else if (!strcmp(c->optimizer, "sgd")) o->kind = SSL_OPTIM_SGD;
    else if (!strcmp(c->optimizer, "adamw")) o->kind = SSL_OPTIM_ADAMW;
    else return ssl_fail(err, SSL_EINVAL, "--optimizer '%s' unknown (lars, larc, sgd, adamw)", c->optimizer);
    return SSL_OK;
}

void ssl_train_fmt_eta(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e7) s = 0;
    int h = (int)(s / 3600), mi = (int)(fmod(s, 3600) / 60), se = (int)fmod(s, 60);
    if (h) snprintf(buf, n, "%dh%02dm", h, mi);
    else snprintf(buf, n, "%dm%02ds", mi, se);
}

/* Shortens the schedule to the steps that fit in cfg->time_budget, timed on
 * steps 2..6 (the first one also sizes the arena); the fitted length goes
 * into cfg->steps so the checkpoint, and a resume, keep it. 1 if shortened. */
static int fit_budget(ssl_train_config *cfg, int64_t step, double elapsed, double per_step,
                      int spe, int64_t *total)
{
    int64_t fit = step + (int64_t)((cfg->time_budget - elapsed) / per_step);
    if (fit >= *total) return 0;
    *total = fit > step ? fit : step;
    cfg->steps = *total;
    if (!cfg->quiet)
        fprintf(stderr, "[%s] time budget %.0f s: %.2f s/step, the schedule now ends at step %lld (%.2f epochs)\n",
                cfg->method, cfg->time_budget, per_step, (long long)*total, (double)*total / spe);
    return 1;
}

/* The splits of --knn-every: labelled, the images the encoder trains on. */
static int check_knn_splits(const ssl_dataset *train, const ssl_dataset *bank,
                            const ssl_dataset *queries, char *err)
{
    if (!bank || !queries || !bank->labels || !queries->labels)
        return ssl_fail(err, SSL_EINVAL, "--knn-every needs labelled train and test splits");
    const ssl_dataset *d[2] = {bank, queries};
    for (int i = 0; i < 2; i++)
        if (d[i]->c != train->c || d[i]->h != train->h || d[i]->w != train->w)
            return ssl_fail(err, SSL_EINVAL, "--knn-every: the %s split is %dx%dx%d, the training images %dx%dx%d",
                            i ? "test" : "train", d[i]->c, d[i]->h, d[i]->w, train->c, train->h, train->w);
    if (bank->n < 200) /* k = 200 neighbours */
        return ssl_fail(err, SSL_EINVAL, "--knn-every: k-NN with k=200 needs >= 200 labelled train images (%d)",
                        bank->n);
    return SSL_OK;
}

int64_t ssl_knn_interval(float knn_every, int spe)
{
    if (!(knn_every > 0)) return 0;
    int64_t n = llround((double)knn_every * spe);
    return n > 0 ? n : 1;
}

/* k-NN of m's encoder now, as the final evaluation does it (eval mode, no
 * randomness: the training that follows is unchanged): one "knn" line to
 * log and one to stderr. bank, queries: the splits as the encoder sees them.
 * *eval_s: the seconds it took, which the caller keeps off the clock. */
static int knn_report(ssl_ctx *ctx, ssl_method *m, const ssl_train_config *cfg,
                      const ssl_dataset *bank, const ssl_dataset *queries, int64_t step, int spe,
                      double train_s, FILE *log, double *eval_s)
{
    double t0 = ssl_time();
    ssl_eval_row row;
    memset(&row, 0, sizeof row);
    row.protocols = SSL_EVAL_KNN;
    int rc = ssl_eval_encoder(ctx, &m->encoder, bank, queries, cfg->seed, &row);
    *eval_s = ssl_time() - t0;
    if (rc) return rc;
    char rank[32] = "null"; /* JSON has no NaN (wide encoders skip it) */
    if (!isnan(row.eff_rank)) snprintf(rank, sizeof rank, "%.2f", row.eff_rank);
    fprintf(log, "{\"event\":\"knn\",\"epoch\":%.6g,\"step\":%lld,\"train_seconds\":%.2f,"
                 "\"knn_top1_k20\":%.2f,\"knn_top1_k200\":%.2f,\"eff_rank\":%s,\"eval_seconds\":%.2f}\n",
            (double)step / spe, (long long)step, train_s, 100 * row.knn20, 100 * row.knn200, rank,
            *eval_s);
    fflush(log);
    if (!cfg->quiet)
        fprintf(stderr, "[%s] k-NN at epoch %.4g (step %lld, %.1f s of training): k=20 %.2f%% k=200 %.2f%% (%.1f s)\n",
                cfg->method, (double)step / spe, (long long)step, train_s, 100 * row.knn20,
                100 * row.knn200, *eval_s);
    return SSL_OK;
}

int ssl_pretrain(const ssl_train_config *cfg, const ssl_dataset *train, ssl_ctx *ctx,
                 ssl_method *m, ssl_train_result *res)
{
    return ssl_pretrain_knn(cfg, train, NULL, NULL, ctx, m, res);
}

int ssl_pretrain_knn(const ssl_train_config *user_cfg, const ssl_dataset *train,
                     const ssl_dataset *knn_train, const ssl_dataset *knn_test, ssl_ctx *ctx,
                     ssl_method *m, ssl_train_result *res)
{
    /* The run's own copy: a time budget may fix its length (saved with it). */
    ssl_train_config run = *user_cfg;
    ssl_train_config *cfg = &run;
    char *err = ctx->err;
    memset(res, 0, sizeof *res);
    res->pretext_acc = NAN;
    int rc = ssl_train_config_resolve(cfg, err);
    if (rc) return rc;
    const ssl_method_ops *ops = ssl_method_find(cfg->method);
    if (cfg->batch_size < 2 || cfg->batch_size > train->n)
        return ssl_fail(err, SSL_EINVAL, "--batch-size %d must be in 2..%d (the dataset size)",
                        cfg->batch_size, train->n);
    if (cfg->epochs < 1 && cfg->steps < 1)
        return ssl_fail(err, SSL_EINVAL, "--epochs or --steps must be >= 1");
    if (!(cfg->lr > 0) || !(cfg->weight_decay >= 0) || !(cfg->warmup_epochs >= 0))
        return ssl_fail(err, SSL_EINVAL, "--lr must be > 0, --weight-decay and --warmup-epochs >= 0");
    if (strcmp(cfg->lr_scale, "sqrt") && strcmp(cfg->lr_scale, "linear") && strcmp(cfg->lr_scale, "none"))
        return ssl_fail(err, SSL_EINVAL, "--lr-scale '%s' unknown (sqrt, linear, none)", cfg->lr_scale);
    ssl_optim_config ocfg;
    rc = ssl_train_optim_config(cfg, &ocfg, err);
    if (rc) return rc;
    ssl_encoder_config enc;
    /* the encoder may see fewer channels than the data (colorization: L of RGB) */
    int enc_channels = ops->encoder_channels ? ops->encoder_channels(&cfg->mcfg, train->c, err) : train->c;
    if (enc_channels < 0) return enc_channels;
    if (!strncmp(cfg->arch, "vit", 3) && train->h != train->w)
        return ssl_fail(err, SSL_EINVAL, "a ViT needs square images (the data is %dx%d)", train->h,
                        train->w);
    rc = ssl_train_encoder_config(cfg, enc_channels, train->h, &enc, err);
    if (rc) return rc;
    if (cfg->knn_every > 0 && (rc = check_knn_splits(train, knn_train, knn_test, err))) return rc;
    rc = ssl_method_create(m, ops, &cfg->mcfg, &enc, &ctx->rng, err);
    if (!rc) rc = ssl_method_setup_run(m, train->h, train->w, cfg->batch_size, err);
    /* BEiT's tokenizer: from --tokenizer, or trained on the data (fit_data);
     * a new run saves it beside the model as tokenizer.safetensors */
    int has_tok = 0;
    for (int i = 0; i < m->n_state; i++) has_tok |= !strcmp(m->state[i].prefix, SSL_TOKENIZER_STATE);
    if (!rc && cfg->tokenizer[0] && (!has_tok || cfg->resume[0]))
        rc = ssl_fail(err, SSL_EINVAL, "--tokenizer %s", cfg->resume[0] ? "is for a new run (the checkpoint has its tokenizer)"
                                                                         : "applies to a method with a tokenizer (beit)");
    if (!rc && cfg->tokenizer[0]) {
        rc = ssl_checkpoint_load_state(cfg->tokenizer, m, SSL_TOKENIZER_STATE, err);
        if (!rc && !cfg->quiet) fprintf(stderr, "[%s] tokenizer from %s\n", ops->name, cfg->tokenizer);
    } else if (!rc && ops->fit_data && !cfg->resume[0]) {
        rc = ops->fit_data(m, train, err);
    }
    if (rc) return rc;
    cfg->mcfg = m->cfg; /* with the method's defaults filled: saved with the run */
    m->steps_per_epoch = train->n / cfg->batch_size;
    rc = ssl_train_make_dir(cfg->out, err);
    if (rc) return rc;
    if (has_tok && !cfg->resume[0]) {
        char tok_path[600];
        snprintf(tok_path, sizeof tok_path, "%.500s/tokenizer.safetensors", cfg->out);
        rc = ssl_checkpoint_save_state(tok_path, m, SSL_TOKENIZER_STATE, err);
        if (rc) return rc;
        if (!cfg->quiet) fprintf(stderr, "[%s] tokenizer saved to %s\n", ops->name, tok_path);
    }

    /* All trainable parameters, encoder first, for the optimizer. */
    int np = m->encoder.reg->n_params + m->heads.n_params;
    ssl_param *params = malloc(sizeof(ssl_param) * np);
    ssl_optim *opt = NULL;
    ssl_loader *loader = NULL;
    FILE *log = NULL;
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    /* the k-NN splits as the encoder sees them (colorization: converted once) */
    ssl_dataset bank_tmp, queries_tmp;
    memset(&bank_tmp, 0, sizeof bank_tmp);
    memset(&queries_tmp, 0, sizeof queries_tmp);
    const ssl_dataset *bank = NULL, *queries = NULL;
    if (!params) { rc = ssl_fail(err, SSL_ENOMEM, "out of memory"); goto done; }
    if (cfg->knn_every > 0) {
        bank = ssl_method_encoder_data(ops, knn_train, &bank_tmp, err);
        queries = bank ? ssl_method_encoder_data(ops, knn_test, &queries_tmp, err) : NULL;
        if (!queries) { rc = SSL_EINVAL; goto done; }
    }
    memcpy(params, m->encoder.reg->params, sizeof(ssl_param) * m->encoder.reg->n_params);
    memcpy(params + m->encoder.reg->n_params, m->heads.params, sizeof(ssl_param) * m->heads.n_params);
    rc = ssl_optim_create(&opt, &ocfg, params, np, err);
    if (rc) goto done;

    ssl_train_state ts = {0, 0, 0, cfg->seed};
    double clock0 = 0; /* training seconds before this run: a resume goes on from its checkpoint's */
    if (cfg->resume[0]) {
        rc = ssl_checkpoint_load(cfg->resume, m, opt, &ts, err);
        if (!rc) rc = ssl_checkpoint_train_seconds(cfg->resume, &clock0, err);
        if (rc) goto done;
        if (clock0 < 0) {
            clock0 = 0;
            if (cfg->knn_every > 0 && !cfg->quiet)
                fprintf(stderr, "[%s] %s holds no training time: the k-NN lines' train_seconds count from 0 at the resume\n",
                        ops->name, cfg->resume);
        }
    }
    rc = ssl_loader_create(&loader, train, m->augs, m->n_views, cfg->batch_size, ts.seed,
                           cfg->workers > 0 ? cfg->workers : 1, err);
    if (rc) goto done;
    const int spe = ssl_loader_steps_per_epoch(loader);
    int64_t total = cfg->steps > 0 ? cfg->steps : (int64_t)cfg->epochs * spe;
    const int64_t knn_steps = ssl_knn_interval(cfg->knn_every, spe);
    const int64_t warmup = (int64_t)(cfg->warmup_epochs * spe);
    const float peak_lr = !strcmp(cfg->lr_scale, "sqrt") ? ssl_lr_scale_sqrt(cfg->lr, cfg->batch_size)
                        : !strcmp(cfg->lr_scale, "linear") ? ssl_lr_scale_linear(cfg->lr, cfg->batch_size)
                        : cfg->lr;
    int total_epochs = (int)((total + spe - 1) / spe);
    ssl_loader_seek(loader, ts.epoch, ts.step_in_epoch);

    char path[600];
    snprintf(path, sizeof path, "%.500s/log.jsonl", cfg->out);
    log = fopen(path, cfg->resume[0] ? "a" : "w");
    if (!log) { rc = ssl_fail(err, SSL_EIO, "%s: cannot open for writing: %s", path, strerror(errno)); goto done; }
    snprintf(res->checkpoint, sizeof res->checkpoint, "%.500s/last.safetensors", cfg->out);
    char arch[48];
    ssl_encoder_describe(&m->encoder, arch, sizeof arch);
    char recipe[96];
    int at = snprintf(recipe, sizeof recipe, "%s lr %.3g wd %.3g", cfg->optimizer, peak_lr,
                      cfg->weight_decay);
    if (cfg->weight_decay_end > 0)
        at += snprintf(recipe + at, sizeof recipe - at, "->%.3g", cfg->weight_decay_end);
    if (cfg->clip_grad > 0)
        snprintf(recipe + at, sizeof recipe - at, " clip %.3g", cfg->clip_grad);
    if (!cfg->quiet)
        fprintf(stderr, "[%s] %s on %s: %d images, %d steps/epoch, %lld steps, batch %d x %d views, %d threads%s, %s\n",
                ops->name, arch, cfg->data, train->n, spe, (long long)total,
                cfg->batch_size, m->n_views, ctx->n_threads, ctx->bf16 ? " (bf16 convolutions)" : "",
                recipe);

    int64_t stop = cfg->stop_after > 0 && cfg->stop_after < total ? cfg->stop_after : total;
    const int B = cfg->batch_size;
    /* The clock leaves out the k-NN evaluations (eval_s): time to accuracy
     * counts training alone; rates and ETA follow it. */
    double t_start = ssl_time(), t_int = t_start, t_first = 0, loss_sum = 0, wait_sum = 0, eval_s = 0;
    int64_t first_step = ts.step;
    /* Pretext tasks: their accuracy over the interval, summed as counts. */
    int64_t pt_correct = 0, pt_total = 0;
    int n_int = 0;
    while (ts.step < stop) {
        float *const *views;
        const int32_t *labels;
        int epoch, sie;
        double t0 = ssl_time();
        rc = ssl_loader_next(loader, &views, &labels, &epoch, &sie, err);
        if (rc) goto done;
        wait_sum += ssl_time() - t0;
        ssl_graph_reset(&g);
        ssl_tensor in[SSL_MAX_VIEWS];
        ssl_tensor *vp[SSL_MAX_VIEWS];
        for (int v = 0; v < m->n_views; v++) {
            int shape[4] = {B, train->c, m->augs[v].out_h, m->augs[v].out_w};
            in[v] = ssl_tensor_wrap(views[v], NULL, 4, shape, SSL_LAYOUT_NCHW);
            vp[v] = &in[v];
        }
        m->step = ts.step;
        m->geo = ssl_loader_geo(loader);
        m->total_steps = total;
        ssl_encoder_step_key(&m->encoder, cfg->seed, ts.step); /* drop path's draws */
        ssl_tensor *loss = ops->loss(m, &g, vp);
        if (!loss) { rc = ctx->failed ? ctx->failed : SSL_ENOMEM; goto done; }
        float lv = loss->data[0];
        int64_t pc, pt; /* accuracy of classification tasks (regression ones return 0 classes) */
        if (ops->pretext_metrics && ops->pretext_metrics(m, &pc, &pt) > 0) {
            pt_correct += pc;
            pt_total += pt;
        }
        if (!isfinite(lv)) {
            rc = ssl_fail(err, SSL_ENAN, "step %lld: loss is %s; stopped without saving (last checkpoint: %s)",
                          (long long)ts.step + 1, isnan(lv) ? "NaN" : "infinite", res->checkpoint);
            goto done;
        }
        ssl_registry_zero_grad(m->encoder.reg);
        ssl_registry_zero_grad(&m->heads);
        rc = ssl_graph_backward(&g, loss);
        if (rc) goto done;
        /* main_dino.py's order: clip_gradients, then cancel_gradients_last_layer */
        if (cfg->clip_grad > 0) ssl_clip_grad_per_param(params, np, cfg->clip_grad);
        if (ops->after_backward) ops->after_backward(m);
        ssl_method_mark_frozen(m, params, np);
        float lr = ssl_lr_warmup_cosine(ts.step, warmup, total, peak_lr, cfg->min_lr);
        float wd = cfg->weight_decay;
        if (cfg->weight_decay_end > 0) {
            wd = ssl_wd_cosine(ts.step, total, cfg->weight_decay, cfg->weight_decay_end);
            ssl_optim_set_weight_decay(opt, wd);
        }
        ssl_optim_step(opt, lr);
        if (ops->after_step) ops->after_step(m);
        ts.step++;
        if (ts.step - first_step == 1) t_first = ssl_time() - t_start - eval_s;
        if (cfg->time_budget > 0 && ts.step - first_step == 6 && !cfg->resume[0]) {
            double trained = ssl_time() - t_start - eval_s;
            if (fit_budget(cfg, ts.step, trained, (trained - t_first) / 5, spe, &total)) {
                if (stop > total) stop = total;
                total_epochs = (int)((total + spe - 1) / spe);
            }
        }
        ts.epoch = epoch;
        ts.step_in_epoch = sie + 1;
        if (ts.step_in_epoch == spe) { ts.epoch++; ts.step_in_epoch = 0; }
        loss_sum += lv;
        n_int++;
        int epoch_end = ts.step_in_epoch == 0;
        if (n_int == cfg->log_every || ts.step == stop || epoch_end) {
            double now = ssl_time(), ips = (double)n_int * B / (now - t_int);
            double rate = (double)(ts.step - first_step) / (now - t_start - eval_s);
            char eta[32];
            ssl_train_fmt_eta(eta, sizeof eta, (double)(stop - ts.step) / rate);
            res->final_loss = loss_sum / n_int;
            /* pretext accuracy (only for methods that have one: others' lines are unchanged) */
            char acc_json[48] = "", acc_txt[32] = "";
            if (pt_total > 0) {
                res->pretext_acc = (double)pt_correct / pt_total;
                snprintf(acc_json, sizeof acc_json, ",\"pretext_acc\":%.4f", res->pretext_acc);
                snprintf(acc_txt, sizeof acc_txt, " acc %.1f%%", 100 * res->pretext_acc);
            }
            /* a scheduled weight decay is shown (a constant one is in the config) */
            char wd_json[32] = "", wd_txt[24] = "";
            if (cfg->weight_decay_end > 0) {
                snprintf(wd_json, sizeof wd_json, ",\"wd\":%.6g", wd);
                snprintf(wd_txt, sizeof wd_txt, " wd %.3g", wd);
            }
            fprintf(log, "{\"step\":%lld,\"epoch\":%.4f,\"loss\":%.6f%s,\"lr\":%.6g%s,\"img_per_s\":%.2f,"
                         "\"data_wait_frac\":%.4f,\"elapsed_s\":%.2f}\n",
                    (long long)ts.step, (double)ts.step / spe, res->final_loss, acc_json, lr, wd_json,
                    ips, wait_sum / (now - t_int), now - t_start);
            fflush(log);
            if (!cfg->quiet)
                fprintf(stderr, "[%s] ep %d/%d step %lld/%lld loss %.4f%s lr %.3g%s %.1f img/s data-wait %.1f%% ETA %s\n",
                        ops->name, ts.epoch + (epoch_end ? 0 : 1), total_epochs, (long long)ts.step,
                        (long long)total, res->final_loss, acc_txt, lr, wd_txt, ips,
                        100.0 * wait_sum / (now - t_int), eta);
            t_int = now;
            loss_sum = wait_sum = 0;
            n_int = 0;
            pt_correct = pt_total = 0;
        }
        if (epoch_end || ts.step == stop) {
            double clock = clock0 + (ssl_time() - t_start - eval_s);
            rc = ssl_checkpoint_save_timed(res->checkpoint, cfg, m, opt, &ts, clock, err);
            if (rc) goto done;
        }
        if (cfg->knn_every > 0 && (ts.step % knn_steps == 0 || ts.step == stop)) {
            double dt, clock = clock0 + (ssl_time() - t_start - eval_s);
            rc = knn_report(ctx, m, cfg, bank, queries, ts.step, spe, clock, log, &dt);
            eval_s += dt;
            if (rc) goto done;
            t_int = ssl_time(); /* the next interval's rate is training alone */
        }
    }
    res->steps = ts.step;
    res->epochs_done = ts.epoch;
    res->seconds = ssl_time() - t_start - eval_s;
    res->run_seconds = clock0 + res->seconds;
    res->img_per_s = res->seconds > 0 ? (double)(ts.step - first_step) * B / res->seconds : 0;
    res->peak_rss = ssl_peak_rss();
done:
    if (log) fclose(log);
    ssl_dataset_free(&bank_tmp);
    ssl_dataset_free(&queries_tmp);
    m->geo = NULL; /* the loader's memory */
    ssl_loader_free(loader);
    ssl_optim_free(opt);
    ssl_graph_free(&g);
    free(params);
    return rc;
}
