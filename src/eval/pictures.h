/* `selfsup show`: pictures of what a trained method sees and predicts.
 * src/eval/pictures.c holds the layout every picture shares, the encoder's
 * own pictures (a ViT's [CLS] attention per head, the PCA of patch or
 * feature-map features as DINOv2's figures) and the augmented views of
 * methods without a picture of their own; each method with a task to show
 * draws it in its ops->show hook (rotation, jigsaw, relloc, colorization,
 * inpainting, MAE), and exposes the predictions its picture shows
 * (declared below, defined in the method's file) so tests can compare them
 * with the picture. Private to src/; tests call it.
 *
 * Images are views as a held-out evaluation makes them: the method's view
 * size through ssl_aug_eval (no randomness); random task choices (puzzles,
 * masks, neighbours) are those of the held-out evaluation for the images'
 * indices in ds (m->pretext_eval). Views are shown de-normalized. */
#ifndef SELFSUP_EVAL_PICTURES_H
#define SELFSUP_EVAL_PICTURES_H

#include "selfsup/method.h"
#include "selfsup/picture.h"

/* ---- layout ----------------------------------------------------------- */

/* A table of images: one row per image, one column per stage, each image
 * side * scale pixels with caption lines of text under it, column titles
 * on top. Frames marking right (green) and wrong (red) predictions lie in
 * the pad around an image, so they never cover its pixels. */
typedef struct ssl_show_layout {
    ssl_grid grid;
    int side;     /* the largest view side of the picture, pixels */
    int scale;    /* every view pixel a scale x scale block */
    int img;      /* side * scale */
    int captions; /* text lines under each image */
} ssl_show_layout;

#define SSL_SHOW_PAD 8
#define SSL_SHOW_FRAME 3 /* thickness of the right / wrong frames, inside the pad */
#define SSL_SHOW_TARGET 112 /* views are upscaled to about this many pixels */

/* Views of side `side`: scale = max(1, SSL_SHOW_TARGET / side) (28 px -> 4),
 * cells at least 104 px wide for the captions. */
void ssl_show_layout_init(ssl_show_layout *l, int side, int captions);
/* The top-left corner of the image of cell (row, col). */
void ssl_show_cell(const ssl_show_layout *l, int row, int col, int *x, int *y);
/* The top-left of caption line k (0-based) of cell (row, col). */
void ssl_show_caption_at(const ssl_show_layout *l, int row, int col, int k, int *x, int *y);
/* A white canvas of rows x cols cells with the column titles (cols
 * strings; NULL entries draw nothing) above the first row. */
int ssl_show_canvas(ssl_canvas *c, const ssl_show_layout *l, int rows, int cols,
                    const char *const *titles, char *err);
/* A frame around the w x h box at (x, y), outside it: green when ok, else red. */
void ssl_show_mark(ssl_canvas *c, int x, int y, int w, int h, int ok);

/* ---- views ------------------------------------------------------------ */

/* Images first .. first + n - 1 of ds as the held-out evaluation sees
 * them: aug (out) = ssl_aug_eval at the size of the method's first view
 * (ops->views for ds's shape); returns x (n, ds->c, aug->out_h,
 * aug->out_w), normalized (free with ssl_free), or NULL with err set. */
float *ssl_show_views(const ssl_method *m, const ssl_dataset *ds, int first, int n, ssl_aug *aug,
                      char *err);
/* Pastes a normalized view v (ch, h, w) de-normalized with a's mean / std
 * (v * std + mean, drawn over [0, 1]) at (x, y), scale x scale blocks. */
int ssl_show_paste(ssl_canvas *c, int x, int y, int scale, const float *v, int ch, int h, int w,
                   const ssl_aug *a, char *err);
/* A normalized view v (ch, plane) in display units: out = v * std + mean. */
void ssl_show_denorm(const float *v, int ch, long plane, const ssl_aug *a, float *out);
/* Writes c to dir/name as PNG (atomically). */
int ssl_show_write(const ssl_canvas *c, const char *dir, const char *name, char *err);
/* After a failed forward pass: ctx's status and message, copied to err. */
int ssl_show_graph_error(ssl_ctx *ctx, char *err);
/* The pretext classifiers' forward in eval mode, without recording: x
 * (N*k, c, h, w) the k inputs of each of N samples -> encoder -> the k
 * features side by side (N, k*F) -> head -> logits (N, n_classes). */
int ssl_show_classify(ssl_ctx *ctx, ssl_encoder *enc, ssl_mlp *head, const float *x, int N, int k,
                      int c, int h, int w, float *logits, int n_classes, char *err);

/* ---- the pictures ----------------------------------------------------- */

