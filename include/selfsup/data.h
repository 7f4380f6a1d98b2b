/* selfsup data: datasets (IDX / CIFAR binary / JPEG and PNG image folders),
 * per-image augmentations and a threaded batch loader whose output depends
 * only on (seed, epoch, step). */
#ifndef SELFSUP_DATA_H
#define SELFSUP_DATA_H

#include <stdint.h>

#include "selfsup/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- datasets ---------------------------------------------------------- */

typedef struct ssl_dataset {
    int n, c, h, w;   /* images: n x c x h x w, uint8, NCHW */
    uint8_t *images;  /* (n, c, h, w) */
    int32_t *labels;  /* (n), or NULL */
    int n_classes;    /* 10 for (fashion-)mnist / cifar10, 100 for cifar100 */
    char source[512]; /* the file(s) it came from, for messages */
} ssl_dataset;

/* spec: a named dataset ("fashion-mnist" -> /usr/share/datasets/fashion-mnist,
 * "mnist" -> /usr/share/datasets/mnist) or a folder holding either the four
 * MNIST-named IDX files (plain or .gz) or CIFAR binary batches
 * (data_batch_1..5.bin + test_batch.bin: CIFAR-10; train.bin + test.bin:
 * CIFAR-100, fine labels) or JPEG / PNG images (see "image folders" below,
 * default options). The format is detected from the files.
 * train: 1 train split, 0 test split. On failure ds is left empty. */
int ssl_dataset_load(ssl_dataset *ds, const char *spec, int train, char *err);
void ssl_dataset_free(ssl_dataset *ds);

/* Reads one IDX file of unsigned bytes (gzipped or plain). On success *data
 * (dims[0] x ... x dims[ndim-1] bytes, free with free()) and the dims are set;
 * ndim is 1..4. The file must hold exactly the bytes its header announces. */
int ssl_idx_read(const char *path, int *ndim, int dims[4], uint8_t **data, char *err);

/* ---- image folders (JPEG / PNG) ---------------------------------------- */
/* A folder of photos becomes an ordinary ssl_dataset: every image decoded,
 * resized and center-cropped to image_size x image_size uint8 (c, h, w) once,
 * at load time (torchvision's Resize(size) + CenterCrop(size) on PIL images:
 * shorter side to size with PIL's antialiased bilinear filter, bit-exact).
 * Layouts (torchvision's ImageFolder):
 *   root/<class>/.../<file>   classes = sorted subfolder names, label = index;
 *                             files found recursively, sorted like os.walk
 *   root/<file>               a flat folder (no subfolders): labels NULL
 *   root/train/ + root/val/   the splits (root/test/ when there is no val/),
 *                             each in one of the layouts above; val/ classes
 *                             take train/'s indices
 * Without val/ or test/ the test split is the hold-out part (see holdout) or,
 * with holdout 0, an error. Files: .jpg .jpeg .png (any case) are decoded
 * (the format is taken from the bytes, not the name); .bmp .pgm .ppm .tif
 * .tiff .webp are listed (as torchvision does) but fail as unsupported; other files and names
 * starting with '.' are ignored. Alpha is dropped, palettes expanded, 16-bit
 * samples keep their high byte (as PIL does). With channels 1, RGB becomes gray
 * with PIL's ITU-R 601-2 weights ((19595 R + 38470 G + 7471 B + 2^15) >> 16)
 * before the resize. */
typedef struct ssl_data_opts {
    int image_size; /* side of the square images (default 64) */
    int channels;   /* 3 (default) or 1 */
    int skip_bad;   /* 1: an undecodable file is skipped with a warning line on
                       stderr instead of failing the load (default 0) */
    float holdout;  /* in [0, 1): without val/ or test/, the split's files at sorted
                       position i of each class go to test when
                       floor((i+1)*holdout) > floor(i*holdout), the others to
                       train (default 0: no test split) */
    int n_threads;  /* decoding threads, 0: all cores (default 0) */
} ssl_data_opts;

void ssl_data_opts_default(ssl_data_opts *o);

/* ssl_dataset_load with options (NULL: defaults). spec may also carry them:
 * "DIR#size=96,channels=1,skip-bad,holdout=0.1" (later keys win over opts);
 * they are an error for IDX and CIFAR data. */
int ssl_dataset_load_opts(ssl_dataset *ds, const char *spec, int train,
                          const ssl_data_opts *opts, char *err);

/* The file list of one split of an image folder, without decoding. */
typedef struct ssl_imagefolder {
    int n;            /* files */
    char **paths;     /* (n) */
    int32_t *labels;  /* (n), NULL for a flat folder */
    int n_classes;    /* 0 for a flat folder */
    char **classes;   /* (n_classes) class folder names, sorted */
    char root[512];   /* the split's folder */
} ssl_imagefolder;

/* dir: the root as above; train: 1 train split, 0 test split. Errors (no
 * images, no test split, a val/ class unknown to train/) name the folder. */
int ssl_imagefolder_scan(ssl_imagefolder *f, const char *dir, int train,
                         const ssl_data_opts *opts, char *err);
void ssl_imagefolder_free(ssl_imagefolder *f);

/* Scan + decode on opts->n_threads threads. A bad file fails the load with a
 * message naming it (the first bad one in file order, whatever the threads),
 * or with skip_bad is left out after a warning. */
int ssl_imagefolder_load(ssl_dataset *ds, const char *dir, int train, const ssl_data_opts *opts,
                         char *err);

/* One file at its own size: *pixels (channels, *h, *w), free with free().
 * channels 1 or 3. Errors name the file (empty, truncated, corrupt, not an image). */
