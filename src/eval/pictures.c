/* `selfsup show`: the layout the pictures share, the encoder's pictures
 * (DINO's [CLS] attention maps of a ViT's last block, DINOv2's PCA of patch
 * features) and the augmented views of methods without a picture of their
 * own. See pictures.h. */
#include "eval/pictures.h"
#include "selfsup/graph_tf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-6f     /* timm's ViT LayerNorm, as src/nn/vit.c */
#define HEAT_ALPHA 0.6f  /* the image stays visible under an attention map */
#define PCA_PCT 1.0f     /* components scaled by their 1st..99th percentiles */

/* ---- layout ---- */

void ssl_show_layout_init(ssl_show_layout *l, int side, int captions)
{
    side = side > 0 ? side : 1;
    l->side = side;
    l->scale = side < SSL_SHOW_TARGET ? SSL_SHOW_TARGET / side : 1;
    l->img = side * l->scale;
    l->captions = captions;
    l->grid.x0 = 0;
    l->grid.y0 = SSL_FONT_LINE + 4; /* the column titles */
    l->grid.pad = SSL_SHOW_PAD;
    l->grid.cell_w = l->img > 104 ? l->img : 104; /* "pred 270 true 180" is 101 px */
    l->grid.cell_h = l->img + (captions ? SSL_SHOW_FRAME + 2 + captions * SSL_FONT_LINE : 0);
}

void ssl_show_cell(const ssl_show_layout *l, int row, int col, int *x, int *y)
{
    ssl_grid_cell(&l->grid, row, col, x, y);
}

void ssl_show_caption_at(const ssl_show_layout *l, int row, int col, int k, int *x, int *y)
{
    ssl_grid_cell(&l->grid, row, col, x, y);
    *y += l->img + SSL_SHOW_FRAME + 2 + k * SSL_FONT_LINE; /* below a frame around the image */
}

int ssl_show_canvas(ssl_canvas *c, const ssl_show_layout *l, int rows, int cols,
                    const char *const *titles, char *err)
{
    int rc = ssl_canvas_init(c, ssl_grid_width(&l->grid, cols), ssl_grid_height(&l->grid, rows),
                             SSL_COLOR_WHITE, err);
    if (rc) return rc;
    for (int j = 0; j < cols && titles; j++) {
        int x, y;
        ssl_grid_cell(&l->grid, 0, j, &x, &y);
        if (titles[j]) ssl_canvas_text(c, x, 4, 1, SSL_COLOR_BLACK, titles[j]);
    }
    return SSL_OK;
}

void ssl_show_mark(ssl_canvas *c, int x, int y, int w, int h, int ok)
{
    const int t = SSL_SHOW_FRAME;
    ssl_canvas_frame(c, x - t, y - t, w + 2 * t, h + 2 * t, t, ok ? SSL_COLOR_GREEN : SSL_COLOR_RED);
}

/* ---- views ---- */

/* Images first .. first + n - 1 of ds through aug into x (n, ds->c, out_h, out_w). */
static int apply_eval(const ssl_aug *aug, const ssl_dataset *ds, int first, int n, float *x)
{
    float *scratch = ssl_malloc(sizeof(float) * ssl_aug_scratch_floats(aug, ds->c, ds->h, ds->w));
    if (!scratch) return SSL_ENOMEM;
    const long img = (long)ds->c * ds->h * ds->w, vs = (long)ds->c * aug->out_h * aug->out_w;
    ssl_rng unused; /* an eval aug draws nothing */
    ssl_rng_seed(&unused, 0);
    for (int i = 0; i < n; i++)
        ssl_aug_apply(aug, ds->images + (first + i) * img, ds->c, ds->h, ds->w, x + i * vs, scratch,
                      &unused);
    ssl_free(scratch);
    return SSL_OK;
}

static int check_range(const ssl_dataset *ds, int first, int n, char *err)
{
    if (n < 1 || first < 0 || first > ds->n - n)
        return ssl_fail(err, SSL_EINVAL, "show: images %d..%d asked of a split of %d", first, first + n - 1,
                        ds->n);
    return SSL_OK;
}

