/* Vectorisable float exp (see fastexp.h). exp(x) = 2^n e^r with
 * n = round(x / ln 2) and |r| <= ln 2 / 2 + tiny:
 *   - n is rounded by adding 1.5 * 2^23, which leaves it in the low mantissa
 *     bits (no float-to-int conversion, which is undefined out of range);
 *   - r = x - n ln2_hi - n ln2_lo, ln2_hi having 9 significant bits so that
 *     n ln2_hi (|n| <= 150) and the subtraction are exact (Cody and Waite);
 *   - e^r by Cephes' expf polynomial (degree 7 in r, float Horner);
 *   - 2^n as two normal powers 2^n1 2^n2 (n1 = floor(n / 2)), so that
 *     results in the denormal range are rounded once and |n| up to 150
 *     needs no special case: x is clamped to [-104, 89], where exp already
 *     rounds to 0 and to inf. */
#include "fastexp.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#define LOG2E 1.44269504088896341f
#define ROUNDER 12582912.0f /* 1.5 * 2^23 */
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define LANES 8   /* one AVX2 vector; independent float partial sums */
#define BLOCK 128 /* elements summed in float before a double add */

static inline uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float float_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* x within [-104, 89], where exp already rounds to 0 and to inf. Kept out
 * of exp_core's loops: a clamp there lets gcc split the loop into a branch
 * per side (folding exp(-104) into a constant), which it cannot vectorise.
 * (lo > x ? lo : x) is one max instruction, and keeps a NaN x. */
static inline float clamp_arg(float x)
{
    x = -104.0f > x ? -104.0f : x;
    return 89.0f < x ? 89.0f : x;
}

/* exp(x) for x already clamped. */
static inline float exp_core(float x)
{
    float kf = x * LOG2E + ROUNDER;
    float n = kf - ROUNDER;
    float r = x - n * LN2_HI;
    r = r - n * LN2_LO;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* u = n + 256 in [106, 385] (unsigned: a NaN's bits give garbage here
     * but no undefined behaviour, and p is NaN anyway); n1 = h - 128,
     * n2 = n - n1, biased exponents n1 + 127 and n2 + 127 in [52, 192] */
    uint32_t u = bits_of(kf) - bits_of(ROUNDER) + 256u;
    uint32_t h = u >> 1;
    return p * float_of((h - 1u) << 23) * float_of((u - h - 1u) << 23);
}

float ssl_fast_expf(float x) { return exp_core(clamp_arg(x)); }

/* Lanes summed in a fixed order. */
static inline double lanes_sum(const float *acc)
{
    double s = 0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

double ssl_fast_exp_sum(float *y, const float *x, float shift, float scale, long n)
{
    double total = 0;
    long k = 0;
    for (; k + BLOCK <= n; k += BLOCK) {
        float a[BLOCK], acc[LANES] = {0};
        for (int b = 0; b < BLOCK; b++) a[b] = clamp_arg((x[k + b] - shift) * scale);
        if (y)
            for (int b = 0; b < BLOCK; b += LANES)
                for (int j = 0; j < LANES; j++) {
                    float e = exp_core(a[b + j]);
                    y[k + b + j] = e;
                    acc[j] += e;
                }
        else
            for (int b = 0; b < BLOCK; b += LANES)
                for (int j = 0; j < LANES; j++) acc[j] += exp_core(a[b + j]);
        total += lanes_sum(acc);
    }
    for (; k < n; k++) {
        float e = ssl_fast_expf((x[k] - shift) * scale);
        if (y) y[k] = e;
        total += e;
    }
    return total;
}

float ssl_fast_maxf(const float *x, long n)
{
    /* the order of a max does not change it: a simd reduction is exact */
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (long k = 0; k < n; k++) m = x[k] > m ? x[k] : m;
    return m;
}

/* erfc(z) / 2 for z >= 0 (or NaN): erfc(z) = t exp(-z^2 + P(t)),
 * t = 1 / (1 + z / 2), with P the degree-9 Chebyshev fit of Press et al.
 * (Numerical Recipes, erfcc: relative error below 1.2e-7 for every z >= 0;
 * the float evaluation adds a few ulps). No cancellation: it is relative
 * to erfc itself, also in the far tail, where it underflows to 0. */
static inline float half_erfc(float z)
{
    float t = 1.0f / (1.0f + 0.5f * z);
    float p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
    return 0.5f * t * exp_core(clamp_arg(p - z * z));
}

#define INV_SQRT2 0.707106781186547524f
#define INV_SQRT_2PI 0.398942280401432678f

/* Phi(x): erfc(|x| / sqrt 2) / 2 below 0, 1 minus it above (a select, so
 * the loop stays vector code); NaN stays NaN. */
static inline float normal_cdf(float x)
{
    float c = half_erfc(fabsf(x) * INV_SQRT2);
    return x < 0 ? c : 1.0f - c;
}

void ssl_fast_gelu(float *y, const float *x, long n)
{
    for (long i = 0; i < n; i++) y[i] = x[i] * normal_cdf(x[i]);
}

void ssl_fast_gelu_grad(float *dx, const float *x, const float *dy, long n)
{
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float pdf = INV_SQRT_2PI * exp_core(clamp_arg(-0.5f * v * v));
        dx[i] += dy[i] * (normal_cdf(v) + v * pdf);
    }
}
