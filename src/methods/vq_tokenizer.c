/* BEiT's discrete visual tokenizer, our own: a per-patch VQ-VAE (van den
 * Oord, Vinyals & Kavukcuoglu 2017) trained on the training split before
 * BEiT's first step, since DALL-E's dVAE cannot be downloaded here. See
 * mim.h for the model; this file holds its forward pass, tokenization,
 * the training loop (Adam, data-initialized codebook, dead-code
 * restarts) and its file. */
#include "mim.h"
#include "nn/graph_internal.h"
#include "selfsup/io.h"
#include "selfsup/optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VQ_FORMAT "selfsup-vq-tokenizer"
#define VQ_VERSION 1
#define VQ_ROW_BLOCK 64   /* patches per distance block (one sgemm each) */
#define VQ_WINDOW 100     /* steps the final statistics cover */

ssl_vq_config ssl_vq_config_default(int patch, int in_chans, int codes)
{
    ssl_vq_config c = {patch, in_chans, 128, 32, codes, 0.25f};
    return c;
}

ssl_vq_train_config ssl_vq_train_config_default(uint64_t seed)
{
    ssl_vq_train_config c = {1000, 64, 1e-3f, 100, 250, seed};
    return c;
}

int ssl_vq_tokenizer_init(ssl_vq_tokenizer *t, const ssl_vq_config *cfg, ssl_rng *rng, char *err)
{
    memset(t, 0, sizeof *t);
    const ssl_vq_config *c = cfg;
    if (c->patch < 1 || c->patch > 64 || c->in_chans < 1 || c->in_chans > 64)
        return ssl_fail(err, SSL_EINVAL, "vq tokenizer: patch %d or %d channels out of range",
                        c->patch, c->in_chans);
    if (c->hidden < 1 || c->hidden > 65536 || c->code_dim < 1 || c->code_dim > 65536)
        return ssl_fail(err, SSL_EINVAL, "vq tokenizer: hidden %d or code_dim %d out of range",
                        c->hidden, c->code_dim);
    if (c->codes < 2 || c->codes > 65536)
        return ssl_fail(err, SSL_EINVAL, "vq tokenizer: %d codes, 2..65536 allowed", c->codes);
    if (!(c->beta >= 0 && isfinite(c->beta)))
        return ssl_fail(err, SSL_EINVAL, "vq tokenizer: beta %g must be >= 0", (double)c->beta);
    t->cfg = *c;
    ssl_registry_init(&t->reg);
    const int P = c->patch * c->patch * c->in_chans;
    ssl_mlp_spec enc = {.n_layers = 2, .dims = {P, c->hidden, c->code_dim}};
    ssl_mlp_spec dec = {.n_layers = 2, .dims = {c->code_dim, c->hidden, P}};
    int cs[2] = {c->codes, c->code_dim};
    int rc = ssl_mlp_init_spec(&t->encoder, &t->reg, "encoder", &enc, rng);
    if (!rc) rc = ssl_registry_param(&t->reg, "codebook.weight", 2, cs, 0, &t->codebook);
    /* nn.Embedding as the usual VQ-VAE code inits it, U(-1/K, 1/K); training
     * replaces it with encoder outputs before the first step */
    if (!rc) ssl_init_uniform(t->codebook.data, (long)c->codes * c->code_dim, 1.0f / c->codes, rng);
    if (!rc) rc = ssl_mlp_init_spec(&t->decoder, &t->reg, "decoder", &dec, rng);
    if (rc || t->reg.failed) {
        ssl_vq_tokenizer_free(t);
        return ssl_fail(err, SSL_ENOMEM, "vq tokenizer: out of memory");
    }
    return SSL_OK;
}

void ssl_vq_tokenizer_free(ssl_vq_tokenizer *t) { ssl_registry_free(&t->reg); }

/* Nearest codebook row of each z row (squared Euclidean; the first of
 * equals, as torch.argmin): ||e||^2 - 2 z.e, in row blocks, one sgemm each. */
static int nearest(ssl_graph *g, const ssl_vq_tokenizer *t, const float *z, long M,
                   int32_t *codes)
{
    const int K = t->cfg.codes, d = t->cfg.code_dim, nt = ssl_graph_threads(g);
    const float *E = t->codebook.data;
    float *buf = ssl_ctx_scratch(g->ctx, sizeof(float) * ((size_t)K + (size_t)nt * VQ_ROW_BLOCK * K));
    if (!buf) return SSL_ENOMEM;
    float *en = buf;
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)E[(long)k * d + j] * E[(long)k * d + j];
        en[k] = (float)s;
    }
    const long blocks = (M + VQ_ROW_BLOCK - 1) / VQ_ROW_BLOCK;
