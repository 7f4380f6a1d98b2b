/* Matrix product: OpenBLAS when available, a plain loop otherwise. */
#include "selfsup/ops.h"

#ifdef SSL_HAVE_OPENBLAS
#include <cblas.h>
#endif

void ssl_sgemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha,
                   const float *A, int lda, const float *B, int ldb, float beta,
                   float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        float *c = C + (long)i * ldc;
        if (beta == 0.0f)
            for (int j = 0; j < N; j++) c[j] = 0.0f;
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
        for (int k = 0; k < K; k++) {
            float a = alpha * (trans_a ? A[(long)k * lda + i] : A[(long)i * lda + k]);
            if (a == 0.0f) continue;
            if (!trans_b) {
                const float *b = B + (long)k * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            } else {
                for (int j = 0; j < N; j++) c[j] += a * B[(long)j * ldb + k];
            }
        }
    }
}

void ssl_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
#ifdef SSL_HAVE_OPENBLAS
    if (K > 0) {
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, M, N, K, alpha, A, lda, B, ldb,
                    beta, C, ldc);
        return;
    }
#endif
    ssl_sgemm_ref(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void ssl_blas_set_threads(int n)
{
#ifdef SSL_HAVE_OPENBLAS
    openblas_set_num_threads(n);
#else
    (void)n;
#endif
}