float *ssl_show_views(const ssl_method *m, const ssl_dataset *ds, int first, int n, ssl_aug *aug,
                      char *err)
{
    if (check_range(ds, first, n, err)) return NULL;
    ssl_aug augs[SSL_MAX_VIEWS];
    int nv = m->ops->views(&m->cfg, ds->c, ds->h, ds->w, augs);
    if (nv < 1 || nv > SSL_MAX_VIEWS) {
        ssl_fail(err, SSL_EINVAL, "%s: %d views per image", m->ops->name, nv);
        return NULL;
    }
    ssl_aug_eval(aug, ds->c, augs[0].out_h, augs[0].out_w);
    float *x = ssl_malloc(sizeof(float) * (size_t)n * ds->c * aug->out_h * aug->out_w);
    if (!x || apply_eval(aug, ds, first, n, x)) {
        ssl_free(x);
        ssl_fail(err, SSL_ENOMEM, "show: out of memory for %d views", n);
        return NULL;
    }
    return x;
}

void ssl_show_denorm(const float *v, int ch, long plane, const ssl_aug *a, float *out)
{
    for (int k = 0; k < ch && k < 3; k++)
        for (long i = 0; i < plane; i++) out[k * plane + i] = v[k * plane + i] * a->std[k] + a->mean[k];
}

int ssl_show_paste(ssl_canvas *c, int x, int y, int scale, const float *v, int ch, int h, int w,
                   const ssl_aug *a, char *err)
{
    if (ch != 1 && ch != 3) return ssl_fail(err, SSL_EINVAL, "show: a view of %d channels", ch);
    const long plane = (long)h * w;
    float *d = malloc(sizeof(float) * (size_t)ch * (size_t)(plane > 0 ? plane : 1));
    if (!d) return ssl_fail(err, SSL_ENOMEM, "show: out of memory");
    ssl_show_denorm(v, ch, plane, a, d);
    int rc = ssl_canvas_paste(c, x, y, scale, d, ch, h, w, 0.0f, 1.0f, err);
    free(d);
    return rc;
}

int ssl_show_write(const ssl_canvas *c, const char *dir, const char *name, char *err)
{
    char path[1024];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return ssl_fail(err, SSL_EINVAL, "show: output path too long: %.200s/%s", dir, name);
    return ssl_canvas_write_png(c, path, err);
}

/* ---- augmented views ---- */

