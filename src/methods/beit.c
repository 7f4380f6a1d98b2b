/* BEiT (Bao, Dong, Piao & Wei 2022, "BEiT: BERT Pre-Training of Image
 * Transformers", microsoft/unilm beit/): blockwise-masked patches are
 * replaced by a learned mask token inside the encoder (before the position
 * embedding, as VisionTransformerForMaskedImageModeling), the encoder sees
 * every token, a linear lm_head on the masked positions predicts the
 * discrete visual token of each masked patch of the unmasked view, and the
 * loss is the cross-entropy with those tokens (mean over the batch's masked
 * positions).
 *
 * Tokenizer: BEiT used DALL-E's dVAE (8192 codes, trained elsewhere on
 * 400M images); we train our own per-patch VQ-VAE (vq_tokenizer.c) on the
 * training split before the first step (fit_data, --tokenizer-steps Adam
 * steps on views drawn like the method's) and keep it in the checkpoint as
 * "tokenizer.*" (saved, not trained by the method's optimizer). One token
 * per ViT patch, as the dVAE gives one per 16-px patch; ours sees its patch
 * alone where the dVAE's tokens have a receptive field wider than a patch.
 *
 * Masking: BEiT's MaskingGenerator (see ssl_beit_mask): 75 of 196 patches
 * (~40%) in blocks of >= 16 patches, aspect ratio in [0.3, 1/0.3]; here
 * round(--mask-ratio x T) patches (0.4: 20 of 49) in blocks of >= 2.
 *
 * Our ViT is timm's (absolute position embeddings, no relative position
 * bias, no layer scale), where BEiT-B used a shared relative position bias
 * and layer scale 0.1.
 *
 * Recipe: AdamW lr 1.5e-3 at batch 2048 (1.875e-4 x batch / 256), weight
 * decay 0.05 (the mask token decayed as in BEiT's no_weight_decay), 10
 * warm-up epochs of 800 -> 0.5 here, betas (0.9, 0.999) as the paper (the
 * script's default beta2 is 0.98); view: horizontal flip +
 * RandomResizedCrop scale (0.08, 1), ratio (3/4, 4/3) (its
 * DataAugmentationForBEiT), the tokenizer reading the same view. */
#include "mim.h"
#include "nn/graph_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define MASK_ATTEMPTS 10   /* MaskingGenerator._mask */
#define MIN_BLOCK 2        /* see ssl_beit_mask_config_default in mim.h */
#define MIN_ASPECT 0.3f

ssl_beit_mask_config ssl_beit_mask_config_default(int grid, float ratio)
{
    ssl_beit_mask_config c;
    c.height = c.width = grid;
    c.num_masking = (int)rint(ssl_mim_as_typed(ratio) * grid * grid); /* Python round() */
    c.min_patches = MIN_BLOCK;
    c.max_patches = c.num_masking;
    c.min_aspect = MIN_ASPECT;
    c.max_aspect = 1.0f / MIN_ASPECT;
    return c;
}

/* random.uniform(a, b) = a + (b - a) * random() (a > b allowed) */
static double uniform(ssl_rng *r, double a, double b) { return a + (b - a) * ssl_rng_uniform(r); }

/* MaskingGenerator._mask: one block of at most max_new new patches; the
 * number it added (0: no room in 10 attempts). */
static int mask_block(const ssl_beit_mask_config *c, ssl_rng *r, uint8_t *mask, int max_new,
                      int *block)
{
    const double la = log((double)c->min_aspect), lb = log((double)c->max_aspect);
    for (int attempt = 0; attempt < MASK_ATTEMPTS; attempt++) {
        double area = uniform(r, c->min_patches, max_new);
        double aspect = exp(uniform(r, la, lb));
        /* int(round(x)): Python rounds half to even, as rint() does */
        int h = (int)rint(sqrt(area * aspect)), w = (int)rint(sqrt(area / aspect));
        if (w >= c->width || h >= c->height) continue;
        int top = (int)ssl_rng_below(r, (uint32_t)(c->height - h + 1));
        int left = (int)ssl_rng_below(r, (uint32_t)(c->width - w + 1));
        int covered = 0;
        for (int i = top; i < top + h; i++)
            for (int j = left; j < left + w; j++) covered += mask[i * c->width + j];
        int added = 0;
        if (h * w - covered > 0 && h * w - covered <= max_new) {
            for (int i = top; i < top + h; i++)
                for (int j = left; j < left + w; j++)
                    if (!mask[i * c->width + j]) mask[i * c->width + j] = 1, added++;
            block[0] = top, block[1] = left, block[2] = h, block[3] = w;
        }
        if (added > 0) return added;
    }
    return 0;
}

