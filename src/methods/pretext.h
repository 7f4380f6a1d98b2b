/* What the pretext-task methods (rotation, jigsaw, relloc) share: a
 * classifier head on the shared encoder, the random choices of a task as a
 * function of (seed, step, batch position) - or of the image's index in a
 * held-out evaluation - and the geometry of a 3x3 grid of patches with gaps
 * and jitter. Private to src/methods; the functions that make a task's
 * inputs and labels are here so tests (and pictures) can call them. */
#ifndef SELFSUP_METHODS_PRETEXT_H
#define SELFSUP_METHODS_PRETEXT_H

#include "selfsup/method.h"

/* The state every pretext method starts its own state with. */
typedef struct ssl_pretext {
    ssl_mlp head;          /* "head.": features -> class logits */
    int n_classes;
    int64_t seed;          /* "pretext_seed" in the checkpoint: the choices of a resume repeat */
    int64_t correct, total; /* predictions of the last loss() call */
} ssl_pretext;

/* Builds the head (m->cfg.head_hidden: 0 a linear layer, else
 * Linear-BN-ReLU-Linear), draws the seed from rng and registers it. */
int ssl_pretext_init(ssl_method *m, ssl_pretext *p, int in_dim, int n_classes, ssl_rng *rng,
                     char *err);
/* The random stream of batch row b: (seed, m->step, b) in training,
 * (seed, held-out marker, m->pretext_eval_first + b) in an evaluation. */
void ssl_pretext_rng(const ssl_method *m, const ssl_pretext *p, int b, ssl_rng *r);
/* x (N*k, C, h, w): the k inputs of each of N samples, sample-major, as one
 * encoder pass (BN statistics over all of them); their k features side by
 * side (N, k*F) -> head -> (N, n_classes) logits -> mean softmax CE against
 * labels (N). Counts the correct argmax predictions into p. */
ssl_tensor *ssl_pretext_classify(ssl_method *m, ssl_graph *g, ssl_pretext *p, ssl_tensor *x,
                                 int k, const int32_t *labels);
/* x (N*k, F) row-major -> (N, k*F), rows k*i..k*i+k-1 side by side (torch's
 * x.view(N, k*F)); the gradient flows back unchanged. */
ssl_tensor *ssl_pretext_group_rows(ssl_graph *g, ssl_tensor *x, int k);
/* n labels in the step's arena; NULL (ctx->err set) when out of memory. */
int32_t *ssl_pretext_labels(ssl_graph *g, int n);
/* Sets ctx->err to "method: what" (SSL_EINVAL) and returns NULL. */
ssl_tensor *ssl_pretext_error(ssl_graph *g, const char *method, const char *what);
/* Correct argmax predictions (first maximum) of logits (N, C) against labels (N). */
int64_t ssl_pretext_count_correct(const float *logits, const int32_t *labels, int n, int c);
/* The ops->pretext_metrics of every pretext method (state_ptr starts with ssl_pretext). */
int ssl_pretext_metrics(const ssl_method *m, int64_t *correct, int64_t *total);

/* One square view of side cfg->view_size (0: the image's shorter side):
 * random crop of 60-100% of the area (aspect 3/4-4/3) resized to the
 * view, horizontal flip p 0.5, no colour changes. Returns 1. */
int ssl_pretext_views(const ssl_method_config *cfg, int c, int h, int w, ssl_aug *augs);
/* Fills cfg->view_size and cfg->head_hidden (default_hidden) when unset and
 * checks them. */
int ssl_pretext_validate(ssl_method_config *cfg, int default_hidden, char *err);

/* ---- rotation ---- */
/* src (c, s, s) -> dst (c, s, s) rotated counter-clockwise by k * 90
 * degrees (k 0..3), as torch.rot90(x, k, dims=(-2, -1)) and np.rot90. */
void ssl_rotate90(const float *src, int c, int s, int k, float *dst);

/* ---- the 3x3 grid of jigsaw and relloc ---- */
/* A square view of side S: 3x3 cells of `cell` pixels starting at
 * (origin, origin) (the S - 3 cell leftover split around the grid); the
 * patch of a cell starts at base + an offset in [0, jitter] per axis. */
typedef struct ssl_pretext_grid {
    int side, origin, cell, patch, base, jitter;
} ssl_pretext_grid;

/* Noroozi & Favaro: 64-px tiles at any position inside 75-px cells, i.e.
 * patch = floor(cell * 64 / 75), offsets 0..cell - patch (no minimum gap). */
void ssl_pretext_grid_jigsaw(int side, ssl_pretext_grid *g);
/* Doersch et al.: 96-px patches, a 48-px gap, jitter up to 7 px, i.e. on a
 * cell of 144 px: patch = floor(2 cell / 3), the gap never below
 * round(34/48 of the free space), the patch centred in its cell. */
void ssl_pretext_grid_relloc(int side, ssl_pretext_grid *g);
/* The grid can be cut: patches of >= 2 px (views of >= 9 px). */
int ssl_pretext_grid_check(const ssl_pretext_grid *g, const char *method, char *err);
/* dst (c, ph, pw) = src (c, h, w) rows y.., columns x.. */
void ssl_pretext_crop(const float *src, int c, int h, int w, int y, int x, int ph, int pw,
                      float *dst);

/* ---- jigsaw ---- */
#define SSL_JIGSAW_TILES 9
#define SSL_JIGSAW_N_ALL 362880 /* 9! */
#define SSL_JIGSAW_MAX_PERMS 2000
#define SSL_JIGSAW_PERM_SEED 2016u /* the set depends on its size alone */
/* The permutation set: greedy maximal Hamming distance (see jigsaw.c).
 * out (n, 9): out[i][t] = the grid cell (row-major) shown at position t.
 * Deterministic in (n, seed). SSL_ENOMEM or SSL_OK. */
int ssl_jigsaw_permutations(int n, uint64_t seed, uint8_t *out);
/* Hamming distances of a set (n, 9): their minimum and mean over pairs. */
void ssl_jigsaw_hamming_stats(const uint8_t *perms, int n, int *min_dist, double *mean_dist);
/* One puzzle of img (c, S, S): draws the permutation index (the label)
 * and the offset of each cell's tile from r, then tiles (9, c, t, t) in
 * shuffled order: tile t is cell perms[label][t]; each tile normalized to
 * zero mean and unit std per channel when normalize (Noroozi). cells (9, 2)
 * gets each position's (y, x) in the view when not NULL. */
int32_t ssl_jigsaw_sample(const ssl_pretext_grid *g, const uint8_t *perms, int n_perms,
                          ssl_rng *r, const float *img, int c, int normalize, float *tiles,
                          int *cells);

/* ---- relative patch location ---- */
/* Neighbour cell of label k (0..7) relative to the centre: row-major order
 * around it, 0 1 2 / 3 . 4 / 5 6 7 (Doersch's figure 2). */
extern const int ssl_relloc_offsets[8][2];
/* One pair of img (c, S, S): draws the neighbour (the label) and both
 * patches' offsets from r; pair (2, c, p, p) = centre, neighbour. With
 * color_drop and c == 3, each patch keeps one random channel, the other two
 * become Gaussian noise of std 1/100 (Doersch; the view is normalized, so
 * the channel's std is 1). pos (2, 2) gets the patches' (y, x) when not NULL. */
int32_t ssl_relloc_sample(const ssl_pretext_grid *g, ssl_rng *r, const float *img, int c,
                          int color_drop, float *pair, int *pos);

#endif
