/* Collapse measures of an embedding: the per-dimension standard deviation
 * of L2-normalized rows (SimSiam, Sec. 4.1: about 1/sqrt(d) when healthy,
 * 0 when every input maps to one point) and the effective rank of the
 * feature matrix (RankMe, Garrido et al. 2023: exp of the entropy of the
 * normalized singular values; 1 when all rows are parallel, up to d). */
#include "selfsup/eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Eigenvalues of the symmetric a (d, d) (destroyed) by cyclic Jacobi into ev (d). */
static void jacobi_eigenvalues(double *a, int d, double *ev)
{
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (int i = 0; i < d; i++) {
            diag += a[(long)i * d + i] * a[(long)i * d + i];
            for (int j = i + 1; j < d; j++) off += a[(long)i * d + j] * a[(long)i * d + j];
        }
        if (off <= 1e-22 * diag || off == 0) break;
        for (int p = 0; p < d; p++)
            for (int q = p + 1; q < d; q++) {
                double apq = a[(long)p * d + q];
                if (fabs(apq) < 1e-300) continue;
                double app = a[(long)p * d + p], aqq = a[(long)q * d + q];
                double theta = (aqq - app) / (2 * apq);
                double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < d; k++) { /* columns p, q */
                    double akp = a[(long)k * d + p], akq = a[(long)k * d + q];
                    a[(long)k * d + p] = c * akp - s * akq;
                    a[(long)k * d + q] = s * akp + c * akq;
                }
                for (int k = 0; k < d; k++) { /* rows p, q */
                    double apk = a[(long)p * d + k], aqk = a[(long)q * d + k];
                    a[(long)p * d + k] = c * apk - s * aqk;
                    a[(long)q * d + k] = s * apk + c * aqk;
                }
            }
    }
    for (int i = 0; i < d; i++) ev[i] = a[(long)i * d + i];
}

int ssl_embedding_stats(const float *x, int n, int d, double *std_norm, double *eff_rank,
                        char *err)
{
    if (n < 2 || d < 1 || d > 4096)
        return ssl_fail(err, SSL_EINVAL, "embedding stats: need n >= 2 rows and 1..4096 dims (got %d x %d)", n, d);
    double *mean = calloc((size_t)d, sizeof(double)), *sq = calloc((size_t)d, sizeof(double));
    double *gram = calloc((size_t)d * d, sizeof(double)), *ev = calloc((size_t)d, sizeof(double));
    double *row = calloc((size_t)d, sizeof(double));
    int rc = SSL_OK;
    if (!mean || !sq || !gram || !ev || !row) {
        rc = ssl_fail(err, SSL_ENOMEM, "embedding stats: out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        const float *xi = x + (long)i * d;
        double nrm = 0;
        for (int j = 0; j < d; j++) {
            if (!isfinite(xi[j])) {
                rc = ssl_fail(err, SSL_ENAN, "embedding stats: non-finite feature at row %d", i);
                goto done;
            }
            row[j] = xi[j];
            nrm += row[j] * row[j];
        }
        nrm = sqrt(nrm) > 1e-12 ? sqrt(nrm) : 1e-12;
        for (int j = 0; j < d; j++) {
            mean[j] += row[j] / nrm;
            sq[j] += (row[j] / nrm) * (row[j] / nrm);
        }
        for (int a = 0; a < d; a++) /* X^T X: its eigenvalues are the squared singular values */
            for (int b = a; b < d; b++) gram[(long)a * d + b] += row[a] * row[b];
    }
    double s = 0;
    for (int j = 0; j < d; j++) {
        double m = mean[j] / n, v = sq[j] / n - m * m;
        s += sqrt(v > 0 ? v * n / (n - 1) : 0);
    }
    *std_norm = s / d * sqrt((double)d); /* 1 for an isotropic embedding, 0 collapsed */
    for (int a = 0; a < d; a++)
        for (int b = 0; b < a; b++) gram[(long)a * d + b] = gram[(long)b * d + a];
    jacobi_eigenvalues(gram, d, ev);
    double total = 0;
    for (int j = 0; j < d; j++) total += ev[j] = sqrt(ev[j] > 0 ? ev[j] : 0);
    double h = 0;
    for (int j = 0; j < d && total > 0; j++) {
        double p = ev[j] / total + 1e-7;
        h -= p * log(p);
    }
    *eff_rank = total > 0 ? exp(h) : 0;
done:
    free(mean);
    free(sq);
    free(gram);
    free(ev);
    free(row);
    return rc;
}
