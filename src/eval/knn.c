/* Weighted k-NN evaluation (Wu et al. 2018, as used by DINO): cosine
 * similarity to every train row, top-k neighbours, votes exp(sim / T). */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "selfsup/eval.h"
#include "selfsup/ops.h"

/* Test rows per similarity block: one block's similarities (KNN_BLOCK x n_train
 * floats, 30 MB for 60000 train rows) per thread, never the whole matrix. */
#define KNN_BLOCK 128

typedef struct knn_item {
    float sim;
    int idx;
} knn_item;

/* a ranks before b: higher similarity, then lower train index. */
static int knn_better(knn_item a, knn_item b)
{
    return a.sim > b.sim || (a.sim == b.sim && a.idx < b.idx);
}

/* Min-heap (worst neighbour at the root) of size k: restores order below i. */
static void heap_sift_down(knn_item *h, int k, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < k && knn_better(h[w], h[l])) w = l;
        if (r < k && knn_better(h[w], h[r])) w = r;
        if (w == i) return;
        knn_item t = h[i]; h[i] = h[w]; h[w] = t;
        i = w;
    }
}

/* Top-k of sim (n) into h (k), sorted best first. Partial selection: a k-heap
 * over one scan, O(n log k), then a sort of the k survivors. */
static void knn_topk(const float *sim, int n, int k, knn_item *h)
{
    for (int j = 0; j < k; j++) h[j] = (knn_item){sim[j], j};
    for (int i = k / 2 - 1; i >= 0; i--) heap_sift_down(h, k, i);
    for (int j = k; j < n; j++) {
        /* later indices only win on strictly higher similarity */
        if (sim[j] > h[0].sim) {
            h[0] = (knn_item){sim[j], j};
            heap_sift_down(h, k, 0);
        }
    }
    /* heap sort: repeatedly move the worst to the end -> best first */
    for (int end = k - 1; end > 0; end--) {
        knn_item t = h[0]; h[0] = h[end]; h[end] = t;
        heap_sift_down(h, end, 0);
    }
}

/* Copies x (n, d) into out (n, d) with unit-norm rows (zero rows stay zero,
 * like F.normalize with eps). Returns the first non-finite row or -1. */
static long knn_normalize(float *out, const float *x, long n, int d)
{
    long bad = -1;
    for (long i = 0; i < n; i++) {
        const float *r = x + i * d;
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)r[j] * r[j];
        if (!isfinite(s) && bad < 0) bad = i;
        double nrm = sqrt(s);
        float inv = (float)(1.0 / (nrm > 1e-12 ? nrm : 1e-12));
        for (int j = 0; j < d; j++) out[i * d + j] = r[j] * inv;
    }
    return bad;
}

static int knn_check_labels(const int32_t *y, int n, int n_classes, const char *what,
                            char *err)
{
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= n_classes)
            return ssl_fail(err, SSL_EINVAL, "knn: %s label %d at row %d is outside [0, %d)",
                            what, (int)y[i], i, n_classes);
    return SSL_OK;
}