int ssl_beit_mask(const ssl_beit_mask_config *c, ssl_rng *rng, uint8_t *mask, int *blocks,
                  int max_blocks, int *n_blocks)
{
    memset(mask, 0, (size_t)c->height * c->width);
    int count = 0, nb = 0;
    while (count < c->num_masking) {
        int budget = c->num_masking - count;
        budget = budget < c->max_patches ? budget : c->max_patches;
        int block[4];
        int delta = mask_block(c, rng, mask, budget, block);
        if (delta == 0) break;
        if (blocks && nb < max_blocks) memcpy(blocks + 4 * nb, block, sizeof block);
        nb++;
        count += delta;
    }
    if (n_blocks) *n_blocks = nb;
    return count;
}

int ssl_beit_head_init(ssl_beit_head *h, ssl_registry *r, int dim, int vocab, ssl_rng *rng)
{
    memset(h, 0, sizeof *h);
    h->dim = dim;
    h->vocab = vocab;
    int ws[2] = {vocab, dim};
    if (ssl_registry_param(r, "lm_head.weight", 2, ws, 0, &h->weight) ||
        ssl_registry_param(r, "lm_head.bias", 1, &vocab, 1, &h->bias))
        return SSL_ENOMEM;
    ssl_mim_trunc_normal(h->weight.data, (long)vocab * dim, 0.02f, rng); /* bias stays 0 */
    return SSL_OK;
}

ssl_tensor *ssl_beit_loss(ssl_graph *g, ssl_vit *vit, ssl_tensor *mask_token, ssl_beit_head *h,
                          ssl_tensor *x, const uint8_t *mask, const int32_t *tokens,
                          int64_t *correct)
{
    if (!x) return NULL;
    if (h->dim != vit->feat_dim) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "beit: the head does not match the ViT");
        return NULL;
    }
    const int N = x->shape[0], T = vit->n_patches, L = vit->cfg.class_token + T;
    long M = 0;
    for (long i = 0; i < (long)N * T; i++) M += mask[i] != 0;
    if (M == 0) {
        ssl_ctx_fail(g->ctx, SSL_EINVAL, "beit: no patch of the batch is masked");
        return NULL;
    }
    /* lm_head(x[:, 1:][bool_masked_pos]): one gather over the whole batch
     * as a single sequence, sample-major as boolean indexing */
    int32_t *idx = ssl_graph_saved(g, sizeof(int32_t) * (size_t)M);
    int32_t *labels = ssl_graph_saved(g, sizeof(int32_t) * (size_t)M);
    if (!idx || !labels) return NULL;
    long k = 0;
    for (int n = 0; n < N; n++)
        for (int t = 0; t < T; t++) {
            if (!mask[(long)n * T + t]) continue;
            int32_t tok = tokens[(long)n * T + t];
            if (tok < 0 || tok >= h->vocab) {
                ssl_ctx_fail(g->ctx, SSL_EINVAL, "beit: visual token %d out of range 0..%d", tok,
                             h->vocab - 1);
                return NULL;
            }
            idx[k] = (int32_t)((long)n * L + vit->cfg.class_token + t);
            labels[k++] = tok;
        }
    ssl_tensor *z = ssl_mim_encode(g, vit, mask_token, x, mask);
    if (z) z->transient = 1;
    z = ssl_op_gather_tokens(g, z, 1, idx, (int)M);
    if (z) z->transient = 1;
    ssl_tensor *logits = ssl_op_linear(g, z, &h->weight, &h->bias);
    if (!logits) return NULL;
    if (correct) {
        int64_t c = 0;
        for (long i = 0; i < M; i++) {
            const float *l = logits->data + i * h->vocab;
            int best = 0;
            for (int v = 1; v < h->vocab; v++) best = l[v] > l[best] ? v : best;
            c += best == labels[i];
        }
        *correct = c;
    }
    return ssl_op_softmax_ce(g, logits, labels);
}