int ssl_image_decode(const char *path, int channels, uint8_t **pixels, int *h, int *w,
                     char *err);
/* One file decoded, resized and center-cropped: out (channels, size, size). */
int ssl_image_load(const char *path, int channels, int size, uint8_t *out, char *err);
/* The same resize + center crop on pixels: src (c, h, w), dst (c, size, size). */
int ssl_image_resize_crop(const uint8_t *src, int c, int h, int w, int size, uint8_t *dst);

/* ---- augmentation ------------------------------------------------------ */

typedef struct ssl_aug {
    int out_h, out_w;
    float crop_scale_min, crop_scale_max; /* random resized crop (torchvision semantics) */
    float crop_ratio_min, crop_ratio_max; /* aspect ratio range, e.g. 3/4, 4/3; scale
                                              1..1 with ratio 0: whole image, no crop */
    float flip_p;                         /* horizontal flip */
    float jitter_p, brightness, contrast, saturation, hue; /* ColorJitter, random order;
                                              saturation and hue skip 1-channel images */
    float gray_p;                         /* random grayscale (no-op on 1 channel) */
    float blur_p, blur_sigma_min, blur_sigma_max;
    int blur_kernel;                      /* odd, ~10% of the image size */
    float solarize_p, solarize_threshold; /* x >= t -> 1 - x, x in [0, 1] */
    float mean[3], std[3];                /* normalization, applied last */
} ssl_aug;

/* SimCLR defaults for small images (solo-learn's CIFAR strengths 0.4/0.4/0.4/0.1,
 * no blur at <= 32 px); mean/std of Fashion-MNIST for c == 1, CIFAR-10 for c == 3. */
void ssl_aug_simclr(ssl_aug *a, int c, int h, int w);
/* No randomness: full-image resize to (h, w) (identity at equal size) + normalize. */
void ssl_aug_eval(ssl_aug *a, int c, int h, int w);

/* Scratch floats ssl_aug_apply needs for an image of c x h x w. */
size_t ssl_aug_scratch_floats(const ssl_aug *a, int c, int h, int w);

/* src: (c, h, w) uint8; dst: (c, out_h, out_w) float, normalized;
 * scratch: >= ssl_aug_scratch_floats() floats, i.e. 2*c*max(h*w, out_h*out_w).
 * rng advances. c is 1 or 3. */
void ssl_aug_apply(const ssl_aug *a, const uint8_t *src, int c, int h, int w, float *dst,
                   float *scratch, ssl_rng *rng);

/* Where a view came from, for dense objectives that match locations across
 * views: its crop box in continuous source-image coordinates (source pixel
 * (i, j) spans [j, j + 1) x [i, i + 1)), the box covering [x0, x0 + w) x
 * [y0, y0 + h), and whether the view was then flipped left-right. */
typedef struct ssl_crop_geo {
    float x0, y0, w, h;
    int flipped;
} ssl_crop_geo;

/* ssl_aug_apply that also records the view's crop box and flip in *geo
 * (NULL: not recorded); the same pixels and the same rng draws. */
void ssl_aug_apply_geo(const ssl_aug *a, const uint8_t *src, int c, int h, int w, float *dst,
                       float *scratch, ssl_rng *rng, ssl_crop_geo *geo);

/* Source-image point (X, Y) in an fh x fw feature map covering the view of
 * geo, in cell units with cell (i, j)'s centre at (u, v) = (j, i), as
 * ssl_op_grid_sample reads them: u = (X - x0) * fw / w - 0.5, mirrored to
 * (x0 + w - X) * fw / w - 0.5 when flipped; v = (Y - y0) * fh / h - 0.5. */
void ssl_crop_geo_to_feature(const ssl_crop_geo *geo, float X, float Y, int fh, int fw, float *u,
                             float *v);

/* Whole split through eval_aug (deterministic): out is (n, c, out_h, out_w).
 * Returns SSL_OK or SSL_ENOMEM. */
int ssl_dataset_to_float(const ssl_dataset *ds, const ssl_aug *eval_aug, float *out);

/* ---- loader ------------------------------------------------------------ */

typedef struct ssl_loader ssl_loader;

/* n_views augmented views of each image, view v through augs[v] (copied);
 * batch images per step, last partial batch dropped. The epoch's order is a
 * permutation of (seed, epoch) alone, and view v of sample i in epoch e uses
 * ssl_rng_derive(&r, seed, e * n + i, v), so batches are identical for any
 * n_workers. n_workers == 0 fills batches on the caller's thread.
 * ds must outlive the loader. */
int ssl_loader_create(ssl_loader **out, const ssl_dataset *ds, const ssl_aug *augs,
                      int n_views, int batch, uint64_t seed, int n_workers, char *err);
int ssl_loader_steps_per_epoch(const ssl_loader *l);
/* The next ssl_loader_next returns (epoch, step); used for resume. */
void ssl_loader_seek(ssl_loader *l, int epoch, int step);
/* Blocks until the next batch is ready. (*views)[v]: (batch, c, out_h, out_w)
 * of augs[v]; *labels: (batch) or NULL. Valid until the next call. */
int ssl_loader_next(ssl_loader *l, float *const **views, const int32_t **labels, int *epoch,
                    int *step, char *err);
/* The crop geometry of the batch the last ssl_loader_next returned:
 * geo[v][i] for view v of the batch's sample i; valid until the next call,
 * NULL before the first. */
const ssl_crop_geo *const *ssl_loader_geo(ssl_loader *l);
/* Stops and joins the workers, even mid-batch. NULL is fine. */
void ssl_loader_free(ssl_loader *l);

#ifdef __cplusplus
}
#endif
#endif