int ssl_show_augmented(ssl_method *m, const ssl_dataset *ds, int first, int n, uint64_t seed,
                       const char *out_dir, char *err)
{
    int rc = check_range(ds, first, n, err);
    if (rc) return rc;
    ssl_aug augs[SSL_MAX_VIEWS];
    int nv = m->ops->views(&m->cfg, ds->c, ds->h, ds->w, augs);
    if (nv < 1 || nv > SSL_MAX_VIEWS)
        return ssl_fail(err, SSL_EINVAL, "%s: %d views per image", m->ops->name, nv);
    int side = ds->h > ds->w ? ds->h : ds->w;
    size_t scratch_n = 0, view_n = 0;
    for (int v = 0; v < nv; v++) {
        int s = augs[v].out_h > augs[v].out_w ? augs[v].out_h : augs[v].out_w;
        side = s > side ? s : side;
        size_t sn = ssl_aug_scratch_floats(&augs[v], ds->c, ds->h, ds->w);
        size_t vn = (size_t)ds->c * augs[v].out_h * augs[v].out_w;
        scratch_n = sn > scratch_n ? sn : scratch_n;
        view_n = vn > view_n ? vn : view_n;
    }
    ssl_show_layout l;
    ssl_show_layout_init(&l, side, 1);
    char names[SSL_MAX_VIEWS + 1][24];
    const char *titles[SSL_MAX_VIEWS + 1];
    snprintf(names[0], sizeof names[0], "image");
    for (int v = 0; v < nv; v++) snprintf(names[v + 1], sizeof names[v + 1], "view %d", v + 1);
    for (int v = 0; v <= nv; v++) titles[v] = names[v];
    ssl_canvas c = {0};
    float *scratch = ssl_malloc(sizeof(float) * scratch_n), *view = ssl_malloc(sizeof(float) * view_n);
    if (!scratch || !view) rc = ssl_fail(err, SSL_ENOMEM, "show: out of memory for the views");
    if (!rc) rc = ssl_show_canvas(&c, &l, n, nv + 1, titles, err);
    const long img = (long)ds->c * ds->h * ds->w;
    for (int i = 0; i < n && !rc; i++) {
        int x, y;
        ssl_show_cell(&l, i, 0, &x, &y);
        rc = ssl_canvas_paste_u8(&c, x, y, l.scale, ds->images + (first + i) * img, ds->c, ds->h, ds->w, err);
        for (int v = 0; v < nv && !rc; v++) {
            ssl_rng r; /* the loader's stream of sample first + i in epoch 0 */
            ssl_rng_derive(&r, seed, (uint64_t)(first + i), (uint64_t)v);
            ssl_aug_apply(&augs[v], ds->images + (first + i) * img, ds->c, ds->h, ds->w, view, scratch, &r);
            ssl_show_cell(&l, i, v + 1, &x, &y);
            rc = ssl_show_paste(&c, x, y, l.scale, view, ds->c, augs[v].out_h, augs[v].out_w, &augs[v], err);
            /* a thin outline in the pad: a white view still shows its size */
            ssl_canvas_frame(&c, x - 1, y - 1, augs[v].out_w * l.scale + 2, augs[v].out_h * l.scale + 2, 1, 0xC0C0C0u);
            char cap[32];
            snprintf(cap, sizeof cap, "%dx%d", augs[v].out_w, augs[v].out_h);
            ssl_show_caption_at(&l, i, v + 1, 0, &x, &y);
            ssl_canvas_text(&c, x, y, 1, SSL_COLOR_BLACK, cap);
        }
    }
    if (!rc) rc = ssl_show_write(&c, out_dir, "views.png", err);
    ssl_canvas_free(&c);
    ssl_free(scratch);
    ssl_free(view);
    return rc;
}

/* ---- the encoder's pictures ---- */

int ssl_show_graph_error(ssl_ctx *ctx, char *err)
{
    int rc = ctx->failed ? ctx->failed : SSL_EINVAL;
    if (!ctx->err[0]) return ssl_fail(err, rc, "show: a forward pass failed");
    if (err != ctx->err) snprintf(err, SSL_ERR_LEN, "%s", ctx->err);
    return rc;
}

int ssl_show_classify(ssl_ctx *ctx, ssl_encoder *enc, ssl_mlp *head, const float *x, int N, int k,
                      int c, int h, int w, float *logits, int n_classes, char *err)
{
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    g.record = 0;
    int shape[4] = {N * k, c, h, w};
    ssl_tensor xt = ssl_tensor_wrap((float *)x, NULL, 4, shape, SSL_LAYOUT_NCHW);
    ssl_tensor *f = ssl_encoder_forward(&g, enc, &xt), *out = NULL;
    if (f) { /* (N*k, F) row-major is (N, k*F): torch's view */
        int s2[2] = {N, k * f->shape[1]};
        ssl_tensor grouped = ssl_tensor_wrap(f->data, NULL, 2, s2, SSL_LAYOUT_NCHW);
        out = ssl_mlp_forward(&g, head, &grouped);
    }
    int rc = SSL_OK;
    if (!out) rc = ssl_show_graph_error(ctx, err);
    else if (out->ndim != 2 || out->shape[0] != N || out->shape[1] != n_classes)
        rc = ssl_fail(err, SSL_ESHAPE, "show: the head gives %d outputs, want %d", out->shape[1], n_classes);
    else memcpy(logits, out->data, sizeof(float) * (size_t)N * n_classes);
    ssl_graph_free(&g);
    return rc;
}

/* softmax of z (n) in place, in double */
static void softmax(double *z, int n)
{
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < n; j++) mx = z[j] > mx ? z[j] : mx;
    for (int j = 0; j < n; j++) s += z[j] = exp(z[j] - mx);
    for (int j = 0; j < n; j++) z[j] /= s;
}

