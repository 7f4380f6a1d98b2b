/* Dataset lookup (named datasets, folders, the options a spec carries), format
 * detection, the MNIST-style IDX pair, and whole-split conversion to
 * normalized floats. */
#define _POSIX_C_SOURCE 200809L
#include "data_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

int ssl_data_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int dir_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* dir/name or dir/name.gz, whichever exists (plain first); 0 if neither. */
static int find_idx(char *out, size_t len, const char *dir, const char *name)
{
    snprintf(out, len, "%s/%s", dir, name);
    if (ssl_data_file_exists(out)) return 1;
    snprintf(out, len, "%s/%s.gz", dir, name);
    return ssl_data_file_exists(out);
}

static int idx_load(ssl_dataset *ds, const char *dir, int train, char *err)
{
    const char *iname = train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte";
    const char *lname = train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte";
    char ipath[1024], lpath[1024];
    if (!find_idx(ipath, sizeof ipath, dir, iname))
        return ssl_fail(err, SSL_EIO, "%s: missing %s[.gz]", dir, iname);
    if (!find_idx(lpath, sizeof lpath, dir, lname))
        return ssl_fail(err, SSL_EIO, "%s: missing %s[.gz]", dir, lname);

    int ind, lnd, idims[4], ldims[4];
    uint8_t *img = NULL, *lab = NULL;
    int rc = ssl_idx_read(ipath, &ind, idims, &img, err);
    if (rc) return rc;
    if (ind != 3) {
        free(img);
        return ssl_fail(err, SSL_EFORMAT, "%s: expected an image file (3 dims), found %d dims",
                        ipath, ind);
    }
    rc = ssl_idx_read(lpath, &lnd, ldims, &lab, err);
    if (rc) {
        free(img);
        return rc;
    }
    if (lnd != 1) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: expected a label file (1 dim), found %d dims", lpath,
                      lnd);
        goto fail;
    }
    if (ldims[0] != idims[0]) {
        rc = ssl_fail(err, SSL_EFORMAT, "%s: %d labels but %s holds %d images", lpath, ldims[0],
                      ipath, idims[0]);
        goto fail;
    }
    int32_t *labels = malloc((size_t)ldims[0] * sizeof *labels);
    if (!labels) {
        rc = ssl_fail(err, SSL_ENOMEM, "%s: out of memory", lpath);
        goto fail;
    }
    const int n_classes = 10;
    for (int i = 0; i < ldims[0]; i++) {
        if (lab[i] >= n_classes) {
            free(labels);
            rc = ssl_fail(err, SSL_EFORMAT, "%s: label %d of sample %d out of range [0, %d)",
                          lpath, lab[i], i, n_classes);
            goto fail;
        }
        labels[i] = lab[i];
    }
    free(lab);
    memset(ds, 0, sizeof *ds);
    ds->n = idims[0];
    ds->c = 1;
    ds->h = idims[1];
    ds->w = idims[2];
    ds->images = img;
    ds->labels = labels;
    ds->n_classes = n_classes;
    snprintf(ds->source, sizeof ds->source, "%.500s", ipath);
    return SSL_OK;
fail:
    free(img);
    free(lab);
    return rc;
}

/* Which format dir holds: 1 IDX, 2 CIFAR-10, 3 CIFAR-100, 0 none. */
static int detect(const char *dir)
{
    char p[1024];
    if (find_idx(p, sizeof p, dir, "train-images-idx3-ubyte") ||
        find_idx(p, sizeof p, dir, "t10k-images-idx3-ubyte"))
        return 1;
    snprintf(p, sizeof p, "%s/data_batch_1.bin", dir);
    if (ssl_data_file_exists(p)) return 2;
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    if (ssl_data_file_exists(p)) return 2;
    snprintf(p, sizeof p, "%s/train.bin", dir);
    if (ssl_data_file_exists(p)) return 3;
    snprintf(p, sizeof p, "%s/test.bin", dir);
    if (ssl_data_file_exists(p)) return 3;
    return 0;
}