/* ================================================== the method (glue) */

typedef struct beit_state {
    ssl_tensor mask_token;
    ssl_beit_head head;
    ssl_vq_tokenizer tok;
    int has_tok;
    int64_t seed;            /* "mask_seed": masks repeat on a resume */
    int64_t masked, correct; /* the last batch's masked positions and hits */
} beit_state;

static int beit_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->mask_ratio == SSL_UNSET) cfg->mask_ratio = 0.4f;
    if (cfg->vocab_size == SSL_UNSET) cfg->vocab_size = 256;
    if (cfg->tokenizer_steps == SSL_UNSET) cfg->tokenizer_steps = 1000;
    if (!(cfg->mask_ratio > 0 && cfg->mask_ratio < 1))
        return ssl_fail(err, SSL_EINVAL, "--mask-ratio must be in (0, 1) (got %g)", cfg->mask_ratio);
    if (cfg->vocab_size < 2 || cfg->vocab_size > 65536)
        return ssl_fail(err, SSL_EINVAL, "--vocab-size must be in 2..65536 (got %d)", cfg->vocab_size);
    if (cfg->tokenizer_steps < 1)
        return ssl_fail(err, SSL_EINVAL,
                        "--tokenizer-steps must be >= 1: BEiT trains its tokenizer first (got %d)",
                        cfg->tokenizer_steps);
    return SSL_OK;
}

static int beit_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    ssl_aug_eval(&augs[0], c, h, w);
    augs[0].crop_scale_min = 0.08f;
    augs[0].crop_scale_max = 1.0f;
    augs[0].crop_ratio_min = 3.0f / 4.0f;
    augs[0].crop_ratio_max = 4.0f / 3.0f;
    augs[0].flip_p = 0.5f;
    return 1;
}

static int beit_init(ssl_method *m, ssl_rng *rng, char *err)
{
    ssl_vit *vit = ssl_mim_vit(m, "beit", err);
    if (!vit) return SSL_EINVAL;
    const int T = vit->n_patches;
    ssl_beit_mask_config mc = ssl_beit_mask_config_default(vit->grid, m->cfg.mask_ratio);
    if (mc.num_masking < 1 || mc.num_masking >= T)
        return ssl_fail(err, SSL_EINVAL, "beit: --mask-ratio %g masks %d of %d patches",
                        m->cfg.mask_ratio, mc.num_masking, T);
    beit_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "beit: out of memory");
    m->state_ptr = s;
    s->seed = (int64_t)ssl_rng_u64(rng);
    int rc = ssl_mim_mask_token_init(&s->mask_token, &m->heads, vit->feat_dim, rng);
    if (!rc) rc = ssl_beit_head_init(&s->head, &m->heads, vit->feat_dim, m->cfg.vocab_size, rng);
    if (!rc) rc = ssl_registry_counter(&m->extra, "mask_seed", &s->seed);
    if (rc) return ssl_fail(err, SSL_ENOMEM, "beit: out of memory for the head");
    ssl_vq_config vc = ssl_vq_config_default(vit->cfg.patch, vit->cfg.in_chans, m->cfg.vocab_size);
    rc = ssl_vq_tokenizer_init(&s->tok, &vc, rng, err);
    if (rc) return rc;
    s->has_tok = 1;
    return ssl_method_add_state(m, SSL_TOKENIZER_STATE, &s->tok.reg, err);
}

