/* Minimal assertion harness: every CHECK counts; main returns non-zero on any
 * failure and the last line reads "N passed, N failed". */
#ifndef SELFSUP_TEST_CHECK_H
#define SELFSUP_TEST_CHECK_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static int check_passed_, check_failed_;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) {                                                        \
            check_passed_++;                                               \
        } else {                                                           \
            check_failed_++;                                               \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

/* Largest |a-b| / (atol + rtol*|b|) over n values; <= 1 means close. */
static inline double check_close_ratio(const float *a, const float *b, long n,
                                       double atol, double rtol, long *worst)
{
    double r = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]) / (atol + rtol * fabs((double)b[i]));
        if (!(d <= r)) { r = d; if (worst) *worst = i; }  /* NaN propagates */
    }
    return r;
}

#define CHECK_CLOSE(a, b, n, atol, rtol, what)                                      \
    do {                                                                            \
        long w_ = 0;                                                                \
        double r_ = check_close_ratio((a), (b), (n), (atol), (rtol), &w_);          \
        CHECK(r_ <= 1.0, "%s: mismatch at %ld: %g vs %g (ratio %.3g)", (what), w_,  \
              (double)(a)[w_], (double)(b)[w_], r_);                                \
    } while (0)

/* max |a - b| / max |b|: error relative to the largest reference value;
 * NaN anywhere gives NaN. */
static inline double check_rel_err(const float *a, const float *b, long n)
{
    double e = 0, m = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= e)) e = d;
        if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
    }
    return e / (m > 1e-30 ? m : 1.0);
}

static inline int check_report(const char *name)
{
    printf("%s: %d passed, %d failed\n", name, check_passed_, check_failed_);
    return check_failed_ ? 1 : 0;
}
#endif
