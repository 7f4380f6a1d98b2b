/* The vectorised exp of src/ops/fastexp.c against libm:
 *   1. every 61st float in [-104, 89] (about 36 million), through the
 *      8-wide array path and the scalar one: within 1 ulp of the correctly
 *      rounded exp (float(exp(double))), denormal and overflowing results
 *      included; the largest relative error is printed;
 *   2. special values: NaN, +-inf, 0, the underflow and overflow edges;
 *   3. ssl_fast_exp_sum: the sum over odd sizes (the tail after the last
 *      block), in place and without an output;
 *   4. ssl_fast_maxf: sizes 1..40 and 4096, NaNs skipped. */
#include "check.h"
#include "ops/fastexp.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Distance in ulps of two non-negative floats (their bit patterns are in
 * order, 0 to inf). */
static long ulps(float a, float b)
{
    long d = (long)bits_of(a) - (long)bits_of(b);
    return d < 0 ? -d : d;
}

#define CHUNK 4096

/* Checks y = exp(x) for n values of x; *worst_rel: the largest relative
 * error against exp in double, over normal results. */
static void check_chunk(const float *x, const float *y, int n, const char *path, double *worst_rel,
                        long *bad)
{
    for (int i = 0; i < n; i++) {
        double t = exp((double)x[i]);
        float want = (float)t;
        if (ulps(y[i], want) > 1) {
            if ((*bad)++ < 5)
                fprintf(stderr, "%s: exp(%.9g) = %.9g, want %.9g\n", path, x[i], y[i], want);
            continue;
        }
        if (t >= FLT_MIN && t <= FLT_MAX) {
            double r = fabs(y[i] - t) / t;
            if (r > *worst_rel) *worst_rel = r;
        }
    }
}

static void sweep(void)
{
    static float x[CHUNK], y[CHUNK];
    double worst_arr = 0, worst_one = 0;
    long bad_arr = 0, bad_one = 0, count = 0;
    int n = 0;
    /* negative floats from -0 down to -104, then positive up to 89 */
    for (int sign = 0; sign < 2; sign++) {
        uint32_t end = sign ? bits_of(89.0f) : bits_of(-104.0f);
        uint32_t u = sign ? 0u : 0x80000000u;
        for (; u <= end; u += 61) {
            x[n++] = float_of(u);
            if (n == CHUNK || u + 61 > end) {
                ssl_fast_exp_sum(y, x, 0.0f, 1.0f, n);
                check_chunk(x, y, n, "array", &worst_arr, &bad_arr);
                for (int i = 0; i < n; i++) y[i] = ssl_fast_expf(x[i]);
                check_chunk(x, y, n, "scalar", &worst_one, &bad_one);
                count += n;
                n = 0;
            }
        }
    }
    printf("exp over %ld floats in [-104, 89]: largest relative error %.3g (array), %.3g (scalar)\n",
           count, worst_arr, worst_one);
    CHECK(count > 30000000, "sweep covered only %ld floats", count);
    CHECK(bad_arr == 0, "array path: %ld results more than 1 ulp from exp", bad_arr);
    CHECK(bad_one == 0, "scalar path: %ld results more than 1 ulp from exp", bad_one);
    /* 1 ulp is 2^-23 relative at most; the polynomial reaches about 8.2e-8 */
    CHECK(worst_arr <= 1.0e-7, "largest relative error %.3g (array)", worst_arr);
    CHECK(worst_one <= 1.0e-7, "largest relative error %.3g (scalar)", worst_one);
}