/* A new run: the tokenizer learns the training split's patches first. */
static int beit_fit(ssl_method *m, const ssl_dataset *ds, char *err)
{
    beit_state *s = m->state_ptr;
    const ssl_vit *vit = &m->encoder.vit;
    if (ds->c != vit->cfg.in_chans)
        return ssl_fail(err, SSL_EINVAL, "beit: %s has %d channels, the ViT takes %d", ds->source,
                        ds->c, vit->cfg.in_chans);
    ssl_ctx ctx;
    int rc = ssl_ctx_init(&ctx, (uint64_t)s->seed, 0);
    if (rc) return ssl_fail(err, rc, "beit: %s", ctx.err);
    ssl_vq_train_config tc = ssl_vq_train_config_default((uint64_t)s->seed ^ 0x9e3779b97f4a7c15ull);
    tc.steps = m->cfg.tokenizer_steps;
    tc.batch = tc.batch < ds->n ? tc.batch : ds->n;
    tc.log_every = tc.steps >= 4 ? tc.steps / 4 : 0;
    ssl_vq_stats st;
    double t0 = ssl_time();
    rc = ssl_vq_tokenizer_train(&s->tok, ds, &m->augs[0], &tc, &ctx, stderr, "beit", &st, err);
    if (!rc)
        fprintf(stderr,
                "[beit] tokenizer: %d steps in %.1f s, recon MSE %.4f, %d of %d codes used, "
                "perplexity %.1f, %d dead-code restarts\n",
                tc.steps, ssl_time() - t0, st.recon_mse, st.used, s->tok.cfg.codes, st.perplexity,
                st.restarted);
    ssl_ctx_free(&ctx);
    return rc;
}

static ssl_tensor *beit_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    beit_state *s = m->state_ptr;
    ssl_vit *vit = &m->encoder.vit;
    ssl_tensor *x = views[0];
    const int N = x->shape[0], T = vit->n_patches;
    uint8_t *mask = ssl_graph_saved(g, (size_t)N * T);
    int32_t *tokens = ssl_graph_saved(g, sizeof(int32_t) * (size_t)N * T);
    if (!mask || !tokens) return NULL;
    /* the targets: tokens of the view before masking, no gradient */
    if (ssl_vq_tokenize(g, &s->tok, x, tokens)) return NULL;
    const ssl_beit_mask_config mc = ssl_beit_mask_config_default(vit->grid, m->cfg.mask_ratio);
    s->masked = 0;
    for (int b = 0; b < N; b++) {
        ssl_rng r;
        ssl_mim_rng(m, s->seed, b, &r);
        s->masked += ssl_beit_mask(&mc, &r, mask + (long)b * T, NULL, 0, NULL);
    }
    return ssl_beit_loss(g, vit, &s->mask_token, &s->head, x, mask, tokens, &s->correct);
}

/* Masked-token accuracy: chance is 1 / vocab. */
static int beit_metrics(const ssl_method *m, int64_t *correct, int64_t *total)
{
    const beit_state *s = m->state_ptr;
    *correct = s->correct;
    *total = s->masked;
    return s->head.vocab;
}

static void beit_free(ssl_method *m)
{
    beit_state *s = m->state_ptr;
    if (s && s->has_tok) ssl_vq_tokenizer_free(&s->tok);
    ssl_free(s);
}

ssl_vq_tokenizer *ssl_beit_tokenizer(ssl_method *m)
{
    if (!m || m->ops != &ssl_method_beit || !m->state_ptr) return NULL;
    beit_state *s = m->state_ptr;
    return s->has_tok ? &s->tok : NULL;
}

const ssl_method_ops ssl_method_beit = {
    .name = "beit",
    .summary = "BEiT: blockwise masking, mask token in the encoder, predict the masked patches' "
               "visual tokens (own VQ tokenizer, trained first)",
    .defaults = "mask ratio 0.4 (blocks >= 2 patches), vocab 256, tokenizer 1000 Adam steps; "
                "AdamW lr 1.875e-4 x batch/256, wd 0.05, 0.5 warm-up epochs",
    .optim = {"adamw", 1.875e-4f, "linear", 0.05f, 0.9f, 0.5f},
    .validate = beit_validate,
    .views = beit_views,
    .init = beit_init,
    .loss = beit_loss,
    .free = beit_free,
    .pretext_metrics = beit_metrics,
    .fit_data = beit_fit,
};