/* Every picture of m for images first .. first + n - 1 of ds (the split
 * as stored: RGB for colorization) into the folder out_dir (which must
 * exist): the method's own (ops->show) or, without one, views.png (the
 * augmented views its training makes, randomness from seed); then the
 * encoder's: attention.png for a ViT, pca.png for any encoder. Prints
 * nothing. */
int ssl_show_all(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                 uint64_t seed, const char *out_dir, char *err);
/* views.png: each image (first column) and its m->ops->views views as
 * ssl_aug_apply makes them, view v of image i from
 * ssl_rng_derive(seed, first + i, v) (the loader's stream of epoch 0). */
int ssl_show_augmented(ssl_method *m, const ssl_dataset *ds, int first, int n, uint64_t seed,
                       const char *out_dir, char *err);
/* attention.png (a ViT only: the input, then one column per head of the
 * last block's [CLS] attention as a heat map over it) and pca.png (the
 * input, then the first 3 principal components of the patch features of
 * all n images as RGB). The encoder sees ds converted as
 * ssl_method_encoder_data makes it (colorization: the lightness). */
int ssl_show_encoder(ssl_method *m, ssl_ctx *ctx, const ssl_dataset *ds, int first, int n,
                     const char *out_dir, char *err);

/* The [CLS] attention of the last block of vit, DINO's
 * get_last_selfattention: the tokens entering the last block (blocks
 * 0 .. depth - 2 run with ssl_vit_block_forward), its norm1 and qkv, then
 * per head softmax_j(q_cls . k_j / sqrt(dh)) over the patches j (the class
 * token's own entry left out, the rest renormalized: each map sums to 1).
 * Without a class token: the attention each patch receives, averaged over
 * all queries. x (n, in_chans, S, S) encoder inputs, S a multiple of the
 * patch -> attn (n, heads, (S / patch)^2), patches in row-major order. */
int ssl_show_vit_attention(ssl_ctx *ctx, ssl_vit *vit, const float *x, int n, int S, float *attn,
                           char *err);
/* The features PCA shows: a ViT's patch tokens after the encoder (its
 * final norm; class token left out), a ResNet's last feature map
 * (ssl_encoder_forward_dense). x (n, C, h, w) -> *feat (n * gh * gw, dim)
 * rows in image, then row-major grid order (free with ssl_free). */
int ssl_show_patch_features(ssl_ctx *ctx, ssl_encoder *enc, const float *x, int n, int h, int w,
                            float **feat, int *gh, int *gw, int *dim, char *err);

/* ---- what each method's picture shows (defined in its file) ---------- */
/* x: views (n, c, S, S) from ssl_show_views; the networks run in eval mode
 * (BN on running statistics), without recording; first: the split index of
 * x's first image (the held-out evaluation's random choices). */

/* rotation.c: x4 (4n, c, S, S) each view in its 4 rotations (k * 90
 * degrees counter-clockwise, consecutive), logits (4n, 4). */
int ssl_rotation_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int c, int S,
                         float *x4, float *logits, char *err);
/* jigsaw.c: the puzzles: labels (n) the permutation indices, tiles
 * (n, 9, c, t, t) in shuffled order and normalized as the encoder sees
 * them (t: ssl_pretext_grid_jigsaw(S).patch), cells (n, 9, 2) each tile's
 * (y, x) in the view, logits (n, m->cfg.permutations). */
int ssl_jigsaw_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int c, int S,
                       int64_t first, int32_t *labels, float *tiles, int *cells, float *logits,
                       char *err);
/* relloc.c: labels (n) where the neighbour lies (0..7), pairs (n, 2, c, p, p)
 * centre and neighbour patch as the encoder sees them (colour dropping
 * included), pos (n, 2, 2) their (y, x) in the view, logits (n, 8). */
int ssl_relloc_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int c, int S,
                       int64_t first, int32_t *labels, float *pairs, int *pos, float *logits,
                       char *err);
/* inpainting.c: mask (n, S, S) 1 in the hole, input (n, C, S, S) what the
 * encoder sees (the hole 0), out (n, C, S, S) the decoder's output (every
 * pixel; the picture fills the hole with it). */
int ssl_inpainting_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int S,
                           int64_t first, float *mask, float *input, float *out, char *err);
/* colorization.c: RGB views x (n, 3, S, S) -> light (n, S, S) the
 * lightness L / 100 the encoder sees, rgb (n, 3, S, S) in [0, 1] the
 * view's L with the predicted ab: the annealed mean (T = 0.38) of the
 * bins (the regression variant: its ab), upsampled bilinearly to S x S. */
int ssl_colorization_predict(ssl_method *m, ssl_ctx *ctx, const float *x, int n, int S,
                             float *light, float *rgb, char *err);
/* MAE: ssl_mae_method_reconstruct (mae.h). */

#endif