#pragma omp parallel for schedule(static) num_threads(nt) if (blocks > 1)
    for (long b = 0; b < blocks; b++) {
        float *dist = buf + K + (long)ssl_thread_id() * VQ_ROW_BLOCK * K;
        long r0 = b * VQ_ROW_BLOCK, rows = M - r0 < VQ_ROW_BLOCK ? M - r0 : VQ_ROW_BLOCK;
        ssl_sgemm(0, 1, (int)rows, K, d, -2.0f, z + r0 * d, d, E, d, 0.0f, dist, K);
        for (long r = 0; r < rows; r++) {
            const float *dr = dist + r * K;
            int best = 0;
            float bv = dr[0] + en[0];
            for (int k = 1; k < K; k++) {
                float v = dr[k] + en[k];
                if (v < bv) bv = v, best = k;
            }
            codes[r0 + r] = best;
        }
    }
    return SSL_OK;
}

/* F.mse_loss(pred, target): mean of (pred - target)^2 over every element;
 * target (numel(pred)) has no gradient and is read during the call only. */
static ssl_tensor *mse(ssl_graph *g, ssl_tensor *pred, const float *target)
{
    if (!pred || !target) return NULL;
    const long n = ssl_tensor_numel(pred);
    int one = 1;
    ssl_tensor *y = ssl_tensor_new(g, 1, &one, SSL_LAYOUT_NCHW);
    if (!y) return NULL;
    float *gr = NULL;
    if (g->record && ssl_graph_needs_grad(pred, NULL, NULL) &&
        !(gr = ssl_graph_saved(g, sizeof(float) * (size_t)n)))
        return NULL;
    double s = 0;
    for (long i = 0; i < n; i++) {
        double d = (double)pred->data[i] - target[i];
        s += d * d;
        if (gr) gr[i] = (float)(2.0 * d / n);
    }
    y->data[0] = (float)(s / n);
    int fail;
    ssl_node *node = ssl_graph_record(g, ssl_graph_saved_grad_bwd, y, pred, NULL, NULL, &fail);
    if (fail) return NULL;
    if (node) node->saved = gr;
    return y;
}

/* x (N, C, H, W) -> z (N*T, code_dim) and the patches (N*T, P) */
static ssl_tensor *encode(ssl_graph *g, ssl_vq_tokenizer *t, ssl_tensor *x, ssl_tensor **patches)
{
    if (!x) return NULL;
    if (x->ndim != 4 || x->shape[1] != t->cfg.in_chans) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "vq tokenizer: expected (N, %d, H, W) images",
                     t->cfg.in_chans);
        return NULL;
    }
    *patches = ssl_op_patchify(g, x, t->cfg.patch, SSL_PATCH_CHW);
    return ssl_mlp_forward(g, &t->encoder, *patches);
}

/* The loss, with the encoder output for dead-code restarts. */
static ssl_tensor *vq_forward(ssl_graph *g, ssl_vq_tokenizer *t, ssl_tensor *x, int32_t *codes,
                              float parts[3], ssl_tensor **z_out)
{
    ssl_tensor *patches = NULL;
    ssl_tensor *z = encode(g, t, x, &patches);
    if (!z) return NULL;
    const long M = z->shape[0];
    int32_t *c = codes ? codes : ssl_graph_saved(g, sizeof(int32_t) * (size_t)M);
    if (!c || nearest(g, t, z->data, M, c)) {
        ssl_ctx_fail(g->ctx, SSL_ENOMEM, "vq tokenizer: out of memory");
        return NULL;
    }
    /* e = codebook[code]: its gradient reaches the codebook rows */
    ssl_tensor *e = ssl_op_gather_tokens(g, &t->codebook, 1, c, (int)M);
    /* straight-through: z + sg(e - z), the value of e with z's gradient */
    ssl_tensor *st = ssl_op_add(g, z, ssl_op_detach(g, ssl_op_add(g, e, ssl_op_scale(g, z, -1.0f))));
    ssl_tensor *rec = ssl_mlp_forward(g, &t->decoder, st);
    if (!rec || !e) return NULL;
    ssl_tensor *l_rec = mse(g, rec, patches->data);
    ssl_tensor *l_cb = mse(g, e, z->data);      /* ||sg[z] - e||^2 */
    ssl_tensor *l_cm = mse(g, z, e->data);      /* ||z - sg[e]||^2 */
    if (!l_rec || !l_cb || !l_cm) return NULL;
    if (parts) parts[0] = l_rec->data[0], parts[1] = l_cb->data[0], parts[2] = l_cm->data[0];
    if (z_out) *z_out = z;
    return ssl_op_add(g, ssl_op_add(g, l_rec, l_cb), ssl_op_scale(g, l_cm, t->cfg.beta));
}