/* An image folder, as far as one look tells: a subfolder (a class or a split)
 * or a file named like an image. Hidden names do not count. */
static int looks_like_images(const char *dir)
{
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".bmp", ".pgm",
                                      ".ppm", ".tif", ".tiff", ".webp"};
    DIR *d = opendir(dir);
    if (!d) return 0;
    int found = 0;
    struct dirent *e;
    char p[1400];
    while (!found && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        const char *dot = strrchr(e->d_name, '.');
        found = dir_exists(p);
        for (size_t i = 0; !found && dot && i < sizeof ext / sizeof ext[0]; i++)
            found = !strcasecmp(dot, ext[i]);
    }
    closedir(d);
    return found;
}

static int load_dir(ssl_dataset *ds, const char *dir, int train, const ssl_data_opts *o,
                    int n_opts, char *err)
{
    int fmt = detect(dir);
    char sub[600];
    if (!fmt) { /* the folders the official archives unpack to */
        static const char *const subs[] = {"cifar-10-batches-bin", "cifar-100-binary"};
        for (int i = 0; i < 2 && !fmt; i++) {
            snprintf(sub, sizeof sub, "%s/%s", dir, subs[i]);
            if (dir_exists(sub) && (fmt = detect(sub)) != 0) dir = sub;
        }
    }
    if (fmt && n_opts)
        return ssl_fail(err, SSL_EINVAL,
                        "%s: image options (size, channels, skip-bad, holdout) are for JPEG/PNG "
                        "image folders, this is %s data", dir, fmt == 1 ? "IDX" : "CIFAR");
    switch (fmt) {
    case 1: return idx_load(ds, dir, train, err);
    case 2: return ssl_cifar_load(ds, dir, train, 0, err);
    case 3: return ssl_cifar_load(ds, dir, train, 1, err);
    default:
        if (looks_like_images(dir)) return ssl_imagefolder_load(ds, dir, train, o, err);
        return ssl_fail(err, SSL_EIO,
                        "%s: no dataset files found (expected train-images-idx3-ubyte[.gz], "
                        "CIFAR-10 data_batch_1.bin, CIFAR-100 train.bin, or .jpg/.png images, "
                        "directly or in class subfolders)",
                        dir);
    }
}

/* "PATH#key=value,key,..." -> path and options; n_opts counts the keys. A spec
 * that names an existing folder as a whole carries none, '#' and all. */
static int spec_options(const char *spec, char *path, size_t len, ssl_data_opts *o, int *n_opts,
                        char *err)
{
    *n_opts = 0;
    const char *hash = strrchr(spec, '#');
    if (!hash || dir_exists(spec)) {
        snprintf(path, len, "%s", spec);
        return SSL_OK;
    }
    snprintf(path, len, "%.*s", (int)(hash - spec), spec);
    char opts[256];
    if (strlen(hash + 1) >= sizeof opts)
        return ssl_fail(err, SSL_EINVAL, "dataset '%.60s': options too long", spec);
    snprintf(opts, sizeof opts, "%s", hash + 1);
    char *save = NULL;
    for (char *kv = strtok_r(opts, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '='), *end = NULL;
        const char *val = eq ? eq + 1 : NULL;
        if (eq) *eq = 0;
        errno = 0;
        double v = val ? strtod(val, &end) : 1;
        int num_ok = !val || (end != val && !*end && !errno);
        int ok = 1;
        if (!strcmp(kv, "size")) {
            ok = val && num_ok && v >= 1 && v <= 4096 && v == (int)v;
            if (ok) o->image_size = (int)v;
        } else if (!strcmp(kv, "channels")) {
            ok = val && num_ok && (v == 1 || v == 3);
            if (ok) o->channels = (int)v;
        } else if (!strcmp(kv, "skip-bad")) {
            ok = num_ok && (v == 0 || v == 1);
            if (ok) o->skip_bad = (int)v;
        } else if (!strcmp(kv, "holdout")) {
            ok = val && num_ok && v >= 0 && v < 1;
            if (ok) o->holdout = (float)v;
        } else {
            return ssl_fail(err, SSL_EINVAL,
                            "dataset '%.300s': unknown option '%.40s' (size=N, channels=1|3, "
                            "skip-bad, holdout=F)", spec, kv);
        }
        if (!ok)
            return ssl_fail(err, SSL_EINVAL,
                            "dataset '%.300s': bad value for %s (size=1..4096, channels=1|3, "
                            "skip-bad[=0|1], holdout in [0, 1))", spec, kv);
        (*n_opts)++;
    }
    return SSL_OK;
}

