/* Evaluation: weighted k-NN against a hand-worked case and a brute-force
 * reference; logistic regression gradients, convergence and agreement with
 * torch.optim.LBFGS; the linear probe's lambda search ignoring the test set.
 * SELFSUP_EVAL_BENCH=1 also times both on Fashion-MNIST raw pixels (prints only). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "selfsup/eval.h"
#include "selfsup/ops.h"

/* Gaussian blobs: class c centred at a random point of norm `spread`, unit noise.
 * X (n, d), y (n). */
static void make_blobs(float *X, int32_t *y, int n, int d, int C, float spread,
                       uint64_t seed)
{
    ssl_rng r;
    ssl_rng_seed(&r, seed);
    float *centers = malloc(sizeof(float) * C * d);
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int j = 0; j < d; j++) {
            centers[c * d + j] = ssl_rng_normal(&r);
            s += centers[c * d + j] * centers[c * d + j];
        }
        for (int j = 0; j < d; j++) centers[c * d + j] *= spread / (float)sqrt(s);
    }
    for (int i = 0; i < n; i++) {
        y[i] = (int32_t)ssl_rng_below(&r, (uint32_t)C);
        for (int j = 0; j < d; j++) X[i * d + j] = centers[y[i] * d + j] + ssl_rng_normal(&r);
    }
    free(centers);
}

/* ---- k-NN ---- */

static void test_knn_hand(void)
{
    char err[SSL_ERR_LEN];
    /* class 0 at cos 0.99 of test row 0 (scaled by 3: normalization must undo
     * it), two class-1 rows at cos 0.9, class 2 at (-1,0) and (0,1) */
    float s = sqrtf(1.0f - 0.99f * 0.99f), t = sqrtf(1.0f - 0.81f);
    float train[] = {3 * 0.99f, 3 * s, 0.9f, t, 0.9f, -t, -1, 0, 0, 1};
    int32_t ytr[] = {0, 1, 1, 2, 2};
    /* test 0 = (1,0), class 0; test 1 near (-1,0), class 2 */
    float test[] = {2, 0, -1, 0.05f};
    int32_t yte[] = {0, 2};
    int ks[] = {1, 3};
    double top1[2];
    /* T = 1: at k=3 the two class-1 votes 2 e^0.9 = 4.92 beat e^0.99 = 2.69 */
    int rc = ssl_knn_eval(train, ytr, 5, test, yte, 2, 2, 3, ks, 2, 1.0f, top1, err);
    CHECK(rc == SSL_OK, "knn hand: %s", err);
    CHECK(top1[0] == 1.0 && top1[1] == 0.5, "knn hand T=1: %g %g (want 1 0.5)", top1[0],
          top1[1]);
    /* T = 0.01: e^99 beats 2 e^90, so k=3 agrees with k=1 */
    rc = ssl_knn_eval(train, ytr, 5, test, yte, 2, 2, 3, ks, 2, 0.01f, top1, err);
    CHECK(rc == SSL_OK && top1[0] == 1.0 && top1[1] == 1.0, "knn hand T=0.01: %g %g", top1[0],
          top1[1]);
    /* k = n_train, T huge ~ plain counts: for test 0 classes 1 and 2 tie 2:2 and
     * class 1's higher similarities decide (wrong); test 1 stays right */
    int kall = 5;
    rc = ssl_knn_eval(train, ytr, 5, test, yte, 2, 2, 3, &kall, 1, 1000.0f, top1, err);
    CHECK(rc == SSL_OK && top1[0] == 0.5, "knn hand k=n: %g (want 0.5)", top1[0]);

    /* errors */
    int kbig = 6, kzero = 0;
    rc = ssl_knn_eval(train, ytr, 5, test, yte, 2, 2, 3, &kbig, 1, 1.0f, top1, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "k=6"), "k > n_train: rc %d, %s", rc, err);
    rc = ssl_knn_eval(train, ytr, 5, test, yte, 2, 2, 3, &kzero, 1, 1.0f, top1, err);
    CHECK(rc == SSL_EINVAL, "k = 0: rc %d", rc);
    rc = ssl_knn_eval(train, ytr, 5, test, yte, 2, 2, 3, ks, 2, 0.0f, top1, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "temperature"), "T = 0: rc %d, %s", rc, err);
    rc = ssl_knn_eval(train, ytr, 5, test, yte, 2, 2, 2, ks, 2, 1.0f, top1, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "label 2"), "label out of range: rc %d, %s", rc,
          err);
    float bad[] = {1, NAN, 0, 1};
    rc = ssl_knn_eval(train, ytr, 5, bad, yte, 2, 2, 3, ks, 2, 1.0f, top1, err);
    CHECK(rc == SSL_ENAN && strstr(err, "test") && strstr(err, "row 0"), "NaN test: rc %d, %s",
          rc, err);
}

