/* Data module: IDX / CIFAR loading and its failure modes, augmentations,
 * the threaded loader's determinism, seek, coverage and shutdown. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/data.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"

static char tmpdir[256];

/* ---- file writers ---- */

static void write_bytes(const char *path, int gz, const void *data, size_t n)
{
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (n) gzwrite(f, data, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        if (n) fwrite(data, 1, n, f);
        fclose(f);
    }
}

/* IDX file: magic (type 0x08 unless overridden), dims, then `have` data bytes. */
static void write_idx(const char *path, int gz, uint32_t magic, int ndim, const int *dims,
                      const uint8_t *data, size_t have)
{
    size_t n = 4 + 4 * (size_t)ndim + have;
    uint8_t *buf = malloc(n);
    buf[0] = (uint8_t)(magic >> 24);
    buf[1] = (uint8_t)(magic >> 16);
    buf[2] = (uint8_t)(magic >> 8);
    buf[3] = (uint8_t)magic;
    for (int i = 0; i < ndim; i++) {
        uint32_t d = (uint32_t)dims[i];
        buf[4 + 4 * i] = (uint8_t)(d >> 24);
        buf[5 + 4 * i] = (uint8_t)(d >> 16);
        buf[6 + 4 * i] = (uint8_t)(d >> 8);
        buf[7 + 4 * i] = (uint8_t)d;
    }
    if (have) memcpy(buf + 4 + 4 * ndim, data, have);
    write_bytes(path, gz, buf, n);
    free(buf);
}

static void make_dir(char *out, const char *name)
{
    snprintf(out, 512, "%s/%s", tmpdir, name);
    mkdir(out, 0755);
}

/* A valid MNIST-style folder: n images of h x w, pixel (i, y, x) = i + y + x,
 * labels i % 10; train split gzipped, test split plain. */
static void make_idx_dir(const char *dir, int n, int h, int w)
{
    uint8_t *img = malloc((size_t)n * h * w), *lab = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        lab[i] = (uint8_t)(i % 10);
        for (int p = 0; p < h * w; p++) img[(size_t)i * h * w + p] = (uint8_t)(i + p / w + p % w);
    }
    char p[600];
    int d3[3] = {n, h, w}, d1[1] = {n};
    snprintf(p, sizeof p, "%s/train-images-idx3-ubyte.gz", dir);
    write_idx(p, 1, 0x803, 3, d3, img, (size_t)n * h * w);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_idx(p, 1, 0x801, 1, d1, lab, (size_t)n);
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", dir);
    write_idx(p, 0, 0x803, 3, d3, img, (size_t)n * h * w);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", dir);
    write_idx(p, 0, 0x801, 1, d1, lab, (size_t)n);
    free(img);
    free(lab);
}

static int has(const char *err, const char *a, const char *b)
{
    return strstr(err, a) != NULL && (!b || strstr(err, b) != NULL);
}

/* ---- datasets ---- */