int ssl_dataset_load(ssl_dataset *ds, const char *spec, int train, char *err)
{
    return ssl_dataset_load_opts(ds, spec, train, NULL, err);
}

int ssl_dataset_load_opts(ssl_dataset *ds, const char *spec, int train,
                          const ssl_data_opts *opts, char *err)
{
    memset(ds, 0, sizeof *ds);
    if (!spec || !*spec) return ssl_fail(err, SSL_EINVAL, "dataset: empty name");
    ssl_data_opts o;
    if (opts) o = *opts;
    else ssl_data_opts_default(&o);
    char path[1024];
    int n_opts;
    if (strlen(spec) >= sizeof path)
        return ssl_fail(err, SSL_EINVAL, "dataset '%.60s...': spec too long", spec);
    int rc = spec_options(spec, path, sizeof path, &o, &n_opts, err);
    if (rc) return rc;
    if (strlen(path) > 400) /* leaves room for the file names appended to it */
        return ssl_fail(err, SSL_EINVAL, "dataset '%.60s...': path longer than 400 characters",
                        path);
    static const struct {
        const char *name, *dir, *package;
    } named[] = {
        {"fashion-mnist", "/usr/share/datasets/fashion-mnist", "dataset-fashion-mnist"},
        {"mnist", "/usr/share/datasets/mnist", "an MNIST IDX copy there"},
    };
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        if (strcmp(path, named[i].name) != 0) continue;
        if (n_opts)
            return ssl_fail(err, SSL_EINVAL,
                            "%s: image options (size, channels, skip-bad, holdout) are for "
                            "JPEG/PNG image folders", path);
        if (!dir_exists(named[i].dir))
            return ssl_fail(err, SSL_EIO, "%s: %s not found (install %s)", path, named[i].dir,
                            named[i].package);
        return load_dir(ds, named[i].dir, train, &o, 0, err);
    }
    if (dir_exists(path)) return load_dir(ds, path, train, &o, n_opts, err);
    return ssl_fail(err, SSL_EIO, "dataset '%s': no such named dataset or folder", path);
}

void ssl_dataset_free(ssl_dataset *ds)
{
    if (!ds) return;
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

int ssl_dataset_to_float(const ssl_dataset *ds, const ssl_aug *eval_aug, float *out)
{
    const int c = ds->c, h = ds->h, w = ds->w;
    const size_t in_sz = (size_t)c * h * w;
    const size_t out_sz = (size_t)c * eval_aug->out_h * eval_aug->out_w;
    const size_t nscr = ssl_aug_scratch_floats(eval_aug, c, h, w);
    int rc = SSL_OK;
#pragma omp parallel
    {
        float *scratch = ssl_malloc(nscr * sizeof(float));
        if (!scratch) {
#pragma omp atomic write
            rc = SSL_ENOMEM;
        }
#pragma omp for schedule(static)
        for (int i = 0; i < ds->n; i++) {
            if (!scratch) continue;
            ssl_rng rng; /* per-sample stream: same result for any thread count */
            ssl_rng_derive(&rng, 0, (uint64_t)i, 0);
            ssl_aug_apply(eval_aug, ds->images + (size_t)i * in_sz, c, h, w,
                          out + (size_t)i * out_sz, scratch, &rng);
        }
        ssl_free(scratch);
    }
    return rc;
}