typedef struct ref_item {
    double sim;
    int idx;
} ref_item;

static int ref_cmp(const void *a, const void *b)
{
    const ref_item *x = a, *y = b;
    if (x->sim != y->sim) return x->sim > y->sim ? -1 : 1;
    return x->idx - y->idx;
}

/* Full sort per test row, in double. Returns accuracy for k. */
static double knn_brute(const float *tr, const int32_t *ytr, int ntr, const float *te,
                        const int32_t *yte, int nte, int d, int C, int k, double T)
{
    ref_item *items = malloc(sizeof(ref_item) * ntr);
    double *votes = malloc(sizeof(double) * C);
    long hit = 0;
    for (int i = 0; i < nte; i++) {
        double na = 0;
        for (int j = 0; j < d; j++) na += (double)te[i * d + j] * te[i * d + j];
        for (int m = 0; m < ntr; m++) {
            double nb = 0, dp = 0;
            for (int j = 0; j < d; j++) {
                nb += (double)tr[m * d + j] * tr[m * d + j];
                dp += (double)te[i * d + j] * tr[m * d + j];
            }
            items[m] = (ref_item){dp / sqrt(na * nb), m};
        }
        qsort(items, ntr, sizeof(ref_item), ref_cmp);
        for (int c = 0; c < C; c++) votes[c] = 0;
        for (int m = 0; m < k; m++) votes[ytr[items[m].idx]] += exp(items[m].sim / T);
        int best = 0;
        for (int c = 1; c < C; c++)
            if (votes[c] > votes[best]) best = c;
        hit += best == yte[i];
    }
    free(items);
    free(votes);
    return (double)hit / nte;
}

static void test_knn_random(void)
{
    char err[SSL_ERR_LEN];
    int ntr = 500, nte = 300, d = 16, C = 5; /* 300 test rows: 3 blocks, last partial */
    /* one draw split in two, so train and test share the class centres */
    float *tr = malloc(sizeof(float) * (ntr + nte) * d), *te = tr + ntr * d;
    int32_t *ytr = malloc(sizeof(int32_t) * (ntr + nte)), *yte = ytr + ntr;
    make_blobs(tr, ytr, ntr + nte, d, C, 2.0f, 11);
    int ks[] = {1, 5, 20, 200, 500};
    double top1[5];
    float T = 0.1f;
    int rc = ssl_knn_eval(tr, ytr, ntr, te, yte, nte, d, C, ks, 5, T, top1, err);
    CHECK(rc == SSL_OK, "knn random: %s", err);
    for (int q = 0; q < 5; q++) {
        double ref = knn_brute(tr, ytr, ntr, te, yte, nte, d, C, ks[q], T);
        /* float vs double similarities may swap one near-tie */
        CHECK(fabs(top1[q] - ref) <= 1.0 / nte + 1e-12, "knn k=%d: %g vs reference %g", ks[q],
              top1[q], ref);
        CHECK(top1[q] > 1.0 / C, "knn k=%d: accuracy %g not above chance", ks[q], top1[q]);
    }
    /* one k at a time gives the same as all at once */
    double one;
    rc = ssl_knn_eval(tr, ytr, ntr, te, yte, nte, d, C, &ks[2], 1, T, &one, err);
    CHECK(rc == SSL_OK && one == top1[2], "knn single k=20: %g vs %g", one, top1[2]);
    free(tr); free(ytr);
}

/* ---- logistic regression ---- */