int ssl_knn_eval(const float *train, const int32_t *train_labels, int n_train,
                 const float *test, const int32_t *test_labels, int n_test, int d,
                 int n_classes, const int *ks, int n_ks, float T, double *top1,
                 char *err)
{
    if (!train || !train_labels || !test || !test_labels || !ks || !top1)
        return ssl_fail(err, SSL_EINVAL, "knn: NULL argument");
    if (n_train < 1 || n_test < 1 || d < 1 || n_classes < 1 || n_ks < 1)
        return ssl_fail(err, SSL_EINVAL,
                        "knn: bad sizes n_train=%d n_test=%d d=%d n_classes=%d n_ks=%d",
                        n_train, n_test, d, n_classes, n_ks);
    if (!(T > 0.0f) || !isfinite(T))
        return ssl_fail(err, SSL_EINVAL, "knn: temperature must be > 0, got %g", (double)T);
    int kmax = 0;
    for (int i = 0; i < n_ks; i++) {
        if (ks[i] < 1 || ks[i] > n_train)
            return ssl_fail(err, SSL_EINVAL, "knn: k=%d outside [1, n_train=%d]", ks[i],
                            n_train);
        if (ks[i] > kmax) kmax = ks[i];
    }
    int rc = knn_check_labels(train_labels, n_train, n_classes, "train", err);
    if (rc == SSL_OK) rc = knn_check_labels(test_labels, n_test, n_classes, "test", err);
    if (rc != SSL_OK) return rc;

    int n_thr = 1;
#ifdef _OPENMP
    n_thr = omp_get_max_threads();
#endif
    int n_blocks = (n_test + KNN_BLOCK - 1) / KNN_BLOCK;
    if (n_thr > n_blocks) n_thr = n_blocks;
    /* per thread: similarities, heap, votes (n_ks x n_classes), correct counts */
    size_t sim_sz = (size_t)KNN_BLOCK * n_train;
    size_t per_thr = sim_sz * sizeof(float) + (size_t)kmax * sizeof(knn_item) +
                     (size_t)n_ks * n_classes * sizeof(double) + (size_t)n_ks * sizeof(long);
    per_thr = (per_thr + 63) & ~(size_t)63;
    float *trn = ssl_malloc((size_t)n_train * d * sizeof(float));
    float *tst = ssl_malloc((size_t)n_test * d * sizeof(float));
    char *work = ssl_malloc(per_thr * n_thr);
    if (!trn || !tst || !work) {
        rc = ssl_fail(err, SSL_ENOMEM, "knn: out of memory (%d train, %d test rows, d=%d)",
                      n_train, n_test, d);
        goto done;
    }
    long bad = knn_normalize(trn, train, n_train, d);
    if (bad >= 0) {
        rc = ssl_fail(err, SSL_ENAN, "knn: train features of row %ld are not finite", bad);
        goto done;
    }
    bad = knn_normalize(tst, test, n_test, d);
    if (bad >= 0) {
        rc = ssl_fail(err, SSL_ENAN, "knn: test features of row %ld are not finite", bad);
        goto done;
    }
    memset(work, 0, per_thr * n_thr);

#pragma omp parallel for schedule(dynamic) num_threads(n_thr)
    for (int blk = 0; blk < n_blocks; blk++) {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        char *w = work + per_thr * t;
        float *sim = (float *)w;
        knn_item *heap = (knn_item *)(sim + sim_sz);
        double *votes = (double *)(heap + kmax);
        long *correct = (long *)(votes + (size_t)n_ks * n_classes);
        int r0 = blk * KNN_BLOCK;
        int rows = n_test - r0 < KNN_BLOCK ? n_test - r0 : KNN_BLOCK;
        /* sim (rows, n_train) = tst[r0:r0+rows] (rows, d) * trn^T (d, n_train) */
        ssl_sgemm(0, 1, rows, n_train, d, 1.0f, tst + (size_t)r0 * d, d, trn, d, 0.0f, sim,
                  n_train);
        for (int r = 0; r < rows; r++) {
            knn_topk(sim + (size_t)r * n_train, n_train, kmax, heap);
            memset(votes, 0, (size_t)n_ks * n_classes * sizeof(double));
            /* exp((s - s_best) / T): the common factor exp(s_best / T) cannot
             * change the argmax and would overflow for small T */
            for (int j = 0; j < kmax; j++) {
                double wgt = exp(((double)heap[j].sim - heap[0].sim) / T);
                int c = train_labels[heap[j].idx];
                for (int q = 0; q < n_ks; q++)
                    if (j < ks[q]) votes[(size_t)q * n_classes + c] += wgt;
            }
            for (int q = 0; q < n_ks; q++) {
                const double *v = votes + (size_t)q * n_classes;
                int best = 0;
                for (int c = 1; c < n_classes; c++)
                    if (v[c] > v[best]) best = c;
                if (best == test_labels[r0 + r]) correct[q]++;
            }
        }
    }

    for (int q = 0; q < n_ks; q++) {
        long c = 0;
        for (int t = 0; t < n_thr; t++) {
            char *w = work + per_thr * t;
            const long *correct =
                (const long *)(w + sim_sz * sizeof(float) + (size_t)kmax * sizeof(knn_item) +
                               (size_t)n_ks * n_classes * sizeof(double));
            c += correct[q];
        }
        top1[q] = (double)c / n_test;
    }
    rc = SSL_OK;
done:
    ssl_free(trn);
    ssl_free(tst);
    ssl_free(work);
    return rc;
}
