/* Patch-level contrast ("dense"): SimCLR's image-level NT-Xent plus an
 * InfoNCE between locations of the two views, matched through the crop
 * geometry. The definition: a positive is the same point of the
 * original image seen in both views; negatives are the other points of the
 * same image and the points of the other images. That is VADeR (Pinheiro et
 * al. 2020) / PixContrast (Xie et al. 2021, the PixPro paper's baseline)
 * with exact correspondences, and DenseCL's (Wang et al. 2021) two-term
 * loss and dense head; DenseCL itself matches by feature similarity, not
 * geometry, hence not its name.
 *
 * One step, for a batch of B images and two views of the same size:
 *  - both views through the encoder in one pass (BN over the 2B images, as
 *    SimCLR here), keeping the last feature map f (2B, F, fh, fw);
 *  - image level (weight 1 - alpha): avg-pool f, SimCLR's projector (MLP
 *    with BN), L2-normalize, NT-Xent over the 2B views;
 *  - patch level (weight alpha): DenseCL's dense head on f (1x1 conv,
 *    ReLU, 1x1 conv: "dense_projector.0" / ".2", as its nn.Sequential
 *    mlp2), then per image P = fh x fw points on a regular grid of the
 *    intersection of the two crop boxes (cell centres of an fh x fw split
 *    of it, source-image coordinates), mapped into each view's map
 *    (ssl_crop_geo_to_feature: crop offset and scale, flip) and read there
 *    bilinearly (ssl_op_grid_sample: projecting the whole map first, then
 *    sampling, as DenseCL and PixPro project whole maps), each sample
 *    L2-normalized; q (M, D) from view 0, k (M, D) from view 1, row i of
 *    both the same source point. Loss 0.5 (InfoNCE(q, k) + InfoNCE(k, q))
 *    at the same temperature (DenseCL uses one temperature, 0.2, for both
 *    terms): each point's negatives are the other view's other M - 1
 *    points, of its own image and of the others; the mean over the M rows.
 *    Symmetrized because both views go through the same trained encoder
 *    (no momentum key encoder as in DenseCL / VADeR).
 * Images whose crops do not overlap have no positives and are left out of
 * the patch term (their rows dropped, M = P x the images that overlap);
 * a batch where no crops overlap has patch term 0 (computed on all points,
 * scaled by 0, so the graph keeps its shape). Crop boxes are whole pixels,
 * so an overlap is at least 1 x 1 source pixel. A small overlap puts an
 * image's P points within a cell or two of each other in both maps; they
 * stay each other's negatives, as the issue defines them (PixPro's code
 * instead counts points closer than 0.7 of a feature cell's diagonal as
 * positives, --pixpro-pos-ratio, and only farther ones as negatives).
 * Geometry: m->geo, set by the training loop from the loader. Without it
 * (m->geo NULL: the exactness test replaying stored views, benchmarks) both
 * views count as the same unflipped box, i.e. exact cell-to-cell matches.
 *
 * dense_weight (alpha) 0 builds no dense head and is SimCLR exactly;
 * 1 builds no image projector. */
#include "selfsup/graph_dense.h"
#include "selfsup/method.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

typedef struct dense_state {
    ssl_mlp projector;    /* image level, absent at dense_weight 1 */
    ssl_tensor w[2], b[2]; /* dense head: 1x1 convs (out, in, 1, 1), biases; absent at 0 */
    int has_image, has_dense;
} dense_state;

static int dense_validate(ssl_method_config *cfg, char *err)
{
    if (cfg->temperature == SSL_UNSET) cfg->temperature = 0.2f; /* SimCLR here; DenseCL 0.2 */
    if (cfg->proj_hidden == SSL_UNSET) cfg->proj_hidden = 2048; /* both heads, as DenseCL's neck */
    if (cfg->proj_dim == SSL_UNSET) cfg->proj_dim = 128;
    if (cfg->dense_weight == SSL_UNSET) cfg->dense_weight = 0.5f; /* DenseCL's lambda */
    if (!(cfg->temperature > 0))
        return ssl_fail(err, SSL_EINVAL, "--temperature must be > 0 (got %g)", cfg->temperature);
    if (cfg->proj_hidden < 1 || cfg->proj_dim < 1)
        return ssl_fail(err, SSL_EINVAL, "--proj-hidden and --proj-dim must be >= 1");
    if (!(cfg->dense_weight >= 0 && cfg->dense_weight <= 1))
        return ssl_fail(err, SSL_EINVAL, "--dense-weight must be in [0, 1] (got %g)", cfg->dense_weight);
    return ssl_method_check_pair_scale(cfg, 0.08f, err); /* the paper's crop area [0.08, 1] */
}