static void test_logreg_grad(void)
{
    char err[SSL_ERR_LEN];
    int n = 40, d = 6, C = 4;
    double lambda = 0.03;
    float X[40 * 6], W[6 * 4], b[4], gW[6 * 4], gb[4];
    int32_t y[40];
    make_blobs(X, y, n, d, C, 1.0f, 3);
    ssl_rng r;
    ssl_rng_seed(&r, 5);
    for (int i = 0; i < d * C; i++) W[i] = 0.5f * ssl_rng_normal(&r);
    for (int c = 0; c < C; c++) b[c] = 0.5f * ssl_rng_normal(&r);
    double f;
    int rc = ssl_logreg_loss(X, y, n, d, C, lambda, W, b, &f, gW, gb, err);
    CHECK(rc == SSL_OK && isfinite(f), "logreg loss: %s", err);
    const float eps = 1.0f / 128;
    double worst = 0;
    for (int i = 0; i < d * C + C; i++) {
        float *p = i < d * C ? &W[i] : &b[i - d * C];
        float g = i < d * C ? gW[i] : gb[i - d * C];
        float keep = *p;
        double fp, fm;
        *p = keep + eps;
        ssl_logreg_loss(X, y, n, d, C, lambda, W, b, &fp, NULL, NULL, err);
        *p = keep - eps;
        ssl_logreg_loss(X, y, n, d, C, lambda, W, b, &fm, NULL, NULL, err);
        *p = keep;
        double fd = (fp - fm) / (2.0 * eps);
        double e = fabs(fd - g) / (2e-4 + 1e-2 * fabs(fd));
        if (e > worst) worst = e;
    }
    CHECK(worst <= 1.0, "logreg gradient vs finite differences: worst ratio %g", worst);
}

static void test_logreg_fit(void)
{
    char err[SSL_ERR_LEN];
    int n = 300, d = 10, C = 3;
    float *X = malloc(sizeof(float) * n * d), W[10 * 3] = {0}, b[3] = {0};
    int32_t *y = malloc(sizeof(int32_t) * n), *pred = malloc(sizeof(int32_t) * n);
    make_blobs(X, y, n, d, C, 12.0f, 21); /* far apart: separable */
    int iters = 0;
    double loss = 0;
    int rc = ssl_logreg_fit(X, y, n, d, C, 1e-6, 500, W, b, &iters, &loss, err);
    CHECK(rc == SSL_OK, "logreg fit separable: %s", err);
    ssl_logreg_predict(X, n, d, C, W, b, pred, err);
    int hit = 0;
    for (int i = 0; i < n; i++) hit += pred[i] == y[i];
    CHECK(hit == n, "separable: train accuracy %d / %d", hit, n);
    CHECK(loss < 0.01, "separable: final loss %g", loss);

    /* moderately regularized: converged means a tiny gradient, and the reported
     * loss is the objective at the returned point */
    make_blobs(X, y, n, d, C, 2.0f, 22);
    memset(W, 0, sizeof(W));
    memset(b, 0, sizeof(b));
    rc = ssl_logreg_fit(X, y, n, d, C, 1e-2, 500, W, b, &iters, &loss, err);
    CHECK(rc == SSL_OK && iters > 1 && iters < 500, "logreg fit: rc %d iters %d: %s", rc,
          iters, err);
    float gW[30], gb[3];
    double f;
    ssl_logreg_loss(X, y, n, d, C, 1e-2, W, b, &f, gW, gb, err);
    double gmax = 0;
    for (int i = 0; i < d * C; i++) gmax = fmax(gmax, fabs(gW[i]));
    for (int c = 0; c < C; c++) gmax = fmax(gmax, fabs(gb[c]));
    CHECK(gmax < 1e-4, "logreg fit: gradient at optimum %g", gmax);
    CHECK(fabs(f - loss) <= 1e-6 * f, "logreg fit: reported loss %.9g vs recomputed %.9g", loss,
          f);

    /* bad input */
    int32_t y1[300];
    for (int i = 0; i < n; i++) y1[i] = 2;
    rc = ssl_logreg_fit(X, y1, n, d, C, 1e-2, 100, W, b, NULL, NULL, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "one class"), "one class: rc %d, %s", rc, err);
    y1[7] = 3;
    rc = ssl_logreg_fit(X, y1, n, d, C, 1e-2, 100, W, b, NULL, NULL, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "row 7"), "label out of range: rc %d, %s", rc, err);
    rc = ssl_logreg_fit(X, y, n, d, 1, 1e-2, 100, W, b, NULL, NULL, err);
    CHECK(rc == SSL_EINVAL, "n_classes 1: rc %d", rc);
    rc = ssl_logreg_fit(X, y, n, d, C, -1.0, 100, W, b, NULL, NULL, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "lambda"), "negative lambda: rc %d, %s", rc, err);
    X[5 * d + 3] = NAN;
    rc = ssl_logreg_fit(X, y, n, d, C, 1e-2, 100, W, b, NULL, NULL, err);
    CHECK(rc == SSL_ENAN && strstr(err, "non-finite"), "NaN feature: rc %d, %s", rc, err);
    free(X); free(y); free(pred);
}