static void test_fashion_mnist(void)
{
    struct stat st;
    if (stat("/usr/share/datasets/fashion-mnist", &st) != 0) {
        printf("fashion-mnist not installed: real-data checks skipped\n");
        return;
    }
    char err[SSL_ERR_LEN] = "";
    ssl_dataset tr, te;
    int rc = ssl_dataset_load(&tr, "fashion-mnist", 1, err);
    CHECK(rc == SSL_OK, "fashion-mnist train: %s", err);
    if (rc) return;
    CHECK(tr.n == 60000 && tr.c == 1 && tr.h == 28 && tr.w == 28, "train shape %d %d %d %d",
          tr.n, tr.c, tr.h, tr.w);
    CHECK(tr.n_classes == 10 && tr.labels && tr.labels[0] == 9, "first train label %d",
          tr.labels ? tr.labels[0] : -1);
    int counts[10] = {0}, bad = 0;
    for (int i = 0; i < tr.n; i++) {
        if (tr.labels[i] < 0 || tr.labels[i] > 9) bad++;
        else counts[tr.labels[i]]++;
    }
    CHECK(bad == 0 && counts[0] == 6000 && counts[9] == 6000, "label histogram");
    CHECK(strstr(tr.source, "train-images-idx3-ubyte") != NULL, "source %s", tr.source);
    rc = ssl_dataset_load(&te, "fashion-mnist", 0, err);
    CHECK(rc == SSL_OK && te.n == 10000 && te.h == 28 && te.labels[0] == 9, "test split: %s", err);

    /* Normalization: whole-split statistics come out near mean 0, std 1. */
    ssl_aug ev;
    ssl_aug_eval(&ev, 1, 28, 28);
    ssl_dataset sub = te;
    sub.n = 2000;
    float *x = malloc((size_t)sub.n * 784 * sizeof(float));
    CHECK(ssl_dataset_to_float(&sub, &ev, x) == SSL_OK, "to_float");
    double s = 0, s2 = 0;
    for (size_t i = 0; i < (size_t)sub.n * 784; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    double mean = s / (sub.n * 784.0), sd = sqrt(s2 / (sub.n * 784.0) - mean * mean);
    CHECK(fabs(mean) < 0.05 && fabs(sd - 1) < 0.05, "normalized stats mean %g std %g", mean, sd);
    float want = ((float)te.images[300] / 255.0f - 0.2860f) / 0.3530f;
    CHECK(x[300] == want, "eval pixel %g vs %g", x[300], want);
    free(x);

    /* Timing (printed only): 2 x 256 SimCLR views at 28x28 on one thread. */
    ssl_aug a;
    ssl_aug_simclr(&a, 1, 28, 28);
    float *out = malloc(256 * 784 * sizeof(float));
    float *scr = malloc(ssl_aug_scratch_floats(&a, 1, 28, 28) * sizeof(float));
    double t0 = ssl_time();
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 256; i++) {
            ssl_rng r;
            ssl_rng_derive(&r, 1, (uint64_t)i, (uint64_t)v);
            ssl_aug_apply(&a, tr.images + (size_t)i * 784, 1, 28, 28, out + (size_t)i * 784, scr, &r);
        }
    printf("augment 2x256 Fashion-MNIST views (28x28, SimCLR, 1 thread): %.2f ms\n",
           1e3 * (ssl_time() - t0));
    free(out);
    free(scr);
    ssl_dataset_free(&tr);
    ssl_dataset_free(&te);
}

