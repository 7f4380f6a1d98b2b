/* A float exp that compilers vectorise, for the softmaxes of the losses,
 * and GELU built on it (internal to the library). The library builds
 * without -ffast-math, so gcc calls libm's expf once per element in a loop;
 * these are plain C that gcc turns into 8- or 16-wide vector code at -O3
 * -march=native (and that stays correct, only slower, in any other build).
 * Sums are taken in float over blocks of a fixed size and the blocks added
 * in double, in one fixed order: the result depends neither on the vector
 * width nor on threads. */
#ifndef SELFSUP_OPS_FASTEXP_H
#define SELFSUP_OPS_FASTEXP_H

/* exp(x) within 1 ulp of the correctly rounded value for every float x
 * (largest relative error 8.1e-8; libm's expf: 6e-8): 0 below about
 * -103.97, denormals rounded once, inf above about 88.72, NaN stays NaN.
 * tests/test_fastexp.c sweeps it against libm. */
float ssl_fast_expf(float x);

/* y (n) = exp((x (n) - shift) * scale), returning the sum of y. y may be x
 * (in place) or NULL (only the sum). */
double ssl_fast_exp_sum(float *y, const float *x, float shift, float scale, long n);

/* The largest of x (n); NaNs are skipped (as fmax does), -inf when none is left. */
float ssl_fast_maxf(const float *x, long n);

/* GELU, erf form: y (n) = x Phi(x), Phi the standard normal CDF, with
 * Phi(x) = erfc(-x / sqrt 2) / 2 from one vectorised exp: relative error
 * about 4e-7 for |x| <= 2, growing with x^2 / 2 below that (8e-6 at
 * x = -10; tests/test_fastexp.c). libm's erff form is 1e-7 above -2 but
 * cancels below it (all digits lost from about -5.5), one call per element.
 * y may be x. */
void ssl_fast_gelu(float *y, const float *x, long n);

/* GELU's gradient: dx (n) += dy (n) * (Phi(x) + x phi(x)), phi the normal
 * density. */
void ssl_fast_gelu_grad(float *dx, const float *x, const float *dy, long n);

#endif
