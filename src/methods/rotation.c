/* RotNet (Gidaris, Singh & Komodakis 2018): each image of the batch in all
 * four rotations, 0, 90, 180 and 270 degrees counter-clockwise (labels 0..3,
 * np.rot90's direction as the official code's rotate_img), one encoder pass
 * over the 4N images in the official code's order (an image's four
 * rotations are consecutive), a classifier on the features, softmax
 * cross-entropy over the 4N predictions.
 *
 * Head: a linear layer on the pooled features by default, as VISSL's RotNet
 * ResNet-50 configuration (the paper's NIN/AlexNet heads are the network's
 * own last blocks, which our encoder already has); --head-hidden N adds a
 * hidden layer (Linear-BN-ReLU-Linear). Recipe: the paper's CIFAR runs,
 * SGD momentum 0.9, lr 0.1 at batch 128 (0.2 x batch/256), weight decay
 * 5e-4, no warm-up; its step schedule is our cosine. */
#include "eval/pictures.h"
#include "pretext.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct rotation_state {
    ssl_pretext p;
} rotation_state;

static int rotation_validate(ssl_method_config *cfg, char *err)
{
    return ssl_pretext_validate(cfg, 0, err);
}

static int rotation_init(ssl_method *m, ssl_rng *rng, char *err)
{
    rotation_state *s = ssl_calloc(sizeof *s);
    if (!s) return ssl_fail(err, SSL_ENOMEM, "rotation: out of memory");
    m->state_ptr = s;
    return ssl_pretext_init(m, &s->p, m->encoder.feat_dim, 4, rng, err);
}

static ssl_tensor *rotation_loss(ssl_method *m, ssl_graph *g, ssl_tensor *const *views)
{
    rotation_state *s = m->state_ptr;
    ssl_tensor *x = views[0];
    if (x->ndim != 4 || x->layout != SSL_LAYOUT_NCHW || x->shape[2] != x->shape[3])
        return ssl_pretext_error(g, "rotation", "needs square NCHW views");
    int B = x->shape[0], C = x->shape[1], S = x->shape[2];
    long img = (long)C * S * S;
    int shape[4] = {4 * B, C, S, S};
    ssl_tensor *x4 = ssl_tensor_new(g, 4, shape, SSL_LAYOUT_NCHW);
    int32_t *labels = ssl_pretext_labels(g, 4 * B);
    if (!x4 || !labels) return NULL;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < 4; k++) {
            ssl_rotate90(x->data + b * img, C, S, k, x4->data + (4L * b + k) * img);
            labels[4 * b + k] = k;
        }
    return ssl_pretext_classify(m, g, &s->p, x4, 1, labels);
}

static void rotation_free(ssl_method *m) { ssl_free(m->state_ptr); }

int ssl_rotation_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int c, int S,
                         float *x4, float *logits, char *err)
{
    if (m->ops != &ssl_method_rotation || !m->state_ptr)
        return ssl_fail(err, SSL_EINVAL, "rotation pictures need a model trained with --method rotation");
    rotation_state *s = m->state_ptr;
    const long img = (long)c * S * S;
    for (int b = 0; b < n; b++)
        for (int k = 0; k < 4; k++) ssl_rotate90(x + b * img, c, S, k, x4 + (4L * b + k) * img);
    return ssl_show_classify(ctx, &m->encoder, &s->p.head, x4, 4 * n, 1, c, S, S, logits, 4, err);
}

/* rotation.png: each image in its 4 rotations (columns), under each the
 * predicted angle and the true one, framed green when right, red when wrong. */
static int rotation_show(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                         const char *out_dir, char *err)
{
    ssl_aug a;
    float *x = ssl_show_views(m, ds, first, n, &a, err);
    if (!x) return SSL_EINVAL;
    const int c = ds->c, S = a.out_h;
    int rc = S == a.out_w ? SSL_OK : ssl_fail(err, SSL_EINVAL, "rotation: views are not square");
    float *x4 = malloc(sizeof(float) * 4 * (size_t)n * c * S * S), *logits = malloc(sizeof(float) * 16 * (size_t)n);
    if (!rc && (!x4 || !logits)) rc = ssl_fail(err, SSL_ENOMEM, "rotation: out of memory for the pictures");
    if (!rc) rc = ssl_rotation_predict(m, ctx, x, n, c, S, x4, logits, err);
    ssl_show_layout l;
    ssl_show_layout_init(&l, S, 1);
    static const char *const titles[4] = {"rotated 0", "rotated 90", "rotated 180", "rotated 270"};
    ssl_canvas cv = {0};
    if (!rc) rc = ssl_show_canvas(&cv, &l, n, 4, titles, err);
    for (int i = 0; i < 4 * n && !rc; i++) {
        const float *z = logits + 4L * i;
        int pred = 0, k = i % 4, x0, y0;
        for (int j = 1; j < 4; j++)
            if (z[j] > z[pred]) pred = j;
        ssl_show_cell(&l, i / 4, k, &x0, &y0);
        rc = ssl_show_paste(&cv, x0, y0, l.scale, x4 + (long)i * c * S * S, c, S, S, &a, err);
        ssl_show_mark(&cv, x0, y0, l.img, l.img, pred == k);
        char cap[40];
        snprintf(cap, sizeof cap, "pred %d true %d", 90 * pred, 90 * k);
        ssl_show_caption_at(&l, i / 4, k, 0, &x0, &y0);
        ssl_canvas_text(&cv, x0, y0, 1, SSL_COLOR_BLACK, cap);
    }
    if (!rc) rc = ssl_show_write(&cv, out_dir, "rotation.png", err);
    ssl_canvas_free(&cv);
    free(x4);
    free(logits);
    ssl_free(x);
    return rc;
}

const ssl_method_ops ssl_method_rotation = {
    .name = "rotation",
    .summary = "RotNet: every image in 4 rotations (0/90/180/270 CCW), 4-way classifier, softmax CE",
    .defaults = "views: crop 60-100% + flip; linear head (--head-hidden 0); SGD lr 0.2 x batch/256, wd 5e-4, no warm-up",
    .optim = {"sgd", 0.2f, "linear", 5e-4f, 0.9f, 0.0f},
    .validate = rotation_validate,
    .views = ssl_pretext_views,
    .init = rotation_init,
    .loss = rotation_loss,
    .free = rotation_free,
    .pretext_metrics = ssl_pretext_metrics,
    .show = rotation_show,
};
