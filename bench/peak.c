/* The machine's FP32 FMA peak, for the "% of peak" column of scripts/bench.sh:
 * each thread runs independent chains of vector FMAs (enough accumulators to
 * cover FMA latency x FMA ports), AVX-512 when compiled with it, else AVX2
 * FMA, else plain C. Prints one JSON line: GFLOP/s on 1 thread and on T
 * threads (1 FMA = 2 FLOP).
 * Build: cc -O3 -march=native -fopenmp bench/peak.c -o peak
 * Usage: peak [T] (default: all OpenMP threads) */
#define _POSIX_C_SOURCE 200809L
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__) || defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* Independent accumulators per thread: Zen/Intel have 2 FMA ports of 4-5
 * cycles latency, so 10 chains keep both ports busy; 12 leaves a margin. */
#define CHAINS 12

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#if defined(__AVX512F__)
#define ISA "avx512"
#define LANES 16
static float chains(long iters, float a0, float b0)
{
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(a0), b = _mm512_set1_ps(b0);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    __m512 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}
#elif defined(__AVX2__) && defined(__FMA__)
#define ISA "avx2-fma"
#define LANES 8
static float chains(long iters, float a0, float b0)
{
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(a0), b = _mm256_set1_ps(b0);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    __m256 s = acc[0];
    for (int i = 1; i < CHAINS; i++) s = _mm256_add_ps(s, acc[i]);
    float f[8];
    _mm256_storeu_ps(f, s);
    return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#else
#define ISA "scalar"
#define LANES 1
static float chains(long iters, float a0, float b0)
{
    float acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = (float)i;
    for (long it = 0; it < iters; it++)
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * a0 + b0;
    float s = 0;
    for (int i = 0; i < CHAINS; i++) s += acc[i];
    return s;
}
#endif

/* GFLOP/s of `threads` threads each running `iters` iterations. The factors
 * keep values bounded (x -> 0.999999 x + 1e-6) and the printed sum keeps the
 * work from being optimized away. a0 comes from argv so it is not a constant. */
static double run(int threads, long iters, float a0, float *sink)
{
    double t0 = now();
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total += chains(iters, a0, 1e-6f);
    double dt = now() - t0;
    *sink += total;
    return (double)threads * iters * CHAINS * LANES * 2 / dt / 1e9;
}

/* Best of 5 runs of about 0.3 s each (the machine may be shared). */
static double best(int threads, float a0, float *sink)
{
    long iters = 1 << 20;
    while (1) {
        double t0 = now();
        run(threads, iters, a0, sink);
        if (now() - t0 > 0.1 || iters > (1L << 40)) break;
        iters *= 2;
    }
    iters *= 3;
    double g = 0;
    for (int r = 0; r < 5; r++) {
        double x = run(threads, iters, a0, sink);
        if (x > g) g = x;
    }
    return g;
}

int main(int argc, char **argv)
{
    int t = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    if (t < 1) {
        fprintf(stderr, "peak: thread count '%s' must be >= 1\n", argv[1]);
        return 2;
    }
    float a0 = 0.999999f + (float)(argc > 5) * 1e-7f, sink = 0;
    double g1 = best(1, a0, &sink), gt = best(t, a0, &sink);
    printf("{\"isa\":\"%s\",\"chains\":%d,\"threads\":%d,\"gflops_1t\":%.2f,\"gflops_t\":%.2f,"
           "\"sink\":%g}\n",
           ISA, CHAINS, t, g1, gt, (double)sink);
    return 0;
}