static void test_idx_files(void)
{
    char dir[512], p[600], err[SSL_ERR_LEN];
    make_dir(dir, "idx");
    uint8_t px[600];
    for (int i = 0; i < 600; i++) px[i] = (uint8_t)i;
    int d3[3] = {6, 10, 10}, nd, dims[4];
    uint8_t *data;

    for (int gz = 0; gz < 2; gz++) {
        /* valid */
        snprintf(p, sizeof p, "%s/ok%s", dir, gz ? ".gz" : "");
        write_idx(p, gz, 0x803, 3, d3, px, 600);
        int rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_OK && nd == 3 && dims[0] == 6 && dims[1] == 10 && dims[2] == 10,
              "valid idx gz=%d: %s", gz, err);
        if (!rc) {
            CHECK(memcmp(data, px, 600) == 0, "idx payload gz=%d", gz);
            free(data);
        }
        /* truncated pixels */
        snprintf(p, sizeof p, "%s/trunc%s", dir, gz ? ".gz" : "");
        write_idx(p, gz, 0x803, 3, d3, px, 599);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "truncated: expected 600 bytes of pixels, got 599"),
              "truncated gz=%d: %s", gz, err);
        /* lying header: a million 28x28 images announced, 600 bytes present */
        int big[3] = {1000000, 28, 28};
        snprintf(p, sizeof p, "%s/lie%s", dir, gz ? ".gz" : "");
        write_idx(p, gz, 0x803, 3, big, px, 600);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "truncated"), "lying header gz=%d: %s", gz, err);
        /* dims whose product exceeds 2^31 */
        int huge[3] = {60000, 60000, 28};
        snprintf(p, sizeof p, "%s/huge%s", dir, gz ? ".gz" : "");
        write_idx(p, gz, 0x803, 3, huge, px, 600);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "2^31"), "huge header gz=%d: %s", gz, err);
        /* zero dim */
        int zero[3] = {6, 0, 10};
        snprintf(p, sizeof p, "%s/zero%s", dir, gz ? ".gz" : "");
        write_idx(p, gz, 0x803, 3, zero, px, 0);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "bad IDX dim 1"), "zero dim gz=%d: %s", gz, err);
        /* bad magic, unsupported type */
        snprintf(p, sizeof p, "%s/magic%s", dir, gz ? ".gz" : "");
        write_idx(p, gz, 0x504b0304, 3, d3, px, 600);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "bad magic"), "bad magic gz=%d: %s", gz, err);
        snprintf(p, sizeof p, "%s/float%s", dir, gz ? ".gz" : "");
        write_idx(p, gz, 0x0d03, 3, d3, px, 600);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "type 0x0d"), "float type gz=%d: %s", gz, err);
        /* extra trailing bytes */
        snprintf(p, sizeof p, "%s/extra%s", dir, gz ? ".gz" : "");
        int d5[3] = {5, 10, 10};
        write_idx(p, gz, 0x803, 3, d5, px, 600);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "trailing"), "extra bytes gz=%d: %s", gz, err);
        /* empty file */
        snprintf(p, sizeof p, "%s/empty%s", dir, gz ? ".gz" : "");
        write_bytes(p, gz, "", 0);
        rc = ssl_idx_read(p, &nd, dims, &data, err);
        CHECK(rc == SSL_EFORMAT && has(err, p, "truncated"), "empty gz=%d: %s", gz, err);
    }
    /* a gzip stream cut in half */
    snprintf(p, sizeof p, "%s/ok.gz", dir);
    FILE *f = fopen(p, "rb");
    uint8_t gzbuf[4096];
    size_t gzn = fread(gzbuf, 1, sizeof gzbuf, f);
    fclose(f);
    snprintf(p, sizeof p, "%s/cut.gz", dir);
    write_bytes(p, 0, gzbuf, gzn / 2);
    int rc = ssl_idx_read(p, &nd, dims, &data, err);
    CHECK(rc == SSL_EFORMAT && strstr(err, p), "cut gzip: %s", err);
    snprintf(p, sizeof p, "%s/missing", dir);
    rc = ssl_idx_read(p, &nd, dims, &data, err);
    CHECK(rc == SSL_EIO && has(err, p, "cannot open"), "missing: %s", err);
}

static void test_idx_dataset(void)
{
    char dir[512], p[600], err[SSL_ERR_LEN];
    ssl_dataset ds;
    make_dir(dir, "mn");
    make_idx_dir(dir, 7, 5, 4);
    for (int train = 0; train < 2; train++) {
        int rc = ssl_dataset_load(&ds, dir, train, err);
        CHECK(rc == SSL_OK && ds.n == 7 && ds.c == 1 && ds.h == 5 && ds.w == 4 &&
                  ds.n_classes == 10,
              "idx folder train=%d: %s", train, err);
        if (rc) continue;
        CHECK(ds.images[3 * 20 + 2 * 4 + 1] == 3 + 2 + 1 && ds.labels[6] == 6, "idx content");
        CHECK(strstr(ds.source, train ? "train-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte"),
              "source %s", ds.source);
        ssl_dataset_free(&ds);
    }
    /* label count mismatch */
    uint8_t lab[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    int d1[1] = {6};
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte.gz", dir);
    write_idx(p, 1, 0x801, 1, d1, lab, 6);
    int rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EFORMAT && has(err, p, "6 labels") && has(err, "7 images", NULL),
          "count mismatch: %s", err);
    CHECK(ds.images == NULL && ds.n == 0, "failed load leaves ds empty");
    /* label out of range */
    lab[4] = 10;
    d1[0] = 7;
    write_idx(p, 1, 0x801, 1, d1, lab, 7);
    rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EFORMAT && has(err, p, "label 10") && has(err, "out of range", NULL),
          "label range: %s", err);
    /* images file given where labels belong */
    int d3[3] = {7, 1, 1};
    write_idx(p, 1, 0x803, 3, d3, lab, 7);
    rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EFORMAT && has(err, p, "label file"), "labels as images: %s", err);
    /* missing labels file */
    unlink(p);
    rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EIO && has(err, dir, "train-labels-idx1-ubyte"), "missing labels: %s", err);
}