/* Reads the problem written by the C side, fits the same objective with
 * torch.optim.LBFGS (strong Wolfe, float64), writes loss, predictions, W, b. */
static const char *torch_script =
    "import struct, sys\n"
    "import numpy as np, torch\n"
    "raw = open(sys.argv[1], 'rb').read()\n"
    "n, d, C = struct.unpack('<3i', raw[:12]); lam, = struct.unpack('<d', raw[12:20])\n"
    "X = torch.tensor(np.frombuffer(raw, np.float32, n * d, 20).astype(np.float64)).reshape(n, d)\n"
    "y = torch.tensor(np.frombuffer(raw, np.int32, n, 20 + 4 * n * d).astype(np.int64))\n"
    "W = torch.zeros(d, C, dtype=torch.float64, requires_grad=True)\n"
    "b = torch.zeros(C, dtype=torch.float64, requires_grad=True)\n"
    "opt = torch.optim.LBFGS([W, b], lr=1, max_iter=2000, history_size=10, tolerance_grad=1e-12,\n"
    "                        tolerance_change=1e-15, line_search_fn='strong_wolfe')\n"
    "def obj():\n"
    "    return torch.nn.functional.cross_entropy(X @ W + b, y) + lam / 2 * (W * W).sum()\n"
    "def closure():\n"
    "    opt.zero_grad(); f = obj(); f.backward(); return f\n"
    "for _ in range(3): opt.step(closure)\n"
    "with torch.no_grad():\n"
    "    f = obj().item(); pred = (X @ W + b).argmax(1).numpy().astype(np.int32)\n"
    "    with open(sys.argv[2], 'wb') as o:\n"
    "        o.write(struct.pack('<d', f)); o.write(pred.tobytes())\n"
    "        o.write(W.numpy().tobytes()); o.write(b.numpy().tobytes())\n";

static void test_logreg_torch(void)
{
    char err[SSL_ERR_LEN];
    int n = 300, d = 8, C = 4;
    double lambda = 1e-2;
    float *X = malloc(sizeof(float) * n * d), W[8 * 4] = {0}, b[4] = {0};
    int32_t *y = malloc(sizeof(int32_t) * n), *pred = malloc(sizeof(int32_t) * n);
    make_blobs(X, y, n, d, C, 2.5f, 33);
    char in[] = "/tmp/ssl_eval_inXXXXXX", out[] = "/tmp/ssl_eval_outXXXXXX",
         py[] = "/tmp/ssl_eval_pyXXXXXX";
    int fi = mkstemp(in), fo = mkstemp(out), fp = mkstemp(py);
    CHECK(fi >= 0 && fo >= 0 && fp >= 0, "mkstemp failed");
    if (fi < 0 || fo < 0 || fp < 0) goto cleanup;
    FILE *f = fdopen(fi, "wb");
    int hdr[3] = {n, d, C};
    fwrite(hdr, sizeof(int), 3, f);
    fwrite(&lambda, sizeof(double), 1, f);
    fwrite(X, sizeof(float), (size_t)n * d, f);
    fwrite(y, sizeof(int32_t), n, f);
    fclose(f);
    f = fdopen(fp, "w");
    fputs(torch_script, f);
    fclose(f);
    close(fo);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s %s", py, in, out);
    int rc = system(cmd);
    CHECK(rc == 0, "torch reference (%s) failed with %d: needs /usr/bin/python3 with torch",
          cmd, rc);
    double tloss = NAN, tW[8 * 4], tb[4];
    int32_t tpred[300];
    f = fopen(out, "rb");
    int got = f && fread(&tloss, sizeof(double), 1, f) == 1 &&
              fread(tpred, sizeof(int32_t), n, f) == (size_t)n &&
              fread(tW, sizeof(double), d * C, f) == (size_t)(d * C) &&
              fread(tb, sizeof(double), C, f) == (size_t)C;
    if (f) fclose(f);
    CHECK(got, "torch reference output %s unreadable", out);
    if (!got) goto cleanup;

    int iters;
    double loss;
    rc = ssl_logreg_fit(X, y, n, d, C, lambda, 500, W, b, &iters, &loss, err);
    CHECK(rc == SSL_OK, "logreg fit vs torch: %s", err);
    CHECK(fabs(loss - tloss) <= 1e-4 * fabs(tloss), "loss %.9g vs torch %.9g", loss, tloss);
    ssl_logreg_predict(X, n, d, C, W, b, pred, err);
    int same = 0;
    for (int i = 0; i < n; i++) same += pred[i] == tpred[i];
    CHECK(same == n, "predictions agree with torch on %d / %d rows", same, n);
    float tWf[8 * 4 + 4];
    for (int i = 0; i < d * C; i++) tWf[i] = (float)tW[i];
    for (int c = 0; c < C; c++) tWf[d * C + c] = (float)tb[c];
    CHECK_CLOSE(W, tWf, d * C, 2e-3, 0, "W vs torch");
    CHECK_CLOSE(b, tWf + d * C, C, 2e-3, 0, "b vs torch");
cleanup:
    remove(in);
    remove(out);
    remove(py);
    free(X); free(y); free(pred);
}

