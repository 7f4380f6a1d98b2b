/* Context, errors, RNG, aligned memory, clocks. */
#define _POSIX_C_SOURCE 200809L
#include "selfsup/core.h"
#include "selfsup/ops.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int ssl_fail(char *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, SSL_ERR_LEN, fmt, ap);
        va_end(ap);
        for (char *c = err; *c; c++) /* one line, always */
            if (*c == '\n' || *c == '\r') *c = ' ';
    }
    return code;
}

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void ssl_rng_seed(ssl_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

void ssl_rng_derive(ssl_rng *out, uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t x = seed;
    uint64_t h = splitmix64(&x) ^ (a * 0xD6E8FEB86659FD93ull);
    h = splitmix64(&h) ^ (b * 0xA0761D6478BD642Full);
    ssl_rng_seed(out, h);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ssl_rng_u64(ssl_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float ssl_rng_uniform(ssl_rng *r)
{
    return (float)(ssl_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
}

float ssl_rng_normal(ssl_rng *r)
{
    double u1 = ((double)(ssl_rng_u64(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    double u2 = (double)(ssl_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t ssl_rng_below(ssl_rng *r, uint32_t n)
{
    if (n <= 1) return 0;
    uint64_t m = (uint64_t)(uint32_t)ssl_rng_u64(r) * n; /* Lemire's method */
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (uint64_t)(uint32_t)ssl_rng_u64(r) * n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void *ssl_malloc(size_t bytes)
{
    void *p = NULL;
    if (bytes == 0) bytes = 64;
    bytes = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, bytes) != 0) return NULL;
    return p;
}

void *ssl_calloc(size_t bytes)
{
    void *p = ssl_malloc(bytes);
    if (p) memset(p, 0, bytes ? bytes : 64);
    return p;
}

void ssl_free(void *p) { free(p); }

double ssl_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t ssl_peak_rss(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (size_t)ru.ru_maxrss * 1024u; /* Linux reports KiB */
}

int ssl_ctx_init(ssl_ctx *ctx, uint64_t seed, int n_threads)
{
    memset(ctx, 0, sizeof *ctx);
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    ctx->n_threads = n_threads;
    ssl_rng_seed(&ctx->rng, seed);
    ctx->backend = ssl_backend_default();
#ifdef _OPENMP
    omp_set_num_threads(n_threads);
#endif
    ssl_blas_set_threads(1); /* ops split work across our own threads */
    return SSL_OK;
}

void ssl_ctx_free(ssl_ctx *ctx)
{
    if (ctx->backend_state && ctx->backend_state_free) ctx->backend_state_free(ctx->backend_state);
    ctx->backend_state = NULL;
    ssl_free(ctx->scratch.ptr);
    ctx->scratch.ptr = NULL;
    ctx->scratch.size = 0;
}

void *ssl_ctx_scratch(ssl_ctx *ctx, size_t bytes)
{
    if (bytes <= ctx->scratch.size) return ctx->scratch.ptr;
    void *p = ssl_malloc(bytes);
    if (!p) {
        ctx->failed = SSL_ENOMEM;
        ssl_ctx_fail(ctx, SSL_ENOMEM, "out of memory: scratch of %zu bytes", bytes);
        return NULL;
    }
    ssl_free(ctx->scratch.ptr);
    ctx->scratch.ptr = p;
    ctx->scratch.size = bytes;
    return p;
}