int ssl_show_vit_attention(ssl_ctx *ctx, ssl_vit *vit, const float *x, int n, int S, float *attn,
                           char *err)
{
    const ssl_vit_config *c = &vit->cfg;
    if (n < 1 || S < c->patch || S % c->patch || c->depth < 1)
        return ssl_fail(err, SSL_EINVAL, "show: attention of %d images of %d px (patch %d, depth %d)", n, S,
                        c->patch, c->depth);
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    g.record = 0;
    int shape[4] = {n, c->in_chans, S, S};
    ssl_tensor xt = ssl_tensor_wrap((float *)x, NULL, 4, shape, SSL_LAYOUT_NCHW);
    /* the tokens entering the last block, as ssl_vit_encode makes them */
    ssl_tensor *h = ssl_vit_embed(&g, vit, &xt);
    if (c->class_token) h = ssl_op_prepend_token(&g, h, n, &vit->cls_token, &vit->pos_cls);
    for (int i = 0; i + 1 < c->depth; i++) h = ssl_vit_block_forward(&g, &vit->blocks[i], h, n);
    ssl_vit_block *b = &vit->blocks[c->depth - 1];
    h = ssl_op_layernorm(&g, h, &b->norm1_w, &b->norm1_b, LN_EPS);
    h = ssl_op_linear(&g, h, &b->qkv_w, b->qkv_b.data ? &b->qkv_b : NULL);
    if (!h) {
        int rc = ssl_show_graph_error(ctx, err);
        ssl_graph_free(&g);
        return rc;
    }
    const int D = b->dim, H = b->heads, dh = D / H, ct = c->class_token;
    const int L = (S / c->patch) * (S / c->patch), T = L + ct;
    const double scale = 1.0 / sqrt((double)dh);
    double *z = malloc(sizeof(double) * (size_t)(2 * T));
    if (!z) {
        ssl_graph_free(&g);
        return ssl_fail(err, SSL_ENOMEM, "show: out of memory");
    }
    double *acc = z + T;
    for (int s = 0; s < n; s++)
        for (int hd = 0; hd < H; hd++) {
            const float *rows = h->data + (long)s * T * 3 * D;
            float *out = attn + ((long)s * H + hd) * L;
            /* the class token's query, or every query averaged */
            int q0 = 0, q1 = ct ? 1 : T;
            for (int j = 0; j < L; j++) acc[j] = 0;
            for (int qi = q0; qi < q1; qi++) {
                const float *q = rows + (long)qi * 3 * D + hd * dh;
                for (int j = 0; j < L; j++) {
                    const float *k = rows + (long)(j + ct) * 3 * D + D + hd * dh;
                    double d = 0;
                    for (int e = 0; e < dh; e++) d += (double)q[e] * k[e];
                    z[j] = d * scale;
                }
                /* the class token's own entry left out: a softmax over the
                 * patches is the full row restricted and renormalized */
                softmax(z, L);
                for (int j = 0; j < L; j++) acc[j] += z[j] / (q1 - q0);
            }
            for (int j = 0; j < L; j++) out[j] = (float)acc[j];
        }
    free(z);
    ssl_graph_free(&g);
    return SSL_OK;
}

