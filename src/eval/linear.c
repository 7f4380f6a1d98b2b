/* Linear probe: multinomial logistic regression on frozen features, fitted
 * to convergence with full-batch L-BFGS; lambda chosen on a held-out part of
 * the training set. The data pass is float GEMM (one per thread per row
 * block); the optimizer state and all reductions are double. */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "selfsup/eval.h"
#include "selfsup/ops.h"

/* Large to small: each fit warm-starts from the previous, more regularized
 * (hence faster to fit) solution. */
const double ssl_linear_lambdas[SSL_LINEAR_N_LAMBDAS] = {1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6};

/* Rows per block: X_blk (LR_BLOCK, d) is read by X*W and again, from cache,
 * by X^T*G. */
#define LR_BLOCK 256
#define LBFGS_M 10
#define LBFGS_GTOL 1e-6 /* max |gradient| */
#define LBFGS_FTOL 1e-9 /* relative loss change per iteration */
#define PROBE_MAX_ITER 500
/* Lambda search fits: held-out accuracy settles (to ~0.1% on Fashion-MNIST
 * pixels) long before the loss does, and the warm-started path keeps the
 * later fits close to their optimum. */
#define SELECT_MAX_ITER 100
/* Held-out accuracy is unimodal in lambda in practice: stop the path after
 * this many grid values in a row without improvement. */
#define SELECT_PATIENCE 2

/* Per-thread scratch of one data pass. */
typedef struct lr_work {
    int n_thr;
    size_t per_thr; /* bytes per thread, 64-aligned */
    char *buf;
} lr_work;

static int lr_threads(int n)
{
    int t = 1;
#ifdef _OPENMP
    t = omp_get_max_threads();
#endif
    int blocks = (n + LR_BLOCK - 1) / LR_BLOCK;
    return t < blocks ? t : blocks;
}

/* per thread: z (LR_BLOCK, C) float, gW block (d, C) float, gW sum (d, C)
 * double, gb sum (C) double, loss double */
static int lr_work_init(lr_work *wk, int n, int d, int C)
{
    wk->n_thr = lr_threads(n);
    size_t sz = (size_t)LR_BLOCK * C * sizeof(float) + (size_t)d * C * sizeof(float);
    sz = (sz + 7) & ~(size_t)7;
    sz += ((size_t)d * C + C + 1) * sizeof(double);
    wk->per_thr = (sz + 63) & ~(size_t)63;
    wk->buf = ssl_malloc(wk->per_thr * wk->n_thr);
    return wk->buf ? SSL_OK : SSL_ENOMEM;
}

/* Mean cross-entropy of (X W + b) and, when gW != NULL, its gradient (no
 * regularization here). X (n, d), y (n), W (d, C), b (C); gW (d, C), gb (C)
 * overwritten. The thread partials are summed in a fixed order, so the result
 * depends only on the thread count. */