/* CIFAR records: label(s) + 3072 pixels; pixel value encodes record and channel. */
static void write_cifar(const char *path, int n, int cifar100, int first, int bad_label)
{
    size_t rec = cifar100 ? 3074 : 3073;
    uint8_t *buf = calloc((size_t)n, rec);
    for (int i = 0; i < n; i++) {
        uint8_t *r = buf + (size_t)i * rec;
        if (cifar100) {
            r[0] = (uint8_t)((first + i) % 20);
            r[1] = (uint8_t)((first + i) % 100 + (bad_label ? 100 : 0));
        } else {
            r[0] = (uint8_t)((first + i) % 10 + (bad_label ? 10 : 0));
        }
        for (int k = 0; k < 3; k++) memset(r + rec - 3072 + k * 1024, (first + i) * 3 + k, 1024);
    }
    write_bytes(path, 0, buf, (size_t)n * rec);
    free(buf);
}

static void test_cifar(void)
{
    char dir[512], p[600], err[SSL_ERR_LEN];
    ssl_dataset ds;
    make_dir(dir, "c10");
    for (int b = 1; b <= 5; b++) {
        snprintf(p, sizeof p, "%s/data_batch_%d.bin", dir, b);
        write_cifar(p, 2, 0, 2 * (b - 1), 0);
    }
    snprintf(p, sizeof p, "%s/test_batch.bin", dir);
    write_cifar(p, 3, 0, 0, 0);
    int rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_OK && ds.n == 10 && ds.c == 3 && ds.h == 32 && ds.n_classes == 10,
          "cifar10 train: %s", err);
    if (!rc) {
        CHECK(ds.labels[7] == 7 && ds.images[(size_t)7 * 3072 + 2 * 1024 + 5] == 7 * 3 + 2,
              "cifar10 content");
        ssl_dataset_free(&ds);
    }
    rc = ssl_dataset_load(&ds, dir, 0, err);
    CHECK(rc == SSL_OK && ds.n == 3, "cifar10 test: %s", err);
    ssl_dataset_free(&ds);
    /* wrong size */
    snprintf(p, sizeof p, "%s/data_batch_3.bin", dir);
    FILE *f = fopen(p, "ab");
    fputc(1, f);
    fclose(f);
    rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EFORMAT && has(err, p, "not a whole number of 3073-byte"), "cifar size: %s",
          err);
    /* bad label */
    write_cifar(p, 2, 0, 4, 1);
    rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EFORMAT && has(err, p, "out of range"), "cifar label: %s", err);
    /* missing batch */
    unlink(p);
    rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EIO && has(err, p, "cannot open"), "cifar missing batch: %s", err);

    /* CIFAR-100, also found inside the archive's folder name */
    char top[400];
    make_dir(top, "c100");
    snprintf(dir, sizeof dir, "%s/cifar-100-binary", top);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/train.bin", dir);
    write_cifar(p, 4, 1, 97, 0);
    snprintf(p, sizeof p, "%s/test.bin", dir);
    write_cifar(p, 1, 1, 0, 0);
    rc = ssl_dataset_load(&ds, top, 1, err);
    CHECK(rc == SSL_OK && ds.n == 4 && ds.n_classes == 100 && ds.labels[0] == 97 &&
              ds.labels[3] == 0,
          "cifar100 fine labels: %s", err);
    ssl_dataset_free(&ds);
    snprintf(p, sizeof p, "%s/train.bin", dir);
    write_bytes(p, 0, "abc", 3);
    rc = ssl_dataset_load(&ds, top, 1, err);
    CHECK(rc == SSL_EFORMAT && has(err, p, "3074-byte"), "cifar100 size: %s", err);
}

static void test_missing(void)
{
    char err[SSL_ERR_LEN], dir[512];
    ssl_dataset ds;
    int rc = ssl_dataset_load(&ds, "foo", 1, err);
    CHECK(rc == SSL_EIO && has(err, "dataset 'foo': no such named dataset or folder", NULL),
          "unknown: %s", err);
    make_dir(dir, "empty");
    rc = ssl_dataset_load(&ds, dir, 1, err);
    CHECK(rc == SSL_EIO && has(err, dir, "no dataset files"), "empty folder: %s", err);
    struct stat st;
    if (stat("/usr/share/datasets/mnist", &st) != 0) {
        rc = ssl_dataset_load(&ds, "mnist", 1, err);
        CHECK(rc == SSL_EIO && has(err, "/usr/share/datasets/mnist not found", NULL),
              "mnist missing: %s", err);
    }
}