/* ---- linear probe ---- */

static void test_probe(void)
{
    char err[SSL_ERR_LEN];
    int ntr = 600, nte = 200, d = 12, C = 4;
    float *tr = malloc(sizeof(float) * (ntr + nte) * d), *te = tr + ntr * d;
    int32_t *ytr = malloc(sizeof(int32_t) * (ntr + nte)), *yte = ytr + ntr;
    int32_t *yte2 = malloc(sizeof(int32_t) * nte);
    make_blobs(tr, ytr, ntr + nte, d, C, 3.0f, 41);
    ssl_linear_result a, a2, bres, s;
    int rc = ssl_linear_probe(tr, ytr, ntr, te, yte, nte, d, C, 7, &a, err);
    CHECK(rc == SSL_OK, "probe: %s", err);
    CHECK(a.test_top1 > 0.8 && a.val_top1 > 0.8, "probe accuracy test %g val %g", a.test_top1,
          a.val_top1);
    int in_grid = 0;
    for (int k = 0; k < SSL_LINEAR_N_LAMBDAS; k++) in_grid |= a.lambda == ssl_linear_lambdas[k];
    CHECK(in_grid, "probe lambda %g not from the grid", a.lambda);
    CHECK(a.iters >= 1 && isfinite(a.train_loss), "probe iters %d loss %g", a.iters,
          a.train_loss);
    /* deterministic for a seed */
    rc = ssl_linear_probe(tr, ytr, ntr, te, yte, nte, d, C, 7, &a2, err);
    CHECK(rc == SSL_OK && a2.test_top1 == a.test_top1 && a2.lambda == a.lambda &&
              a2.val_top1 == a.val_top1, "probe not deterministic");

    /* the test set plays no part in the choice: other test labels and features,
     * same lambda and held-out accuracy */
    for (int i = 0; i < nte; i++) yte2[i] = (yte[i] + 1) % C;
    float *te2 = malloc(sizeof(float) * nte * d);
    for (int i = 0; i < nte * d; i++) te2[i] = -te[i];
    rc = ssl_linear_probe(tr, ytr, ntr, te2, yte2, nte, d, C, 7, &bres, err);
    CHECK(rc == SSL_OK && bres.lambda == a.lambda && bres.val_top1 == a.val_top1,
          "probe choice changed with the test set: lambda %g vs %g, val %g vs %g", bres.lambda,
          a.lambda, bres.val_top1, a.val_top1);
    rc = ssl_linear_probe(tr, ytr, ntr, te, yte2, nte, d, C, 7, &bres, err);
    CHECK(rc == SSL_OK && bres.lambda == a.lambda && bres.test_top1 < 0.3,
          "probe with shifted test labels: lambda %g, test %g", bres.lambda, bres.test_top1);

    /* standardization: an affine change of the features barely matters */
    float *tr3 = malloc(sizeof(float) * ntr * d), *te3 = malloc(sizeof(float) * nte * d);
    for (int i = 0; i < ntr * d; i++) tr3[i] = 500.0f + 100.0f * tr[i];
    for (int i = 0; i < nte * d; i++) te3[i] = 500.0f + 100.0f * te[i];
    rc = ssl_linear_probe(tr3, ytr, ntr, te3, yte, nte, d, C, 7, &s, err);
    CHECK(rc == SSL_OK && fabs(s.test_top1 - a.test_top1) <= 0.02,
          "probe after affine rescale: %g vs %g", s.test_top1, a.test_top1);

    /* bad input */
    te3[3 * d + 1] = NAN;
    rc = ssl_linear_probe(tr, ytr, ntr, te3, yte, nte, d, C, 7, &s, err);
    CHECK(rc == SSL_ENAN && strstr(err, "test"), "probe NaN test: rc %d, %s", rc, err);
    yte2[9] = -1;
    rc = ssl_linear_probe(tr, ytr, ntr, te, yte2, nte, d, C, 7, &s, err);
    CHECK(rc == SSL_EINVAL && strstr(err, "row 9"), "probe bad test label: rc %d, %s", rc, err);
    rc = ssl_linear_probe(tr, ytr, 5, te, yte, nte, d, C, 7, &s, err);
    CHECK(rc == SSL_EINVAL, "probe with 5 rows: rc %d", rc);
    rc = ssl_linear_probe(tr, ytr, ntr, te, yte, nte, d, 1, 7, &s, err);
    CHECK(rc == SSL_EINVAL, "probe n_classes 1: rc %d", rc);
    free(tr); free(ytr); free(yte2); free(te2); free(tr3); free(te3);
}