static double lr_data_pass(const float *X, const int32_t *y, int n, int d, int C,
                           const float *W, const float *b, double *gW, double *gb,
                           lr_work *wk)
{
    int n_blocks = (n + LR_BLOCK - 1) / LR_BLOCK;
    size_t off_gwb = (size_t)LR_BLOCK * C * sizeof(float);
    size_t off_acc = (off_gwb + (size_t)d * C * sizeof(float) + 7) & ~(size_t)7;
    size_t dc = (size_t)d * C;
    double inv_n = 1.0 / n;

#pragma omp parallel num_threads(wk->n_thr)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        char *w = wk->buf + wk->per_thr * t;
        float *z = (float *)w;
        float *gwb = (float *)(w + off_gwb);
        double *acc = (double *)(w + off_acc); /* gW sum, gb sum, loss */
        memset(acc, 0, (dc + C + 1) * sizeof(double));
#pragma omp for schedule(static)
        for (int blk = 0; blk < n_blocks; blk++) {
            int r0 = blk * LR_BLOCK;
            int rows = n - r0 < LR_BLOCK ? n - r0 : LR_BLOCK;
            const float *xb = X + (size_t)r0 * d;
            /* z (rows, C) = X_blk (rows, d) * W (d, C) */
            ssl_sgemm(0, 0, rows, C, d, 1.0f, xb, d, W, C, 0.0f, z, C);
            for (int r = 0; r < rows; r++) {
                float *zr = z + (size_t)r * C, mx = -INFINITY;
                for (int c = 0; c < C; c++) {
                    zr[c] += b[c];
                    if (zr[c] > mx) mx = zr[c];
                }
                int yr = y[r0 + r];
                double zy = zr[yr], se = 0;
                /* zr <- exp(z - max), one expf per logit: the logits are
                 * float already, and exp dominates the non-GEMM work */
                for (int c = 0; c < C; c++) {
                    zr[c] = expf(zr[c] - mx);
                    se += zr[c];
                }
                acc[dc + C] += mx + log(se) - zy;
                if (!gW) continue;
                /* dCE/dz = softmax - onehot, scaled by 1/n of the mean */
                for (int c = 0; c < C; c++) {
                    double g = (zr[c] / se - (c == yr)) * inv_n;
                    acc[dc + c] += g;
                    zr[c] = (float)g;
                }
            }
            if (gW) {
                /* gW_blk (d, C) = X_blk^T (d, rows) * G (rows, C) */
                ssl_sgemm(1, 0, d, C, rows, 1.0f, xb, d, z, C, 0.0f, gwb, C);
                for (size_t i = 0; i < dc; i++) acc[i] += gwb[i];
            }
        }
    }

    double loss = 0;
    if (gW) {
        memset(gW, 0, dc * sizeof(double));
        memset(gb, 0, (size_t)C * sizeof(double));
    }
    for (int t = 0; t < wk->n_thr; t++) {
        const double *acc = (const double *)(wk->buf + wk->per_thr * t + off_acc);
        loss += acc[dc + C];
        if (!gW) continue;
        for (size_t i = 0; i < dc; i++) gW[i] += acc[i];
        for (int c = 0; c < C; c++) gb[c] += acc[dc + c];
    }
    return loss * inv_n;
}

/* Full objective at theta = [W (d*C), b (C)] in double; g (same layout) gets
 * the gradient. Wf (d*C) and bf (C) are float copies for the GEMMs. */
static double lr_objective(const float *X, const int32_t *y, int n, int d, int C,
                           double lambda, const double *theta, double *g, float *Wf,
                           float *bf, lr_work *wk)
{
    size_t dc = (size_t)d * C;
    double reg = 0;
    for (size_t i = 0; i < dc; i++) {
        Wf[i] = (float)theta[i];
        reg += theta[i] * theta[i];
    }
    for (int c = 0; c < C; c++) bf[c] = (float)theta[dc + c];
    double f = lr_data_pass(X, y, n, d, C, Wf, bf, g, g ? g + dc : NULL, wk);
    if (g)
        for (size_t i = 0; i < dc; i++) g[i] += lambda * theta[i];
    return f + 0.5 * lambda * reg;
}

static int lr_check_labels(const int32_t *y, int n, int C, const char *what, char *err)
{
    for (int i = 0; i < n; i++)
        if (y[i] < 0 || y[i] >= C)
            return ssl_fail(err, SSL_EINVAL, "%s: label %d at row %d is outside [0, %d)",
                            what, (int)y[i], i, C);
    return SSL_OK;
}

static int lr_check_finite(const float *x, size_t n, const char *what, char *err)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return ssl_fail(err, SSL_ENAN, "%s: non-finite value at element %zu", what, i);
    return SSL_OK;
}