/* ---- augmentation ---- */

static void plain_aug(ssl_aug *a, int c, int h, int w)
{
    ssl_aug_eval(a, c, h, w);
    for (int k = 0; k < 3; k++) {
        a->mean[k] = 0;
        a->std[k] = 1;
    }
}

static void test_augment(void)
{
    enum { C = 3, H = 16, W = 16, N = C * H * W };
    uint8_t img[N];
    ssl_rng r;
    ssl_rng_seed(&r, 5);
    for (int i = 0; i < N; i++) img[i] = (uint8_t)ssl_rng_below(&r, 256);
    float a1[N], a2[N], scr[2 * N];
    ssl_aug a;
    ssl_aug_simclr(&a, C, H, W);
    CHECK(ssl_aug_scratch_floats(&a, C, H, W) <= 2 * N, "scratch size");
    a.blur_p = 0.5f; /* exercise every op */
    a.solarize_p = 0.2f;
    int same = 1, differ = 0;
    for (int s = 0; s < 20; s++) {
        ssl_rng_derive(&r, 42, (uint64_t)s, 0);
        ssl_aug_apply(&a, img, C, H, W, a1, scr, &r);
        ssl_rng_derive(&r, 42, (uint64_t)s, 0);
        ssl_aug_apply(&a, img, C, H, W, a2, scr, &r);
        same &= memcmp(a1, a2, sizeof a1) == 0;
        ssl_rng_derive(&r, 43, (uint64_t)s, 0);
        ssl_aug_apply(&a, img, C, H, W, a2, scr, &r);
        differ += memcmp(a1, a2, sizeof a1) != 0;
        for (int i = 0; i < N; i++) {
            float lo = (0 - a.mean[i / (H * W)]) / a.std[i / (H * W)] - 1e-4f;
            float hi = (1 - a.mean[i / (H * W)]) / a.std[i / (H * W)] + 1e-4f;
            if (!(a1[i] >= lo && a1[i] <= hi)) {
                same = 0;
                break;
            }
        }
    }
    CHECK(same, "same seed must give identical, in-range output");
    CHECK(differ == 20, "different seeds gave the same output %d times", 20 - differ);

    /* Full-size crop with ratio 1 on a square image is the identity. */
    ssl_aug p;
    plain_aug(&p, C, H, W);
    p.crop_scale_min = p.crop_scale_max = 1;
    p.crop_ratio_min = p.crop_ratio_max = 1;
    int ident = 1;
    for (int s = 0; s < 5; s++) {
        ssl_rng_seed(&r, (uint64_t)s);
        ssl_aug_apply(&p, img, C, H, W, a1, scr, &r);
        for (int i = 0; i < N; i++) ident &= a1[i] == (float)img[i] / 255.0f;
    }
    CHECK(ident, "scale (1,1) ratio (1,1) crop is not the identity");

    /* Flip with p = 1 is an exact mirror. */
    p.flip_p = 1;
    ssl_aug_apply(&p, img, C, H, W, a1, scr, &r);
    int mirror = 1;
    for (int k = 0; k < C; k++)
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                mirror &= a1[(k * H + y) * W + x] == (float)img[(k * H + y) * W + W - 1 - x] / 255.0f;
    CHECK(mirror, "flip is not a mirror");

    /* Solarize: x >= t -> 1 - x, including x == t. */
    uint8_t ramp[256];
    for (int i = 0; i < 256; i++) ramp[i] = (uint8_t)i;
    float so[256], sscr[512];
    ssl_aug q;
    plain_aug(&q, 1, 16, 16);
    q.solarize_p = 1;
    q.solarize_threshold = 100.0f / 255.0f;
    ssl_aug_apply(&q, ramp, 1, 16, 16, so, sscr, &r);
    int sol = 1;
    for (int i = 0; i < 256; i++) {
        float x = (float)i / 255.0f;
        sol &= so[i] == (i >= 100 ? 1.0f - x : x);
    }
    CHECK(sol, "solarize semantics");

    /* Random crops of a constant image stay constant (bilinear weights sum to 1). */
    uint8_t flat[N];
    memset(flat, 77, sizeof flat);
    ssl_aug cr;
    plain_aug(&cr, C, H, W);
    cr.out_h = 11;
    cr.out_w = 9;
    cr.crop_scale_min = 0.08f;
    cr.crop_ratio_min = 0.75f;
    cr.crop_ratio_max = 4.0f / 3.0f;
    cr.blur_p = 1;
    cr.blur_kernel = 5;
    ssl_aug_apply(&cr, flat, C, H, W, a1, scr, &r);
    int cst = 1;
    for (int i = 0; i < C * 11 * 9; i++) cst &= fabsf(a1[i] - 77.0f / 255.0f) < 1e-5f;
    CHECK(cst, "crop+blur of a constant image");

    /* Grayscale makes the channels equal. */
    plain_aug(&cr, C, H, W);
    cr.gray_p = 1;
    ssl_aug_apply(&cr, img, C, H, W, a1, scr, &r);
    int gray = 1;
    for (int i = 0; i < H * W; i++) gray &= a1[i] == a1[H * W + i] && a1[i] == a1[2 * H * W + i];
    CHECK(gray, "grayscale channels differ");

    /* A near-zero hue shift is the identity (rgb -> hsv -> rgb round trip). */
    plain_aug(&cr, C, H, W);
    cr.jitter_p = 1;
    cr.hue = 1e-7f;
    ssl_aug_apply(&cr, img, C, H, W, a1, scr, &r);
    plain_aug(&cr, C, H, W);
    ssl_aug_apply(&cr, img, C, H, W, a2, scr, &r);
    CHECK_CLOSE(a1, a2, N, 1e-5, 0, "hue round trip");

    /* Resize golden from torch.nn.functional.interpolate(bilinear, align_corners=False). */
    static const uint8_t tiny[6] = {0, 255, 30, 255, 0, 100};
    static const float up[15] = {0.0f, 0.40000004f, 0.99999994f, 0.47058815f, 0.11764706f,
                                 0.5f, 0.5f, 0.5f, 0.35294116f, 0.25490198f,
                                 1.0f, 0.5999999f, 2.3374371e-08f, 0.23529413f, 0.39215687f};
    static const float down[2] = {0.5f, 0.31617647f};
    float o[15], tscr[64];
    plain_aug(&cr, 1, 3, 5);
    ssl_aug_apply(&cr, tiny, 1, 2, 3, o, tscr, &r);
    CHECK_CLOSE(o, up, 15, 1e-6, 1e-5, "bilinear upsample 2x3 -> 3x5");
    plain_aug(&cr, 1, 1, 2);
    ssl_aug_apply(&cr, tiny, 1, 2, 3, o, tscr, &r);
    CHECK_CLOSE(o, down, 2, 1e-6, 1e-5, "bilinear downsample 2x3 -> 1x2");
}