int ssl_show_patch_features(ssl_ctx *ctx, ssl_encoder *enc, const float *x, int n, int h, int w,
                            float **feat, int *gh, int *gw, int *dim, char *err)
{
    *feat = NULL;
    ssl_graph g;
    ssl_graph_init(&g, ctx);
    g.training = 0;
    g.record = 0;
    int shape[4] = {n, enc->in_channels, h, w};
    ssl_tensor xt = ssl_tensor_wrap((float *)x, NULL, 4, shape, SSL_LAYOUT_NCHW);
    int rc = SSL_OK;
    if (enc->cfg.kind == SSL_ENC_VIT) {
        ssl_vit *v = &enc->vit;
        ssl_tensor *t = h == w ? ssl_vit_forward_tokens(&g, v, &xt) : NULL;
        if (!t) {
            rc = h == w ? ssl_show_graph_error(ctx, err) : ssl_fail(err, SSL_EINVAL, "show: a ViT takes square images");
        } else {
            const int ct = v->cfg.class_token, D = v->feat_dim;
            *gh = h / v->cfg.patch;
            *gw = w / v->cfg.patch;
            *dim = D;
            const long L = (long)*gh * *gw, T = L + ct;
            *feat = ssl_malloc(sizeof(float) * n * L * D);
            if (!*feat) rc = ssl_fail(err, SSL_ENOMEM, "show: out of memory for the features");
            for (int s = 0; s < n && !rc; s++)
                memcpy(*feat + s * L * D, t->data + (s * T + ct) * D, sizeof(float) * L * D);
        }
    } else {
        ssl_tensor *f = ssl_op_to_layout(&g, ssl_encoder_forward_dense(&g, enc, &xt), SSL_LAYOUT_NCHW);
        if (!f) {
            rc = ssl_show_graph_error(ctx, err);
        } else {
            const int F = f->shape[1];
            const long P = (long)f->shape[2] * f->shape[3];
            *gh = f->shape[2];
            *gw = f->shape[3];
            *dim = F;
            *feat = ssl_malloc(sizeof(float) * n * P * F);
            if (!*feat) rc = ssl_fail(err, SSL_ENOMEM, "show: out of memory for the features");
            for (int s = 0; s < n && !rc; s++)
                for (int ch = 0; ch < F; ch++)
                    for (long p = 0; p < P; p++)
                        (*feat)[(s * P + p) * F + ch] = f->data[((long)s * F + ch) * P + p];
        }
    }
    ssl_graph_free(&g);
    return rc;
}

/* attention.png: the input, then each head's map over it. */
static int draw_attention(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int S, const ssl_aug *a,
                          const char *out_dir, char *err)
{
    ssl_vit *v = &m->encoder.vit;
    const int H = v->cfg.heads, g = S / v->cfg.patch;
    float *attn = malloc(sizeof(float) * (size_t)n * H * g * g);
    if (!attn) return ssl_fail(err, SSL_ENOMEM, "show: out of memory for the attention maps");
    int rc = ssl_show_vit_attention(ctx, v, x, n, S, attn, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 0);
    const char **titles = malloc(sizeof(char *) * (size_t)(H + 1));
    char (*names)[24] = malloc(sizeof *names * (size_t)(H + 1));
    ssl_canvas c = {0};
    if (!rc && (!titles || !names)) rc = ssl_fail(err, SSL_ENOMEM, "show: out of memory");
    if (!rc) {
        snprintf(names[0], sizeof names[0], "input");
        for (int hd = 0; hd < H; hd++)
            snprintf(names[hd + 1], sizeof names[0], "%s %d", v->cfg.class_token ? "[CLS] head" : "head", hd);
        for (int k = 0; k <= H; k++) titles[k] = names[k];
        rc = ssl_show_canvas(&c, &l, n, H + 1, titles, err);
    }
    const long vs = (long)v->cfg.in_chans * S * S;
    for (int i = 0; i < n && !rc; i++)
        for (int k = 0; k <= H && !rc; k++) {
            int x0, y0;
            ssl_show_cell(&l, i, k, &x0, &y0);
            rc = ssl_show_paste(&c, x0, y0, l.scale, x + i * vs, v->cfg.in_chans, S, S, a, err);
            if (!rc && k)
                rc = ssl_canvas_heat(&c, x0, y0, l.img, l.img, attn + ((long)i * H + k - 1) * g * g, g, g,
                                     0.0f, 0.0f, SSL_CMAP_VIRIDIS, HEAT_ALPHA, err);
        }
    if (!rc) rc = ssl_show_write(&c, out_dir, "attention.png", err);
    ssl_canvas_free(&c);
    free(titles);
    free(names);
    free(attn);
    return rc;
}

/* pca.png: the input, then the first 3 principal components of the
 * features of all n images, as RGB over the feature grid. */