ssl_tensor *ssl_vq_loss(ssl_graph *g, ssl_vq_tokenizer *t, ssl_tensor *x, int32_t *codes,
                        float parts[3])
{
    return vq_forward(g, t, x, codes, parts, NULL);
}

int ssl_vq_tokenize(ssl_graph *g, ssl_vq_tokenizer *t, ssl_tensor *x, int32_t *codes)
{
    int r = ssl_graph_no_grad(g);
    ssl_tensor *patches = NULL;
    ssl_tensor *z = encode(g, t, x, &patches);
    g->record = r;
    if (!z) return g->ctx->failed ? g->ctx->failed : SSL_ESHAPE;
    if (nearest(g, t, z->data, z->shape[0], codes))
        return ssl_ctx_fail(g->ctx, SSL_ENOMEM, "vq tokenizer: out of memory");
    return SSL_OK;
}

/* ------------------------------------------------------------ training */

/* Codes with count 0 become random rows of z (M, code_dim), their Adam
 * moments zeroed; returns how many. */
static int restart_dead(ssl_vq_tokenizer *t, ssl_optim *opt, const int64_t *count, const float *z,
                        long M, ssl_rng *rng)
{
    const int K = t->cfg.codes, d = t->cfg.code_dim;
    float *moments[2] = {NULL, NULL};
    for (int i = 0; i < ssl_optim_state_count(opt); i++) {
        ssl_buffer b = ssl_optim_state(opt, i);
        if (!b.name || !strstr(b.name, "codebook.weight")) continue;
        if (!strncmp(b.name, "optim.exp_avg.", 14)) moments[0] = b.data;
        if (!strncmp(b.name, "optim.exp_avg_sq.", 17)) moments[1] = b.data;
    }
    int n = 0;
    for (int k = 0; k < K; k++) {
        if (count[k]) continue;
        long r = (long)ssl_rng_below(rng, (uint32_t)M);
        memcpy(t->codebook.data + (long)k * d, z + r * d, sizeof(float) * d);
        for (int s = 0; s < 2; s++)
            if (moments[s]) memset(moments[s] + (long)k * d, 0, sizeof(float) * d);
        n++;
    }
    return n;
}

/* exp(entropy) of a code histogram, and how many codes it uses */
static double perplexity(const int64_t *hist, int K, int *used)
{
    double total = 0, h = 0;
    *used = 0;
    for (int k = 0; k < K; k++) total += (double)hist[k], *used += hist[k] > 0;
    for (int k = 0; k < K && total > 0; k++)
        if (hist[k]) h -= hist[k] / total * log(hist[k] / total);
    return exp(h);
}

