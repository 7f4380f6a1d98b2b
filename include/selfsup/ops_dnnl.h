/* The oneDNN backend ("dnnl"): convolutions forward and backward through
 * oneDNN primitives, every other op from the cpu backend. Built only when the
 * Makefile finds oneDNN (SSL_HAVE_DNNL); otherwise these two functions still
 * exist and report it absent. */
#ifndef SELFSUP_OPS_DNNL_H
#define SELFSUP_OPS_DNNL_H

#include "selfsup/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build has oneDNN and a oneDNN CPU engine can be created. */
int ssl_dnnl_available(void);
/* The dispatch table; NULL when built without oneDNN. Its per-context state
 * (engine, stream, cached primitives) lives in ctx->backend_state, created on
 * the first convolution and released by ssl_ctx_free. */
const ssl_backend *ssl_backend_dnnl(void);
/* The same with every convolution through oneDNN, also those where the cpu
 * backend is faster (1x1 kernels, fewer than 8 input channels): for tests
 * and benchmarks. NULL without oneDNN. */
const ssl_backend *ssl_backend_dnnl_every(void);
/* 1 when oneDNN may use bfloat16 instructions on this CPU (AVX512-BF16 or
 * AMX; oneDNN's effective ISA, which DNNL_MAX_CPU_ISA can lower), so that
 * ctx->bf16 convolutions run; 0 without oneDNN. */
int ssl_dnnl_bf16_available(void);
/* oneDNN's effective ISA as a name ("cpu_isa_avx2"), for messages. */
const char *ssl_dnnl_isa(void);
/* SSL_OK when ctx->bf16 can run on backend be (the dnnl backend on a CPU
 * with bf16), else SSL_EDEVICE with a one-line reason in err. */
int ssl_dnnl_bf16_check(const ssl_backend *be, char *err);

#ifdef __cplusplus
}
#endif
#endif