static int dense_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs)
{
    ssl_aug_simclr(&augs[0], c, h, w);
    augs[1] = augs[0];
    return ssl_method_views_pair_scale(cfg, augs);
}

/* nn.Conv2d(in, out, 1) at prefix.idx with PyTorch's default init (DenseCL
 * leaves its convolutions at it): weight and bias U(+-1/sqrt(in)). */
static int conv1x1(ssl_registry *r, const char *prefix, int idx, int in, int out, ssl_tensor *w,
                   ssl_tensor *b, ssl_rng *rng)
{
    char name[64];
    int ws[4] = {out, in, 1, 1};
    float bound = 1.0f / sqrtf((float)in);
    snprintf(name, sizeof name, "%s.%d.weight", prefix, idx);
    if (ssl_registry_param(r, name, 4, ws, 0, w)) return SSL_ENOMEM;
    ssl_init_uniform(w->data, (long)out * in, bound, rng);
    snprintf(name, sizeof name, "%s.%d.bias", prefix, idx);
    if (ssl_registry_param(r, name, 1, &out, 1, b)) return SSL_ENOMEM;
    ssl_init_uniform(b->data, out, bound, rng);
    return SSL_OK;
}

static int dense_init(ssl_method *m, ssl_rng *rng, char *err)
{
    dense_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "dense: out of memory");
    m->state_ptr = s;
    const ssl_method_config *c = &m->cfg;
    s->has_image = c->dense_weight < 1;
    s->has_dense = c->dense_weight > 0;
    if (s->has_image && ssl_mlp_init(&s->projector, &m->heads, "projector", m->encoder.feat_dim,
                                     c->proj_hidden, c->proj_dim, 1, rng))
        return ssl_fail(err, SSL_ENOMEM, "dense: out of memory for the projector");
    if (s->has_dense &&
        (conv1x1(&m->heads, "dense_projector", 0, m->encoder.feat_dim, c->proj_hidden, &s->w[0],
                 &s->b[0], rng) ||
         conv1x1(&m->heads, "dense_projector", 2, c->proj_hidden, c->proj_dim, &s->w[1], &s->b[1],
                 rng)))
        return ssl_fail(err, SSL_ENOMEM, "dense: out of memory for the dense projector");
    return SSL_OK;
}

/* Per image i < B the points of both views: c0, c1 (B, P, 2) (u, v) in
 * fh x fw maps, P = fh * fw; valid[i] whether the crops overlap (else
 * its points are the plain cell centres, finite but unused). geo NULL:
 * both views the same box. Returns the number of valid images. */
static int match_points(const ssl_crop_geo *const *geo, int B, int fh, int fw, float *c0,
                        float *c1, unsigned char *valid)
{
    const ssl_crop_geo unit = {0, 0, 1, 1, 0};
    const int P = fh * fw;
    int n = 0;
    for (int i = 0; i < B; i++) {
        const ssl_crop_geo *a = geo ? &geo[0][i] : &unit, *b = geo ? &geo[1][i] : &unit;
        float x0 = fmaxf(a->x0, b->x0), x1 = fminf(a->x0 + a->w, b->x0 + b->w);
        float y0 = fmaxf(a->y0, b->y0), y1 = fminf(a->y0 + a->h, b->y0 + b->h);
        valid[i] = x1 > x0 && y1 > y0;
        n += valid[i];
        if (!valid[i]) a = b = &unit, x0 = y0 = 0, x1 = y1 = 1;
        for (int p = 0; p < P; p++) {
            float X = x0 + ((float)(p % fw) + 0.5f) * (x1 - x0) / (float)fw;
            float Y = y0 + ((float)(p / fw) + 0.5f) * (y1 - y0) / (float)fh;
            float *u0 = c0 + 2 * ((long)i * P + p), *u1 = c1 + 2 * ((long)i * P + p);
            ssl_crop_geo_to_feature(a, X, Y, fh, fw, &u0[0], &u0[1]);
            ssl_crop_geo_to_feature(b, X, Y, fh, fw, &u1[0], &u1[1]);
        }
    }
    return n;
}

/* The rows of the valid images of x (n_img * P, D) from image first on, in
 * order: one slice per run of valid images, the runs concatenated pairwise
 * (a tree, so the copies are O(rows x log runs)). */