/* ---- loader ---- */

/* n images of c x h x w; index-coded (pixel = i, label = i) or random. */
static void make_ds(ssl_dataset *ds, int n, int c, int h, int w, int coded)
{
    memset(ds, 0, sizeof *ds);
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->n_classes = n;
    ds->images = malloc((size_t)n * c * h * w);
    ds->labels = malloc((size_t)n * sizeof(int32_t));
    ssl_rng r;
    ssl_rng_seed(&r, 9);
    for (int i = 0; i < n; i++) {
        ds->labels[i] = i;
        for (int p = 0; p < c * h * w; p++)
            ds->images[(size_t)i * c * h * w + p] =
                (uint8_t)(coded ? i : (int)ssl_rng_below(&r, 256));
    }
    snprintf(ds->source, sizeof ds->source, "synthetic");
}

/* Runs `steps` batches and returns all view floats concatenated (malloc'd). */
static float *run_loader(const ssl_dataset *ds, const ssl_aug *augs, int nv, int batch,
                         int workers, int steps, size_t *per_step)
{
    char err[SSL_ERR_LEN];
    ssl_loader *l;
    if (ssl_loader_create(&l, ds, augs, nv, batch, 77, workers, err) != SSL_OK) {
        CHECK(0, "loader create: %s", err);
        return NULL;
    }
    size_t sz = 0;
    for (int v = 0; v < nv; v++) sz += (size_t)batch * ds->c * augs[v].out_h * augs[v].out_w;
    *per_step = sz;
    float *all = malloc((size_t)steps * sz * sizeof(float));
    for (int s = 0; s < steps; s++) {
        float *const *views;
        const int32_t *labels;
        int e, st;
        ssl_loader_next(l, &views, &labels, &e, &st, err);
        size_t off = (size_t)s * sz;
        for (int v = 0; v < nv; v++) {
            size_t n = (size_t)batch * ds->c * augs[v].out_h * augs[v].out_w;
            memcpy(all + off, views[v], n * sizeof(float));
            off += n;
        }
    }
    ssl_loader_free(l);
    return all;
}

