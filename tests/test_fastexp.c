/* The vectorised exp of src/ops/fastexp.c against libm:
 *   1. every 61st float in [-104, 89] (about 36 million), through the
 *      8-wide array path and the scalar one: within 1 ulp of the correctly
 *      rounded exp (float(exp(double))), denormal and overflowing results
 *      included; the largest relative error is printed;
 *   2. special values: NaN, +-inf, 0, the underflow and overflow edges;
 *   3. ssl_fast_exp_sum: the sum over odd sizes (the tail after the last
 *      block), in place and without an output;
 *   4. ssl_fast_maxf: sizes 1..40 and 4096, NaNs skipped;
 *   5. GELU (ssl_fast_gelu, ssl_fast_gelu_grad) over every 613th float in
 *      [-30, 30] against erfc and exp in double, in place too, and its
 *      special values. */
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

/* GELU's error bound: 6e-7 relative, growing as 1 + x^2 / 2 (the float
 * rounding of the exponent -x^2 / 2), plus FLT_MIN for results in the
 * denormal range; the gradient's is relative to |Phi| + |x phi| (it
 * crosses 0 near x = -0.75). The erff form x (1 + erff(x / sqrt 2)) / 2
 * misses this below x = -2 (cancellation in 1 + erff: 5e-4 relative at -4,
 * all digits lost from about -5.5). */
static void gelu(void)
{
    static float x[CHUNK], y[CHUNK], dx[CHUNK], dy[CHUNK];
    const double inv_sqrt_2pi = 1.0 / sqrt(2.0 * acos(-1.0));
    double worst = 0, worst_g = 0;
    long bad = 0, bad_g = 0, count = 0;
    int n = 0;
    for (int sign = 0; sign < 2; sign++) {
        uint32_t end = bits_of(sign ? 30.0f : -30.0f), u = sign ? 0u : 0x80000000u;
        for (; u <= end; u += 613) {
            x[n] = float_of(u);
            dy[n] = (float)(n % 7) - 3.0f;
            dx[n] = 0.0f;
            n++;
            if (n < CHUNK && u + 613 <= end) continue;
            ssl_fast_gelu(y, x, n);
            ssl_fast_gelu_grad(dx, x, dy, n);
            for (int i = 0; i < n; i++) {
                double v = x[i], cdf = 0.5 * erfc(-v / sqrt(2.0)), pdf = inv_sqrt_2pi * exp(-0.5 * v * v);
                double tol = 6e-7 * (1 + 0.5 * v * v), want = v * cdf, e = fabs(y[i] - want);
                double want_g = dy[i] * (cdf + v * pdf), e_g = fabs(dx[i] - want_g);
                double terms = fabs(dy[i]) * (cdf + fabs(v) * pdf);
                if (fabs(v) <= 10 && fabs(want) >= FLT_MIN && e / fabs(want) > worst) worst = e / fabs(want);
                if (fabs(v) <= 10 && terms >= FLT_MIN && e_g / terms > worst_g) worst_g = e_g / terms;
                if (e > tol * fabs(want) + FLT_MIN && bad++ < 5)
                    fprintf(stderr, "gelu(%.9g) = %.9g, want %.9g\n", v, y[i], want);
                if (e_g > tol * terms + FLT_MIN && bad_g++ < 5)
                    fprintf(stderr, "gelu'(%.9g) * %g = %.9g, want %.9g\n", v, dy[i], dx[i], want_g);
            }
            count += n;
            n = 0;
        }
    }
    printf("gelu over %ld floats in [-30, 30]: largest relative error within [-10, 10] %.3g (output), %.3g "
           "(gradient, relative to |dy| (Phi + |x| phi))\n",
           count, worst, worst_g);
    CHECK(count > 3000000, "gelu sweep covered only %ld floats", count);
    CHECK(bad == 0, "gelu: %ld outputs off", bad);
    CHECK(bad_g == 0, "gelu gradient: %ld values off", bad_g);
    /* in place, and the special values (x Phi(x) at -inf is -inf * 0) */
    float in[] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 1.0f, -1.0f}, want1 = (float)(0.5 * erfc(-1 / sqrt(2.0)));
    ssl_fast_gelu(in, in, 7);
    CHECK(isnan(in[0]) && in[1] == INFINITY && isnan(in[2]) && in[3] == 0 && in[4] == 0,
          "gelu of NaN, inf, -inf, 0, -0: %g %g %g %g %g", in[0], in[1], in[2], in[3], in[4]);
    CHECK(fabsf(in[5] - want1) <= 2e-7f * want1 && fabsf(in[6] + (1 - want1)) <= 6e-7f * (1 - want1),
          "gelu(+-1) in place: %.9g %.9g", in[5], in[6]);
    /* the gradient accumulates into dx */
    float gx[2] = {1.0f, -2.0f}, gdy[2] = {2.0f, 1.0f}, gdx[2] = {0.5f, -0.25f};
    ssl_fast_gelu_grad(gdx, gx, gdy, 2);
    for (int i = 0; i < 2; i++) {
        double v = gx[i], d = 0.5 * erfc(-v / sqrt(2.0)) + v * exp(-0.5 * v * v) / sqrt(2.0 * acos(-1.0));
        double want = (i ? -0.25 : 0.5) + gdy[i] * d;
        CHECK(fabs(gdx[i] - want) <= 1e-6 * fabs(want), "gelu gradient accumulated: %.9g, want %.9g", gdx[i], want);
    }
}

int main(void)
{
    sweep();
    specials();
    exp_sums();
    maxima();
    gelu();
    return check_report("test_fastexp");
}