static ssl_tensor *valid_rows(ssl_graph *g, ssl_tensor *x, int first, int B, int P,
                              const unsigned char *valid)
{
    ssl_tensor *part[64];
    int n = 0;
    for (int i = 0; i < B;) {
        if (!valid[i]) { i++; continue; }
        int j = i;
        while (j < B && valid[j]) j++;
        if (n == 64) { /* fold what we have so far to make room */
            for (int k = 1; k < n; k++) part[0] = ssl_op_concat_batch(g, part[0], part[k]);
            n = 1;
        }
        part[n++] = ssl_op_slice_batch(g, x, (first + i) * P, (j - i) * P);
        i = j;
    }
    while (n > 1) {
        int m = 0;
        for (int k = 0; k < n; k += 2)
            part[m++] = k + 1 < n ? ssl_op_concat_batch(g, part[k], part[k + 1]) : part[k];
        n = m;
    }
    return n ? part[0] : NULL;
}

/* weight x the patch term from the projected maps e (2B, D, fh, fw), view
 * 0's images first. NULL on failure. */
static ssl_tensor *patch_loss(ssl_method *m, ssl_graph *g, ssl_tensor *e, int B, float weight)
{
    const int fh = e->shape[2], fw = e->shape[3], P = fh * fw;
    float *coords = ssl_arena_alloc(&g->arena, sizeof(float) * 4 * (size_t)B * P);
    unsigned char *valid = ssl_arena_alloc(&g->arena, (size_t)B);
    if (!coords || !valid) {
        ssl_ctx_fail(g->ctx, SSL_ENOMEM, "dense: out of memory for %d points", 2 * B * P);
        return NULL;
    }
    int n_valid = match_points(m->geo, B, fh, fw, coords, coords + 2 * (size_t)B * P, valid);
    float scale = 0.5f * weight; /* the mean of the two directions */
    if (n_valid == 0) { /* keep the graph, contribute nothing */
        memset(valid, 1, (size_t)B);
        scale = 0.0f;
    }
    ssl_tensor *z = ssl_op_l2normalize(g, ssl_op_grid_sample(g, e, coords, P));
    ssl_tensor *q = valid_rows(g, z, 0, B, P, valid), *k = valid_rows(g, z, B, B, P, valid);
    ssl_tensor *l = ssl_op_add(g, ssl_op_dense_infonce(g, q, k, m->cfg.temperature),
                               ssl_op_dense_infonce(g, k, q, m->cfg.temperature));
    return ssl_op_scale(g, l, scale);
}

static ssl_tensor *dense_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    dense_state *s = m->state_ptr;
    const float alpha = m->cfg.dense_weight;
    if (!views[0] || !views[1]) return NULL;
    const int B = views[0]->shape[0];
    if (B < 1 || views[1]->shape[0] != B) {
        ssl_ctx_fail(g->ctx, SSL_ESHAPE, "dense: views of %d and %d images", B, views[1]->shape[0]);
        return NULL;
    }
    ssl_tensor *x = ssl_op_concat_batch(g, views[0], views[1]); /* same size: as SimCLR */
    ssl_tensor *f = ssl_encoder_forward_dense(g, &m->encoder, x);
    if (!f) return NULL;
    ssl_tensor *img = NULL, *patch = NULL;
    if (s->has_image) {
        ssl_tensor *h = ssl_op_global_avgpool(g, f);
        ssl_tensor *z = ssl_op_l2normalize(g, ssl_mlp_forward(g, &s->projector, h));
        img = ssl_op_ntxent(g, z, m->cfg.temperature);
        if (!img) return NULL;
        if (!s->has_dense) return img;
    }
    ssl_tensor *e = ssl_op_conv2d(g, f, &s->w[0], 1, 0);
    e = ssl_op_relu(g, ssl_op_add_bias_channel(g, e, &s->b[0]));
    e = ssl_op_add_bias_channel(g, ssl_op_conv2d(g, e, &s->w[1], 1, 0), &s->b[1]);
    if (!e) return NULL;
    patch = patch_loss(m, g, e, B, s->has_image ? alpha : 1.0f);
    return s->has_image ? ssl_op_add(g, ssl_op_scale(g, img, 1.0f - alpha), patch) : patch;
}

static void dense_free(ssl_method *m) { ssl_free(m->state_ptr); }

const ssl_method_ops ssl_method_dense = {
    .needs_feature_map = 1,
    .name = "dense",
    .summary = "patch-level contrast: InfoNCE between matched locations of two views (from the "
               "crop geometry) + SimCLR's NT-Xent",
    .defaults = "dense-weight 0.5 (DenseCL), temperature 0.2, projector 2048-128 (MLP with BN) and "
                "dense head 1x1 conv 2048-128; LARS lr 0.075 x sqrt(batch), wd 1e-6, 0.5 warm-up epochs",
    .optim = {"lars", 0.075f, "sqrt", 1e-6f, 0.9f, 0.5f},
    .validate = dense_validate,
    .views = dense_views,
    .init = dense_init,
    .loss = dense_loss,
    .free = dense_free,
};