/* Sizes, labels, classes present, finite X. */
static int lr_check_data(const float *X, const int32_t *y, int n, int d, int C,
                         const char *what, char *err)
{
    if (!X || !y) return ssl_fail(err, SSL_EINVAL, "%s: NULL data", what);
    if (n < 1 || d < 1 || C < 2)
        return ssl_fail(err, SSL_EINVAL, "%s: bad sizes n=%d d=%d n_classes=%d (need >= 2)",
                        what, n, d, C);
    int rc = lr_check_labels(y, n, C, what, err);
    if (rc != SSL_OK) return rc;
    return lr_check_finite(X, (size_t)n * d, what, err);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* L-BFGS on the objective, theta (P = d*C + C) in/out. */
static int lr_lbfgs(const float *X, const int32_t *y, int n, int d, int C, double lambda,
                    int max_iter, double *theta, int *iters, double *final_loss, char *err)
{
    size_t dc = (size_t)d * C, P = dc + C;
    lr_work wk;
    if (lr_work_init(&wk, n, d, C) != SSL_OK)
        return ssl_fail(err, SSL_ENOMEM, "logreg: out of memory for scratch (d=%d, C=%d)", d, C);
    /* g, g_new, x_new, dir, S (M, P), Y (M, P) in double; W, b in float */
    double *mem = ssl_malloc((4 + 2 * LBFGS_M) * P * sizeof(double));
    float *Wf = ssl_malloc(P * sizeof(float));
    if (!mem || !Wf) {
        ssl_free(wk.buf); ssl_free(mem); ssl_free(Wf);
        return ssl_fail(err, SSL_ENOMEM, "logreg: out of memory for L-BFGS (d=%d, C=%d)", d, C);
    }
    double *g = mem, *gn = g + P, *xn = gn + P, *dir = xn + P;
    double *S = dir + P, *Yv = S + LBFGS_M * P;
    double rho[LBFGS_M], alpha[LBFGS_M];
    float *bf = Wf + dc;
    int head = 0, m = 0, it = 0, rc = SSL_OK;

    double f = lr_objective(X, y, n, d, C, lambda, theta, g, Wf, bf, &wk);
    if (!isfinite(f)) {
        rc = ssl_fail(err, SSL_ENAN, "logreg: initial loss is not finite");
        goto done;
    }
    for (it = 0; it < max_iter; it++) {
        double gmax = 0;
        for (size_t i = 0; i < P; i++) gmax = fmax(gmax, fabs(g[i]));
        if (gmax <= LBFGS_GTOL) break;

        /* two-loop recursion: dir = -H g */
        for (size_t i = 0; i < P; i++) dir[i] = -g[i];
        for (int j = 0; j < m; j++) {
            int k = (head - 1 - j + LBFGS_M) % LBFGS_M;
            alpha[k] = rho[k] * dot(S + k * P, dir, P);
            for (size_t i = 0; i < P; i++) dir[i] -= alpha[k] * Yv[k * P + i];
        }
        if (m > 0) {
            int k = (head - 1 + LBFGS_M) % LBFGS_M;
            double gamma = dot(S + k * P, Yv + k * P, P) / dot(Yv + k * P, Yv + k * P, P);
            for (size_t i = 0; i < P; i++) dir[i] *= gamma;
        }
        for (int j = m - 1; j >= 0; j--) {
            int k = (head - 1 - j + LBFGS_M) % LBFGS_M;
            double beta = rho[k] * dot(Yv + k * P, dir, P);
            for (size_t i = 0; i < P; i++) dir[i] += (alpha[k] - beta) * S[k * P + i];
        }
        double gd = dot(g, dir, P);
        if (!(gd < 0)) { /* lost descent (numerical): restart from steepest descent */
            m = 0;
            for (size_t i = 0; i < P; i++) dir[i] = -g[i];
            gd = -dot(g, g, P);
        }
        double step = m > 0 ? 1.0 : fmin(1.0, 1.0 / sqrt(-gd));

        /* backtracking Armijo with safeguarded quadratic interpolation */
        double fn = 0;
        int ok = 0;
        for (int ls = 0; ls < 40; ls++) {
            for (size_t i = 0; i < P; i++) xn[i] = theta[i] + step * dir[i];
            fn = lr_objective(X, y, n, d, C, lambda, xn, gn, Wf, bf, &wk);
            if (isfinite(fn) && fn <= f + 1e-4 * step * gd) { ok = 1; break; }
            double q = isfinite(fn) ? -gd * step * step / (2 * (fn - f - gd * step)) : 0;
            step = fmin(fmax(q, 0.1 * step), 0.5 * step);
        }
        if (!ok) break; /* no decrease left at float precision: converged */

        /* curvature pair; skipped when s.y is not safely positive */
        double *s = S + head * P, *yv = Yv + head * P;
        for (size_t i = 0; i < P; i++) {
            s[i] = xn[i] - theta[i];
            yv[i] = gn[i] - g[i];
        }
        double sy = dot(s, yv, P);
        if (sy > 1e-10 * sqrt(dot(s, s, P) * dot(yv, yv, P))) {
            rho[head] = 1.0 / sy;
            head = (head + 1) % LBFGS_M;
            if (m < LBFGS_M) m++;
        }
        double fprev = f;
        f = fn;
        memcpy(theta, xn, P * sizeof(double));
        memcpy(g, gn, P * sizeof(double));
        if (fabs(fprev - f) <= LBFGS_FTOL * fmax(1.0, fmax(fabs(f), fabs(fprev)))) {
            it++;
            break;
        }
    }
    if (iters) *iters = it;
    if (final_loss) *final_loss = f;
done:
    ssl_free(wk.buf);
    ssl_free(mem);
    ssl_free(Wf);
    return rc;
}

int ssl_logreg_loss(const float *X, const int32_t *y, int n, int d, int n_classes,
                    double lambda, const float *W, const float *b, double *loss,
                    float *gW, float *gb, char *err)
{
    int rc = lr_check_data(X, y, n, d, n_classes, "logreg", err);
    if (rc != SSL_OK) return rc;
    if (!W || !b || !loss) return ssl_fail(err, SSL_EINVAL, "logreg: NULL W, b or loss");
    if (!(lambda >= 0) || !isfinite(lambda))
        return ssl_fail(err, SSL_EINVAL, "logreg: lambda must be >= 0, got %g", lambda);
    size_t dc = (size_t)d * n_classes;
    lr_work wk;
    double *g = (gW || gb) ? ssl_malloc((dc + n_classes) * sizeof(double)) : NULL;
    if (lr_work_init(&wk, n, d, n_classes) != SSL_OK || ((gW || gb) && !g)) {
        ssl_free(wk.buf);
        ssl_free(g);
        return ssl_fail(err, SSL_ENOMEM, "logreg: out of memory (d=%d, C=%d)", d, n_classes);
    }
    double f = lr_data_pass(X, y, n, d, n_classes, W, b, g, g ? g + dc : NULL, &wk);
    double reg = 0;
    for (size_t i = 0; i < dc; i++) reg += (double)W[i] * W[i];
    *loss = f + 0.5 * lambda * reg;
    if (gW)
        for (size_t i = 0; i < dc; i++) gW[i] = (float)(g[i] + lambda * W[i]);
    if (gb)
        for (int c = 0; c < n_classes; c++) gb[c] = (float)g[dc + c];
    ssl_free(wk.buf);
    ssl_free(g);
    return SSL_OK;
}

int ssl_logreg_fit(const float *X, const int32_t *y, int n, int d, int n_classes,
                   double lambda, int max_iter, float *W, float *b, int *iters,
                   double *final_loss, char *err)
{
    int rc = lr_check_data(X, y, n, d, n_classes, "logreg", err);
    if (rc != SSL_OK) return rc;
    if (!W || !b) return ssl_fail(err, SSL_EINVAL, "logreg: NULL W or b");
    if (!(lambda >= 0) || !isfinite(lambda))
        return ssl_fail(err, SSL_EINVAL, "logreg: lambda must be >= 0, got %g", lambda);
    if (max_iter < 1) return ssl_fail(err, SSL_EINVAL, "logreg: max_iter must be >= 1");
    int first = y[0], two = 0;
    for (int i = 1; i < n && !two; i++) two = y[i] != first;
    if (!two)
        return ssl_fail(err, SSL_EINVAL, "logreg: only one class (%d) present in %d rows",
                        (int)first, n);
    size_t dc = (size_t)d * n_classes, P = dc + n_classes;
    rc = lr_check_finite(W, dc, "logreg: initial W", err);
    if (rc == SSL_OK) rc = lr_check_finite(b, n_classes, "logreg: initial b", err);
    if (rc != SSL_OK) return rc;
    double *theta = ssl_malloc(P * sizeof(double));
    if (!theta) return ssl_fail(err, SSL_ENOMEM, "logreg: out of memory (d=%d)", d);
    for (size_t i = 0; i < dc; i++) theta[i] = W[i];
    for (int c = 0; c < n_classes; c++) theta[dc + c] = b[c];
    rc = lr_lbfgs(X, y, n, d, n_classes, lambda, max_iter, theta, iters, final_loss, err);
    if (rc == SSL_OK) {
        for (size_t i = 0; i < dc; i++) W[i] = (float)theta[i];
        for (int c = 0; c < n_classes; c++) b[c] = (float)theta[dc + c];
    }
    ssl_free(theta);
    return rc;
}

int ssl_logreg_predict(const float *X, int n, int d, int n_classes, const float *W,
                       const float *b, int32_t *pred, char *err)
{
    if (!X || !W || !b || !pred || n < 1 || d < 1 || n_classes < 1)
        return ssl_fail(err, SSL_EINVAL, "logreg predict: bad arguments n=%d d=%d C=%d", n, d,
                        n_classes);
    int n_thr = lr_threads(n), n_blocks = (n + LR_BLOCK - 1) / LR_BLOCK;
    float *zall = ssl_malloc((size_t)n_thr * LR_BLOCK * n_classes * sizeof(float));
    if (!zall) return ssl_fail(err, SSL_ENOMEM, "logreg predict: out of memory (C=%d)", n_classes);
#pragma omp parallel num_threads(n_thr)
    {
        int t = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
#endif
        float *z = zall + (size_t)t * LR_BLOCK * n_classes;
#pragma omp for schedule(static)
        for (int blk = 0; blk < n_blocks; blk++) {
            int r0 = blk * LR_BLOCK;
            int rows = n - r0 < LR_BLOCK ? n - r0 : LR_BLOCK;
            /* z (rows, C) = X_blk (rows, d) * W (d, C) */
            ssl_sgemm(0, 0, rows, n_classes, d, 1.0f, X + (size_t)r0 * d, d, W, n_classes,
                      0.0f, z, n_classes);
            for (int r = 0; r < rows; r++) {
                const float *zr = z + (size_t)r * n_classes;
                int best = 0;
                for (int c = 1; c < n_classes; c++)
                    if (zr[c] + b[c] > zr[best] + b[best]) best = c;
                pred[r0 + r] = best;
            }
        }
    }
    ssl_free(zall);
    return SSL_OK;
}

/* Per-feature mean and 1/std (population) of x (n, d); constant features get
 * 1/std = 1 so they become zero. mean (d), inv_sd (d). */
static void lr_moments(const float *x, int n, int d, double *mean, double *inv_sd)
{
    memset(mean, 0, (size_t)d * sizeof(double));
    memset(inv_sd, 0, (size_t)d * sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) mean[j] += x[(size_t)i * d + j];
    for (int j = 0; j < d; j++) mean[j] /= n;
    /* two passes: raw pixels have mean >> std, sum-of-squares would cancel */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            double c = x[(size_t)i * d + j] - mean[j];
            inv_sd[j] += c * c;
        }
    for (int j = 0; j < d; j++) {
        double sd = sqrt(inv_sd[j] / n);
        inv_sd[j] = sd > 1e-12 ? 1.0 / sd : 1.0;
    }
}