static int draw_pca(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int h, int w, const ssl_aug *a,
                    const char *out_dir, char *err)
{
    float *feat = NULL, *rgb = NULL, *plane = NULL;
    int gh = 0, gw = 0, dim = 0;
    int rc = ssl_show_patch_features(ctx, &m->encoder, x, n, h, w, &feat, &gh, &gw, &dim, err);
    const long P = (long)gh * gw;
    if (!rc && n * P < 2)
        rc = ssl_fail(err, SSL_EINVAL, "show: %d image(s) of %dx%d features: too few for a PCA", n, gh, gw);
    if (!rc) {
        rgb = malloc(sizeof(float) * 3 * n * P);
        plane = malloc(sizeof(float) * 3 * P);
        if (!rgb || !plane) rc = ssl_fail(err, SSL_ENOMEM, "show: out of memory for the PCA");
    }
    if (!rc) rc = ssl_pca_rgb(feat, (int)(n * P), dim, PCA_PCT, rgb, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, h > w ? h : w, 0);
    char title[48];
    snprintf(title, sizeof title, "PCA of %dx%d features", gw, gh);
    const char *titles[2] = {"input", title};
    ssl_canvas c = {0};
    if (!rc) rc = ssl_show_canvas(&c, &l, n, 2, titles, err);
    /* the feature grid upscaled to cover the image (as far as it divides) */
    const int gside = gh > gw ? gh : gw, fscale = l.img / gside > 0 ? l.img / gside : 1;
    const long vs = (long)m->encoder.in_channels * h * w;
    for (int i = 0; i < n && !rc; i++) {
        int x0, y0;
        ssl_show_cell(&l, i, 0, &x0, &y0);
        rc = ssl_show_paste(&c, x0, y0, l.scale, x + i * vs, m->encoder.in_channels, h, w, a, err);
        for (long p = 0; p < P; p++) /* (P, 3) -> (3, gh, gw) */
            for (int k = 0; k < 3; k++) plane[k * P + p] = rgb[(i * P + p) * 3 + k];
        ssl_show_cell(&l, i, 1, &x0, &y0);
        if (!rc) rc = ssl_canvas_paste(&c, x0, y0, fscale, plane, 3, gh, gw, 0.0f, 1.0f, err);
    }
    if (!rc) rc = ssl_show_write(&c, out_dir, "pca.png", err);
    ssl_canvas_free(&c);
    ssl_free(feat);
    free(rgb);
    free(plane);
    return rc;
}

int ssl_show_encoder(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                     const char *out_dir, char *err)
{
    int rc = check_range(ds, first, n, err);
    if (rc) return rc;
    ssl_dataset tmp;
    const ssl_dataset *eds = ssl_method_encoder_data(m->ops, ds, &tmp, err);
    if (!eds) return SSL_EINVAL;
    const int C = m->encoder.in_channels, vit = m->encoder.cfg.kind == SSL_ENC_VIT;
    const int h = vit ? m->encoder.vit.cfg.img_size : eds->h, w = vit ? h : eds->w;
    if (eds->c != C)
        rc = ssl_fail(err, SSL_EINVAL, "show: %s has %d channels, the encoder takes %d", ds->source, eds->c, C);
    if (!rc) rc = ssl_encoder_check_input(&m->encoder, C, h, w, err);
    ssl_aug a;
    ssl_aug_eval(&a, C, h, w);
    float *x = rc ? NULL : ssl_malloc(sizeof(float) * (size_t)n * C * h * w);
    if (!rc && (!x || apply_eval(&a, eds, first, n, x)))
        rc = ssl_fail(err, SSL_ENOMEM, "show: out of memory for %d images", n);
    if (!rc && vit) rc = draw_attention(m, ctx, x, n, h, &a, out_dir, err);
    if (!rc) rc = draw_pca(m, ctx, x, n, h, w, &a, out_dir, err);
    ssl_free(x);
    ssl_dataset_free(&tmp);
    return rc;
}

int ssl_show_all(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                 uint64_t seed, const char *out_dir, char *err)
{
    int rc = m->ops->show ? m->ops->show(m, ctx, ds, first, n, out_dir, err)
                          : ssl_show_augmented(m, ds, first, n, seed, out_dir, err);
    return rc ? rc : ssl_show_encoder(m, ctx, ds, first, n, out_dir, err);
}
