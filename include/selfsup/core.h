/* selfsup core: status codes, the context (RNG, threads, backend, error text),
 * and the parameter record shared by models and optimizers.
 * No mutable globals: everything a run needs lives in an ssl_ctx. */
#ifndef SELFSUP_CORE_H
#define SELFSUP_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every fallible library call returns SSL_OK (0) or one of these (< 0) and
 * leaves a one-line message in ctx->err (or in the error buffer it was given). */
typedef enum ssl_status {
    SSL_OK = 0,
    SSL_EIO = -1,      /* file missing, unreadable, short read or write      */
    SSL_EFORMAT = -2,  /* bad magic, lying header, truncated or corrupt data */
    SSL_EINVAL = -3,   /* bad argument, option or configuration              */
    SSL_ENOMEM = -4,   /* allocation failed                                   */
    SSL_ENAN = -5,     /* a loss or gradient became NaN or Inf                */
    SSL_ESHAPE = -6,   /* shapes or architectures do not match                */
    SSL_EDEVICE = -7   /* asked-for device or backend not available           */
} ssl_status;

#define SSL_ERR_LEN 512

/* xoshiro256** state. Seeded through splitmix64, so any 64-bit seed is fine. */
typedef struct ssl_rng {
    uint64_t s[4];
} ssl_rng;

void ssl_rng_seed(ssl_rng *r, uint64_t seed);
uint64_t ssl_rng_u64(ssl_rng *r);
float ssl_rng_uniform(ssl_rng *r);          /* [0, 1)            */
float ssl_rng_normal(ssl_rng *r);           /* N(0, 1), Box-Muller */
uint32_t ssl_rng_below(ssl_rng *r, uint32_t n); /* [0, n), unbiased */
/* A stream derived from (seed, a, b) alone: used to make per-sample augmentation
 * independent of thread scheduling. */
void ssl_rng_derive(ssl_rng *out, uint64_t seed, uint64_t a, uint64_t b);

struct ssl_backend;

/* Scratch memory for ops (im2col columns, per-thread partial sums). Grows on
 * the first step only; later steps reuse it. */
typedef struct ssl_scratch {
    void *ptr;
    size_t size;
} ssl_scratch;

typedef struct ssl_ctx {
    int n_threads;
    ssl_rng rng;
    const struct ssl_backend *backend; /* op dispatch table, see ops.h */
    ssl_scratch scratch;
    /* A backend's own per-context state (engines, primitive caches), created
     * lazily by that backend and released by ssl_ctx_free. */
    void *backend_state;
    void (*backend_state_free)(void *state);
    /* 1: every convolution direct, no Winograd (whose rounding differs
     * from PyTorch's direct kernels by design: ~5e-6 relative for F(4x4,
     * 3x3) vs ~6e-7); for replaying PyTorch goldens bit-closely. */
    int direct_conv;
    /* 1: convolutions in bfloat16 mixed precision (the dnnl backend on a CPU
     * with AVX512-BF16 or AMX, ssl_dnnl_bf16_available): inputs, weights and
     * output gradients rounded to bf16, products summed in fp32, outputs,
     * gradients and the parameters kept in fp32. Other ops stay fp32. */
    int bf16;
    /* The dnnl backend's most bytes of reordered copies (its blocked layout
     * of x, y, dy, dx) per convolution call; a batch needing more runs in
     * chunks of images, each within it. 0: 64 MB. */
    size_t conv_buffer_cap;
    /* Set while a profiling backend runs (ssl_profile_wrap, ops.h). */
    struct ssl_profile *profile;
    /* Sticky failure of an op that returns void (scratch out of memory):
     * graph ops and the backward pass check it and stop with ctx->err. */
    int failed;
    char err[SSL_ERR_LEN];
} ssl_ctx;

/* n_threads <= 0 means all cores. The backend is the default one (dnnl when
 * built with oneDNN, else cpu); set ctx->backend to choose another. */
int ssl_ctx_init(ssl_ctx *ctx, uint64_t seed, int n_threads);
void ssl_ctx_free(ssl_ctx *ctx);
/* Scratch of at least `bytes`, 64-byte aligned; NULL (and ctx->err) on failure. */
void *ssl_ctx_scratch(ssl_ctx *ctx, size_t bytes);

/* Formats a one-line message into err (SSL_ERR_LEN bytes) and returns code. */
int ssl_fail(char *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define ssl_ctx_fail(ctx, code, ...) ssl_fail((ctx)->err, (code), __VA_ARGS__)

/* Aligned allocation (64 bytes) and the matching free. */
void *ssl_malloc(size_t bytes);
void *ssl_calloc(size_t bytes);
void ssl_free(void *p);

/* Monotonic wall clock in seconds. */
double ssl_time(void);
/* Peak resident set size of this process, bytes (0 if unknown). */
size_t ssl_peak_rss(void);

/* A trainable tensor as optimizers see it: name (torchvision style), data,
 * gradient and flags. Models own the memory; optimizers keep their own state. */
typedef struct ssl_param {
    const char *name;
    float *data;
    float *grad;
    int64_t numel;
    int ndim;
    int64_t shape[4]; /* PyTorch's shape, e.g. conv weight (Cout, Cin, KH, KW) */
    int no_decay; /* biases and BN affine: no weight decay, no LARS adaptation */
    int frozen;   /* this step it has no gradient (PyTorch's grad None): the
                     optimizer leaves it, its state and its step count alone */
} ssl_param;

/* A non-trainable persistent tensor (BN running stats) for checkpoints. */
typedef struct ssl_buffer {
    const char *name;
    float *data;
    int64_t numel;
    int ndim;
    int64_t shape[4];
} ssl_buffer;

#ifdef __cplusplus
}
#endif
#endif