/* x (n, d) <- (x - mean) * inv_sd, in place. */
static void lr_standardize(float *x, int n, int d, const double *mean, const double *inv_sd)
{
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            float *v = x + (size_t)i * d + j;
            *v = (float)((*v - mean[j]) * inv_sd[j]);
        }
}

/* Fraction of rows of X (n, d) whose prediction equals y (n); pred (n) scratch. */
static int lr_accuracy(const float *X, const int32_t *y, int n, int d, int C, const float *W,
                       const float *b, int32_t *pred, double *acc, char *err)
{
    int rc = ssl_logreg_predict(X, n, d, C, W, b, pred, err);
    if (rc != SSL_OK) return rc;
    long hit = 0;
    for (int i = 0; i < n; i++) hit += pred[i] == y[i];
    *acc = (double)hit / n;
    return SSL_OK;
}

int ssl_linear_probe(const float *train, const int32_t *train_labels, int n_train,
                     const float *test, const int32_t *test_labels, int n_test, int d,
                     int n_classes, uint64_t seed, ssl_linear_result *res, char *err)
{
    if (!res) return ssl_fail(err, SSL_EINVAL, "linear probe: NULL result");
    int rc = lr_check_data(train, train_labels, n_train, d, n_classes, "linear probe train",
                           err);
    if (rc == SSL_OK)
        rc = lr_check_data(test, test_labels, n_test, d, n_classes, "linear probe test", err);
    if (rc != SSL_OK) return rc;
    if (n_train < 10)
        return ssl_fail(err, SSL_EINVAL,
                        "linear probe: need >= 10 training rows for the held-out split, got %d",
                        n_train);
    int n_val = n_train / 10, n_tr = n_train - n_val, C = n_classes;
    size_t dc = (size_t)d * C;
    float *buf = ssl_malloc((size_t)n_train * d * sizeof(float));
    float *tst = ssl_malloc((size_t)n_test * d * sizeof(float));
    int32_t *ybuf = ssl_malloc((size_t)n_train * sizeof(int32_t));
    int32_t *perm = ssl_malloc((size_t)n_train * sizeof(int32_t));
    int32_t *pred = ssl_malloc((size_t)(n_train > n_test ? n_train : n_test) * sizeof(int32_t));
    double *mom = ssl_malloc(2 * (size_t)d * sizeof(double));
    float *Wb = ssl_calloc(2 * (dc + C) * sizeof(float)); /* current and best (W, b) */
    if (!buf || !tst || !ybuf || !perm || !pred || !mom || !Wb) {
        rc = ssl_fail(err, SSL_ENOMEM, "linear probe: out of memory (%d x %d train rows)",
                      n_train, d);
        goto done;
    }
    float *W = Wb, *b = W + dc, *Wbest = b + C, *bbest = Wbest + dc;

    /* seeded split: rows perm[0, n_tr) fit, perm[n_tr, n_train) judge lambda */
    ssl_rng rng;
    ssl_rng_seed(&rng, seed);
    for (int i = 0; i < n_train; i++) perm[i] = i;
    for (int i = n_train - 1; i > 0; i--) {
        int j = (int)ssl_rng_below(&rng, (uint32_t)i + 1);
        int32_t t = perm[i]; perm[i] = perm[j]; perm[j] = t;
    }
    for (int i = 0; i < n_train; i++) {
        memcpy(buf + (size_t)i * d, train + (size_t)perm[i] * d, (size_t)d * sizeof(float));
        ybuf[i] = train_labels[perm[i]];
    }
    lr_moments(buf, n_tr, d, mom, mom + d);
    lr_standardize(buf, n_train, d, mom, mom + d);

    double best = -1, best_lambda = ssl_linear_lambdas[0];
    for (int k = 0, worse = 0; k < SSL_LINEAR_N_LAMBDAS && worse < SELECT_PATIENCE; k++) {
        double acc;
        rc = ssl_logreg_fit(buf, ybuf, n_tr, d, C, ssl_linear_lambdas[k], SELECT_MAX_ITER, W, b,
                            NULL, NULL, err);
        if (rc == SSL_OK)
            rc = lr_accuracy(buf + (size_t)n_tr * d, ybuf + n_tr, n_val, d, C, W, b, pred,
                             &acc, err);
        if (rc != SSL_OK) goto done;
        /* strict: ties keep the larger lambda */
        if (acc > best) {
            best = acc;
            best_lambda = ssl_linear_lambdas[k];
            memcpy(Wbest, W, (dc + C) * sizeof(float));
            worse = 0;
        } else {
            worse++;
        }
    }

    /* final fit on every training row, warm-started from the chosen model */
    memcpy(buf, train, (size_t)n_train * d * sizeof(float));
    lr_moments(buf, n_train, d, mom, mom + d);
    lr_standardize(buf, n_train, d, mom, mom + d);
    memcpy(tst, test, (size_t)n_test * d * sizeof(float));
    lr_standardize(tst, n_test, d, mom, mom + d);
    rc = ssl_logreg_fit(buf, train_labels, n_train, d, C, best_lambda, PROBE_MAX_ITER, Wbest,
                        bbest, &res->iters, &res->train_loss, err);
    if (rc == SSL_OK)
        rc = lr_accuracy(tst, test_labels, n_test, d, C, Wbest, bbest, pred, &res->test_top1,
                         err);
    if (rc != SSL_OK) goto done;
    res->val_top1 = best;
    res->lambda = best_lambda;
done:
    ssl_free(buf);
    ssl_free(tst);
    ssl_free(ybuf);
    ssl_free(perm);
    ssl_free(pred);
    ssl_free(mom);
    ssl_free(Wb);
    return rc;
}