/* ---- optional timing on Fashion-MNIST raw pixels ---- */

/* Gzipped IDX (big-endian header). Returns bytes (caller frees) or NULL. */
static unsigned char *idx_load(const char *path, int want_dims, int *count, int *row)
{
    gzFile g = gzopen(path, "rb");
    if (!g) return NULL;
    unsigned char h[16];
    int hl = 4 + 4 * want_dims;
    unsigned char *data = NULL;
    if (gzread(g, h, hl) == hl && h[2] == 8 && h[3] == want_dims) {
        long dims[3] = {1, 1, 1};
        for (int i = 0; i < want_dims; i++)
            dims[i] = ((long)h[4 + 4 * i] << 24) | (h[5 + 4 * i] << 16) | (h[6 + 4 * i] << 8) |
                      h[7 + 4 * i];
        long r = dims[1] * dims[2], total = dims[0] * r;
        if (dims[0] > 0 && dims[0] <= 1000000 && r <= 100000 && (data = malloc(total)) &&
            gzread(g, data, (unsigned)total) == total) {
            *count = (int)dims[0];
            *row = (int)r;
        } else {
            free(data);
            data = NULL;
        }
    }
    gzclose(g);
    return data;
}

static void bench_fashion(void)
{
    const char *dir = "/usr/share/datasets/fashion-mnist";
    char p[4][256];
    const char *names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
    unsigned char *raw[4];
    int cnt[4] = {0}, rw[4] = {0};
    for (int i = 0; i < 4; i++) {
        snprintf(p[i], sizeof p[i], "%s/%s", dir, names[i]);
        raw[i] = idx_load(p[i], i % 2 ? 1 : 3, &cnt[i], &rw[i]);
    }
    if (!raw[0] || !raw[1] || !raw[2] || !raw[3] || cnt[0] != cnt[1] || cnt[2] != cnt[3]) {
        printf("bench: Fashion-MNIST not found under %s, skipped\n", dir);
    } else {
        int ntr = cnt[0], nte = cnt[2], d = rw[0];
        float *tr = malloc(sizeof(float) * ntr * d), *te = malloc(sizeof(float) * nte * d);
        int32_t *ytr = malloc(sizeof(int32_t) * ntr), *yte = malloc(sizeof(int32_t) * nte);
        for (long i = 0; i < (long)ntr * d; i++) tr[i] = raw[0][i] / 255.0f;
        for (long i = 0; i < (long)nte * d; i++) te[i] = raw[2][i] / 255.0f;
        for (int i = 0; i < ntr; i++) ytr[i] = raw[1][i];
        for (int i = 0; i < nte; i++) yte[i] = raw[3][i];
        char err[SSL_ERR_LEN];
        ssl_linear_result r;
        double t0 = ssl_time();
        int rc = ssl_linear_probe(tr, ytr, ntr, te, yte, nte, d, 10, 0, &r, err);
        double t1 = ssl_time();
        printf("bench: linear probe %dx%d: rc %d test %.4f val %.4f lambda %g iters %d loss %.5f"
               " in %.1f s\n", ntr, d, rc, r.test_top1, r.val_top1, r.lambda, r.iters,
               r.train_loss, t1 - t0);
        int ks[] = {10, 20, 100, 200};
        double top1[4];
        t0 = ssl_time();
        rc = ssl_knn_eval(tr, ytr, ntr, te, yte, nte, d, 10, ks, 4, 0.07f, top1, err);
        printf("bench: knn T=0.07 k=10/20/100/200: rc %d %.4f %.4f %.4f %.4f in %.1f s\n", rc,
               top1[0], top1[1], top1[2], top1[3], ssl_time() - t0);
        free(tr); free(te); free(ytr); free(yte);
    }
    for (int i = 0; i < 4; i++) free(raw[i]);
}

