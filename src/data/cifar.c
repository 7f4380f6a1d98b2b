/* CIFAR-10 / CIFAR-100 binary version: fixed-size records of label byte(s)
 * followed by 3x32x32 pixels, already channel-major (CHW). */
#define _POSIX_C_SOURCE 200809L
#include "data_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CIFAR_PIXELS 3072

/* Size of path in bytes and number of records, checking the size is a whole
 * non-zero number of records. */
static int cifar_count(const char *path, long rec, long *n_rec, char *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return ssl_fail(err, SSL_EIO, "%s: cannot open (%s)", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return ssl_fail(err, SSL_EIO, "%s: not a regular file", path);
    if (st.st_size == 0 || st.st_size % rec != 0)
        return ssl_fail(err, SSL_EFORMAT,
                        "%s: size %lld is not a whole number of %ld-byte CIFAR records", path,
                        (long long)st.st_size, rec);
    if (st.st_size / rec > (1L << 24))
        return ssl_fail(err, SSL_EFORMAT, "%s: too large for a CIFAR batch (%lld bytes)", path,
                        (long long)st.st_size);
    *n_rec = (long)(st.st_size / rec);
    return SSL_OK;
}

static int cifar_read(const char *path, long rec, int label_off, int n_classes, long n_rec,
                      uint8_t *images, int32_t *labels, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return ssl_fail(err, SSL_EIO, "%s: cannot open (%s)", path, strerror(errno));
    uint8_t buf[3074];
    int rc = SSL_OK;
    for (long i = 0; i < n_rec; i++) {
        if (fread(buf, 1, (size_t)rec, f) != (size_t)rec) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: truncated at record %ld of %ld", path, i, n_rec);
            break;
        }
        int lab = buf[label_off];
        if (lab >= n_classes) {
            rc = ssl_fail(err, SSL_EFORMAT, "%s: record %ld: label %d out of range [0, %d)", path,
                          i, lab, n_classes);
            break;
        }
        labels[i] = lab;
        memcpy(images + (size_t)i * CIFAR_PIXELS, buf + rec - CIFAR_PIXELS, CIFAR_PIXELS);
    }
    fclose(f);
    return rc;
}

int ssl_cifar_load(ssl_dataset *ds, const char *dir, int train, int cifar100, char *err)
{
    char paths[5][512];
    int n_files = 0;
    if (cifar100) {
        snprintf(paths[n_files++], 512, "%s/%s", dir, train ? "train.bin" : "test.bin");
    } else if (train) {
        for (int i = 1; i <= 5; i++) snprintf(paths[n_files++], 512, "%s/data_batch_%d.bin", dir, i);
    } else {
        snprintf(paths[n_files++], 512, "%s/test_batch.bin", dir);
    }
    long rec = cifar100 ? 3074 : 3073;
    int label_off = cifar100 ? 1 : 0; /* CIFAR-100: coarse, then fine label */
    int n_classes = cifar100 ? 100 : 10;
    long counts[5], total = 0;
    for (int i = 0; i < n_files; i++) {
        int rc = cifar_count(paths[i], rec, &counts[i], err);
        if (rc) return rc;
        total += counts[i];
    }
    uint8_t *images = malloc((size_t)total * CIFAR_PIXELS);
    int32_t *labels = malloc((size_t)total * sizeof *labels);
    if (!images || !labels) {
        free(images);
        free(labels);
        return ssl_fail(err, SSL_ENOMEM, "%s: out of memory for %ld CIFAR images", dir, total);
    }
    long at = 0;
    for (int i = 0; i < n_files; i++) {
        int rc = cifar_read(paths[i], rec, label_off, n_classes, counts[i],
                            images + (size_t)at * CIFAR_PIXELS, labels + at, err);
        if (rc) {
            free(images);
            free(labels);
            return rc;
        }
        at += counts[i];
    }
    memset(ds, 0, sizeof *ds);
    ds->n = (int)total;
    ds->c = 3;
    ds->h = ds->w = 32;
    ds->images = images;
    ds->labels = labels;
    ds->n_classes = n_classes;
    if (cifar100 || !train)
        snprintf(ds->source, sizeof ds->source, "%s", paths[0]);
    else
        snprintf(ds->source, sizeof ds->source, "%.480s/data_batch_{1..5}.bin", dir);
    return SSL_OK;
}