int ssl_vq_tokenizer_train(ssl_vq_tokenizer *t, const ssl_dataset *ds, const ssl_aug *aug,
                           const ssl_vq_train_config *tc, ssl_ctx *ctx, FILE *log,
                           const char *tag, ssl_vq_stats *stats, char *err)
{
    const int p = t->cfg.patch, C = t->cfg.in_chans, K = t->cfg.codes;
    const int H = aug->out_h, W = aug->out_w, B = tc->batch;
    memset(stats, 0, sizeof *stats);
    if (ds->c != C)
        return ssl_fail(err, SSL_EINVAL, "vq tokenizer: %s has %d channels, the tokenizer takes %d",
                        ds->source, ds->c, C);
    if (H < p || W < p || H % p || W % p)
        return ssl_fail(err, SSL_EINVAL, "vq tokenizer: %dx%d views do not tile into %dx%d patches",
                        H, W, p, p);
    if (tc->steps < 1 || B < 1 || ds->n < 1 || !(tc->lr > 0) || tc->restart_every < 0)
        return ssl_fail(err, SSL_EINVAL,
                        "vq tokenizer: training needs steps >= 1, batch >= 1, lr > 0 and images");
    const long img_in = (long)C * ds->h * ds->w, img_out = (long)C * H * W;
    const long M = (long)B * (H / p) * (W / p);
    float *x = ssl_malloc(sizeof(float) * img_out * B);
    float *scratch = ssl_malloc(sizeof(float) * ssl_aug_scratch_floats(aug, C, ds->h, ds->w));
    int32_t *codes = ssl_malloc(sizeof(int32_t) * M);
    int64_t *hist = ssl_calloc(sizeof(int64_t) * 3 * K); /* since restart, log line, window */
    int64_t *hist_log = hist + K, *hist_win = hist + 2 * K;
    ssl_optim_config oc = {.kind = SSL_OPTIM_ADAMW, .lr = tc->lr, .beta1 = 0.9f, .beta2 = 0.999f,
                           .eps = 1e-8f};
    ssl_optim *opt = NULL;
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    int rc = x && scratch && codes && hist ? SSL_OK : ssl_fail(err, SSL_ENOMEM, "vq tokenizer: out of memory");
    if (!rc) rc = ssl_optim_create(&opt, &oc, t->reg.params, t->reg.n_params, err);
    ssl_rng rng;
    ssl_rng_seed(&rng, tc->seed);
    const int window = tc->steps < VQ_WINDOW ? tc->steps : VQ_WINDOW;
    const int last_restart = tc->steps - tc->steps / 10;
    double sums[4] = {0, 0, 0, 0}, win[4] = {0, 0, 0, 0};
    int since_log = 0;
    for (int step = 0; step < tc->steps && !rc; step++) {
        for (int i = 0; i < B; i++) {
            uint32_t k = ssl_rng_below(&rng, (uint32_t)ds->n);
            ssl_rng ar;
            ssl_rng_derive(&ar, tc->seed, (uint64_t)step, (uint64_t)i);
            ssl_aug_apply(aug, ds->images + (long)k * img_in, C, ds->h, ds->w, x + i * img_out,
                          scratch, &ar);
        }
        int shape[4] = {B, C, H, W};
        ssl_tensor xt = ssl_tensor_wrap(x, NULL, 4, shape, SSL_LAYOUT_NCHW);
        ssl_graph_reset(&g);
        if (step == 0) { /* the codebook starts as encoder outputs of real patches */
            int r = ssl_graph_no_grad(&g);
            ssl_tensor *patches = NULL, *z0 = encode(&g, t, &xt, &patches);
            g.record = r;
            if (!z0) { rc = ssl_fail(err, SSL_EINVAL, "vq tokenizer: %s", ctx->err); break; }
            restart_dead(t, opt, hist, z0->data, M, &rng);
            ssl_graph_reset(&g);
        }
        float parts[3];
        ssl_tensor *z = NULL;
        ssl_tensor *loss = vq_forward(&g, t, &xt, codes, parts, &z);
        if (!loss) { rc = ssl_fail(err, SSL_EINVAL, "vq tokenizer: %s", ctx->err); break; }
        if (!isfinite(loss->data[0])) {
            rc = ssl_fail(err, SSL_ENAN, "vq tokenizer: loss is not finite at step %d", step + 1);
            break;
        }
        ssl_registry_zero_grad(&t->reg);
        rc = ssl_graph_backward(&g, loss);
        if (rc) { rc = ssl_fail(err, rc, "vq tokenizer: %s", ctx->err); break; }
        ssl_optim_step(opt, tc->lr);
        const int in_win = step >= tc->steps - window;
        const double v[4] = {loss->data[0], parts[0], parts[1], parts[2]};
        for (int j = 0; j < 4; j++) sums[j] += v[j], win[j] += in_win ? v[j] : 0;
        for (long r = 0; r < M; r++) {
            hist[codes[r]]++;
            hist_log[codes[r]]++;
            if (in_win) hist_win[codes[r]]++;
        }
        since_log++;
        if (tc->restart_every > 0 && (step + 1) % tc->restart_every == 0) {
            if (step + 1 < last_restart) stats->restarted += restart_dead(t, opt, hist, z->data, M, &rng);
            memset(hist, 0, sizeof(int64_t) * K);
        }
        if (log && tc->log_every > 0 && ((step + 1) % tc->log_every == 0 || step + 1 == tc->steps)) {
            int used;
            double ppl = perplexity(hist_log, K, &used);
            fprintf(log, "[%s] tokenizer step %d/%d loss %.4f recon MSE %.4f codes used %d/%d perplexity %.1f\n",
                    tag ? tag : "vq", step + 1, tc->steps, sums[0] / since_log, sums[1] / since_log,
                    used, K, ppl);
            memset(hist_log, 0, sizeof(int64_t) * K);
            memset(sums, 0, sizeof sums);
            since_log = 0;
        }
    }
    if (!rc) {
        stats->window = window;
        stats->loss = win[0] / window;
        stats->recon_mse = win[1] / window;
        stats->codebook = win[2] / window;
        stats->commit = win[3] / window;
        stats->perplexity = perplexity(hist_win, K, &stats->used);
    }
    ssl_graph_free(&g);
    ssl_optim_free(opt);
    ssl_free(x);
    ssl_free(scratch);
    ssl_free(codes);
    ssl_free(hist);
    return rc;
}