/* Collapse measures on embeddings whose answers are known exactly. */
static void test_embedding_stats(void)
{
    enum { N = 600, D = 12 };
    float *x = malloc(sizeof(float) * N * D);
    char err[SSL_ERR_LEN];
    double sn, er;
    /* every row a multiple of one vector: rank 1, zero spread after normalizing */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) x[i * D + j] = (float)((1 + i % 7) * (j + 1));
    CHECK(ssl_embedding_stats(x, N, D, &sn, &er, err) == SSL_OK, "stats: %s", err);
    CHECK(fabs(er - 1) < 1e-3 && sn < 1e-3, "rank-1 embedding: eff rank %g, std %g", er, sn);
    /* rows cycle through 5 basis vectors: 5 equal singular values -> eff rank 5 */
    memset(x, 0, sizeof(float) * N * D);
    for (int i = 0; i < N; i++) x[i * D + i % 5] = 2.0f;
    CHECK(ssl_embedding_stats(x, N, D, &sn, &er, err) == SSL_OK, "stats: %s", err);
    CHECK(fabs(er - 5) < 1e-3, "5 orthogonal directions: eff rank %g", er);
    /* each of those 5 dims is 1 w.p. 1/5: std sqrt(0.16) = 0.4 (x N/(N-1)), 7 dims 0 */
    double want = 5 * sqrt(0.16 * N / (N - 1)) / D * sqrt((double)D);
    CHECK(fabs(sn - want) < 1e-6, "std of normalized rows %g, want %g", sn, want);
    /* a rotated version has the same singular values */
    for (int i = 0; i < N; i++) {
        float a = x[i * D + 0], b = x[i * D + 1];
        x[i * D + 0] = 0.6f * a - 0.8f * b;
        x[i * D + 1] = 0.8f * a + 0.6f * b;
    }
    CHECK(ssl_embedding_stats(x, N, D, &sn, &er, err) == SSL_OK && fabs(er - 5) < 1e-3,
          "rotated: eff rank %g", er);
    x[7] = NAN;
    CHECK(ssl_embedding_stats(x, N, D, &sn, &er, err) == SSL_ENAN, "NaN feature accepted");
    CHECK(ssl_embedding_stats(x, 1, D, &sn, &er, err) == SSL_EINVAL, "one row accepted");
    free(x);
}

int main(void)
{
    ssl_blas_set_threads(1);
    test_embedding_stats(); /* the eval code splits work across OpenMP threads */
    test_knn_hand();
    test_knn_random();
    test_logreg_grad();
    test_logreg_fit();
    test_logreg_torch();
    test_probe();
    const char *b = getenv("SELFSUP_EVAL_BENCH");
    if (b && *b && strcmp(b, "0") != 0) bench_fashion();
    return check_report("eval");
}