static void test_loader(void)
{
    char err[SSL_ERR_LEN];
    ssl_dataset ds;

    /* Coverage: each image exactly once per epoch; pixels match labels. */
    make_ds(&ds, 48, 1, 8, 8, 1);
    ssl_aug a[2];
    ssl_aug_simclr(&a[0], 1, 8, 8);
    a[0].jitter_p = 0; /* keep the index-coded pixels readable */
    for (int k = 0; k < 3; k++) {
        a[0].mean[k] = 0;
        a[0].std[k] = 1;
    }
    a[1] = a[0];
    a[1].out_h = a[1].out_w = 5;
    ssl_loader *l;
    int rc = ssl_loader_create(&l, &ds, a, 2, 8, 3, 2, err);
    CHECK(rc == SSL_OK && ssl_loader_steps_per_epoch(l) == 6, "create: %s", err);
    int seen[2][48] = {{0}}, order_same = 1, pix_ok = 1, pos_ok = 1, stream_ok = 1;
    int32_t first[48];
    for (int s = 0; s < 12; s++) {
        float *const *views;
        const int32_t *labels;
        int e, st;
        ssl_loader_next(l, &views, &labels, &e, &st, err);
        pos_ok &= e == s / 6 && st == s % 6;
        for (int i = 0; i < 8; i++) {
            int lab = labels[i];
            if (lab >= 0 && lab < 48) seen[s / 6][lab]++;
            if (s < 6) first[s * 8 + i] = lab;
            else order_same &= first[(s - 6) * 8 + i] == lab;
            for (int v = 0; v < 2; v++) { /* the documented per-sample stream */
                float want[64], scr[128];
                ssl_rng r;
                ssl_rng_derive(&r, 3, (uint64_t)e * 48 + (uint64_t)lab, (uint64_t)v);
                ssl_aug_apply(&a[v], ds.images + (size_t)lab * 64, 1, 8, 8, want, scr, &r);
                int nv = a[v].out_h * a[v].out_w;
                stream_ok &= memcmp(views[v] + i * nv, want, (size_t)nv * sizeof(float)) == 0;
            }
            for (int p = 0; p < 64; p++) pix_ok &= fabsf(views[0][i * 64 + p] - lab / 255.0f) < 1e-5f;
            for (int p = 0; p < 25; p++) pix_ok &= fabsf(views[1][i * 25 + p] - lab / 255.0f) < 1e-5f;
        }
    }
    int once = 1;
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 48; i++) once &= seen[e][i] == 1;
    CHECK(once, "every image exactly once per epoch");
    CHECK(pix_ok, "views belong to their labels");
    CHECK(pos_ok, "epoch/step out-params");
    CHECK(stream_ok, "view v of sample i in epoch e must use ssl_rng_derive(seed, e*n+i, v)");
    CHECK(!order_same, "epochs 0 and 1 have the same order");
    ssl_loader_free(l);
    CHECK(ssl_loader_create(&l, &ds, a, 2, 49, 3, 2, err) == SSL_EINVAL && strstr(err, "batch"),
          "batch > n: %s", err);
    CHECK(ssl_loader_create(&l, &ds, a, 0, 8, 3, 2, err) == SSL_EINVAL, "0 views");
    ssl_dataset_free(&ds);

    /* Same seed: identical bytes with 0, 1 and 2 workers, over 2+ epochs. */
    make_ds(&ds, 40, 3, 12, 12, 0);
    ssl_aug_simclr(&a[0], 3, 12, 12);
    a[0].blur_p = 0.5f;
    a[1] = a[0];
    a[1].out_h = a[1].out_w = 7;
    size_t per = 0;
    float *r0 = run_loader(&ds, a, 2, 8, 0, 15, &per);
    float *r1 = run_loader(&ds, a, 2, 8, 1, 15, &per);
    float *r2 = run_loader(&ds, a, 2, 8, 2, 15, &per);
    CHECK(r0 && r1 && r2 && memcmp(r0, r1, 15 * per * sizeof(float)) == 0 &&
              memcmp(r0, r2, 15 * per * sizeof(float)) == 0,
          "batches differ between worker counts");

    /* Seek reproduces batches, forward and backward, while workers run ahead. */
    rc = ssl_loader_create(&l, &ds, a, 2, 8, 77, 2, err);
    int seek_ok = rc == SSL_OK;
    static const int targets[][2] = {{1, 2}, {0, 0}, {2, 2}, {0, 4}};
    for (int t = 0; seek_ok && t < 4; t++) {
        float *const *views;
        int e, st;
        ssl_loader_next(l, &views, NULL, &e, &st, err); /* get workers going */
        ssl_loader_seek(l, targets[t][0], targets[t][1]);
        for (int k = 0; k < 2; k++) {
            ssl_loader_next(l, &views, NULL, &e, &st, err);
            int g = targets[t][0] * 5 + targets[t][1] + k;
            seek_ok &= e == g / 5 && st == g % 5;
            seek_ok &= memcmp(views[0], r0 + (size_t)g * per, 8 * 432 * sizeof(float)) == 0;
            seek_ok &= memcmp(views[1], r0 + (size_t)g * per + 8 * 432, 8 * 147 * sizeof(float)) == 0;
        }
    }
    CHECK(seek_ok, "seek did not reproduce the batch");
    ssl_loader_free(l);
    free(r0);
    free(r1);
    free(r2);
    ssl_dataset_free(&ds);

    /* Free while workers are mid-batch, and free without any next(). */
    make_ds(&ds, 1200, 3, 32, 32, 0);
    ssl_aug_simclr(&a[0], 3, 32, 32);
    a[1] = a[0];
    rc = ssl_loader_create(&l, &ds, a, 2, 400, 1, 2, err);
    CHECK(rc == SSL_OK, "big loader: %s", err);
    if (!rc) {
        float *const *views;
        ssl_loader_next(l, &views, NULL, NULL, NULL, err);
        ssl_loader_free(l);
    }
    rc = ssl_loader_create(&l, &ds, a, 2, 400, 1, 2, err);
    if (!rc) ssl_loader_free(l);
    CHECK(rc == SSL_OK, "loader free right after create");
    ssl_loader_free(NULL);

    /* to_float matches per-image eval augmentation. */
    ssl_dataset sm = ds;
    sm.n = 3;
    ssl_aug ev;
    ssl_aug_eval(&ev, 3, 32, 32);
    float *x = malloc((size_t)3 * 3072 * sizeof(float)), *y = malloc(3072 * sizeof(float));
    float *scr = malloc(ssl_aug_scratch_floats(&ev, 3, 32, 32) * sizeof(float));
    CHECK(ssl_dataset_to_float(&sm, &ev, x) == SSL_OK, "to_float");
    ssl_rng r;
    ssl_rng_seed(&r, 0);
    ssl_aug_apply(&ev, ds.images + 2 * 3072, 3, 32, 32, y, scr, &r);
    CHECK(memcmp(x + 2 * 3072, y, 3072 * sizeof(float)) == 0, "to_float vs aug_apply");
    free(x);
    free(y);
    free(scr);
    ssl_dataset_free(&ds);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/selfsup_test_data_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_fashion_mnist();
    test_idx_files();
    test_idx_dataset();
    test_cifar();
    test_missing();
    test_augment();
    test_loader();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_report("data");
}
