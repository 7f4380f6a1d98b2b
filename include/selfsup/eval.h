/* Evaluation of frozen representations: weighted k-NN (InstDisc / DINO
 * protocol) and a linear probe (multinomial logistic regression fitted to
 * convergence with L-BFGS). Inputs are plain row-major float feature matrices
 * and int32 labels in [0, n_classes); nothing here knows about models.
 *
 * Accuracies are fractions in [0, 1]. The matrix products go through
 * ssl_sgemm, one call per thread: callers should keep BLAS single-threaded
 * (ssl_ctx_init does) and set the OpenMP thread count they want. */
#ifndef SELFSUP_EVAL_H
#define SELFSUP_EVAL_H

#include <stdint.h>

#include "selfsup/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Weighted k-NN on cosine similarity. Train and test rows are L2-normalized
 * (on copies); each test row votes over its k most similar train rows with
 * weight exp(sim / T) per class, and the prediction is the class with the
 * largest vote (lowest class index on ties; equal similarities prefer the
 * lower train index). All ks are scored from one top-max(ks) selection.
 * train (n_train, d), train_labels (n_train), test (n_test, d),
 * test_labels (n_test), ks (n_ks), top1 (n_ks): top1[i] is the accuracy for ks[i].
 * Errors: bad sizes, k < 1 or k > n_train, T <= 0, labels out of range,
 * non-finite features. */
int ssl_knn_eval(const float *train, const int32_t *train_labels, int n_train,
                 const float *test, const int32_t *test_labels, int n_test, int d,
                 int n_classes, const int *ks, int n_ks, float T, double *top1,
                 char *err);

typedef struct ssl_linear_result {
    double test_top1;  /* final model (fit on all training rows) on the test set */
    double val_top1;   /* best held-out accuracy during the lambda search       */
    double lambda;     /* the chosen regularization                             */
    int iters;         /* L-BFGS iterations of the final fit                    */
    double train_loss; /* final objective: mean cross-entropy + lambda/2 ||W||^2 */
} ssl_linear_result;

/* Linear probe. Picks lambda from ssl_linear_lambdas by accuracy on a seeded
 * random 10% held-out split of the TRAINING rows (features standardized with
 * the mean/std of the other 90%): the grid is walked from large to small
 * lambda, each fit warm-started from the last and capped at 100 L-BFGS
 * iterations, stopping after two values in a row without improvement (ties
 * keep the larger lambda). Then refits on all training rows (standardized
 * with their own mean/std; up to 500 iterations, warm-started) and scores the
 * test rows. The test set is never used for any choice. Needs n_train >= 10.
 * train (n_train, d), train_labels (n_train), test (n_test, d), test_labels (n_test). */
int ssl_linear_probe(const float *train, const int32_t *train_labels, int n_train,
                     const float *test, const int32_t *test_labels, int n_test, int d,
                     int n_classes, uint64_t seed, ssl_linear_result *res, char *err);

/* The lambda grid of ssl_linear_probe, per sample (the loss is a mean). */
#define SSL_LINEAR_N_LAMBDAS 6
extern const double ssl_linear_lambdas[SSL_LINEAR_N_LAMBDAS];

/* Objective of the probe and its gradient:
 *   f(W, b) = (1/n) sum_i CE(softmax(x_i W + b), y_i) + lambda/2 ||W||^2
 * (no penalty on b), accumulated in double.
 * X (n, d), y (n), W (d, C) row-major, b (C); gW (d, C) and gb (C) are
 * overwritten (not accumulated); either may be NULL for the loss alone. */
int ssl_logreg_loss(const float *X, const int32_t *y, int n, int d, int n_classes,
                    double lambda, const float *W, const float *b, double *loss,
                    float *gW, float *gb, char *err);

/* Minimizes the objective above with full-batch L-BFGS (history 10, Armijo
 * backtracking) until the gradient or the relative loss change is tiny, or
 * max_iter iterations. On entry W (d, C) and b (C) hold the starting point
 * (zeros for a cold start); on return the minimizer. iters and final_loss may
 * be NULL. X (n, d), y (n). Needs at least two classes present in y. */
int ssl_logreg_fit(const float *X, const int32_t *y, int n, int d, int n_classes,
                   double lambda, int max_iter, float *W, float *b, int *iters,
                   double *final_loss, char *err);

/* Predicted class (argmax of x W + b, lowest index on ties) per row.
 * X (n, d), W (d, C), b (C), pred (n). */
int ssl_logreg_predict(const float *X, int n, int d, int n_classes, const float *W,
                       const float *b, int32_t *pred, char *err);

/* Collapse measures of x (n, d), d <= 4096: std_norm = mean over dims of
 * the std of the L2-normalized rows, times sqrt(d) (about 1 for a spread-out
 * embedding, 0 when collapsed to a point; SimSiam's monitor), eff_rank =
 * exp(entropy of the normalized singular values of x) (RankMe; 1 .. d). */
int ssl_embedding_stats(const float *x, int n, int d, double *std_norm, double *eff_rank,
                        char *err);

#ifdef __cplusplus
}
#endif
#endif