/* ---------------------------------------------------------------- file */

int ssl_vq_tokenizer_save(const ssl_vq_tokenizer *t, const char *path, char *err)
{
    ssl_st_writer w;
    ssl_st_writer_init(&w);
    const ssl_vq_config *c = &t->cfg;
    char buf[64];
    int rc = ssl_st_add_meta(&w, "format", VQ_FORMAT, err);
#define META(key, fmt, val) \
    if (!rc) rc = (snprintf(buf, sizeof buf, fmt, val), ssl_st_add_meta(&w, key, buf, err))
    META("version", "%d", VQ_VERSION);
    META("patch", "%d", c->patch);
    META("in_chans", "%d", c->in_chans);
    META("hidden", "%d", c->hidden);
    META("code_dim", "%d", c->code_dim);
    META("codes", "%d", c->codes);
    META("beta", "%.9g", (double)c->beta);
#undef META
    for (int i = 0; i < t->reg.n_params && !rc; i++) {
        const ssl_param *p = &t->reg.params[i];
        rc = ssl_st_add(&w, p->name, SSL_DT_F32, p->ndim, p->shape, p->data, err);
    }
    if (!rc) rc = ssl_st_write(&w, path, err);
    ssl_st_writer_free(&w);
    return rc;
}

/* A metadata integer in [lo, hi]. */
static int meta_int(const ssl_st_file *f, const char *key, int lo, int hi, int *out,
                    const char *path, char *err)
{
    const char *v = ssl_st_meta(f, key);
    char *end = NULL;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || x < lo || x > hi)
        return ssl_fail(err, SSL_EFORMAT, "%s: tokenizer metadata '%s' missing or out of range",
                        path, key);
    *out = (int)x;
    return SSL_OK;
}

int ssl_vq_tokenizer_load(ssl_vq_tokenizer *t, const char *path, char *err)
{
    memset(t, 0, sizeof *t);
    ssl_st_file f;
    int rc = ssl_st_load(&f, path, err);
    if (rc) return rc;
    const char *fmt = ssl_st_meta(&f, "format"), *beta = ssl_st_meta(&f, "beta");
    int version = 0;
    ssl_vq_config c;
    if (!fmt || strcmp(fmt, VQ_FORMAT)) {
        ssl_st_free(&f);
        return ssl_fail(err, SSL_EFORMAT, "%s: not a selfsup VQ tokenizer file", path);
    }
    rc = meta_int(&f, "version", VQ_VERSION, VQ_VERSION, &version, path, err);
    if (!rc) rc = meta_int(&f, "patch", 1, 64, &c.patch, path, err);
    if (!rc) rc = meta_int(&f, "in_chans", 1, 64, &c.in_chans, path, err);
    if (!rc) rc = meta_int(&f, "hidden", 1, 65536, &c.hidden, path, err);
    if (!rc) rc = meta_int(&f, "code_dim", 1, 65536, &c.code_dim, path, err);
    if (!rc) rc = meta_int(&f, "codes", 2, 65536, &c.codes, path, err);
    if (!rc) {
        c.beta = beta ? strtof(beta, NULL) : -1.0f;
        if (!(c.beta >= 0)) rc = ssl_fail(err, SSL_EFORMAT, "%s: tokenizer metadata 'beta' bad", path);
    }
    ssl_rng rng;
    ssl_rng_seed(&rng, 0);
    if (!rc) rc = ssl_vq_tokenizer_init(t, &c, &rng, err);
    for (int i = 0; i < t->reg.n_params && !rc; i++) {
        ssl_param *p = &t->reg.params[i];
        const ssl_st_entry *e = ssl_st_find(&f, p->name);
        int ok = e && e->dtype == SSL_DT_F32 && e->ndim == p->ndim &&
                 e->nbytes == sizeof(float) * (size_t)p->numel;
        for (int d = 0; ok && d < p->ndim; d++) ok = e->shape[d] == p->shape[d];
        if (!ok) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: tensor '%s' missing or not F32 of the config's shape",
                          path, p->name);
            ssl_vq_tokenizer_free(t);
        } else {
            memcpy(p->data, e->data, e->nbytes);
        }
    }
    ssl_st_free(&f);
    return rc;
}