static void specials(void)
{
    const float in[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 88.72283f, 88.72284f, 89.0f,
                        1e30f, -103.0f, -103.972f, -104.0f, -1e30f, 1e-30f, -1e-30f};
    enum { NS = sizeof in / sizeof *in };
    float arr[NS + 200];
    /* the specials at the start of a full block, so that they take the vector path */
    for (int i = 0; i < NS + 200; i++) arr[i] = i < NS ? in[i] : 0.0f;
    ssl_fast_exp_sum(arr, arr, 0.0f, 1.0f, NS + 200);
    for (int i = 0; i < NS; i++) {
        float one = ssl_fast_expf(in[i]), want = expf(in[i]);
        if (isnan(want)) {
            CHECK(isnan(one) && isnan(arr[i]), "exp(NaN) = %g, %g", one, arr[i]);
            continue;
        }
        CHECK(ulps(one, want) <= 1 && ulps(arr[i], want) <= 1, "exp(%.9g) = %.9g (scalar), %.9g (array), want %.9g",
              in[i], one, arr[i], want);
    }
    CHECK(ssl_fast_expf(0.0f) == 1.0f, "exp(0) = %.9g", ssl_fast_expf(0.0f));
    CHECK(isinf(ssl_fast_expf(88.73f)) && ssl_fast_expf(-104.0f) == 0.0f, "overflow / underflow edges");
}

static void exp_sums(void)
{
    const long sizes[] = {0, 1, 7, 127, 128, 129, 1000, 4096, 4099};
    float *x = malloc(sizeof(float) * 4099), *y = malloc(sizeof(float) * 4099),
          *z = malloc(sizeof(float) * 4099);
    srand(7);
    for (int i = 0; i < 4099; i++) x[i] = 2.0f * rand() / RAND_MAX - 1.0f;
    const float shift = 0.75f, scale = 25.0f; /* DINO's teacher: 1 / 0.04 */
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        long n = sizes[s];
        double want = 0;
        for (long i = 0; i < n; i++) want += exp((double)((x[i] - shift) * scale));
        double got = ssl_fast_exp_sum(y, x, shift, scale, n);
        CHECK(fabs(got - want) <= 1e-6 * want, "n = %ld: sum %.9g, want %.9g", n, got, want);
        double none = ssl_fast_exp_sum(NULL, x, shift, scale, n);
        CHECK(none == got, "n = %ld: sum without output %.9g vs %.9g", n, none, got);
        memcpy(z, x, sizeof(float) * (size_t)n);
        double inplace = ssl_fast_exp_sum(z, z, shift, scale, n);
        CHECK(inplace == got && !memcmp(z, y, sizeof(float) * (size_t)n), "n = %ld: in place differs", n);
        long bad = 0;
        for (long i = 0; i < n; i++) bad += ulps(y[i], (float)exp((double)((x[i] - shift) * scale))) > 1;
        CHECK(bad == 0, "n = %ld: %ld outputs more than 1 ulp off", n, bad);
    }
    free(x);
    free(y);
    free(z);
}

static void maxima(void)
{
    float *x = malloc(sizeof(float) * 4096);
    srand(11);
    for (int i = 0; i < 4096; i++) x[i] = 2.0f * rand() / RAND_MAX - 1.0f;
    for (int n = 1; n <= 41; n++) {
        float want = -INFINITY;
        for (int i = 0; i < n; i++) want = x[i] > want ? x[i] : want;
        CHECK(ssl_fast_maxf(x, n) == want, "max of %d", n);
    }
    x[1234] = 3.0f;
    CHECK(ssl_fast_maxf(x, 4096) == 3.0f, "max of 4096");
    x[0] = NAN;
    x[17] = NAN;
    x[4095] = NAN;
    CHECK(ssl_fast_maxf(x, 4096) == 3.0f, "max with NaNs: %g", ssl_fast_maxf(x, 4096));
    float nans[9] = {NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN, NAN};
    CHECK(ssl_fast_maxf(nans, 9) == -INFINITY, "max of NaNs only");
    CHECK(ssl_fast_maxf(x, 0) == -INFINITY, "max of nothing");
    free(x);
}

int main(void)
{
    sweep();
    specials();
    exp_sums();
    maxima();
    return check_report("test_fastexp");
}
